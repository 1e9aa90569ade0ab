//! [`VolumeReclaimer`]: the volume side of Kubernetes' PV controller (`syncVolume`).

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::typed::Api;

use super::claims::{CLAIM, VOLUME, annotated};
use super::{BOUND_BY_CONTROLLER, PROVISIONED_BY};
use crate::events::{EventRecorder, EventType};

/// Keeps each PersistentVolume's phase and reclaims released ones, as Kubernetes' PV
/// controller:
///
/// - no `claimRef`, or one without a uid (pre-bound, waiting for its claim): `Available`;
/// - its claim exists and names it: `Bound`; its claim is bound to another volume and the
///   controller made this binding: unbound again (`Available`);
/// - its claim is gone (or is another claim of the same name): `Released`, then by
///   `persistentVolumeReclaimPolicy`: `Retain` keeps it Released for an administrator;
///   `Delete` leaves a provisioned volume (`pv.kubernetes.io/provisioned-by`) to its
///   provisioner, which deletes the storage and the volume, and fails a volume nobody
///   provisioned (`Failed`, event `VolumeFailedDelete`), since nothing knows how to delete
///   it; `Recycle` is not supported (`Failed`).
#[derive(Debug, Clone)]
pub struct VolumeReclaimer {
    events: EventRecorder,
}

impl Default for VolumeReclaimer {
    fn default() -> Self {
        Self::new()
    }
}

impl VolumeReclaimer {
    /// A reclaimer.
    pub fn new() -> Self {
        Self {
            events: EventRecorder::new("persistentvolume-controller"),
        }
    }
}

fn phase(volume: &PersistentVolume) -> Option<&str> {
    volume.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// Writes the volume's phase (and message) when it differs.
async fn set_phase(
    volumes: &Api<PersistentVolume>,
    volume: &PersistentVolume,
    to: &str,
    message: Option<String>,
) -> Result<(), ReconcileError> {
    if phase(volume) == Some(to) {
        return Ok(());
    }
    let mut v = volume.clone();
    let status = v.status.get_or_insert_with(Default::default);
    status.phase = Some(to.into());
    status.message = message;
    status.last_phase_transition_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    volumes.replace(&v).await?;
    Ok(())
}

#[async_trait::async_trait]
impl Controller for VolumeReclaimer {
    fn name(&self) -> &str {
        "persistentvolume-reclaimer"
    }

    fn watches(&self) -> Watches {
        Watches::primary(VOLUME).related(CLAIM)
    }

    /// A claim's change concerns the volume it names and the volumes that reference it.
    fn map_related(
        &self,
        _kind: &GroupKind,
        object: &DynamicObject,
        ctx: &ControllerContext,
    ) -> Vec<ObjectKey> {
        let mut keys = Vec::new();
        if let Some(name) = object
            .field("spec.volumeName")
            .and_then(|v| v.as_str().map(str::to_string))
        {
            if !name.is_empty() {
                keys.push(ObjectKey::cluster(name));
            }
        }
        let (ns, name) = (
            object.metadata.namespace.as_deref(),
            object.metadata.name.as_deref(),
        );
        for volume in ctx.informers.informer(&VOLUME).list() {
            let Some(r) = volume.field("spec.claimRef") else {
                continue;
            };
            if r["namespace"].as_str() == ns && r["name"].as_str() == name {
                keys.push(volume.key());
            }
        }
        keys
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
        let Some(reference) = volume.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
            set_phase(&volumes, &volume, "Available", None).await?;
            return Ok(Action::await_change());
        };
        let ref_uid = reference.uid.clone().unwrap_or_default();
        if ref_uid.is_empty() {
            set_phase(&volumes, &volume, "Available", None).await?;
            return Ok(Action::await_change());
        }
        let namespace = reference.namespace.clone().unwrap_or_default();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.store.clone(), &namespace);
        let claim = claims
            .get_opt(reference.name.as_deref().unwrap_or_default())
            .await?
            .filter(|c| c.metadata.uid.as_deref() == Some(ref_uid.as_str()));
        if let Some(claim) = claim {
            let named = claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .unwrap_or_default();
            if named == key.name {
                set_phase(&volumes, &volume, "Bound", None).await?;
            } else if !named.is_empty() && annotated(&volume.metadata, BOUND_BY_CONTROLLER) {
                // The claim went to another volume: give this one back.
                let mut v = volume.clone();
                if let Some(spec) = v.spec.as_mut() {
                    spec.claim_ref = None;
                }
                if let Some(a) = v.metadata.annotations.as_mut() {
                    a.remove(BOUND_BY_CONTROLLER);
                }
                v.status.get_or_insert_with(Default::default).phase = Some("Available".into());
                volumes.replace(&v).await?;
            }
            // A claim not bound yet is the binder's to finish.
            return Ok(Action::await_change());
        }
        // The claim is gone: release and reclaim.
        if !matches!(phase(&volume), Some("Released" | "Failed")) {
            set_phase(&volumes, &volume, "Released", None).await?;
            return Ok(Action::await_change());
        }
        if phase(&volume) == Some("Failed") {
            return Ok(Action::await_change());
        }
        let policy = volume
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
            .unwrap_or("Retain");
        match policy {
            "Delete" if annotated(&volume.metadata, PROVISIONED_BY) => {
                // Its provisioner deletes the storage and then the volume.
            }
            "Delete" => {
                let message = format!(
                    "error getting deleter volume plugin for volume \"{}\": no deletable volume plugin matched",
                    key.name
                );
                self.events
                    .record(
                        &ctx.store,
                        &volume,
                        EventType::Warning,
                        "VolumeFailedDelete",
                        message.clone(),
                    )
                    .await;
                set_phase(&volumes, &volume, "Failed", Some(message)).await?;
            }
            "Recycle" => {
                let message = "recycling is not supported".to_string();
                self.events
                    .record(
                        &ctx.store,
                        &volume,
                        EventType::Warning,
                        "VolumeFailedRecycle",
                        message.clone(),
                    )
                    .await;
                set_phase(&volumes, &volume, "Failed", Some(message)).await?;
            }
            _ => {}
        }
        Ok(Action::await_change())
    }
}
