//! What the volume controllers share: reading claims, volumes and classes, the binding
//! writes, and completing a deletion once the last finalizer is gone.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus,
    PersistentVolumeStatus,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube_core::controller::ControllerContext;
use kube_core::object::{GroupKind, ObjectKey};
use kube_core::store::{Preconditions, Store, StoreError};
use kube_core::typed::Api;

use super::{BIND_COMPLETED, BOUND_BY_CONTROLLER, DEFAULT_CLASS};
use crate::finalizers::remove_finalizer;

/// The PersistentVolumeClaim kind.
pub(crate) const CLAIM: GroupKind = GroupKind::from_static("", "PersistentVolumeClaim");
/// The PersistentVolume kind.
pub(crate) const VOLUME: GroupKind = GroupKind::from_static("", "PersistentVolume");
/// The StorageClass kind.
pub(crate) const CLASS: GroupKind = GroupKind::from_static("storage.k8s.io", "StorageClass");

/// The StorageClass named `name`, from the shared cache.
pub(crate) fn class(ctx: &ControllerContext, name: &str) -> Option<StorageClass> {
    if name.is_empty() {
        return None;
    }
    ctx.informers
        .informer(&CLASS)
        .get_typed(&ObjectKey::cluster(name))
}

/// Whether `class` is marked the default class.
pub fn is_default_class(class: &StorageClass) -> bool {
    class
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CLASS))
        .is_some_and(|v| v == "true")
}

/// The default StorageClass as Kubernetes picks it: of the classes marked default, the newest
/// (then the first by name).
pub(crate) fn default_class(ctx: &ControllerContext) -> Option<StorageClass> {
    let mut defaults: Vec<StorageClass> = ctx
        .informers
        .informer(&CLASS)
        .list_typed::<StorageClass>()
        .into_iter()
        .filter(is_default_class)
        .collect();
    defaults.sort_by(|a, b| {
        let created = |c: &StorageClass| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(b)
            .cmp(&created(a))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    defaults.into_iter().next()
}

/// Whether the class delays binding until a pod using the claim is scheduled.
pub(crate) fn waits_for_consumer(class: Option<&StorageClass>) -> bool {
    class.and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer")
}

/// Every volume in the shared cache.
pub(crate) fn volumes(ctx: &ControllerContext) -> Vec<PersistentVolume> {
    ctx.informers
        .informer(&VOLUME)
        .list_typed::<PersistentVolume>()
}

/// Whether `annotations` has `key` (any value).
pub(crate) fn annotated(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(key))
}

/// A claim reference to `claim` (with its uid and resourceVersion, as Kubernetes writes it).
pub(crate) fn claim_ref(claim: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: claim.metadata.namespace.clone(),
        name: claim.metadata.name.clone(),
        uid: claim.metadata.uid.clone(),
        resource_version: claim.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// Binds `volume` to `claim`: the volume's `claimRef` and phase Bound, then the claim's
/// `volumeName`, annotations, phase, capacity and access modes. Each write is guarded by the
/// object's resourceVersion; a conflict fails the reconcile, which retries from fresh reads.
pub(crate) async fn bind(
    store: &Arc<dyn Store>,
    volume: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> Result<PersistentVolumeClaim, StoreError> {
    let volumes: Api<PersistentVolume> = Api::all(store.clone());
    let mut v = volume.clone();
    let spec = v.spec.get_or_insert_with(Default::default);
    let reference_matches = spec.claim_ref.as_ref().is_some_and(|r| {
        r.uid.as_deref() == claim.metadata.uid.as_deref()
            && r.name == claim.metadata.name
            && r.namespace == claim.metadata.namespace
    });
    let phase_bound = v.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    if !reference_matches || !phase_bound {
        if spec.claim_ref.is_none() {
            v.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(BOUND_BY_CONTROLLER.into(), "yes".into());
        }
        spec.claim_ref = Some(claim_ref(claim));
        let status = v.status.get_or_insert_with(PersistentVolumeStatus::default);
        status.phase = Some("Bound".into());
        status.message = None;
        status.reason = None;
        v = volumes.replace(&v).await?;
    }

    let name = claim.metadata.namespace.as_deref().unwrap_or("default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(store.clone(), name);
    let mut c = claim.clone();
    let volume_name = v.metadata.name.clone().unwrap_or_default();
    let annotations = c.metadata.annotations.get_or_insert_with(Default::default);
    let spec = c.spec.get_or_insert_with(Default::default);
    if spec.volume_name.as_deref().is_none_or(str::is_empty) {
        annotations.insert(BOUND_BY_CONTROLLER.into(), "yes".into());
    }
    annotations.insert(BIND_COMPLETED.into(), "yes".into());
    spec.volume_name = Some(volume_name);
    let vspec = v.spec.as_ref();
    c.status = Some(PersistentVolumeClaimStatus {
        phase: Some("Bound".into()),
        capacity: vspec.and_then(|s| s.capacity.clone()),
        access_modes: vspec.and_then(|s| s.access_modes.clone()),
        ..c.status.take().unwrap_or_default()
    });
    if claim == &c {
        return Ok(c);
    }
    claims.replace(&c).await
}

/// Removes `finalizer` and, when the object is being deleted and no finalizer is left,
/// deletes it (our stores do not; through an API server it is gone already).
pub(crate) async fn release_finalizer(
    store: &Arc<dyn Store>,
    kind: &GroupKind,
    key: &ObjectKey,
    finalizer: &str,
) -> Result<(), StoreError> {
    remove_finalizer(store.as_ref(), kind, key, finalizer).await?;
    let object = match store.get(kind, key).await {
        Ok(o) => o,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e),
    };
    let finalized = object.metadata.deletion_timestamp.is_some()
        && object
            .metadata
            .finalizers
            .as_ref()
            .is_none_or(Vec::is_empty);
    if finalized {
        let uid = object.metadata.uid.clone().unwrap_or_default();
        match store.delete(kind, key, &Preconditions::uid(uid)).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
