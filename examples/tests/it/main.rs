//! Whole-cluster tests: the hello_cluster flow on FakeRuntime, kubectl, kube-rs, several
//! processes and hosts. (A cluster composed from the user's own parts is the
//! `bespoke_control_plane` example, whose test runs with these.)
#![allow(clippy::unwrap_used, missing_docs)]

mod cluster_network;
mod disruption;
#[cfg(feature = "etcd")]
mod etcd_store;
mod greeting;
mod hello_fake;
mod kube_rs;
mod kubectl;
mod multi_host;
mod multi_process;
mod persistent_volumes;
mod runtimes;
mod statefulset;
mod token_volume;
