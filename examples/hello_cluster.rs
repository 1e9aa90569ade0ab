//! A two-node cluster in one process, running real host processes.
//!
//! Composes an in-memory store, the default scheduler, the ReplicaSet, garbage-collection and
//! Endpoints controllers, two node agents with `ProcessRuntime`, and an in-memory proxy. Then it
//! runs a ReplicaSet of 3 `sleep 30` pods, prints where they run, scales to 1, deletes the
//! ReplicaSet, and checks that no process is left.
//!
//! ```sh
//! cargo run --example hello_cluster
//! RUST_LOG=debug cargo run --example hello_cluster   # to see the components at work
//! ```

use std::sync::Arc;

use kube_core::runtime::{ContainerState, ContainerStatus, Runtime};
use kube_node::ProcessRuntime;

/// A container is alive if the runtime says Running and its process exists.
fn process_alive(status: &ContainerStatus) -> bool {
    status.state == ContainerState::Running
        && status
            .info
            .get("pid")
            .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let runtimes: Vec<Arc<dyn Runtime>> = vec![
        Arc::new(ProcessRuntime::temp()?),
        Arc::new(ProcessRuntime::temp()?),
    ];
    examples::hello::run(runtimes, process_alive).await?;
    Ok(())
}
