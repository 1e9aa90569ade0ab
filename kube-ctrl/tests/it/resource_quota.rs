use std::time::Duration;

use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::{Preconditions, Store};
use kube_ctrl::{ControllerManager, ResourceQuotaController};
use serde_json::{Value, json};

use crate::support::{eventually, start};

fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

fn pod(name: &str, cpu: Option<&str>, phase: &str) -> DynamicObject {
    let resources = match cpu {
        Some(cpu) => {
            json!({"requests": {"cpu": cpu, "memory": "256Mi"}, "limits": {"memory": "512Mi"}})
        }
        None => json!({}),
    };
    object(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "q"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]},
        "status": {"phase": phase}}))
}

async fn used(store: &dyn Store, name: &str) -> Option<Value> {
    let quota = store
        .get(
            &GroupKind::new("", "ResourceQuota"),
            &ObjectKey::namespaced("q", name),
        )
        .await
        .ok()?;
    let status = quota.data.get("status")?;
    (status.get("hard") == quota.data.get("spec").and_then(|s| s.get("hard")))
        .then(|| status["used"].clone())
}

#[tokio::test]
async fn quota_status_counts_the_namespace_and_gives_back_what_goes() {
    let manager = ControllerManager::new().with(ResourceQuotaController::with_resync(
        Duration::from_millis(300),
    ));
    let (store, running) = start(manager);
    for p in [
        pod("a", Some("500m"), "Running"),
        pod("b", Some("1500m"), "Running"),
        pod("idle", None, "Running"),
        // Finished pods hold no compute quota, only their object count.
        pod("done", Some("2"), "Succeeded"),
    ] {
        store.create(p).await.unwrap();
    }
    store
        .create(object(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "np", "namespace": "q"},
            "spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}})))
        .await
        .unwrap();
    store
        .create(object(
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": "q"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
                "resources": {"requests": {"storage": "2Gi"}}}}),
        ))
        .await
        .unwrap();
    store
        .create(object(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cm", "namespace": "q"}})))
        .await
        .unwrap();
    let quota = |name: &str, spec: Value| {
        object(json!({"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": name, "namespace": "q"}, "spec": spec}))
    };
    store
        .create(quota("all", json!({"hard": {
            "pods": "10", "count/pods": "20", "requests.cpu": "4", "requests.memory": "2Gi",
            "limits.memory": "4Gi", "services.nodeports": "5", "count/configmaps": "3",
            "requests.storage": "10Gi", "fast.storageclass.storage.k8s.io/requests.storage": "5Gi"}})))
        .await
        .unwrap();
    store
        .create(quota(
            "best-effort",
            json!({"hard": {"pods": "5"}, "scopes": ["BestEffort"]}),
        ))
        .await
        .unwrap();

    let expected = json!({
        "pods": "3", "count/pods": "4", "requests.cpu": "2", "requests.memory": "512Mi",
        "limits.memory": "1Gi", "services.nodeports": "2", "count/configmaps": "1",
        "requests.storage": "2Gi", "fast.storageclass.storage.k8s.io/requests.storage": "2Gi"});
    eventually("quota counted", || async {
        (used(store.as_ref(), "all").await? == expected).then_some(())
    })
    .await;
    eventually("scoped quota counted", || async {
        (used(store.as_ref(), "best-effort").await? == json!({"pods": "1"})).then_some(())
    })
    .await;

    // A deletion gives its usage back at once.
    store
        .delete(
            &GroupKind::POD,
            &ObjectKey::namespaced("q", "b"),
            &Preconditions::default(),
        )
        .await
        .unwrap();
    eventually("usage given back", || async {
        let used = used(store.as_ref(), "all").await?;
        (used["pods"] == "2" && used["requests.cpu"] == "500m").then_some(())
    })
    .await;

    // What admission never saw (written straight to the store) is found by the resync.
    store
        .create(pod("late", Some("1"), "Running"))
        .await
        .unwrap();
    eventually("resync recounts", || async {
        let used = used(store.as_ref(), "all").await?;
        (used["pods"] == "3" && used["requests.cpu"] == "1500m").then_some(())
    })
    .await;
    running.shutdown().await.unwrap();
}
