use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube_core::GroupKind;
use kube_core::store::{Store, WatchEvent, WatchOptions};
use kube_core::typed::Api;
use kube_ctrl::deployment::{
    DESIRED_REPLICAS_ANNOTATION, MAX_REPLICAS_ANNOTATION, NEW_RS_AVAILABLE,
    PROGRESS_DEADLINE_EXCEEDED, REVISION_ANNOTATION, revision, rollback,
};
use kube_ctrl::{ControllerManager, DeploymentController, ReplicaSetController};
use serde_json::json;

use crate::support::{eventually, eventually_within, fake_kubelet, fake_kubelet_where, start};

fn manager() -> ControllerManager {
    ControllerManager::new()
        .with(DeploymentController::new())
        .with(ReplicaSetController::new())
}

fn deployment(replicas: i32, image: &str, strategy: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": image}]}
            }
        }
    }))
    .unwrap()
}

fn image(pod: &Pod) -> String {
    pod.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until the rollout of `image` is complete, as `kubectl rollout status` decides.
async fn rolled_out(deployments: &Api<Deployment>, replicas: i32) -> Deployment {
    eventually("rollout complete", || async {
        let d = deployments.get("web").await.unwrap();
        let s = d.status.clone()?;
        let progressing = s
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Progressing")?;
        (s.observed_generation >= d.metadata.generation
            && s.updated_replicas == Some(replicas)
            && s.replicas == Some(replicas)
            && s.available_replicas == Some(replicas)
            && progressing.reason.as_deref() == Some(NEW_RS_AVAILABLE))
        .then_some(d)
    })
    .await
}

/// Watches every pod change and tracks, at every step, the fewest ready pods seen (once armed)
/// and whether pods of two images ever coexisted.
#[derive(Debug, Default)]
struct PodWatch {
    armed: AtomicBool,
    min_ready: AtomicI64,
    mixed: AtomicBool,
}

fn watch_pods(store: Arc<dyn Store>) -> (Arc<PodWatch>, tokio::task::JoinHandle<()>) {
    let state = Arc::new(PodWatch {
        min_ready: AtomicI64::new(i64::MAX),
        ..PodWatch::default()
    });
    let s = state.clone();
    let task = tokio::spawn(async move {
        let mut stream = store
            .watch(
                &GroupKind::POD,
                Some("default"),
                &WatchOptions::from_revision(0),
            )
            .await
            .unwrap();
        let mut pods: BTreeMap<String, Pod> = BTreeMap::new();
        while let Some(Ok(event)) = stream.next().await {
            match event {
                WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                    pods.insert(o.key().name, o.to_typed().unwrap());
                }
                WatchEvent::Deleted(o) => {
                    pods.remove(&o.key().name);
                }
                WatchEvent::Bookmark { .. } => continue,
            }
            let ready = pods.values().filter(|p| is_ready(p)).count() as i64;
            if s.armed.load(Ordering::SeqCst) {
                s.min_ready.fetch_min(ready, Ordering::SeqCst);
            }
            let mut images: Vec<String> = pods.values().map(image).collect();
            images.dedup();
            images.sort();
            images.dedup();
            if images.len() > 1 {
                s.mixed.store(true, Ordering::SeqCst);
            }
        }
    });
    (state, task)
}

async fn replica_sets(store: &Arc<dyn Store>) -> Vec<ReplicaSet> {
    let sets: Api<ReplicaSet> = Api::namespaced(store.clone(), "default");
    sets.list(&Default::default()).await.unwrap().items
}

