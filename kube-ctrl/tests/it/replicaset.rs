use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube_core::store::ListOptions;
use kube_core::typed::Api;
use serde_json::json;

use crate::support::{eventually, standard, start};

fn replica_set(name: &str, replicas: i32) -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "30"]}]}
            }
        }
    }))
    .unwrap()
}

async fn pods_of(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
    let selector = kube_core::Selector::parse(&format!("app={app}")).unwrap();
    pods.list(&ListOptions::default().labels(selector))
        .await
        .unwrap()
        .items
}

#[tokio::test]
async fn creates_scales_and_reports_status() {
    let (store, running) = start(standard());
    let sets: Api<ReplicaSet> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let rs = sets.create(&replica_set("web", 3)).await.unwrap();

    let created = eventually("3 pods", || async {
        let p = pods_of(&pods, "web").await;
        (p.len() == 3).then_some(p)
    })
    .await;
    for pod in &created {
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.uid, rs.metadata.uid.clone().unwrap());
        assert_eq!(owner.controller, Some(true));
        assert!(pod.metadata.name.as_ref().unwrap().starts_with("web-"));
    }

    // Mark one pod ready, as a node agent would.
    let mut ready = created[0].clone();
    ready.status = Some(
        serde_json::from_value(json!({
            "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]
        }))
        .unwrap(),
    );
    pods.replace(&ready).await.unwrap();
    eventually("status", || async {
        let s = sets.get("web").await.unwrap().status?;
        (s.replicas == 3 && s.ready_replicas == Some(1) && s.observed_generation == Some(1))
            .then_some(())
    })
    .await;

    sets.patch_merge("web", &json!({"spec": {"replicas": 1}}))
        .await
        .unwrap();
    let left = eventually("1 pod", || async {
        let p = pods_of(&pods, "web").await;
        (p.len() == 1).then_some(p)
    })
    .await;
    // Scale-down removes not-ready pods before ready ones.
    assert_eq!(left[0].metadata.name, ready.metadata.name);
    eventually("status after scale", || async {
        let s = sets.get("web").await.unwrap().status?;
        (s.replicas == 1 && s.observed_generation == Some(2)).then_some(())
    })
    .await;
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn replaces_finished_pods_and_adopts_orphans() {
    let (store, running) = start(standard());
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphan", "labels": {"app": "job"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    pods.create(&orphan).await.unwrap();
    let sets: Api<ReplicaSet> = Api::namespaced(store.clone(), "default");
    sets.create(&replica_set("job", 2)).await.unwrap();

    let adopted = eventually("orphan adopted and one more created", || async {
        let p = pods_of(&pods, "job").await;
        (p.len() == 2 && p.iter().all(|p| p.metadata.owner_references.is_some())).then_some(p)
    })
    .await;
    assert!(
        adopted
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some("orphan"))
    );

    // A failed pod no longer counts: a replacement is created.
    let mut failed = pods.get("orphan").await.unwrap();
    failed.status = Some(serde_json::from_value(json!({"phase": "Failed"})).unwrap());
    pods.replace(&failed).await.unwrap();
    eventually("replacement for the failed pod", || async {
        (pods_of(&pods, "job").await.len() == 3).then_some(())
    })
    .await;
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_selector_creates_nothing() {
    let (store, running) = start(standard());
    let sets: Api<ReplicaSet> = Api::namespaced(store.clone(), "default");
    let mut bad = replica_set("bad", 2);
    bad.spec.as_mut().unwrap().selector.match_labels =
        Some([("app".to_string(), "other".to_string())].into());
    sets.create(&bad).await.unwrap();
    let good = sets.create(&replica_set("good", 1)).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    eventually("the valid ReplicaSet is served", || async {
        (pods_of(&pods, "good").await.len() == 1).then_some(())
    })
    .await;
    assert!(pods_of(&pods, "bad").await.is_empty());
    assert!(good.metadata.uid.is_some());
    running.shutdown().await.unwrap();
}
