//! Integration tests of kube-store's backends.
#![allow(clippy::unwrap_used, missing_docs)]

#[cfg(all(feature = "server", feature = "client"))]
mod apiserver;
mod conformance;
mod durable;
#[cfg(feature = "etcd")]
mod etcd;
mod machinery;
mod mem;
#[cfg(all(feature = "server", feature = "client"))]
mod security;
