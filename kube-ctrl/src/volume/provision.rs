//! Running a [`Provisioner`] as Kubernetes' external provisioners run
//! (sig-storage-lib-external-provisioner): [`ProvisioningController`] makes a volume for each
//! claim the binder handed to it, [`DeletingController`] deletes released volumes it made
//! whose reclaim policy is `Delete`.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::ObjectKey;
use kube_core::store::Preconditions;
use kube_core::typed::Api;

use super::claims::{self, CLAIM, VOLUME, claim_ref};
use super::matching::claim_class;
use super::{PROVISIONED_BY, Provisioner, SELECTED_NODE, STORAGE_PROVISIONER};
use crate::ControllerManager;
use crate::events::{EventRecorder, EventType};

/// Adds the provisioning and deleting controllers of `provisioner` to `manager`.
pub fn with_provisioner(
    manager: ControllerManager,
    provisioner: Arc<dyn Provisioner>,
) -> ControllerManager {
    manager
        .with(ProvisioningController::new(provisioner.clone()))
        .with(DeletingController::new(provisioner))
}

/// Makes a volume for every unbound claim annotated `volume.kubernetes.io/storage-provisioner`
/// with the provisioner's name (the binder does that for claims of its classes), named
/// `pvc-<claim uid>`, pre-bound to the claim (`claimRef` with its uid), with the class's
/// reclaim policy and mount options, the claim's access modes, volume mode and requested
/// capacity, and `pv.kubernetes.io/provisioned-by`. A claim of a `WaitForFirstConsumer`
/// class waits for `volume.kubernetes.io/selected-node`, and its volume is made for that node.
/// Events: `Provisioning`, `ProvisioningSucceeded`, `ProvisioningFailed`.
#[derive(Debug, Clone)]
pub struct ProvisioningController {
    provisioner: Arc<dyn Provisioner>,
    name: String,
    events: EventRecorder,
}

impl ProvisioningController {
    /// A controller for `provisioner`.
    pub fn new(provisioner: Arc<dyn Provisioner>) -> Self {
        let component = format!("{}_provisioner", provisioner.name());
        Self {
            name: format!("provisioner/{}", provisioner.name()),
            provisioner,
            events: EventRecorder::new(component),
        }
    }
}

/// The name of the volume provisioned for a claim.
pub fn provisioned_volume_name(claim: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", claim.metadata.uid.as_deref().unwrap_or_default())
}

#[async_trait::async_trait]
impl Controller for ProvisioningController {
    fn name(&self) -> &str {
        &self.name
    }

