use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{GroupKind, ObjectKey};
use kube_core::typed::Api;
use kube_ctrl::ControllerManager;
use serde_json::json;

use crate::support::{eventually, start};

/// Fails the first two reconciles of each key, then succeeds.
#[derive(Debug, Default)]
struct Flaky {
    attempts: AtomicU32,
    successes: AtomicU32,
}

#[async_trait::async_trait]
impl Controller for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    fn watches(&self) -> Watches {
        Watches::primary(GroupKind::from_static("", "ConfigMap"))
    }
    async fn reconcile(
        &self,
        _key: &ObjectKey,
        _ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        if self.attempts.fetch_add(1, Ordering::SeqCst) < 2 {
            return Err(ReconcileError::Invalid("not yet".into()));
        }
        self.successes.fetch_add(1, Ordering::SeqCst);
        Ok(Action::await_change())
    }
    fn error_policy(&self, _key: &ObjectKey, _error: &ReconcileError, failures: u32) -> Action {
        Action::requeue(Duration::from_millis(10 * u64::from(failures + 1)))
    }
}

#[tokio::test]
async fn failed_reconciles_are_retried_per_error_policy() {
    let flaky = Arc::new(Flaky::default());
    let manager = ControllerManager::new().with_arc(flaky.clone());
    let metrics = manager.metrics();
    let (store, running) = start(manager);
    let maps: Api<ConfigMap> = Api::namespaced(store, "default");
    maps.create(&serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap())
        .await
        .unwrap();
    eventually("success after two failures", || async {
        (flaky.successes.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    assert_eq!(flaky.attempts.load(Ordering::SeqCst), 3);
    let stats = metrics.snapshot();
    assert_eq!(stats.len(), 1);
    assert_eq!(
        (stats[0].name.as_str(), stats[0].reconciles, stats[0].errors),
        ("flaky", 3, 2)
    );
    assert_eq!(stats[0].queue_depth, 0);
    assert!(stats[0].max_latency >= stats[0].mean_latency);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn finalizers_are_added_once_and_removed() {
    use kube_ctrl::finalizers::{add_finalizer, has_finalizer, remove_finalizer};
    let store: Arc<dyn kube_core::store::Store> = Arc::new(kube_store::MemStore::new());
    let maps: Api<ConfigMap> = Api::namespaced(store.clone(), "default");
    maps.create(&serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap())
        .await
        .unwrap();
    let kind = GroupKind::from_static("", "ConfigMap");
    let key = ObjectKey::namespaced("default", "a");
    assert!(
        add_finalizer(&*store, &kind, &key, "example.com/cleanup")
            .await
            .unwrap()
    );
    assert!(
        !add_finalizer(&*store, &kind, &key, "example.com/cleanup")
            .await
            .unwrap()
    );
    let object = store.get(&kind, &key).await.unwrap();
    assert!(has_finalizer(&object, "example.com/cleanup"));
    assert!(
        remove_finalizer(&*store, &kind, &key, "example.com/cleanup")
            .await
            .unwrap()
    );
    let object = store.get(&kind, &key).await.unwrap();
    assert!(object.metadata.finalizers.is_none());
    let gone = ObjectKey::namespaced("default", "gone");
    assert!(!remove_finalizer(&*store, &kind, &gone, "x").await.unwrap());
}
