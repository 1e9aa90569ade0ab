//! The loop's part of volume binding: it mirrors claims, volumes and storage classes into the
//! cluster cache, keeps nodes that cannot serve a pod's claims out of a plain scheduler's
//! snapshot, and, once a node is chosen, writes what [`plan`] says (a static volume's
//! `claimRef`, or the claim's `volume.kubernetes.io/selected-node`) and waits until the claims
//! are bound before the pod is — Kubernetes' VolumeBinding Reserve and PreBind.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube_core::informer::InformerEvent;
use kube_core::object::GroupKind;
use kube_core::scheduler::{ScheduleError, Snapshot};
use kube_core::store::{Store, StoreError};
use kube_core::typed::Api;

use super::cache::{Requeue, SchedulerCache};
use crate::framework::Cluster;
use crate::plugins::volume_binding::{SELECTED_NODE, VolumeAction, plan};

/// The PersistentVolumeClaim kind.
pub(crate) const CLAIM: GroupKind = GroupKind::from_static("", "PersistentVolumeClaim");
/// The PersistentVolume kind.
pub(crate) const VOLUME: GroupKind = GroupKind::from_static("", "PersistentVolume");
/// The StorageClass kind.
pub(crate) const CLASS: GroupKind = GroupKind::from_static("storage.k8s.io", "StorageClass");

/// How long a pod's claims may take to be bound after the writes (Kubernetes'
/// `bindTimeoutSeconds` default).
const BIND_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the claims are looked at while waiting.
const BIND_POLL: Duration = Duration::from_millis(50);

/// Applies a claim event. Any volume change may make a parked pod fit.
pub(crate) fn apply_claim(cache: &mut SchedulerCache, event: &InformerEvent) -> Requeue {
    let object = event.object();
    match (event, object.to_typed::<PersistentVolumeClaim>()) {
        (InformerEvent::Deleted(_), _) | (_, Err(_)) => {
            cache.volumes_mut().remove_claim(&object.key());
        }
        (InformerEvent::Applied(_), Ok(claim)) => cache.volumes_mut().set_claim(claim),
    }
    Requeue::AllPending
}

/// Applies a volume event.
pub(crate) fn apply_volume(cache: &mut SchedulerCache, event: &InformerEvent) -> Requeue {
    let object = event.object();
    let name = object.metadata.name.clone().unwrap_or_default();
    match (event, object.to_typed::<PersistentVolume>()) {
        (InformerEvent::Deleted(_), _) | (_, Err(_)) => cache.volumes_mut().remove_volume(&name),
        (InformerEvent::Applied(_), Ok(volume)) => cache.volumes_mut().set_volume(volume),
    }
    Requeue::AllPending
}

/// Applies a storage class event.
pub(crate) fn apply_class(cache: &mut SchedulerCache, event: &InformerEvent) -> Requeue {
    let object = event.object();
    let name = object.metadata.name.clone().unwrap_or_default();
    match (event, object.to_typed::<StorageClass>()) {
        (InformerEvent::Deleted(_), _) | (_, Err(_)) => cache.volumes_mut().remove_class(&name),
        (InformerEvent::Applied(_), Ok(class)) => cache.volumes_mut().set_class(class),
    }
    Requeue::AllPending
}

fn has_claims(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| v.persistent_volume_claim.is_some())
}

/// A plain scheduler's snapshot without the nodes that cannot serve the pod's claims, and the
/// reasons of those left out (by node), for a pod with claims.
pub(crate) fn filter_snapshot(
    cluster: &Cluster,
    pod: &Pod,
    mut snapshot: Snapshot,
) -> (Snapshot, BTreeMap<String, String>) {
    let mut rejected = BTreeMap::new();
    if !has_claims(pod) {
        return (snapshot, rejected);
    }
    snapshot.nodes.retain(|n| {
        let verdict = match cluster.node(n.name()) {
            Some(info) => plan(cluster.volumes(), pod, info).map(|_| ()),
            None => Ok(()),
        };
        match verdict {
            Ok(()) => true,
            Err(reason) => {
                rejected.insert(n.name().to_string(), reason);
                false
            }
        }
    });
    (snapshot, rejected)
}