    fn watches(&self) -> Watches {
        Watches::primary(CLAIM)
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
        let annotations = claim.metadata.annotations.clone().unwrap_or_default();
        let ours = annotations.get(STORAGE_PROVISIONER).map(String::as_str)
            == Some(self.provisioner.name());
        let unbound = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .is_none_or(str::is_empty);
        if !ours || !unbound || claim.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let Some(class) = claims::class(ctx, claim_class(&claim)) else {
            return Ok(Action::await_change());
        };
        let node = annotations.get(SELECTED_NODE).map(String::as_str);
        if claims::waits_for_consumer(Some(&class)) && node.is_none() {
            return Ok(Action::await_change());
        }
        let name = provisioned_volume_name(&claim);
        let volumes: Api<PersistentVolume> = Api::all(ctx.store.clone());
        if volumes.get_opt(&name).await?.is_some() {
            return Ok(Action::await_change());
        }
        self.events
            .record(
                &ctx.store,
                &claim,
                EventType::Normal,
                "Provisioning",
                format!("External provisioner is provisioning volume for claim \"{key}\""),
            )
            .await;
        let mut volume = match self.provisioner.provision(&name, &claim, &class, node) {
            Ok(v) => v,
            Err(e) => {
                self.events
                    .record(
                        &ctx.store,
                        &claim,
                        EventType::Warning,
                        "ProvisioningFailed",
                        format!(
                            "failed to provision volume with StorageClass \"{}\": {e}",
                            class.metadata.name.as_deref().unwrap_or_default()
                        ),
                    )
                    .await;
                return Err(ReconcileError::Other(e));
            }
        };
        fill(&mut volume, &name, &claim, &class, self.provisioner.name());
        match volumes.create(&volume).await {
            Ok(_) => {}
            Err(e) if e.is_already_exists() => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
        self.events
            .record(
                &ctx.store,
                &claim,
                EventType::Normal,
                "ProvisioningSucceeded",
                format!("Successfully provisioned volume {name}"),
            )
            .await;
        Ok(Action::await_change())
    }
}

/// What every provisioned volume gets, whatever the provisioner wrote.
fn fill(
    volume: &mut PersistentVolume,
    name: &str,
    claim: &PersistentVolumeClaim,
    class: &k8s_openapi::api::storage::v1::StorageClass,
    provisioner: &str,
) {
    volume.metadata.name = Some(name.to_string());
    volume
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(PROVISIONED_BY.into(), provisioner.into());
    let claim_spec = claim.spec.clone().unwrap_or_default();
    let spec = volume.spec.get_or_insert_with(Default::default);
    let mut reference: ObjectReference = claim_ref(claim);
    reference.resource_version = None;
    spec.claim_ref = Some(reference);
    spec.storage_class_name = class.metadata.name.clone();
    spec.persistent_volume_reclaim_policy = Some(
        class
            .reclaim_policy
            .clone()
            .unwrap_or_else(|| "Delete".into()),
    );
    if spec.mount_options.is_none() {
        spec.mount_options = class.mount_options.clone();
    }
    if spec.access_modes.is_none() {
        spec.access_modes = claim_spec.access_modes.clone();
    }
    if spec.volume_mode.is_none() {
        spec.volume_mode = claim_spec.volume_mode.clone();
    }
    if spec.capacity.is_none() {
        let request = claim_spec
            .resources
            .and_then(|r| r.requests)
            .and_then(|r| r.get("storage").cloned());
        spec.capacity = request.map(|q| [("storage".to_string(), q)].into_iter().collect());
    }
}

/// Deletes the released volumes its provisioner made whose reclaim policy is `Delete`: the
/// storage first, then the volume object. A failure marks the volume `Failed` with event
/// `VolumeFailedDelete`, and is retried.
#[derive(Debug, Clone)]
pub struct DeletingController {
    provisioner: Arc<dyn Provisioner>,
    name: String,
    events: EventRecorder,
}

impl DeletingController {
    /// A controller for `provisioner`.
    pub fn new(provisioner: Arc<dyn Provisioner>) -> Self {
        let component = format!("{}_provisioner", provisioner.name());
        Self {
            name: format!("deleter/{}", provisioner.name()),
            provisioner,
            events: EventRecorder::new(component),
        }
    }
}

#[async_trait::async_trait]
impl Controller for DeletingController {
    fn name(&self) -> &str {
        &self.name
    }

    fn watches(&self) -> Watches {
        Watches::primary(VOLUME)
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
        let ours = volume
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PROVISIONED_BY))
            .is_some_and(|p| p == self.provisioner.name());
        let phase = volume.status.as_ref().and_then(|s| s.phase.as_deref());
        let policy = volume
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
        let deleting = volume.metadata.deletion_timestamp.is_some();
        if !ours
            || deleting
            || !matches!(phase, Some("Released" | "Failed"))
            || policy != Some("Delete")
        {
            return Ok(Action::await_change());
        }
        if let Err(e) = self.provisioner.delete(&volume) {
            let message = e.to_string();
            self.events
                .record(
                    &ctx.store,
                    &volume,
                    EventType::Warning,
                    "VolumeFailedDelete",
                    message.clone(),
                )
                .await;
            if phase != Some("Failed") {
                let mut v = volume.clone();
                let status = v.status.get_or_insert_with(Default::default);
                status.phase = Some("Failed".into());
                status.message = Some(message);
                volumes.replace(&v).await?;
            }
            return Err(ReconcileError::Other(e));
        }
        let uid = volume.metadata.uid.clone().unwrap_or_default();
        match volumes.delete(&key.name, &Preconditions::uid(uid)).await {
            Ok(_) => tracing::debug!(volume = %key, "deleted provisioned volume"),
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Action::await_change())
    }
}
