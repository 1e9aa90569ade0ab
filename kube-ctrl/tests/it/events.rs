use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
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
    let event = eventually("SuccessfulCreate event", || async {
        events(&store)
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("SuccessfulCreate"))
    })
    .await;
    assert_eq!(event.involved_object.kind.as_deref(), Some("ReplicaSet"));
    assert_eq!(event.message.as_deref(), Some("Created 2 pods"));
    running.shutdown().await.unwrap();
}