/// Adds the volume rejections to a scheduler's verdict, so the message counts every node.
pub(crate) fn merge_rejections(
    result: Result<String, ScheduleError>,
    rejected: BTreeMap<String, String>,
) -> Result<String, ScheduleError> {
    match result {
        Err(ScheduleError::Unschedulable { mut reasons }) => {
            reasons.extend(rejected);
            Err(ScheduleError::Unschedulable { reasons })
        }
        other => other,
    }
}

/// The writes for `pod` on `node`; static volumes are assumed taken in the cache at once, so
/// the next cycle does not hand the same volume to another claim.
pub(crate) fn reserve(cache: &mut SchedulerCache, pod: &Pod, node: &str) -> Vec<VolumeAction> {
    if !has_claims(pod) {
        return Vec::new();
    }
    let actions = match cache.cluster().node(node) {
        Some(info) => plan(cache.cluster().volumes(), pod, info).unwrap_or_default(),
        None => Vec::new(),
    };
    for action in &actions {
        if let VolumeAction::Bind { claim, volume } = action {
            let volumes = cache.cluster().volumes();
            let (Some(v), Some(c)) = (
                volumes.volume(volume).cloned(),
                volumes
                    .claim(claim.namespace.as_deref().unwrap_or_default(), &claim.name)
                    .cloned(),
            ) else {
                continue;
            };
            let mut v = (*v).clone();
            v.spec.get_or_insert_with(Default::default).claim_ref = Some(reference(&c));
            cache.volumes_mut().set_volume(v);
        }
    }
    actions
}

fn reference(claim: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: claim.metadata.namespace.clone(),
        name: claim.metadata.name.clone(),
        uid: claim.metadata.uid.clone(),
        ..Default::default()
    }
}

/// Writes the actions and waits until every claim is bound.
pub(crate) async fn bind_volumes(
    store: &Arc<dyn Store>,
    node: &str,
    actions: &[VolumeAction],
) -> Result<(), String> {
    for action in actions {
        write(store, node, action)
            .await
            .map_err(|e| e.to_string())?;
    }
    let deadline = tokio::time::Instant::now() + BIND_TIMEOUT;
    for action in actions {
        let (VolumeAction::Bind { claim, .. } | VolumeAction::Provision { claim }) = action;
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(
            store.clone(),
            claim.namespace.as_deref().unwrap_or_default(),
        );
        loop {
            let current = claims.get(&claim.name).await.map_err(|e| e.to_string())?;
            let bound = current
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .is_some_and(|v| !v.is_empty());
            if bound {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "binding volumes: timed out waiting for the condition (claim {claim})"
                ));
            }
            tokio::time::sleep(BIND_POLL).await;
        }
    }
    Ok(())
}

async fn write(
    store: &Arc<dyn Store>,
    node: &str,
    action: &VolumeAction,
) -> Result<(), StoreError> {
    loop {
        let result = match action {
            VolumeAction::Bind { claim, volume } => {
                let claims: Api<PersistentVolumeClaim> = Api::namespaced(
                    store.clone(),
                    claim.namespace.as_deref().unwrap_or_default(),
                );
                let c = claims.get(&claim.name).await?;
                let volumes: Api<PersistentVolume> = Api::all(store.clone());
                let mut v = volumes.get(volume).await?;
                let spec = v.spec.get_or_insert_with(Default::default);
                match &spec.claim_ref {
                    Some(r) if r.name == c.metadata.name && r.namespace == c.metadata.namespace => {
                        return Ok(());
                    }
                    Some(_) => {
                        return Err(StoreError::Invalid(format!(
                            "volume {volume} was bound to another claim"
                        )));
                    }
                    None => {}
                }
                spec.claim_ref = Some(reference(&c));
                v.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert("pv.kubernetes.io/bound-by-controller".into(), "yes".into());
                volumes.replace(&v).await.map(|_| ())
            }
            VolumeAction::Provision { claim } => {
                let claims: Api<PersistentVolumeClaim> = Api::namespaced(
                    store.clone(),
                    claim.namespace.as_deref().unwrap_or_default(),
                );
                let mut c = claims.get(&claim.name).await?;
                let annotations = c.metadata.annotations.get_or_insert_with(Default::default);
                if annotations.get(SELECTED_NODE).map(String::as_str) == Some(node) {
                    return Ok(());
                }
                annotations.insert(SELECTED_NODE.into(), node.into());
                claims.replace(&c).await.map(|_| ())
            }
        };
        match result {
            Err(e) if e.is_conflict() => continue,
            other => return other,
        }
    }
}
