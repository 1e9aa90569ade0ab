//! StatefulSets: ordered and parallel pod management, claims and their retention, rolling
//! updates with a partition, OnDelete, revisions and their history limit; DaemonSet history.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod};
use kube_core::GroupKind;
use kube_core::store::{Preconditions, Store};
use kube_core::typed::Api;
use kube_ctrl::{ControllerManager, DaemonSetController, GarbageCollector, StatefulSetController};
use serde_json::{Value, json};

use crate::support::{eventually, eventually_within, fake_kubelet, fake_kubelet_where, start};

fn manager() -> ControllerManager {
    let set = GroupKind::new("apps", "StatefulSet");
    ControllerManager::new()
        .with(StatefulSetController::new())
        .with(GarbageCollector::new(GroupKind::POD).owner(set.clone()))
        .with(
            GarbageCollector::new(GroupKind::new("apps", "ControllerRevision")).owner(set.clone()),
        )
        .with(
            GarbageCollector::new(GroupKind::from_static("", "PersistentVolumeClaim"))
                .owner(set)
                .owner(GroupKind::POD),
        )
}

fn sts(name: &str, replicas: i32, extra: Value) -> StatefulSet {
    let mut spec = json!({
        "replicas": replicas,
        "serviceName": name,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"containers": [{"name": "c", "image": "db:1"}]}},
    });
    if let (Value::Object(spec), Value::Object(extra)) = (&mut spec, extra) {
        spec.extend(extra);
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("sts")
}

/// Pod names present now.
async fn names(pods: &Api<Pod>, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = pods
        .list(&Default::default())
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

fn image(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

async fn images(pods: &Api<Pod>, prefix: &str) -> BTreeMap<String, String> {
    pods.list(&Default::default())
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(prefix))
        })
        .map(|p| (p.metadata.name.clone().unwrap_or_default(), image(&p)))
        .collect()
}

async fn set_image(sets: &Api<StatefulSet>, name: &str, image: &str) {
    sets.patch_merge(
        name,
        &json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}}),
    )
    .await
    .expect("store call");
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Samples until `done`, returning every distinct sample in order (fails after 10 s).
async fn trace<T, F, Fut>(what: &str, mut sample: F, done: impl Fn(&T) -> bool) -> Vec<T>
where
    T: PartialEq,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen: Vec<T> = Vec::new();
    loop {
        let now = sample().await;
        let finished = done(&now);
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        if finished {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A kubelet that makes ready only the pods named in the returned gate.
fn gated_kubelet(
    store: Arc<dyn Store>,
) -> (Arc<Mutex<HashSet<String>>>, tokio::task::JoinHandle<()>) {
    let gate: Arc<Mutex<HashSet<String>>> = Arc::default();
    let allowed = gate.clone();
    let handle = fake_kubelet_where(store, move |p: &Pod| {
        allowed
            .lock()
            .expect("gate")
            .contains(p.metadata.name.as_deref().unwrap_or_default())
    });
    (gate, handle)
}

#[tokio::test]
async fn ordered_ready_creates_in_order_and_removes_in_reverse() {
    let (store, running) = start(manager());
    let (gate, kubelet) = gated_kubelet(store.clone());
    let sets: Api<StatefulSet> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    sets.create(&sts("db", 3, json!({}))).await.unwrap();

    for ordinal in 0..3 {
        let name = format!("db-{ordinal}");
        eventually(&format!("{name} created"), || async {
            pods.get_opt(&name).await.unwrap().map(|_| ())
        })
        .await;
        // Its successor waits while it is not ready.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let expected: Vec<String> = (0..=ordinal).map(|i| format!("db-{i}")).collect();
        assert_eq!(names(&pods, "db-").await, expected);
        gate.lock().unwrap().insert(name);
    }
    let pod = pods.get("db-1").await.unwrap();
    let spec = pod.spec.clone().unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("db-1"));
    assert_eq!(spec.subdomain.as_deref(), Some("db"));
    let labels = pod.metadata.labels.clone().unwrap();
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "db-1");
    assert_eq!(labels["apps.kubernetes.io/pod-index"], "1");
    let set = eventually("status ready 3", || async {
        let set = sets.get("db").await.unwrap();
        let status = set.status.clone()?;
        (status.ready_replicas == Some(3) && status.available_replicas == Some(3)).then_some(set)
    })
    .await;
    let status = set.status.unwrap();
    assert_eq!(status.replicas, 3);
    assert_eq!(status.current_replicas, Some(3));
    assert_eq!(status.updated_replicas, Some(3));
    assert_eq!(status.current_revision, status.update_revision);
    assert_eq!(status.observed_generation, set.metadata.generation);
    assert_eq!(
        labels["controller-revision-hash"],
        status.update_revision.unwrap()
    );

    // Scale down to 1: db-2 goes first, then db-1; never db-1 while db-2 is still there.
    sets.patch_merge("db", &json!({"spec": {"replicas": 1}}))
        .await
        .unwrap();
    let seen = trace(
        "scaled down to db-0",
        || names(&pods, "db-"),
        |now| now == &["db-0"],
    )
    .await;
    assert!(
        !seen
            .iter()
            .any(|s| s.contains(&"db-2".to_string()) && !s.contains(&"db-1".to_string())),
        "db-1 went before db-2: {seen:?}"
    );
    running.shutdown().await.unwrap();
    kubelet.abort();
}

