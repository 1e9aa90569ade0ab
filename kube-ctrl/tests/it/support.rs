use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube_core::GroupKind;
use kube_core::orchestrator::{Orchestrator, RunningOrchestrator};
use kube_core::store::Store;
use kube_ctrl::{ControllerManager, EndpointsController, GarbageCollector, ReplicaSetController};
use kube_store::MemStore;

/// Starts an orchestrator with only these controllers over a fresh MemStore.
pub(crate) fn start(manager: ControllerManager) -> (Arc<dyn Store>, RunningOrchestrator) {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let running = Orchestrator::builder()
        .store(store.clone())
        .controllers(manager)
        .build()
        .unwrap()
        .start();
    (store, running)
}

/// The standard controllers.
pub(crate) fn standard() -> ControllerManager {
    ControllerManager::new()
        .with(ReplicaSetController::new())
        .with(GarbageCollector::new(GroupKind::POD).owner(GroupKind::REPLICA_SET))
        .with(EndpointsController::new())
}

/// Polls `check` until it returns `Some`, failing after 10 s with `what`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_within(what, Duration::from_secs(10), check).await
}

/// Polls `check` until it returns `Some`, failing after `timeout` with `what`.
pub(crate) async fn eventually_within<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
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
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Marks every pod scheduled, running and ready shortly after it appears, as a node agent
/// would. Abort the handle to stop it.
pub(crate) fn fake_kubelet(store: Arc<dyn Store>) -> tokio::task::JoinHandle<()> {
    fake_kubelet_where(store, |_| true)
}

/// [`fake_kubelet`] for the pods `runs` accepts only; the others stay pending.
pub(crate) fn fake_kubelet_where(
    store: Arc<dyn Store>,
    runs: impl Fn(&k8s_openapi::api::core::v1::Pod) -> bool + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    use k8s_openapi::api::core::v1::Pod;
    use kube_core::typed::Api;
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::all(store.clone());
        loop {
            for pod in pods.list(&Default::default()).await.unwrap().items {
                if !runs(&pod) {
                    continue;
                }
                let ready = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready"));
                if ready {
                    continue;
                }
                let ns = pod.metadata.namespace.clone().unwrap();
                let name = pod.metadata.name.clone().unwrap();
                let api: Api<Pod> = Api::namespaced(store.clone(), &ns);
                let node = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_else(|| "node-1".into());
                let patch = serde_json::json!({
                    "spec": {"nodeName": node},
                    "status": {"phase": "Running", "podIP": "10.0.0.1",
                        "conditions": [{"type": "Ready", "status": "True",
                            "lastTransitionTime": kube_core::object::now()}]}
                });
                // The pod may be gone already.
                let _ = api.patch_merge(&name, &patch).await;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    })
}
