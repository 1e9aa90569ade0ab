//! [`ClaimBinder`]: the claim side of Kubernetes' PV controller (`syncClaim`).

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::typed::Api;

use super::claims::{self, CLAIM, CLASS, VOLUME, annotated, bind};
use super::matching::{best_match, bound_to, claim_class};
use super::{BETA_STORAGE_PROVISIONER, BIND_COMPLETED, SELECTED_NODE, STORAGE_PROVISIONER};
use crate::events::{EventRecorder, EventType};

/// Binds PersistentVolumeClaims to PersistentVolumes, as Kubernetes' PV controller:
///
/// - a claim without `storageClassName` gets the default StorageClass;
/// - a claim naming a volume (`spec.volumeName`) is bound to it when the volume is free or
///   pre-bound to it (`spec.claimRef`);
/// - otherwise the smallest fitting Available volume is bound ([`super::best_match`]);
/// - with none, a claim whose class names a provisioner is annotated
///   `volume.kubernetes.io/storage-provisioner` for it (at once for `Immediate`, once the
///   scheduler selected a node for `WaitForFirstConsumer`); the provisioner's volume comes
///   back pre-bound and is bound then;
/// - a bound claim whose volume is gone turns `Lost`.
///
/// Binding writes the volume's `claimRef` and phase, then the claim's `volumeName`,
/// `pv.kubernetes.io/bind-completed`, `pv.kubernetes.io/bound-by-controller`, phase Bound and
/// `status.capacity`/`accessModes`. Events: `FailedBinding`, `WaitForFirstConsumer`,
/// `ExternalProvisioning`, `ClaimLost`.
#[derive(Debug, Clone)]
pub struct ClaimBinder {
    events: EventRecorder,
}

impl Default for ClaimBinder {
    fn default() -> Self {
        Self::new()
    }
}

impl ClaimBinder {
    /// A binder.
    pub fn new() -> Self {
        Self {
            events: EventRecorder::new("persistentvolume-controller"),
        }
    }

    async fn event(
        &self,
        ctx: &ControllerContext,
        claim: &PersistentVolumeClaim,
        type_: EventType,
        reason: &str,
        message: String,
    ) {
        self.events
            .record(&ctx.store, claim, type_, reason, message)
            .await;
    }

    /// Writes `phase` into the claim's status when it differs.
    async fn set_phase(
        &self,
        claims: &Api<PersistentVolumeClaim>,
        claim: &PersistentVolumeClaim,
        phase: &str,
    ) -> Result<(), ReconcileError> {
        if claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(phase) {
            return Ok(());
        }
        let mut c = claim.clone();
        c.status.get_or_insert_with(Default::default).phase = Some(phase.into());
        claims.replace(&c).await?;
        Ok(())
    }

