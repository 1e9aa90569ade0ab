//! The `kubernetes.io/pvc-protection` and `kubernetes.io/pv-protection` finalizers, as
//! Kubernetes' pvc-protection and pv-protection controllers keep them.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::ListOptions;
use kube_core::typed::Api;

use super::claims::{CLAIM, VOLUME, release_finalizer};
use super::{PV_PROTECTION, PVC_PROTECTION};
use crate::finalizers::{add_finalizer, has_finalizer};

/// Whether `pod` uses the claim `name` (of its namespace): a scheduled pod that has not
/// finished and mounts it. An unscheduled pod does not hold it: the node agent refuses to
/// start a pod whose claim is being deleted.
pub(crate) fn pod_uses_claim(pod: &Pod, name: &str) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    spec.node_name.as_deref().is_some_and(|n| !n.is_empty())
        && !matches!(phase, Some("Succeeded" | "Failed"))
        && spec.volumes.iter().flatten().any(|v| {
            v.persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.claim_name == name)
        })
}

/// Adds `kubernetes.io/pvc-protection` to every claim (the API server adds it on create; this
/// covers claims written straight to a store), and removes it from a claim being deleted once
/// no pod uses it, which lets the deletion finish.
#[derive(Debug, Clone, Default)]
pub struct PvcProtectionController;

impl PvcProtectionController {
    /// The controller.
    pub fn new() -> Self {
        Self
    }
}

#[async_trait::async_trait]
impl Controller for PvcProtectionController {
    fn name(&self) -> &str {
        "pvc-protection"
    }

    fn watches(&self) -> Watches {
        Watches::primary(CLAIM).related(GroupKind::POD)
    }

    /// A pod's change concerns the claims it mounts.
    fn map_related(
        &self,
        _kind: &GroupKind,
        object: &DynamicObject,
        _ctx: &ControllerContext,
    ) -> Vec<ObjectKey> {
        let Some(ns) = object.metadata.namespace.as_deref() else {
            return Vec::new();
        };
        let volumes = object.field("spec.volumes");
        volumes
            .as_ref()
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
            .map(|name| ObjectKey::namespaced(ns, name))
            .collect()
    }

    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        let Some(namespace) = key.namespace.as_deref() else {
            return Ok(Action::await_change());
        };
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.store.clone(), namespace);
        let Some(claim) = claims.get_opt(&key.name).await? else {
            return Ok(Action::await_change());
        };
        let object = ctx.store.get(&CLAIM, key).await?;
        if claim.metadata.deletion_timestamp.is_none() {
            if !has_finalizer(&object, PVC_PROTECTION) {
                add_finalizer(ctx.store.as_ref(), &CLAIM, key, PVC_PROTECTION).await?;
            }
            return Ok(Action::await_change());
        }
        if !has_finalizer(&object, PVC_PROTECTION) {
            return Ok(Action::await_change());
        }
        // Read pods from the store, not the cache: a pod the cache has not seen yet must
        // still hold the claim.
        let pods: Api<Pod> = Api::namespaced(ctx.store.clone(), namespace);
        let in_use = pods
            .list(&ListOptions::default())
            .await?
            .items
            .iter()
            .any(|p| pod_uses_claim(p, &key.name));
        if in_use {
            tracing::debug!(claim = %key, "claim being deleted is still used by a pod");
            return Ok(Action::await_change());
        }
        release_finalizer(&ctx.store, &CLAIM, key, PVC_PROTECTION).await?;
        Ok(Action::await_change())
    }
}

/// Adds `kubernetes.io/pv-protection` to every volume, and removes it from a volume being
/// deleted once it is no longer Bound to a claim.
#[derive(Debug, Clone, Default)]
pub struct PvProtectionController;

impl PvProtectionController {
    /// The controller.
    pub fn new() -> Self {
        Self
    }
}

#[async_trait::async_trait]
impl Controller for PvProtectionController {
    fn name(&self) -> &str {
        "pv-protection"
    }

    fn watches(&self) -> Watches {
        Watches::primary(VOLUME).related(CLAIM)
    }

    fn map_related(
        &self,
        _kind: &GroupKind,
        object: &DynamicObject,
        _ctx: &ControllerContext,
    ) -> Vec<ObjectKey> {
        object
            .field("spec.volumeName")
            .and_then(|v| v.as_str().map(str::to_string))
            .filter(|v| !v.is_empty())
            .map(ObjectKey::cluster)
            .into_iter()
            .collect()
    }

    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        let volumes: Api<PersistentVolume> = Api::all(ctx.store.clone());
        let Some(volume) = volumes.get_opt(&key.name).await? else {
            return Ok(Action::await_change());
        };
        let object = ctx.store.get(&VOLUME, key).await?;
        if volume.metadata.deletion_timestamp.is_none() {
            if !has_finalizer(&object, PV_PROTECTION) {
                add_finalizer(ctx.store.as_ref(), &VOLUME, key, PV_PROTECTION).await?;
            }
            return Ok(Action::await_change());
        }
        let bound = volume.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if bound || !has_finalizer(&object, PV_PROTECTION) {
            return Ok(Action::await_change());
        }
        release_finalizer(&ctx.store, &VOLUME, key, PV_PROTECTION).await?;
        Ok(Action::await_change())
    }
}
