use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube_core::GroupKind;
use kube_core::object::ObjectKey;
use kube_core::store::{Store, WatchEvent, WatchOptions};
use kube_core::typed::Api;
use kube_ctrl::deletion::{self, Propagation};
use kube_ctrl::{
    ControllerManager, DeletionFinalizer, DeploymentController, GarbageCollector,
    NamespaceController, ReplicaSetController, delete_namespace,
};
use serde_json::json;

use crate::support::{eventually, start};

fn manager() -> ControllerManager {
    ControllerManager::new()
        .with(ReplicaSetController::new())
        .with(GarbageCollector::new(GroupKind::POD).owner(GroupKind::REPLICA_SET))
        .with(DeletionFinalizer::new(GroupKind::REPLICA_SET).dependent(GroupKind::POD))
        .with(NamespaceController::new())
}

fn replica_set(namespace: &str) -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}}}
    }))
    .unwrap()
}

/// Revisions of deletions of `kind` objects from `revision` on, collected in the background.
fn deletions(
    store: &Arc<dyn Store>,
    kind: GroupKind,
    revision: u64,
) -> tokio::sync::mpsc::UnboundedReceiver<(String, u64)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let store = store.clone();
    tokio::spawn(async move {
        let mut stream = store
            .watch(&kind, None, &WatchOptions::from_revision(revision))
            .await
            .unwrap();
        while let Some(Ok(event)) = stream.next().await {
            if let WatchEvent::Deleted(o) = event {
                let _ = tx.send((o.key().name, o.revision().unwrap()));
            }
        }
    });
    rx
}

fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, u64)>) -> Vec<u64> {
    let mut out = Vec::new();
    while let Ok((_, r)) = rx.try_recv() {
        out.push(r);
    }
    out
}

async fn with_two_pods(store: &Arc<dyn Store>) -> (Api<ReplicaSet>, Api<Pod>) {
    let sets: Api<ReplicaSet> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    sets.create(&replica_set("default")).await.unwrap();
    eventually("2 pods", || async {
        (pods.list(&Default::default()).await.unwrap().items.len() == 2).then_some(())
    })
    .await;
    (sets, pods)
}