#[tokio::test]
async fn rolling_update_keeps_minimum_availability_at_every_step_and_rolls_back() {
    let (store, running) = start(manager());
    let kubelet = fake_kubelet(store.clone());
    let (watch, watcher) = watch_pods(store.clone());
    let deployments: Api<Deployment> = Api::namespaced(store.clone(), "default");
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}});
    deployments
        .create(&deployment(4, "web:1", strategy))
        .await
        .unwrap();
    rolled_out(&deployments, 4).await;

    watch.armed.store(true, Ordering::SeqCst);
    deployments
        .patch_merge("web", &json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "web:2"}]}}}}))
        .await
        .unwrap();
    let d = rolled_out(&deployments, 4).await;
    assert_eq!(d.metadata.annotations.unwrap()[REVISION_ANNOTATION], "2");
    let sets = replica_sets(&store).await;
    assert_eq!(sets.len(), 2);
    let old = sets.iter().find(|rs| revision(rs) == 1).unwrap();
    assert_eq!(old.spec.as_ref().unwrap().replicas, Some(0));
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    eventually("only new pods", || async {
        let p = pods.list(&Default::default()).await.unwrap().items;
        (p.len() == 4 && p.iter().all(|p| image(p) == "web:2")).then_some(())
    })
    .await;

    // Roll back to revision 1: its ReplicaSet becomes the newest revision.
    let sets_api: Api<ReplicaSet> = Api::namespaced(store.clone(), "default");
    assert_eq!(
        rollback(&deployments, &sets_api, "web", 0).await.unwrap(),
        1
    );
    let d = rolled_out(&deployments, 4).await;
    assert_eq!(d.metadata.annotations.unwrap()[REVISION_ANNOTATION], "3");
    eventually("only old-template pods again", || async {
        let p = pods.list(&Default::default()).await.unwrap().items;
        (p.len() == 4 && p.iter().all(|p| image(p) == "web:1")).then_some(())
    })
    .await;
    assert_eq!(
        replica_sets(&store).await.len(),
        2,
        "the old set was reused"
    );

    let min = watch.min_ready.load(Ordering::SeqCst);
    eprintln!("fewest ready pods during the rollouts: {min}");
    assert!(
        min >= 3,
        "available pods dropped to {min} (< replicas - maxUnavailable)"
    );
    kubelet.abort();
    watcher.abort();
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn recreate_never_runs_two_templates_at_once() {
    let (store, running) = start(manager());
    let kubelet = fake_kubelet(store.clone());
    let (watch, watcher) = watch_pods(store.clone());
    let deployments: Api<Deployment> = Api::namespaced(store.clone(), "default");
    deployments
        .create(&deployment(3, "web:1", json!({"type": "Recreate"})))
        .await
        .unwrap();
    rolled_out(&deployments, 3).await;
    deployments
        .patch_merge("web", &json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "web:2"}]}}}}))
        .await
        .unwrap();
    rolled_out(&deployments, 3).await;
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let p = pods.list(&Default::default()).await.unwrap().items;
    assert!(p.iter().all(|p| image(p) == "web:2"));
    assert!(
        !watch.mixed.load(Ordering::SeqCst),
        "old and new pods coexisted"
    );
    kubelet.abort();
    watcher.abort();
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn pause_holds_the_rollout_and_history_is_limited() {
    let (store, running) = start(manager());
    let kubelet = fake_kubelet(store.clone());
    let deployments: Api<Deployment> = Api::namespaced(store.clone(), "default");
    let mut d = deployment(2, "web:1", json!({"type": "RollingUpdate"}));
    d.spec.as_mut().unwrap().revision_history_limit = Some(1);
    deployments.create(&d).await.unwrap();
    rolled_out(&deployments, 2).await;

    deployments
        .patch_merge("web", &json!({"spec": {"paused": true, "template": {"spec": {"containers": [{"name": "c", "image": "web:2"}]}}}}))
        .await
        .unwrap();
    eventually("paused condition", || async {
        let s = deployments.get("web").await.unwrap().status?;
        s.conditions?
            .iter()
            .any(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("DeploymentPaused"))
            .then_some(())
    })
    .await;
    assert_eq!(
        replica_sets(&store).await.len(),
        1,
        "no new ReplicaSet while paused"
    );

    deployments
        .patch_merge("web", &json!({"spec": {"paused": false}}))
        .await
        .unwrap();
    rolled_out(&deployments, 2).await;
    for image in ["web:3", "web:4"] {
        deployments
            .patch_merge("web", &json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}}))
            .await
            .unwrap();
        rolled_out(&deployments, 2).await;
    }
    eventually("one old ReplicaSet kept", || async {
        let mut revs: Vec<i64> = replica_sets(&store).await.iter().map(revision).collect();
        revs.sort();
        (revs == vec![3, 4]).then_some(())
    })
    .await;
    kubelet.abort();
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_stuck_rollout_reports_progress_deadline_exceeded() {
    let (store, running) = start(manager());
    let deployments: Api<Deployment> = Api::namespaced(store.clone(), "default");
    let mut d = deployment(1, "web:1", json!({"type": "RollingUpdate"}));
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(1);
    deployments.create(&d).await.unwrap();
    // No kubelet: pods never become ready.
    eventually_within(
        "deadline exceeded",
        std::time::Duration::from_secs(10),
        || async {
            let s = deployments.get("web").await.unwrap().status?;
            let conditions = s.conditions?;
            let c = conditions.iter().find(|c| c.type_ == "Progressing")?;
            let available = conditions.iter().find(|c| c.type_ == "Available")?;
            (c.status == "False"
                && c.reason.as_deref() == Some(PROGRESS_DEADLINE_EXCEEDED)
                && available.status == "False")
                .then_some(())
        },
    )
    .await;
    running.shutdown().await.unwrap();
}

