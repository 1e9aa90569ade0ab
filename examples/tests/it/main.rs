//! Whole-cluster tests: the hello_cluster flow on FakeRuntime, and a cluster composed from
//! trait implementations written here.
#![allow(clippy::unwrap_used, missing_docs)]

mod custom_parts;
#[cfg(feature = "etcd")]
mod etcd_store;
mod greeting;
mod hello_fake;
mod kube_rs;
mod kubectl;
mod multi_host;
mod multi_process;
mod own_store;
mod token_volume;