    async fn sync_bound(
        &self,
        ctx: &ControllerContext,
        claims: &Api<PersistentVolumeClaim>,
        claim: &PersistentVolumeClaim,
        volume_name: &str,
    ) -> Result<Action, ReconcileError> {
        let volumes: Api<PersistentVolume> = Api::all(ctx.store.clone());
        match volumes.get_opt(volume_name).await? {
            Some(volume) if bound_to(&volume, claim) => {
                bind(&ctx.store, &volume, claim).await?;
            }
            other => {
                if claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Lost") {
                    let message = match other {
                        None => {
                            "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!"
                        }
                        Some(_) => {
                            "Bound claim has lost its PersistentVolume. Data on the volume is lost!"
                        }
                    };
                    self.event(ctx, claim, EventType::Warning, "ClaimLost", message.into())
                        .await;
                    self.set_phase(claims, claim, "Lost").await?;
                }
            }
        }
        Ok(Action::await_change())
    }

    async fn sync_named(
        &self,
        ctx: &ControllerContext,
        claims: &Api<PersistentVolumeClaim>,
        claim: &PersistentVolumeClaim,
        volume_name: &str,
    ) -> Result<Action, ReconcileError> {
        let volumes: Api<PersistentVolume> = Api::all(ctx.store.clone());
        let Some(volume) = volumes.get_opt(volume_name).await? else {
            self.event(
                ctx,
                claim,
                EventType::Normal,
                "FailedBinding",
                format!("volume \"{volume_name}\" not found"),
            )
            .await;
            self.set_phase(claims, claim, "Pending").await?;
            return Ok(Action::await_change());
        };
        let free = volume
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_none();
        if free || bound_to(&volume, claim) {
            bind(&ctx.store, &volume, claim).await?;
        } else {
            self.event(
                ctx,
                claim,
                EventType::Warning,
                "FailedBinding",
                "volume already bound to a different claim.".into(),
            )
            .await;
            self.set_phase(claims, claim, "Pending").await?;
        }
        Ok(Action::await_change())
    }

    async fn sync_unbound(
        &self,
        ctx: &ControllerContext,
        claims: &Api<PersistentVolumeClaim>,
        claim: &PersistentVolumeClaim,
    ) -> Result<Action, ReconcileError> {
        let class_name = claim_class(claim).to_string();
        let class = claims::class(ctx, &class_name);
        let selected = annotated(&claim.metadata, SELECTED_NODE);
        let delay = claims::waits_for_consumer(class.as_ref()) && !selected;
        let volumes = claims::volumes(ctx);
        if let Some(volume) = best_match(claim, &volumes, delay) {
            bind(&ctx.store, volume, claim).await?;
            return Ok(Action::await_change());
        }
        self.set_phase(claims, claim, "Pending").await?;
        let provisioner = class
            .as_ref()
            .map(|c| c.provisioner.as_str())
            .filter(|p| !p.is_empty() && *p != "kubernetes.io/no-provisioner");
        match (class.as_ref(), provisioner) {
            (_, Some(_)) if delay => {
                self.event(
                    ctx,
                    claim,
                    EventType::Normal,
                    "WaitForFirstConsumer",
                    "waiting for first consumer to be created before binding".into(),
                )
                .await;
            }
            (Some(class), Some(provisioner)) => {
                self.ask_provisioner(ctx, claims, claim, class, provisioner)
                    .await?;
            }
            (Some(_), None) if delay => {
                self.event(
                    ctx,
                    claim,
                    EventType::Normal,
                    "WaitForFirstConsumer",
                    "waiting for first consumer to be created before binding".into(),
                )
                .await;
            }
            (None, _) if !class_name.is_empty() => {
                self.event(
                    ctx,
                    claim,
                    EventType::Warning,
                    "ProvisioningFailed",
                    format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
                )
                .await;
            }
            _ => {
                self.event(
                    ctx,
                    claim,
                    EventType::Normal,
                    "FailedBinding",
                    "no persistent volumes available for this claim and no storage class is set"
                        .into(),
                )
                .await;
            }
        }
        Ok(Action::await_change())
    }

    /// Hands the claim to its class's provisioner: the storage-provisioner annotations, and
    /// the `ExternalProvisioning` event Kubernetes records while it waits.
    async fn ask_provisioner(
        &self,
        ctx: &ControllerContext,
        claims: &Api<PersistentVolumeClaim>,
        claim: &PersistentVolumeClaim,
        _class: &StorageClass,
        provisioner: &str,
    ) -> Result<(), ReconcileError> {
        let current = claim
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(STORAGE_PROVISIONER));
        if current.map(String::as_str) != Some(provisioner) {
            let mut c = claim.clone();
            let annotations = c.metadata.annotations.get_or_insert_with(Default::default);
            annotations.insert(STORAGE_PROVISIONER.into(), provisioner.into());
            annotations.insert(BETA_STORAGE_PROVISIONER.into(), provisioner.into());
            claims.replace(&c).await?;
        }
        self.event(ctx, claim, EventType::Normal, "ExternalProvisioning", format!(
            "Waiting for a volume to be created either by the external provisioner '{provisioner}' \
             or manually by the system administrator. If volume creation is delayed, please \
             verify that the provisioner is running and correctly registered.")).await;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Controller for ClaimBinder {
    fn name(&self) -> &str {
        "persistentvolume-binder"
    }

    fn watches(&self) -> Watches {
        Watches::primary(CLAIM).related(VOLUME).related(CLASS)
    }

    /// A volume's change concerns the claim it references and, when it may be free, every
    /// pending claim; a class's change concerns pending claims.
    fn map_related(
        &self,
        kind: &GroupKind,
        object: &DynamicObject,
        ctx: &ControllerContext,
    ) -> Vec<ObjectKey> {
        let mut keys = Vec::new();
        if *kind == VOLUME {
            let reference = object.field("spec.claimRef");
            if let Some(r) = reference.as_ref() {
                if let (Some(ns), Some(name)) = (r["namespace"].as_str(), r["name"].as_str()) {
                    keys.push(ObjectKey::namespaced(ns, name));
                }
            }
        }
        for claim in ctx.informers.informer(&CLAIM).list() {
            let unbound = claim
                .field("spec.volumeName")
                .and_then(|v| v.as_str().map(str::is_empty))
                .unwrap_or(true);
            if unbound {
                keys.push(claim.key());
            }
        }
        keys
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
        let spec = claim.spec.clone().unwrap_or_default();
        let volume_name = spec.volume_name.clone().unwrap_or_default();
        if spec.storage_class_name.is_none() && volume_name.is_empty() {
            // Retroactive default class assignment: a claim created before any default class
            // existed (or written to a store with no API server admission) gets it now.
            if let Some(default) = claims::default_class(ctx) {
                let mut c = claim.clone();
                c.spec
                    .get_or_insert_with(Default::default)
                    .storage_class_name = default.metadata.name.clone();
                claims.replace(&c).await?;
                return Ok(Action::await_change());
            }
        }
        if !volume_name.is_empty() && annotated(&claim.metadata, BIND_COMPLETED) {
            return self.sync_bound(ctx, &claims, &claim, &volume_name).await;
        }
        if claim.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        if volume_name.is_empty() {
            self.sync_unbound(ctx, &claims, &claim).await
        } else {
            self.sync_named(ctx, &claims, &claim, &volume_name).await
        }
    }
}