/// `(old, new)` `spec.replicas` once both ReplicaSets exist.
async fn sizes(store: &Arc<dyn Store>) -> Option<(i32, i32)> {
    let sets = replica_sets(store).await;
    let size = |rev| {
        sets.iter()
            .find(|rs| revision(rs) == rev)
            .and_then(|rs| rs.spec.as_ref()?.replicas)
    };
    Some((size(1)?, size(2)?))
}

#[tokio::test]
async fn scaling_mid_rollout_is_shared_out_proportionally() {
    let (store, running) = start(manager());
    // The new image never starts, so the rollout stops part-way.
    let kubelet = fake_kubelet_where(store.clone(), |p| image(p) != "web:bad");
    let deployments: Api<Deployment> = Api::namespaced(store.clone(), "default");
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}});
    deployments
        .create(&deployment(10, "web:1", strategy))
        .await
        .unwrap();
    rolled_out(&deployments, 10).await;
    deployments
        .patch_merge("web", &json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "web:bad"}]}}}}))
        .await
        .unwrap();
    // Kubernetes' documented example: 10 replicas, maxSurge 3, maxUnavailable 2: the rollout
    // stalls with 8 old and 5 new.
    eventually("stalled at 8 old + 5 new", || async {
        (sizes(&store).await? == (8, 5)).then_some(())
    })
    .await;

    // Scaled to 15 mid-rollout: 5 more (18 with the surge), 3 to the old set, 2 to the new.
    deployments
        .patch_merge("web", &json!({"spec": {"replicas": 15}}))
        .await
        .unwrap();
    eventually("11 old + 7 new", || async {
        (sizes(&store).await? == (11, 7)).then_some(())
    })
    .await;
    for rs in replica_sets(&store).await {
        let a = rs.metadata.annotations.unwrap();
        assert_eq!(a[DESIRED_REPLICAS_ANNOTATION], "15");
        assert_eq!(a[MAX_REPLICAS_ANNOTATION], "18");
    }
    // It stays there: the rollout cannot go on while the new pods are unavailable.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(sizes(&store).await, Some((11, 7)));
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    eventually("18 pods", || async {
        (pods.list(&Default::default()).await.unwrap().items.len() == 18).then_some(())
    })
    .await;

    // And back to 10: the same shares come off.
    deployments
        .patch_merge("web", &json!({"spec": {"replicas": 10}}))
        .await
        .unwrap();
    eventually("8 old + 5 new again", || async {
        (sizes(&store).await? == (8, 5)).then_some(())
    })
    .await;
    kubelet.abort();
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_paused_deployment_still_scales() {
    let (store, running) = start(manager());
    let kubelet = fake_kubelet(store.clone());
    let deployments: Api<Deployment> = Api::namespaced(store.clone(), "default");
    deployments
        .create(&deployment(2, "web:1", json!({"type": "RollingUpdate"})))
        .await
        .unwrap();
    rolled_out(&deployments, 2).await;
    deployments
        .patch_merge("web", &json!({"spec": {"paused": true, "replicas": 4}}))
        .await
        .unwrap();
    eventually("scaled while paused", || async {
        let sets = replica_sets(&store).await;
        (sets.len() == 1 && sets[0].spec.as_ref()?.replicas == Some(4)).then_some(())
    })
    .await;
    kubelet.abort();
    running.shutdown().await.unwrap();
}
