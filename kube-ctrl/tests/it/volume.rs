//! The PV controller, protection finalizers and the local-path provisioner over a MemStore.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube_core::object::{GroupKind, ObjectKey};
use kube_core::store::Store;
use kube_core::typed::Api;
use kube_ctrl::ControllerManager;
use kube_ctrl::volume::{
    LocalPathProvisioner, PV_PROTECTION, PVC_PROTECTION, SELECTED_NODE, local_path_storage_class,
    with_provisioner, with_volume_controllers,
};
use serde_json::json;

use crate::support::{eventually, start};

fn volume(name: &str, size: &str, class: &str, policy: &str) -> PersistentVolume {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": class, "persistentVolumeReclaimPolicy": policy,
            "hostPath": {"path": format!("/tmp/{name}")}}}))
    .expect("volume")
}

fn claim(name: &str, size: &str, class: Option<&str>) -> PersistentVolumeClaim {
    let mut spec = json!({"accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": size}}});
    if let Some(class) = class {
        spec["storageClassName"] = json!(class);
    }
    serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec}),
    )
    .expect("claim")
}

fn phase_of_claim(c: &PersistentVolumeClaim) -> &str {
    c.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn phase_of_volume(v: &PersistentVolume) -> &str {
    v.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

async fn bound_claim(claims: &Api<PersistentVolumeClaim>, name: &str) -> PersistentVolumeClaim {
    eventually(&format!("claim {name} bound"), || async {
        let c = claims.get(name).await.expect("claim");
        (phase_of_claim(&c) == "Bound").then_some(c)
    })
    .await
}

async fn volume_phase(
    volumes: &Api<PersistentVolume>,
    name: &str,
    phase: &str,
) -> PersistentVolume {
    eventually(&format!("volume {name} {phase}"), || async {
        let v = volumes.get_opt(name).await.expect("get")?;
        (phase_of_volume(&v) == phase).then_some(v)
    })
    .await
}

/// Marks an object deleted as the API server does when it has finalizers (our MemStore
/// deletes at once).
async fn mark_deleted(store: &Arc<dyn Store>, kind: &GroupKind, key: &ObjectKey) {
    let mut object = store.get(kind, key).await.expect("object");
    object.metadata.deletion_timestamp = Some(kube_core::object::now());
    store.update(object).await.expect("marked");
}

#[tokio::test]
async fn claims_bind_statically_to_the_smallest_fit_and_released_volumes_are_reclaimed() {
    let (store, running) = start(with_volume_controllers(ControllerManager::new()));
    let volumes: Api<PersistentVolume> = Api::all(store.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(store.clone(), "default");
    volumes
        .create(&volume("big", "10Gi", "manual", "Retain"))
        .await
        .expect("pv");
    volumes
        .create(&volume("fit", "2Gi", "manual", "Retain"))
        .await
        .expect("pv");
    volumes
        .create(&volume("tiny", "1Gi", "manual", "Delete"))
        .await
        .expect("pv");
    volume_phase(&volumes, "fit", "Available").await;

    claims
        .create(&claim("data", "1500Mi", Some("manual")))
        .await
        .expect("pvc");
    let c = bound_claim(&claims, "data").await;
    let spec = c.spec.clone().expect("spec");
    assert_eq!(
        spec.volume_name.as_deref(),
        Some("fit"),
        "smallest volume that fits"
    );
    let annotations = c.metadata.annotations.clone().expect("annotations");
    assert_eq!(
        annotations
            .get("pv.kubernetes.io/bind-completed")
            .map(String::as_str),
        Some("yes")
    );
    assert_eq!(
        annotations
            .get("pv.kubernetes.io/bound-by-controller")
            .map(String::as_str),
        Some("yes")
    );
    let status = c.status.clone().expect("status");
    assert_eq!(status.capacity.expect("capacity")["storage"].0, "2Gi");
    assert_eq!(status.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
    let v = volume_phase(&volumes, "fit", "Bound").await;
    let r = v.spec.expect("spec").claim_ref.expect("claimRef");
    assert_eq!(
        (r.namespace.as_deref(), r.name.as_deref()),
        (Some("default"), Some("data"))
    );
    assert_eq!(r.uid, c.metadata.uid);
    // Both got their protection finalizers from the controllers (no API server here).
    eventually("finalizers", || async {
        let c = claims.get("data").await.expect("claim");
        let v = volumes.get("fit").await.expect("pv");
        let has = |f: &Option<Vec<String>>, name: &str| f.iter().flatten().any(|x| x == name);
        (has(&c.metadata.finalizers, PVC_PROTECTION) && has(&v.metadata.finalizers, PV_PROTECTION))
            .then_some(())
    })
    .await;

    // Pre-binding: a claim naming a volume gets that one.
    claims
        .create(&{
            let mut c = claim("named", "1Gi", Some("manual"));
            c.spec.as_mut().expect("spec").volume_name = Some("big".into());
            c
        })
        .await
        .expect("pvc");
    let named = bound_claim(&claims, "named").await;
    assert_eq!(
        named.spec.expect("spec").volume_name.as_deref(),
        Some("big")
    );
    assert!(
        !named
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("pv.kubernetes.io/bound-by-controller"),
        "the user chose the volume"
    );

    // No fit: Pending with an event.
    claims
        .create(&claim("huge", "100Gi", Some("manual")))
        .await
        .expect("pvc");
    eventually("huge pending", || async {
        let c = claims.get("huge").await.expect("claim");
        (phase_of_claim(&c) == "Pending").then_some(())
    })
    .await;

    // Retain: the claim goes (finalizer released, nobody uses it), the volume is Released.
    mark_deleted(
        &store,
        &GroupKind::from_static("", "PersistentVolumeClaim"),
        &ObjectKey::namespaced("default", "data"),
    )
    .await;
    eventually("claim gone", || async {
        claims
            .get_opt("data")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    let v = volume_phase(&volumes, "fit", "Released").await;
    assert!(
        v.spec.expect("spec").claim_ref.is_some(),
        "a released volume keeps its claimRef"
    );

    // Delete without a provisioner: Failed (nothing knows how to delete a hostPath volume).
    claims
        .create(&claim("small", "1Gi", Some("manual")))
        .await
        .expect("pvc");
    let small = bound_claim(&claims, "small").await;
    assert_eq!(
        small.spec.expect("spec").volume_name.as_deref(),
        Some("tiny")
    );
    store
        .delete(
            &GroupKind::from_static("", "PersistentVolumeClaim"),
            &ObjectKey::namespaced("default", "small"),
            &Default::default(),
        )
        .await
        .expect("deleted");
    volume_phase(&volumes, "tiny", "Failed").await;
    running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_claim_in_use_by_a_pod_stays_until_the_pod_is_gone() {
    let (store, running) = start(with_volume_controllers(ControllerManager::new()));
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(store.clone(), "default");
    let volumes: Api<PersistentVolume> = Api::all(store.clone());
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    volumes
        .create(&volume("pv-a", "1Gi", "", "Retain"))
        .await
        .expect("pv");
    claims
        .create(&claim("used", "1Gi", Some("")))
        .await
        .expect("pvc");
    bound_claim(&claims, "used").await;
    let pod: Pod =
        serde_json::from_value(json!({"metadata": {"name": "user", "namespace": "default"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "used"}}]},
        "status": {"phase": "Running"}}))
        .expect("pod");
    pods.create(&pod).await.expect("pod");
    eventually("finalizer", || async {
        let c = claims.get("used").await.expect("claim");
        c.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == PVC_PROTECTION)
            .then_some(())
    })
    .await;
    let key = ObjectKey::namespaced("default", "used");
    mark_deleted(
        &store,
        &GroupKind::from_static("", "PersistentVolumeClaim"),
        &key,
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let c = claims
        .get("used")
        .await
        .expect("still there while the pod runs");
    assert!(
        c.metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f == PVC_PROTECTION)
    );

    // The volume is protected too while Bound.
    mark_deleted(
        &store,
        &GroupKind::from_static("", "PersistentVolume"),
        &ObjectKey::cluster("pv-a"),
    )
    .await;
    pods.delete("user", &Default::default())
        .await
        .expect("pod deleted");
    eventually("claim gone after the pod", || async {
        claims
            .get_opt("used")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    // Released, then no longer Bound: the volume's finalizer goes and so does the volume.
    eventually("volume gone", || async {
        volumes
            .get_opt("pv-a")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn local_path_volumes_are_provisioned_for_the_selected_node_and_deleted_with_their_directory()
{
    let root = tempfile::tempdir().expect("tempdir");
    let other = tempfile::tempdir().expect("tempdir");
    let provisioner = LocalPathProvisioner::new(root.path()).node_root("n2", other.path());
    let manager = with_provisioner(
        with_volume_controllers(ControllerManager::new()),
        Arc::new(provisioner),
    );
    let (store, running) = start(manager);
    let classes: Api<StorageClass> = Api::all(store.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(store.clone(), "default");
    let volumes: Api<PersistentVolume> = Api::all(store.clone());
    classes
        .create(&local_path_storage_class())
        .await
        .expect("class");
    let mut immediate = local_path_storage_class();
    immediate.metadata.name = Some("now".into());
    immediate.metadata.annotations = None;
    immediate.volume_binding_mode = Some("Immediate".into());
    immediate.reclaim_policy = Some("Retain".into());
    classes.create(&immediate).await.expect("class");

    // No class: the default class is assigned; WaitForFirstConsumer keeps it Pending.
    claims
        .create(&claim("data", "1Gi", None))
        .await
        .expect("pvc");
    eventually("default class", || async {
        let c = claims.get("data").await.expect("claim");
        (c.spec.as_ref()?.storage_class_name.as_deref() == Some("local-path")).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let c = claims.get("data").await.expect("claim");
    assert!(
        c.spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .is_none(),
        "waits for a consumer"
    );
    // As Kubernetes, the provisioner is asked only once a node is selected.
    let annotations = c.metadata.annotations.clone().unwrap_or_default();
    assert!(!annotations.contains_key("volume.kubernetes.io/storage-provisioner"));

    // The scheduler selects n2: a volume appears there, pre-bound, then bound.
    let mut selected = c.clone();
    selected
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(SELECTED_NODE.into(), "n2".into());
    claims.replace(&selected).await.expect("selected");
    let c = bound_claim(&claims, "data").await;
    let uid = c.metadata.uid.clone().expect("uid");
    let name = format!("pvc-{uid}");
    assert_eq!(
        c.spec.expect("spec").volume_name.as_deref(),
        Some(name.as_str())
    );
    let v = volume_phase(&volumes, &name, "Bound").await;
    let spec = v.spec.clone().expect("spec");
    let dir = other.path().join(format!("{name}_default_data"));
    assert_eq!(
        spec.host_path.as_ref().expect("hostPath").path,
        dir.to_string_lossy()
    );
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    assert_eq!(spec.storage_class_name.as_deref(), Some("local-path"));
    assert_eq!(
        v.metadata
            .annotations
            .expect("annotations")
            .get("pv.kubernetes.io/provisioned-by")
            .map(String::as_str),
        Some("rancher.io/local-path")
    );
    let affinity = serde_json::to_value(spec.node_affinity).expect("json");
    assert_eq!(
        affinity["required"]["nodeSelectorTerms"][0]["matchExpressions"][0],
        json!({"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]})
    );

    // The node agent would make the directory; do it, then delete the claim: Delete policy
    // removes the directory and the volume.
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("file"), b"x").expect("file");
    claims
        .delete("data", &Default::default())
        .await
        .expect("deleted");
    eventually("volume deleted", || async {
        volumes
            .get_opt(&name)
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;
    assert!(!dir.exists(), "the directory goes with the volume");

    // Immediate with a local-path class: provisioning needs a node, so it fails and waits.
    claims
        .create(&claim("now", "1Gi", Some("now")))
        .await
        .expect("pvc");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let c = claims.get("now").await.expect("claim");
    assert_eq!(phase_of_claim(&c), "Pending");
    running.shutdown().await.expect("shutdown");
}

/// A provisioner for `Immediate` classes: volumes without a node.
#[derive(Debug)]
struct Anywhere(std::path::PathBuf);

impl kube_ctrl::volume::Provisioner for Anywhere {
    fn name(&self) -> &str {
        "example.com/anywhere"
    }
    fn provision(
        &self,
        name: &str,
        _: &PersistentVolumeClaim,
        _: &StorageClass,
        node: Option<&str>,
    ) -> Result<PersistentVolume, kube_ctrl::volume::ProvisionError> {
        assert!(node.is_none(), "Immediate: no node");
        Ok(serde_json::from_value(
            json!({"spec": {"hostPath": {"path": self.0.join(name)}}}),
        )?)
    }
    fn delete(&self, _: &PersistentVolume) -> Result<(), kube_ctrl::volume::ProvisionError> {
        Ok(())
    }
}

#[tokio::test]
async fn immediate_classes_are_provisioned_at_once_and_retained_volumes_are_released() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manager = with_provisioner(
        with_volume_controllers(ControllerManager::new()),
        Arc::new(Anywhere(dir.path().to_path_buf())),
    );
    let (store, running) = start(manager);
    let classes: Api<StorageClass> = Api::all(store.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(store.clone(), "default");
    let volumes: Api<PersistentVolume> = Api::all(store.clone());
    classes
        .create(
            &serde_json::from_value(json!({"metadata": {"name": "fast"},
            "provisioner": "example.com/anywhere", "reclaimPolicy": "Retain"}))
            .expect("class"),
        )
        .await
        .expect("class");
    claims
        .create(&claim("db", "3Gi", Some("fast")))
        .await
        .expect("pvc");
    let c = bound_claim(&claims, "db").await;
    let name = c.spec.expect("spec").volume_name.expect("volume");
    assert_eq!(
        c.status.expect("status").capacity.expect("capacity")["storage"].0,
        "3Gi"
    );
    volume_phase(&volumes, &name, "Bound").await;
    claims
        .delete("db", &Default::default())
        .await
        .expect("deleted");
    let v = volume_phase(&volumes, &name, "Released").await;
    assert_eq!(
        v.spec
            .expect("spec")
            .persistent_volume_reclaim_policy
            .as_deref(),
        Some("Retain")
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        volumes.get_opt(&name).await.expect("get").is_some(),
        "retained"
    );
    running.shutdown().await.expect("shutdown");
}