#[tokio::test]
async fn cascading_deletion_in_all_three_modes() {
    let (store, running) = start(manager());
    let key = ObjectKey::namespaced("default", "web");

    for mode in [
        Propagation::Foreground,
        Propagation::Background,
        Propagation::Orphan,
    ] {
        let (sets, pods) = with_two_pods(&store).await;
        let from = store.current_revision().await.unwrap();
        let mut rs_deleted = deletions(&store, GroupKind::REPLICA_SET, from);
        let mut pods_deleted = deletions(&store, GroupKind::POD, from);
        deletion::delete(&store, &GroupKind::REPLICA_SET, &key, mode)
            .await
            .unwrap();
        eventually("owner gone", || async {
            sets.get_opt("web").await.unwrap().is_none().then_some(())
        })
        .await;
        match mode {
            Propagation::Orphan => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let left = pods.list(&Default::default()).await.unwrap().items;
                assert_eq!(left.len(), 2, "orphans kept");
                assert!(left.iter().all(|p| {
                    p.metadata
                        .owner_references
                        .clone()
                        .unwrap_or_default()
                        .is_empty()
                }));
                for p in left {
                    pods.delete(p.metadata.name.as_deref().unwrap(), &Default::default())
                        .await
                        .unwrap();
                }
            }
            _ => {
                eventually("dependents gone", || async {
                    pods.list(&Default::default())
                        .await
                        .unwrap()
                        .items
                        .is_empty()
                        .then_some(())
                })
                .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let owner = drain(&mut rs_deleted);
                let dependents = drain(&mut pods_deleted);
                assert_eq!((owner.len(), dependents.len()), (1, 2), "{mode:?}");
                if mode == Propagation::Foreground {
                    assert!(dependents.iter().all(|d| *d < owner[0]), "dependents first");
                } else {
                    assert!(dependents.iter().all(|d| *d > owner[0]), "owner first");
                }
            }
        }
    }
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_contents_then_itself() {
    let (store, running) = start(manager());
    let namespaces: Api<Namespace> = Api::all(store.clone());
    namespaces
        .create(&serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap())
        .await
        .unwrap();
    let sets: Api<ReplicaSet> = Api::namespaced(store.clone(), "team");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "team");
    let maps: Api<ConfigMap> = Api::namespaced(store.clone(), "team");
    sets.create(&replica_set("team")).await.unwrap();
    maps.create(&serde_json::from_value(json!({"metadata": {"name": "cfg"}})).unwrap())
        .await
        .unwrap();
    // Something in another namespace must survive.
    let others: Api<ConfigMap> = Api::namespaced(store.clone(), "default");
    others
        .create(&serde_json::from_value(json!({"metadata": {"name": "keep"}})).unwrap())
        .await
        .unwrap();
    eventually("2 pods", || async {
        (pods.list(&Default::default()).await.unwrap().items.len() == 2).then_some(())
    })
    .await;
    let from = store.current_revision().await.unwrap();
    let mut ns_deleted = deletions(&store, GroupKind::from_static("", "Namespace"), from);
    let mut pods_deleted = deletions(&store, GroupKind::POD, from);

    delete_namespace(&store, "team").await.unwrap();
    eventually("namespace gone", || async {
        namespaces
            .get_opt("team")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        sets.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        pods.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        maps.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(others.get_opt("keep").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ns = drain(&mut ns_deleted);
    let pod_revisions = drain(&mut pods_deleted);
    assert!(!pod_revisions.is_empty());
    assert!(
        pod_revisions.iter().all(|p| *p < ns[0]),
        "contents before the namespace"
    );
    running.shutdown().await.unwrap();
}

fn deployment_manager() -> ControllerManager {
    let deployment = GroupKind::of::<Deployment>();
    ControllerManager::new()
        .with(DeploymentController::new())
        .with(ReplicaSetController::new())
        .with(GarbageCollector::new(GroupKind::POD).owner(GroupKind::REPLICA_SET))
        .with(
            DeletionFinalizer::new(deployment)
                .dependent(GroupKind::REPLICA_SET)
                .dependent(GroupKind::POD)
                .dependent(GroupKind::of::<ConfigMap>()),
        )
        .with(DeletionFinalizer::new(GroupKind::REPLICA_SET).dependent(GroupKind::POD))
}

/// A Deployment of 2 replicas, once its 2 pods exist.
async fn deployment_with_pods(store: &Arc<dyn Store>) -> (Api<Deployment>, Api<Pod>) {
    let deployments: Api<Deployment> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    deployments
        .create(
            &serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}},
                                      "spec": {"containers": [{"name": "c"}]}}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    eventually("2 pods", || async {
        (pods.list(&Default::default()).await.unwrap().items.len() == 2).then_some(())
    })
    .await;
    (deployments, pods)
}

/// Revisions at which ReplicaSets were marked for foreground deletion.
fn foreground_marks(
    store: &Arc<dyn Store>,
    revision: u64,
) -> tokio::sync::mpsc::UnboundedReceiver<(String, u64)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let store = store.clone();
    tokio::spawn(async move {
        let mut stream = store
            .watch(
                &GroupKind::REPLICA_SET,
                None,
                &WatchOptions::from_revision(revision),
            )
            .await
            .unwrap();
        while let Some(Ok(event)) = stream.next().await {
            if let WatchEvent::Modified(o) = event {
                let marked = o.metadata.deletion_timestamp.is_some()
                    && o.metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| f == deletion::FOREGROUND);
                if marked {
                    let _ = tx.send((o.key().name, o.revision().unwrap()));
                }
            }
        }
    });
    rx
}

