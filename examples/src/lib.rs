#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod cluster;
pub mod greeting;
pub mod hello;
pub mod network;

/// The workspace README's code, compiled as a doc test so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