#[tokio::test]
async fn failed_pods_are_recreated_and_start_ordinal_is_honoured() {
    let (store, running) = start(manager());
    let kubelet = fake_kubelet_where(store.clone(), |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Failed")
    });
    let sets: Api<StatefulSet> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    sets.create(&sts("web", 2, json!({"ordinals": {"start": 5}})))
        .await
        .unwrap();
    eventually("web-5 and web-6", || async {
        (names(&pods, "web-").await == ["web-5", "web-6"]).then_some(())
    })
    .await;
    let failed = pods.get("web-5").await.unwrap();
    let uid = failed.metadata.uid.clone();
    pods.patch_merge(
        "web-5",
        &json!({"status": {"phase": "Failed", "conditions": []}}),
    )
    .await
    .unwrap();
    eventually("web-5 recreated", || async {
        let pod = pods.get_opt("web-5").await.unwrap()?;
        (pod.metadata.uid != uid).then_some(())
    })
    .await;
    running.shutdown().await.unwrap();
    kubelet.abort();
}

#[tokio::test]
async fn parallel_creates_and_removes_all_at_once() {
    let (store, running) = start(manager());
    let sets: Api<StatefulSet> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    sets.create(&sts("par", 3, json!({"podManagementPolicy": "Parallel"})))
        .await
        .unwrap();
    // No kubelet: nothing becomes ready, yet every pod is created.
    eventually("all pods", || async {
        (names(&pods, "par-").await == ["par-0", "par-1", "par-2"]).then_some(())
    })
    .await;
    sets.patch_merge("par", &json!({"spec": {"replicas": 0}}))
        .await
        .unwrap();
    eventually("all gone", || async {
        names(&pods, "par-").await.is_empty().then_some(())
    })
    .await;
    running.shutdown().await.unwrap();
}

fn claim_names(claims: &[PersistentVolumeClaim]) -> Vec<String> {
    let mut names: Vec<String> = claims
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    names.sort();
    names
}

async fn claims_of(api: &Api<PersistentVolumeClaim>, set: &str) -> Vec<PersistentVolumeClaim> {
    api.list(&Default::default())
        .await
        .expect("store call")
        .items
        .into_iter()
        .filter(|c| {
            c.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.contains(&format!("-{set}-")))
        })
        .collect()
}

