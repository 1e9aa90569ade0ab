//! Integration tests of kube-node: the runtimes on their own, and the node agent over a
//! `MemStore` with each runtime.

mod agent_cri;
mod agent_docker;
mod agent_fake;
mod agent_images;
mod agent_oci;
mod agent_process;
mod agent_pull;
mod common;
mod container_gc;
mod containerd_env;
mod fake_runtime;
mod image_pull;
mod kubelet_server;
mod podnet;
mod probes;
mod process_claims;
mod process_runtime;
mod process_volumes;
mod projected_volumes;
mod registry;
mod restart_recovery;
mod service_env;
