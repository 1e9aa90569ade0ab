use kube_core::object::{DynamicObject, GroupKind, ObjectKey, now};
use kube_core::store::Store;
use kube_ctrl::{ControllerManager, DisruptionController};
use serde_json::{Value, json};

use crate::support::{eventually, start};

fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

async fn owner(store: &dyn Store, value: Value) -> (String, String) {
    let created = store.create(object(value)).await.unwrap();
    (
        created.metadata.name.clone().unwrap(),
        created.metadata.uid.clone().unwrap(),
    )
}

fn pod(name: &str, owner: Option<(&str, &str, &str)>, ready: bool) -> DynamicObject {
    let refs = owner.map(|(kind, name, uid)| {
        json!([{"apiVersion": if kind == "Job" { "batch/v1" } else { "apps/v1" }, "kind": kind,
            "name": name, "uid": uid, "controller": true}])
    });
    object(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "d", "labels": {"app": "web"}, "ownerReferences": refs},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
}

fn budget(name: &str, rule: Value) -> DynamicObject {
    let mut spec = json!({"selector": {"matchLabels": {"app": "web"}}});
    if let (Value::Object(spec), Value::Object(rule)) = (&mut spec, rule) {
        spec.extend(rule);
    }
    object(
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": "d"}, "spec": spec}),
    )
}

async fn status(store: &dyn Store, name: &str) -> Option<Value> {
    let pdb = store
        .get(
            &GroupKind::new("policy", "PodDisruptionBudget"),
            &ObjectKey::namespaced("d", name),
        )
        .await
        .ok()?;
    pdb.data.get("status").cloned()
}

#[tokio::test]
async fn budgets_count_healthy_pods_against_the_controllers_scale() {
    let (store, running) = start(ControllerManager::new().with(DisruptionController::new()));
    let (deployment, deployment_uid) = owner(store.as_ref(), json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "d"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}))
    .await;
    let (rs, rs_uid) = owner(store.as_ref(), json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web-1", "namespace": "d", "ownerReferences": [{"apiVersion": "apps/v1",
            "kind": "Deployment", "name": deployment, "uid": deployment_uid, "controller": true}]},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}))
    .await;
    for (name, ready) in [("a", true), ("b", true), ("c", false)] {
        store
            .create(pod(name, Some(("ReplicaSet", &rs, &rs_uid)), ready))
            .await
            .unwrap();
    }
    store
        .create(budget("percent", json!({"maxUnavailable": "34%"})))
        .await
        .unwrap();
    store
        .create(budget("min", json!({"minAvailable": 2})))
        .await
        .unwrap();

    // 3 expected (the Deployment's scale), ceil(34% of 3) = 2 may be unavailable: 1 desired.
    let percent = eventually("percent budget", || async {
        status(store.as_ref(), "percent").await
    })
    .await;
    assert_eq!(percent["expectedPods"], 3);
    assert_eq!(percent["desiredHealthy"], 1);
    assert_eq!(percent["currentHealthy"], 2);
    assert_eq!(percent["disruptionsAllowed"], 1);
    assert_eq!(percent["observedGeneration"], 1);
    assert_eq!(percent["conditions"][0]["type"], "DisruptionAllowed");
    assert_eq!(percent["conditions"][0]["status"], "True");
    assert_eq!(percent["conditions"][0]["reason"], "SufficientPods");
    // minAvailable 2 of 2 healthy: nothing may go.
    let min = eventually("min budget", || async {
        status(store.as_ref(), "min").await
    })
    .await;
    assert_eq!(
        (
            min["desiredHealthy"].clone(),
            min["disruptionsAllowed"].clone()
        ),
        (json!(2), json!(0))
    );
    assert_eq!(min["conditions"][0]["reason"], "InsufficientPods");

    // The third pod becomes ready: one disruption allowed.
    let mut c = store
        .get(&GroupKind::POD, &ObjectKey::namespaced("d", "c"))
        .await
        .unwrap();
    c.data.insert(
        "status".into(),
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
    );
    store.update(c).await.unwrap();
    eventually("ready pod counted", || async {
        (status(store.as_ref(), "min").await?["disruptionsAllowed"] == 1).then_some(())
    })
    .await;

    // An eviction recorded in disruptedPods is not healthy while it is pending.
    let key = ObjectKey::namespaced("d", "min");
    let mut pdb = store
        .get(&GroupKind::new("policy", "PodDisruptionBudget"), &key)
        .await
        .unwrap();
    pdb.data.get_mut("status").unwrap()["disruptedPods"] = json!({"a": now()});
    store.update(pdb).await.unwrap();
    let pending = eventually("pending eviction", || async {
        let s = status(store.as_ref(), "min").await?;
        (s["currentHealthy"] == 2).then_some(s)
    })
    .await;
    assert_eq!(pending["disruptionsAllowed"], 0);
    assert!(pending["disruptedPods"]["a"].is_string(), "{pending}");

    // A pod whose controller has no scale makes a percentage budget fail safe.
    let (job, job_uid) = owner(store.as_ref(), json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "batch", "namespace": "d"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}))
    .await;
    store
        .create(pod("j", Some(("Job", &job, &job_uid)), true))
        .await
        .unwrap();
    let failed = eventually("sync failed", || async {
        let s = status(store.as_ref(), "percent").await?;
        (s["conditions"][0]["reason"] == "SyncFailed").then_some(s)
    })
    .await;
    assert_eq!(failed["disruptionsAllowed"], 0);
    assert_eq!(
        failed["conditions"][0]["message"],
        "found no controllers for pod \"j\""
    );
    running.shutdown().await.unwrap();
}