fn claim_templates(policy: Value) -> Value {
    json!({
        "volumeClaimTemplates": [{"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
        "persistentVolumeClaimRetentionPolicy": policy,
    })
}

#[tokio::test]
async fn claims_are_created_before_pods_and_deleted_per_policy() {
    let (store, running) = start(manager());
    let kubelet = fake_kubelet(store.clone());
    let sets: Api<StatefulSet> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(store.clone(), "default");

    // Delete on both: claims go with a scale-down and with the set.
    let policy = json!({"whenDeleted": "Delete", "whenScaled": "Delete"});
    sets.create(&sts("del", 2, claim_templates(policy)))
        .await
        .unwrap();
    eventually("del pods", || async {
        (names(&pods, "del-").await == ["del-0", "del-1"]).then_some(())
    })
    .await;
    let pod = pods.get("del-1").await.unwrap();
    let volume = &pod.spec.unwrap().volumes.unwrap()[0];
    assert_eq!(volume.name, "data");
    assert_eq!(
        volume.persistent_volume_claim.as_ref().unwrap().claim_name,
        "data-del-1"
    );
    let made = claims_of(&claims, "del").await;
    assert_eq!(claim_names(&made), ["data-del-0", "data-del-1"]);
    for claim in &made {
        // Created before the pod, labelled with the selector, owned by the set.
        assert!(claim.metadata.creation_timestamp <= pod.metadata.creation_timestamp);
        assert_eq!(claim.metadata.labels.as_ref().unwrap()["app"], "del");
        let refs = claim.metadata.owner_references.clone().unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].kind, "StatefulSet");
    }
    sets.patch_merge("del", &json!({"spec": {"replicas": 1}}))
        .await
        .unwrap();
    eventually("data-del-1 collected with its pod", || async {
        (claim_names(&claims_of(&claims, "del").await) == ["data-del-0"]).then_some(())
    })
    .await;
    sets.delete("del", &Preconditions::default()).await.unwrap();
    eventually("set's pods and claims collected", || async {
        (names(&pods, "del-").await.is_empty() && claims_of(&claims, "del").await.is_empty())
            .then_some(())
    })
    .await;

    // Retain (the default): claims outlive a scale-down and the set, with no owners.
    sets.create(&sts("keep", 2, claim_templates(json!({}))))
        .await
        .unwrap();
    eventually("keep pods", || async {
        (names(&pods, "keep-").await == ["keep-0", "keep-1"]).then_some(())
    })
    .await;
    sets.patch_merge("keep", &json!({"spec": {"replicas": 1}}))
        .await
        .unwrap();
    eventually("keep scaled down", || async {
        (names(&pods, "keep-").await == ["keep-0"]).then_some(())
    })
    .await;
    sets.delete("keep", &Preconditions::default())
        .await
        .unwrap();
    eventually("keep pods collected", || async {
        names(&pods, "keep-").await.is_empty().then_some(())
    })
    .await;
    let kept = claims_of(&claims, "keep").await;
    assert_eq!(claim_names(&kept), ["data-keep-0", "data-keep-1"]);
    assert!(kept.iter().all(|c| c.metadata.owner_references.is_none()));
    running.shutdown().await.unwrap();
    kubelet.abort();
}

async fn revisions(store: &Arc<dyn Store>, prefix: &str) -> Vec<ControllerRevision> {
    let api: Api<ControllerRevision> = Api::namespaced(store.clone(), "default");
    let mut revisions: Vec<ControllerRevision> = api
        .list(&Default::default())
        .await
        .expect("store call")
        .items
        .into_iter()
        .filter(|r| {
            r.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    revisions.sort_by_key(|r| r.revision);
    revisions
}

#[tokio::test]
async fn rolling_update_goes_down_to_the_partition_in_reverse_order() {
    let (store, running) = start(manager());
    let kubelet = fake_kubelet(store.clone());
    let sets: Api<StatefulSet> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let strategy =
        json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}});
    sets.create(&sts("roll", 3, strategy)).await.unwrap();
    eventually("three ready", || async {
        let status = sets.get("roll").await.unwrap().status?;
        (status.ready_replicas == Some(3)).then_some(())
    })
    .await;
    set_image(&sets, "roll", "db:2").await;
    let want = map(&[("roll-0", "db:1"), ("roll-1", "db:2"), ("roll-2", "db:2")]);
    let seen = trace(
        "roll-2 and roll-1 updated, roll-0 kept",
        || images(&pods, "roll-"),
        |now| now == &want,
    )
    .await;
    // Highest ordinal first: roll-1 never ran db:2 while roll-2 still ran db:1.
    assert!(
        !seen
            .iter()
            .any(|s| s.get("roll-1").map(String::as_str) == Some("db:2")
                && s.get("roll-2").map(String::as_str) == Some("db:1")),
        "{seen:?}"
    );
    let status = eventually("partitioned status", || async {
        let status = sets.get("roll").await.unwrap().status?;
        (status.updated_replicas == Some(2) && status.ready_replicas == Some(3)).then_some(status)
    })
    .await;
    assert_eq!(status.current_replicas, Some(1));
    assert_ne!(status.current_revision, status.update_revision);
    // Staying above the partition: the pod deleted below it comes back at the old revision.
    pods.delete("roll-0", &Preconditions::default())
        .await
        .unwrap();
    eventually("roll-0 back at db:1", || async {
        let pod = pods.get_opt("roll-0").await.unwrap()?;
        (image(&pod) == "db:1" && pod.metadata.deletion_timestamp.is_none()).then_some(())
    })
    .await;

    sets.patch_merge(
        "roll",
        &json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}}),
    )
    .await
    .unwrap();
    eventually("all updated, rollout complete", || async {
        let status = sets.get("roll").await.unwrap().status?;
        let done = status.updated_replicas == Some(3)
            && status.current_replicas == Some(3)
            && status.current_revision == status.update_revision
            && status.ready_replicas == Some(3);
        (done && images(&pods, "roll-").await.values().all(|i| i == "db:2")).then_some(())
    })
    .await;
    running.shutdown().await.unwrap();
    kubelet.abort();
}