#[tokio::test]
async fn foreground_deletion_is_recursive_grandchildren_then_children_then_owner() {
    let (store, running) = start(deployment_manager());
    let (deployments, pods) = deployment_with_pods(&store).await;
    let sets: Api<ReplicaSet> = Api::namespaced(store.clone(), "default");
    let from = store.current_revision().await.unwrap();
    let mut owner_deleted = deletions(&store, GroupKind::of::<Deployment>(), from);
    let mut rs_deleted = deletions(&store, GroupKind::REPLICA_SET, from);
    let mut pods_deleted = deletions(&store, GroupKind::POD, from);
    let mut rs_marked = foreground_marks(&store, from);

    deletion::delete(
        &store,
        &GroupKind::of::<Deployment>(),
        &ObjectKey::namespaced("default", "web"),
        Propagation::Foreground,
    )
    .await
    .unwrap();
    eventually("owner gone", || async {
        deployments
            .get_opt("web")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        sets.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        pods.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let owner = drain(&mut owner_deleted);
    let children = drain(&mut rs_deleted);
    let grandchildren = drain(&mut pods_deleted);
    let marked = drain(&mut rs_marked);
    assert_eq!(
        (owner.len(), children.len(), grandchildren.len()),
        (1, 1, 2)
    );
    assert!(!marked.is_empty(), "the ReplicaSet went in foreground");
    assert!(
        grandchildren
            .iter()
            .all(|p| marked[0] < *p && *p < children[0]),
        "the ReplicaSet is marked, then its pods go, then it: {marked:?} {grandchildren:?} {children:?}"
    );
    assert!(
        children[0] < owner[0],
        "the ReplicaSet before the Deployment"
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn foreground_deletion_waits_only_for_dependents_that_block_it() {
    let (store, running) = start(deployment_manager());
    let (deployments, _pods) = deployment_with_pods(&store).await;
    let owner = deployments.get("web").await.unwrap();
    let uid = owner.metadata.uid.clone().unwrap();
    // Two dependents already being deleted by someone else (a finalizer we do not run): one
    // blocks the owner's deletion, one does not.
    let maps: Api<ConfigMap> = Api::namespaced(store.clone(), "default");
    for (name, block) in [("blocking", true), ("free", false)] {
        let created = maps
            .create(
                &serde_json::from_value(json!({
                    "metadata": {"name": name, "ownerReferences": [{
                        "apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                        "uid": uid, "blockOwnerDeletion": block}]}
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        let mut held = created.clone();
        held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
        held.metadata.deletion_timestamp = Some(kube_core::object::now());
        maps.replace(&held).await.unwrap();
    }

    deletion::delete(
        &store,
        &GroupKind::of::<Deployment>(),
        &ObjectKey::namespaced("default", "web"),
        Propagation::Foreground,
    )
    .await
    .unwrap();
    let sets: Api<ReplicaSet> = Api::namespaced(store.clone(), "default");
    eventually("ReplicaSets gone", || async {
        sets.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        deployments.get_opt("web").await.unwrap().is_some(),
        "held by the blocking dependent"
    );
    // Its other finalizer done, the blocking dependent goes; then so does the owner.
    maps.delete("blocking", &Default::default()).await.unwrap();
    eventually("owner gone", || async {
        deployments
            .get_opt("web")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        maps.get_opt("free").await.unwrap().is_some(),
        "a dependent being deleted by someone else is left to them"
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn orphaning_with_the_default_finalizer_keeps_the_pods_without_the_reference() {
    // As `with_default_controllers` composes it: no dependent kinds named.
    let (store, running) = start(
        ControllerManager::new()
            .with(ReplicaSetController::new())
            .with(GarbageCollector::new(GroupKind::POD).owner(GroupKind::REPLICA_SET))
            .with(DeletionFinalizer::new(GroupKind::REPLICA_SET)),
    );
    let (sets, pods) = with_two_pods(&store).await;
    let key = ObjectKey::namespaced("default", "web");
    deletion::delete(&store, &GroupKind::REPLICA_SET, &key, Propagation::Orphan)
        .await
        .unwrap();
    eventually("owner gone", || async {
        sets.get_opt("web").await.unwrap().is_none().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let left = pods.list(&Default::default()).await.unwrap().items;
    assert_eq!(left.len(), 2, "orphans kept");
    assert!(
        left.iter().all(|p| p.metadata.owner_references.is_none()),
        "{left:?}"
    );
    running.shutdown().await.unwrap();
}
