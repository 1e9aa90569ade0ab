//! Integration tests of kube-node: the runtimes on their own, and the node agent over a
//! `MemStore` with each runtime.

mod agent_fake;
mod agent_oci;
mod agent_process;
mod common;
mod fake_runtime;
mod process_runtime;