#[tokio::test]
async fn on_delete_replaces_only_deleted_pods() {
    let (store, running) = start(manager());
    let kubelet = fake_kubelet(store.clone());
    let sets: Api<StatefulSet> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    sets.create(&sts(
        "od",
        2,
        json!({"updateStrategy": {"type": "OnDelete"}}),
    ))
    .await
    .unwrap();
    eventually("two ready", || async {
        let status = sets.get("od").await.unwrap().status?;
        (status.ready_replicas == Some(2)).then_some(())
    })
    .await;
    set_image(&sets, "od", "db:2").await;
    eventually("new update revision", || async {
        let status = sets.get("od").await.unwrap().status?;
        (status.update_revision != status.current_revision).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        images(&pods, "od-").await,
        map(&[("od-0", "db:1"), ("od-1", "db:1")])
    );
    pods.delete("od-1", &Preconditions::default())
        .await
        .unwrap();
    eventually("od-1 replaced at db:2", || async {
        (images(&pods, "od-").await == map(&[("od-0", "db:1"), ("od-1", "db:2")])).then_some(())
    })
    .await;
    let status = eventually("one updated", || async {
        let status = sets.get("od").await.unwrap().status?;
        (status.updated_replicas == Some(1) && status.ready_replicas == Some(2)).then_some(status)
    })
    .await;
    assert_eq!(status.current_replicas, Some(1));
    running.shutdown().await.unwrap();
    kubelet.abort();
}

#[tokio::test]
async fn revisions_are_numbered_reused_on_rollback_and_trimmed() {
    let (store, running) = start(manager());
    let kubelet = fake_kubelet(store.clone());
    let sets: Api<StatefulSet> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    sets.create(&sts("hist", 1, json!({"revisionHistoryLimit": 2})))
        .await
        .unwrap();
    let rollout = |image: &'static str| {
        let sets = sets.clone();
        let pods = pods.clone();
        async move {
            eventually_within(
                &format!("rolled out {image}"),
                Duration::from_secs(20),
                || async {
                    let status = sets.get("hist").await.unwrap().status?;
                    let done = status.current_revision == status.update_revision
                        && status.ready_replicas == Some(1)
                        && status.observed_generation
                            == sets.get("hist").await.unwrap().metadata.generation;
                    (done && images(&pods, "hist-").await == map(&[("hist-0", image)]))
                        .then_some(())
                },
            )
            .await;
        }
    };
    rollout("db:1").await;
    let first = revisions(&store, "hist-").await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].revision, 1);
    let data = first[0].data.as_ref().unwrap().0.clone();
    assert_eq!(data["spec"]["template"]["$patch"], "replace");
    assert_eq!(
        data["spec"]["template"]["spec"]["containers"][0]["image"],
        "db:1"
    );
    let owner = first[0].metadata.owner_references.clone().unwrap();
    assert_eq!(owner[0].kind, "StatefulSet");
    assert_eq!(owner[0].controller, Some(true));
    assert_eq!(first[0].metadata.labels.as_ref().unwrap()["app"], "hist");

    set_image(&sets, "hist", "db:2").await;
    rollout("db:2").await;
    // Back to db:1: the first revision is renumbered, not copied.
    set_image(&sets, "hist", "db:1").await;
    rollout("db:1").await;
    let after = eventually("first revision renumbered", || async {
        let now = revisions(&store, "hist-").await;
        (now.last().map(|r| r.revision) == Some(3)).then_some(now)
    })
    .await;
    assert_eq!(after.len(), 2);
    assert_eq!(after[1].metadata.name, first[0].metadata.name);

    for image in ["db:3", "db:4", "db:5"] {
        set_image(&sets, "hist", image).await;
        rollout(image).await;
    }
    // Limit 2 plus the live (current = update) revision.
    let trimmed = eventually("history trimmed", || async {
        let now = revisions(&store, "hist-").await;
        (now.len() == 3).then_some(now)
    })
    .await;
    let numbers: Vec<i64> = trimmed.iter().map(|r| r.revision).collect();
    assert_eq!(numbers, [4, 5, 6]);
    running.shutdown().await.unwrap();
    kubelet.abort();
}

