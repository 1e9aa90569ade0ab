//! Persistent volumes, as Kubernetes' PV controller (pkg/controller/volume/persistentvolume),
//! its protection controllers and k3s's local-path provisioner do them:
//!
//! - [`ClaimBinder`] binds PersistentVolumeClaims to PersistentVolumes: statically (the
//!   smallest Available volume of the claim's class whose access modes, capacity and labels
//!   fit, or the one `spec.volumeName` names) and dynamically (a [`Provisioner`] registered
//!   for the claim's StorageClass makes a volume — at once for `volumeBindingMode: Immediate`,
//!   once the scheduler wrote [`SELECTED_NODE`] for `WaitForFirstConsumer`). Claims without a
//!   class get the default StorageClass (Kubernetes' retroactive default class assignment).
//! - [`VolumeReclaimer`] keeps volumes' phases (Available, Bound, Released, Failed) and
//!   reclaims released ones: `Delete` deletes the volume (and the provisioner its storage),
//!   `Retain` leaves it Released.
//! - [`PvcProtectionController`] and [`PvProtectionController`]: the
//!   `kubernetes.io/pvc-protection` and `kubernetes.io/pv-protection` finalizers (a claim a pod
//!   uses, a volume a claim is bound to, stays until it is no longer in use).
//! - [`Provisioner`]s run as Kubernetes' external provisioners ([`with_provisioner`]:
//!   [`ProvisioningController`] and [`DeletingController`]); [`LocalPathProvisioner`] is k3s's
//!   `rancher.io/local-path`, a directory per volume on the node the pod was scheduled to.
//!
//! Our stores delete at once and run no finalizers (the API server does): where a controller
//! removes the last finalizer of an object marked for deletion, it deletes the object itself
//! (a no-op through the API server, which already did).

mod binder;
mod claims;
mod local_path;
mod matching;
mod protection;
mod provision;
mod reclaim;

pub use binder::ClaimBinder;
pub use claims::is_default_class;
pub use local_path::{LOCAL_PATH_PROVISIONER, LocalPathProvisioner, local_path_storage_class};
pub use matching::{access_modes_fit, best_match, claim_request, volume_capacity};
pub use protection::{PvProtectionController, PvcProtectionController};
pub use provision::{
    DeletingController, ProvisioningController, provisioned_volume_name, with_provisioner,
};
pub use reclaim::VolumeReclaimer;

use std::fmt;

use crate::ControllerManager;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

/// Claim annotation: the controller finished binding the claim.
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Claim and volume annotation: the controller (not the user) made the binding.
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// Claim annotation written by the scheduler: the node a `WaitForFirstConsumer` volume is
/// provisioned for.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Claim annotation: the provisioner asked to provision it.
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The beta spelling of [`STORAGE_PROVISIONER`], still written by Kubernetes.
pub const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// Volume annotation: the provisioner that made it (and deletes it).
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// StorageClass annotation marking the default class.
pub const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// The finalizer keeping a claim while pods use it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer keeping a volume while a claim is bound to it.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// Why provisioning or deleting storage failed.
pub type ProvisionError = Box<dyn std::error::Error + Send + Sync>;

/// Makes and deletes volumes for the StorageClasses naming it (`provisioner`), as an external
/// provisioner does in Kubernetes.
pub trait Provisioner: Send + Sync + fmt::Debug {
    /// The name StorageClasses use in `provisioner`, e.g. `rancher.io/local-path`.
    fn name(&self) -> &str;

    /// A volume for `claim` of `class` named `name`, on `node` when the claim waited for its
    /// first consumer. The binder sets the claim reference, class, reclaim policy and the
    /// provisioned-by annotation; the provisioner fills the source (and node affinity).
    fn provision(
        &self,
        name: &str,
        claim: &PersistentVolumeClaim,
        class: &StorageClass,
        node: Option<&str>,
    ) -> Result<PersistentVolume, ProvisionError>;

    /// Deletes the storage behind `volume` (before the volume object goes).
    fn delete(&self, volume: &PersistentVolume) -> Result<(), ProvisionError>;
}

/// Adds the PV controller's parts — [`ClaimBinder`], [`VolumeReclaimer`],
/// [`PvcProtectionController`], [`PvProtectionController`] — to `manager`. Provisioners are
/// added apart ([`with_provisioner`]), as Kubernetes runs external provisioners.
pub fn with_volume_controllers(manager: ControllerManager) -> ControllerManager {
    manager
        .with(ClaimBinder::new())
        .with(VolumeReclaimer::new())
        .with(PvcProtectionController::new())
        .with(PvProtectionController::new())
}
