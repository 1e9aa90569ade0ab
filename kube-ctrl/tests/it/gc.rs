use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube_core::store::Preconditions;
use kube_core::typed::Api;
use serde_json::json;

use crate::support::{eventually, standard, start};

#[tokio::test]
async fn deleting_an_owner_collects_its_dependents() {
    let (store, running) = start(standard());
    let sets: Api<ReplicaSet> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}}}
    }))
    .unwrap();
    sets.create(&rs).await.unwrap();
    eventually("2 pods", || async {
        (pods.list(&Default::default()).await.unwrap().items.len() == 2).then_some(())
    })
    .await;
    sets.delete("web", &Preconditions::default()).await.unwrap();
    eventually("pods collected", || async {
        pods.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn dangling_references_are_removed_or_collected() {
    let (store, running) = start(standard());
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(store.clone(), "default");
    let live: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "live"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "live"}},
                 "template": {"metadata": {"labels": {"app": "live"}}, "spec": {"containers": [{"name": "c"}]}}}
    }))
    .unwrap();
    let live = sets.create(&live).await.unwrap();
    let owner = |name: &str, uid: &str| json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name, "uid": uid});
    let two_owners: Pod = serde_json::from_value(json!({
        "metadata": {"name": "shared", "ownerReferences": [
            owner("live", live.metadata.uid.as_deref().unwrap()), owner("gone", "no-such-uid")]},
        "spec": {"containers": [{"name": "c"}]}
    }))
    .unwrap();
    let orphaned: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphaned", "ownerReferences": [owner("gone", "no-such-uid")]},
        "spec": {"containers": [{"name": "c"}]}
    }))
    .unwrap();
    pods.create(&two_owners).await.unwrap();
    pods.create(&orphaned).await.unwrap();
    eventually("dangling owner dropped, orphan collected", || async {
        let shared = pods.get_opt("shared").await.unwrap()?;
        let refs = shared.metadata.owner_references.unwrap_or_default();
        let orphan_gone = pods.get_opt("orphaned").await.unwrap().is_none();
        (refs.len() == 1 && refs[0].name == "live" && orphan_gone).then_some(())
    })
    .await;
    running.shutdown().await.unwrap();
}