#[tokio::test]
async fn daemonsets_record_their_templates_as_revisions() {
    let (store, running) = start(
        ControllerManager::new()
            .with(DaemonSetController::new())
            .with(GarbageCollector::new(GroupKind::POD).owner(GroupKind::new("apps", "DaemonSet"))),
    );
    let kubelet = fake_kubelet(store.clone());
    let nodes: Api<Node> = Api::all(store.clone());
    nodes
        .create(&serde_json::from_value(json!({"metadata": {"name": "dsh-n1"}})).unwrap())
        .await
        .unwrap();
    let sets: Api<DaemonSet> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "dsh"},
        "spec": {"selector": {"matchLabels": {"app": "dsh"}},
                 "template": {"metadata": {"labels": {"app": "dsh"}},
                              "spec": {"containers": [{"name": "c", "image": "agent:1"}]}}}
    }))
    .unwrap();
    sets.create(&ds).await.unwrap();
    let pod_image = || async {
        pods.list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                let hash = p.metadata.labels.as_ref().unwrap()["controller-revision-hash"].clone();
                (image(p), hash)
            })
            .collect::<Vec<_>>()
    };
    let (_, hash) = eventually("daemon pod", || async {
        pod_image().await.into_iter().find(|(i, _)| i == "agent:1")
    })
    .await;
    let first = revisions(&store, "dsh-").await;
    assert_eq!(first.len(), 1);
    assert_eq!(
        first[0].metadata.name.as_deref(),
        Some(format!("dsh-{hash}").as_str())
    );
    assert_eq!(first[0].revision, 1);

    sets.patch_merge(
        "dsh",
        &json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "agent:2"}]}}}}),
    )
    .await
    .unwrap();
    eventually("agent:2 rolled out", || async {
        (pod_image()
            .await
            .iter()
            .map(|(i, _)| i.as_str())
            .collect::<Vec<_>>()
            == ["agent:2"])
        .then_some(())
    })
    .await;
    // Rolling back with the revision's own data, as `kubectl rollout undo` sends it.
    let data = first[0].data.as_ref().unwrap().0.clone();
    let template = data["spec"]["template"].clone();
    let mut template = template.as_object().unwrap().clone();
    template.remove("$patch");
    sets.patch_merge("dsh", &json!({"spec": {"template": template}}))
        .await
        .unwrap();
    eventually("agent:1 back as revision 3", || async {
        let now = revisions(&store, "dsh-").await;
        let back = pod_image().await == [("agent:1".to_string(), hash.clone())];
        (back
            && now.len() == 2
            && now[1].metadata.name == first[0].metadata.name
            && now[1].revision == 3)
            .then_some(())
    })
    .await;
    running.shutdown().await.unwrap();
    kubelet.abort();
}
