//! Integration tests of kube-store's backends.
#![allow(clippy::unwrap_used, missing_docs)]

mod conformance;
mod durable;
#[cfg(feature = "etcd")]
mod etcd;
mod machinery;
mod mem;
