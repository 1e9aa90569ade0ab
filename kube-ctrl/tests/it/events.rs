use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube_core::store::Store;
use kube_core::typed::Api;
use kube_ctrl::{EventRecorder, EventType};
use kube_store::MemStore;
use serde_json::json;

use crate::support::{eventually, standard, start};

async fn events(store: &Arc<dyn Store>) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(store.clone(), "default");
    api.list(&Default::default()).await.unwrap().items
}

#[tokio::test]
async fn repeated_events_are_counted_and_similar_ones_combined() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let maps: Api<ConfigMap> = Api::namespaced(store.clone(), "default");
    let object = maps
        .create(&serde_json::from_value(json!({"metadata": {"name": "cfg"}})).unwrap())
        .await
        .unwrap();
    let recorder = EventRecorder::new("test-controller");
    for _ in 0..3 {
        recorder
            .record(
                &store,
                &object,
                EventType::Warning,
                "Broken",
                "same message",
            )
            .await;
    }
    let recorded = events(&store).await;
    assert_eq!(recorded.len(), 1);
    let event = &recorded[0];
    assert_eq!(event.count, Some(3));
    assert_eq!(event.involved_object.name.as_deref(), Some("cfg"));
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(
        event.source.as_ref().unwrap().component.as_deref(),
        Some("test-controller")
    );

    // Distinct messages with one reason: the first ten are kept apart, the rest combined.
    for i in 0..14 {
        recorder
            .record(
                &store,
                &object,
                EventType::Normal,
                "Flapping",
                format!("attempt {i}"),
            )
            .await;
    }
    let flapping: Vec<Event> = events(&store)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Flapping"))
        .collect();
    assert_eq!(flapping.len(), 11);
    let combined: Vec<&Event> = flapping
        .iter()
        .filter(|e| {
            e.message
                .as_deref()
                .unwrap()
                .starts_with("(combined from similar events): ")
        })
        .collect();
    assert_eq!(combined.len(), 1);
    assert_eq!(combined[0].count, Some(4));
    assert_eq!(
        combined[0].message.as_deref(),
        Some("(combined from similar events): attempt 13")
    );
}

#[tokio::test]
async fn controllers_record_what_they_did() {
    let (store, running) = start(standard());
    let sets: Api<ReplicaSet> = Api::namespaced(store.clone(), "default");
    sets.create(
        &serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}}}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    // One event per pod, naming it, as Kubernetes.
    let created = eventually("a SuccessfulCreate event per pod", || async {
        let found: Vec<Event> = events(&store)
            .await
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("SuccessfulCreate"))
            .collect();
        (found.len() == 2).then_some(found)
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let mut names: Vec<String> = pods
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| format!("Created pod: {}", p.metadata.name.unwrap()))
        .collect();
    let mut messages: Vec<String> = created.iter().map(|e| e.message.clone().unwrap()).collect();
    names.sort();
    messages.sort();
    assert_eq!(messages, names);
    assert!(
        created
            .iter()
            .all(|e| e.involved_object.kind.as_deref() == Some("ReplicaSet"))
    );

    // Scaled to 0: one SuccessfulDelete per pod.
    sets.patch_merge("web", &json!({"spec": {"replicas": 0}}))
        .await
        .unwrap();
    eventually("a SuccessfulDelete event per pod", || async {
        let deleted: Vec<String> = events(&store)
            .await
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("SuccessfulDelete"))
            .filter_map(|e| e.message)
            .map(|m| m.replace("Deleted", "Created"))
            .collect();
        let mut deleted = deleted;
        deleted.sort();
        (deleted == names).then_some(())
    })
    .await;

    // Many pods: after AGGREGATE_AFTER distinct messages, they land on one combined Event.
    sets.patch_merge("web", &json!({"spec": {"replicas": 30}}))
        .await
        .unwrap();
    eventually("30 pods", || async {
        (pods.list(&Default::default()).await.unwrap().items.len() == 30).then_some(())
    })
    .await;
    let created: Vec<Event> = events(&store)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("SuccessfulCreate"))
        .collect();
    // 32 pods created in all (2, then 30 after scaling to 0): 10 Events on their own, the
    // other 22 counted on one combined Event.
    assert_eq!(created.len(), 11);
    let combined = created
        .iter()
        .find(|e| {
            e.message
                .as_deref()
                .unwrap_or_default()
                .starts_with("(combined from similar events): Created pod: ")
        })
        .unwrap();
    assert_eq!(combined.count, Some(22));
    running.shutdown().await.unwrap();
}
