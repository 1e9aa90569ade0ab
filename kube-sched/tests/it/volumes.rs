//! VolumeBinding and VolumeRestrictions: in the framework, and in the scheduling loop, which
//! writes the selected node on a claim and binds the pod once the claim is bound.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube_core::orchestrator::Orchestrator;
use kube_core::store::Store;
use kube_core::typed::Api;
use kube_sched::framework::{Cluster, Framework};
use kube_sched::plugins::volume_binding::{
    REASON_BIND_CONFLICT, REASON_NODE_CONFLICT, REASON_UNBOUND_IMMEDIATE, SELECTED_NODE,
};
use kube_sched::plugins::volume_restrictions::REASON_RWOP_CONFLICT;
use kube_sched::{DefaultScheduler, SchedulingLoop};
use kube_store::MemStore;
use serde_json::{Value, json};

use crate::support::{bound, eventually, node, pod};

fn host(name: &str) -> k8s_openapi::api::core::v1::Node {
    node(
        name,
        "4",
        "8Gi",
        "110",
        json!({"kubernetes.io/hostname": name}),
    )
}

fn class(name: &str, mode: &str, provisioner: &str) -> StorageClass {
    serde_json::from_value(
        json!({"metadata": {"name": name}, "provisioner": provisioner,
        "volumeBindingMode": mode}),
    )
    .unwrap()
}

fn claim(name: &str, class: &str, modes: Value, volume: Option<&str>) -> PersistentVolumeClaim {
    serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"storageClassName": class, "accessModes": modes, "volumeName": volume,
            "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .unwrap()
}

fn local_volume(name: &str, class: &str, on: &str) -> PersistentVolume {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": class, "local": {"path": "/mnt/disk"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [on]}]}]}}},
        "status": {"phase": "Available"}}))
    .unwrap()
}

