//! Integration tests of kube-store's backends.
#![allow(clippy::unwrap_used, missing_docs)]

mod conformance;
mod durable;
#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "etcd")]
mod etcd_server;
mod machinery;
mod mem;
