//! Integration tests of kube-ctrl's controllers over an in-memory store.
#![allow(clippy::unwrap_used, missing_docs)]

mod cascade;
mod cronjob;
mod daemonset;
mod deployment;
mod disruption;
mod endpoints;
mod endpointslice;
mod events;
mod gc;
mod job;
mod leader;
mod manager;
mod node_ipam;
mod node_lifecycle;
mod replicaset;
mod replicationcontroller;
mod resource_quota;
mod service_lb;
mod services;
mod statefulset;
mod support;
mod volume;