fn with_claim(name: &str, claim: &str) -> Pod {
    pod(
        name,
        json!({}),
        json!({"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}),
    )
}

fn cluster() -> Cluster {
    let mut c = Cluster::from_objects([host("n1"), host("n2"), host("n3")], []).unwrap();
    let v = c.volumes_mut();
    v.set_class(class(
        "wait",
        "WaitForFirstConsumer",
        "kubernetes.io/no-provisioner",
    ));
    v.set_class(class(
        "local-path",
        "WaitForFirstConsumer",
        "rancher.io/local-path",
    ));
    v.set_class(class("now", "Immediate", "example.com/x"));
    v.set_volume(local_volume("on-n2", "wait", "n2"));
    c
}

#[test]
fn bound_claims_follow_their_volume_and_unbound_ones_find_a_node_that_fits() {
    let framework = Framework::new();
    let mut c = cluster();
    // Bound to a volume on n2: only n2.
    let mut bound_claim = claim("bound", "wait", json!(["ReadWriteOnce"]), Some("on-n2"));
    bound_claim.status = serde_json::from_value(json!({"phase": "Bound"})).unwrap();
    c.volumes_mut().set_claim(bound_claim);
    let placed = framework.place(&mut c, with_claim("a", "bound")).unwrap();
    assert_eq!(placed.node, "n2");

    // Unbound, no provisioner: the only Available volume decides.
    c.volumes_mut()
        .set_claim(claim("static", "wait", json!(["ReadWriteOnce"]), None));
    let placed = framework.place(&mut c, with_claim("b", "static")).unwrap();
    assert_eq!(placed.node, "n2");

    // Unbound, nothing available and nothing provisions: every node is rejected.
    c.volumes_mut()
        .set_claim(claim("none", "wait", json!(["ReadWriteMany"]), None));
    let err = framework
        .place(&mut c, with_claim("c", "none"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "0/3 nodes are available: 3 {REASON_BIND_CONFLICT}."
        )),
        "{err}"
    );

    // Provisionable: any node.
    c.volumes_mut()
        .set_claim(claim("dyn", "local-path", json!(["ReadWriteOnce"]), None));
    assert!(framework.place(&mut c, with_claim("d", "dyn")).is_ok());

    // A bound volume whose node is gone.
    c.volumes_mut()
        .set_volume(local_volume("on-n9", "wait", "n9"));
    c.volumes_mut().set_claim(claim(
        "far",
        "wait",
        json!(["ReadWriteOnce"]),
        Some("on-n9"),
    ));
    let err = framework
        .place(&mut c, with_claim("e", "far"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "0/3 nodes are available: 3 {REASON_NODE_CONFLICT}."
        )),
        "{err}"
    );

    // Immediate claims must be bound before the pod is scheduled; missing claims are named.
    c.volumes_mut()
        .set_claim(claim("later", "now", json!(["ReadWriteOnce"]), None));
    let err = framework
        .place(&mut c, with_claim("f", "later"))
        .unwrap_err()
        .to_string();
    assert!(err.contains(REASON_UNBOUND_IMMEDIATE), "{err}");
    let err = framework
        .place(&mut c, with_claim("g", "missing"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("persistentvolumeclaim \"missing\" not found"),
        "{err}"
    );
}

#[test]
fn a_read_write_once_pod_claim_is_used_by_one_pod() {
    let framework = Framework::new();
    let mut c = cluster();
    let mut rwop = claim(
        "solo",
        "local-path",
        json!(["ReadWriteOncePod"]),
        Some("pv-solo"),
    );
    rwop.status = serde_json::from_value(json!({"phase": "Bound"})).unwrap();
    c.volumes_mut().set_claim(rwop);
    c.volumes_mut().set_volume(
        serde_json::from_value(json!({"metadata": {"name": "pv-solo"},
        "spec": {"capacity": {"storage": "1Gi"}, "hostPath": {"path": "/x"}}}))
        .unwrap(),
    );
    let first = with_claim("first", "solo");
    c.set_pod((*bound(first, "n1")).clone()).unwrap();
    let err = framework
        .place(&mut c, with_claim("second", "solo"))
        .unwrap_err()
        .to_string();
    assert!(err.contains(REASON_RWOP_CONFLICT), "{err}");
}

#[tokio::test]
async fn the_loop_selects_a_node_for_waiting_claims_and_binds_once_they_are_bound() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let running = Orchestrator::builder()
        .store(store.clone())
        .scheduler(SchedulingLoop::new(Arc::new(DefaultScheduler::new())))
        .build()
        .unwrap()
        .start();
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(store.clone());
    let classes: Api<StorageClass> = Api::all(store.clone());
    let volumes: Api<PersistentVolume> = Api::all(store.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    for n in ["n1", "n2", "n3"] {
        nodes.create(&host(n)).await.unwrap();
    }
    classes
        .create(&class(
            "local-path",
            "WaitForFirstConsumer",
            "rancher.io/local-path",
        ))
        .await
        .unwrap();
    classes
        .create(&class(
            "wait",
            "WaitForFirstConsumer",
            "kubernetes.io/no-provisioner",
        ))
        .await
        .unwrap();
    let mut dynamic = claim("dyn", "local-path", json!(["ReadWriteOnce"]), None);
    dynamic.metadata.uid = None;
    claims.create(&dynamic).await.unwrap();
    pods.create(&with_claim("web", "dyn")).await.unwrap();

    // The scheduler writes the node on the claim and waits; the pod is not bound yet.
    let selected = eventually("selected node", Duration::from_secs(5), || async {
        let c = claims.get("dyn").await.unwrap();
        c.metadata.annotations?.get(SELECTED_NODE).cloned()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        pods.get("web")
            .await
            .unwrap()
            .spec
            .unwrap()
            .node_name
            .is_none(),
        "waits for the claim"
    );
    // What the PV controller and the provisioner would do.
    let mut c = claims.get("dyn").await.unwrap();
    c.spec.as_mut().unwrap().volume_name = Some("pvc-dyn".into());
    claims.replace(&c).await.unwrap();
    let placed = eventually("pod bound", Duration::from_secs(5), || async {
        pods.get("web").await.unwrap().spec?.node_name
    })
    .await;
    assert_eq!(placed, selected);

    // A static local volume: the scheduler pre-binds it (claimRef) and the pod goes to its node.
    volumes
        .create(&local_volume("disk-n3", "wait", "n3"))
        .await
        .unwrap();
    let mut fixed = claim("fixed", "wait", json!(["ReadWriteOnce"]), None);
    fixed.metadata.uid = None;
    claims.create(&fixed).await.unwrap();
    pods.create(&with_claim("db", "fixed")).await.unwrap();
    let reference = eventually("claimRef", Duration::from_secs(5), || async {
        volumes.get("disk-n3").await.unwrap().spec?.claim_ref
    })
    .await;
    assert_eq!(reference.name.as_deref(), Some("fixed"));
    let mut c = claims.get("fixed").await.unwrap();
    c.spec.as_mut().unwrap().volume_name = Some("disk-n3".into());
    claims.replace(&c).await.unwrap();
    let placed = eventually("db bound", Duration::from_secs(5), || async {
        pods.get("db").await.unwrap().spec?.node_name
    })
    .await;
    assert_eq!(placed, "n3");

    // Nothing fits: the pod stays pending with Kubernetes' message.
    let mut none = claim("none", "wait", json!(["ReadWriteMany"]), None);
    none.metadata.uid = None;
    claims.create(&none).await.unwrap();
    pods.create(&with_claim("stuck", "none")).await.unwrap();
    let message = eventually("unschedulable", Duration::from_secs(5), || async {
        let p = pods.get("stuck").await.unwrap();
        p.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled")?
            .message
    })
    .await;
    assert_eq!(
        message,
        format!("0/3 nodes are available: 3 {REASON_BIND_CONFLICT}.")
    );
    running.shutdown().await.unwrap();
}
