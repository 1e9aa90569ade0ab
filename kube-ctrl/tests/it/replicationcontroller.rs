use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use kube_core::GroupKind;
use kube_core::store::ListOptions;
use kube_core::typed::Api;
use kube_ctrl::{ControllerManager, GarbageCollector, ReplicationControllerController};
use serde_json::json;

use crate::support::{eventually, start};

fn manager() -> ControllerManager {
    ControllerManager::new()
        .with(ReplicationControllerController::new())
        .with(
            GarbageCollector::new(GroupKind::POD)
                .owner(GroupKind::from_static("", "ReplicationController")),
        )
}

fn rc(name: &str, replicas: i32) -> ReplicationController {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"app": name},
            "template": {
                "metadata": {"labels": {"app": name, "tier": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "30"]}]}
            }
        }
    }))
    .unwrap()
}

async fn pods_with(pods: &Api<Pod>, selector: &str) -> Vec<Pod> {
    let selector = kube_core::Selector::parse(selector).unwrap();
    pods.list(&ListOptions::default().labels(selector))
        .await
        .unwrap()
        .items
}

fn owned_by(pod: &Pod, uid: &str) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true) && o.kind == "ReplicationController")
}

#[tokio::test]
async fn keeps_replicas_adopts_orphans_releases_mismatches_and_scales() {
    let (store, running) = start(manager());
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let rcs: Api<ReplicationController> = Api::namespaced(store.clone(), "default");

    // An orphan that matches the selector exists before the RC.
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphan", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap();
    pods.create(&orphan).await.unwrap();
    let created = rcs.create(&rc("web", 3)).await.unwrap();
    let uid = created.metadata.uid.clone().unwrap();

    let three = eventually("3 pods, the orphan adopted", || async {
        let p = pods_with(&pods, "app=web").await;
        (p.len() == 3 && p.iter().all(|p| owned_by(p, &uid))).then_some(p)
    })
    .await;
    assert!(
        three
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some("orphan"))
    );
    for pod in three
        .iter()
        .filter(|p| p.metadata.name.as_deref() != Some("orphan"))
    {
        assert!(pod.metadata.name.as_ref().unwrap().starts_with("web-"));
        assert_eq!(pod.metadata.labels.as_ref().unwrap()["tier"], "web");
    }
    eventually("status.replicas = 3", || async {
        let s = rcs.get("web").await.unwrap().status?;
        (s.replicas == 3 && s.fully_labeled_replicas == Some(2)).then_some(())
    })
    .await;

    // A pod whose labels stop matching is released and replaced.
    let mut relabeled = pods.get("orphan").await.unwrap();
    relabeled
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("app".into(), "debug".into());
    pods.replace(&relabeled).await.unwrap();
    eventually("the relabeled pod released, a replacement made", || async {
        let released = pods.get("orphan").await.ok()?;
        let owned = pods_with(&pods, "app=web").await;
        (!owned_by(&released, &uid) && owned.len() == 3 && owned.iter().all(|p| owned_by(p, &uid)))
            .then_some(())
    })
    .await;
    assert!(
        pods.get("orphan")
            .await
            .unwrap()
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );

    // Scale down to 1.
    rcs.patch_merge("web", &json!({"spec": {"replicas": 1}}))
        .await
        .unwrap();
    eventually("1 pod", || async {
        (pods_with(&pods, "app=web").await.len() == 1).then_some(())
    })
    .await;
    eventually("status after scale", || async {
        let s = rcs.get("web").await.unwrap().status?;
        (s.replicas == 1 && s.observed_generation == Some(2)).then_some(())
    })
    .await;
    // The released pod is nobody's, so it stays.
    assert!(pods.get("orphan").await.is_ok());
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn deleting_the_rc_collects_its_pods() {
    let (store, running) = start(manager());
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let rcs: Api<ReplicationController> = Api::namespaced(store.clone(), "default");
    rcs.create(&rc("gone", 2)).await.unwrap();
    eventually("2 pods", || async {
        (pods_with(&pods, "app=gone").await.len() == 2).then_some(())
    })
    .await;
    rcs.delete("gone", &Default::default()).await.unwrap();
    eventually("pods collected", || async {
        pods_with(&pods, "app=gone").await.is_empty().then_some(())
    })
    .await;
    running.shutdown().await.unwrap();
}
