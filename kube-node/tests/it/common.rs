//! Shared helpers: polling, pods, an orchestrator with one node agent.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube_core::api::{Node, Pod};
use kube_core::orchestrator::{Orchestrator, RunningOrchestrator};
use kube_core::runtime::Runtime;
use kube_core::store::Store;
use kube_core::typed::Api;
use kube_node::{NodeAgent, NodeAgentBuilder};
use kube_store::MemStore;

pub(crate) const NODE: &str = "node-1";

/// Polls `check` every 20 ms until it returns `Some`, failing the test after `timeout`.
pub(crate) async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a process exists and is not a zombie (PID 1 here may not reap orphans).
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z' | 'X') | None)
        }
    }
}

/// A pod bound to [`NODE`] with the given restart policy and containers (JSON).
pub(crate) fn pod(name: &str, restart_policy: &str, containers: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 1,
            "containers": containers,
        }
    }))
    .expect("valid pod")
}

/// An orchestrator over a fresh `MemStore` with one node agent.
pub(crate) struct Cluster {
    pub(crate) running: RunningOrchestrator,
    pub(crate) store: Arc<dyn Store>,
}

/// A builder with the short intervals tests use.
pub(crate) fn agent(runtime: Arc<dyn Runtime>) -> NodeAgentBuilder {
    NodeAgent::builder(NODE, runtime)
        .resync_interval(Duration::from_millis(50))
        .heartbeat_interval(Duration::from_millis(200))
        .crash_backoff(Duration::from_millis(300), Duration::from_secs(2))
}

impl Cluster {
    pub(crate) fn start(agent: NodeAgent) -> Self {
        Self::start_with_store(agent, Arc::new(MemStore::new()))
    }

    pub(crate) fn start_with_store(agent: NodeAgent, store: Arc<dyn Store>) -> Self {
        let running = Orchestrator::builder()
            .store(store.clone())
            .node(agent)
            .shutdown_timeout(Duration::from_secs(5))
            .build()
            .expect("orchestrator builds")
            .start();
        Self { running, store }
    }

    pub(crate) fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.store.clone(), "default")
    }

    pub(crate) fn nodes(&self) -> Api<Node> {
        Api::all(self.store.clone())
    }

    /// Waits until the pod's phase is `phase`, returning the pod.
    pub(crate) async fn wait_phase(&self, name: &str, phase: &str, timeout: Duration) -> Pod {
        let pods = self.pods();
        eventually(timeout, &format!("pod {name} {phase}"), || {
            let pods = pods.clone();
            async move {
                let pod = pods.get(name).await.ok()?;
                let current = pod.status.as_ref()?.phase.as_deref()?;
                (current == phase).then_some(pod)
            }
        })
        .await
    }

    pub(crate) async fn shutdown(self) {
        self.running.shutdown().await.expect("clean shutdown");
    }
}

/// Whether the host can run real containers with `tool` (root and the tool on `PATH`). Under
/// `CI=true` a missing tool fails the test loudly instead of skipping it.
pub(crate) fn require(tool: &str) -> bool {
    let runs = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    // /proc/self belongs to the effective user.
    let root =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").expect("procfs")) == 0;
    if runs && root {
        return true;
    }
    let why = format!("{tool} runnable: {runs}, root: {root}");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true and the real-runtime test cannot run ({why})"
    );
    eprintln!("skipping: {why}");
    false
}

/// A busybox root filesystem under `dir`.
pub(crate) fn busybox(dir: &std::path::Path) -> std::path::PathBuf {
    kube_node::image::busybox_rootfs(
        &dir.join("busybox"),
        std::path::Path::new(kube_node::image::HOST_BUSYBOX),
    )
    .expect("busybox rootfs")
}

/// The first status of the pod's first container.
pub(crate) fn first_container(pod: &Pod) -> k8s_openapi::api::core::v1::ContainerStatus {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .cloned()
        .expect("a container status")
}

/// Hierarchies in which the cgroup `relative` (e.g. a runtime's cgroup parent) still exists.
pub(crate) fn leftover_cgroups(relative: &str) -> Vec<String> {
    std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|h| h.path().join(relative))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect()
}
