//! [`Volumes`]: the claims, volumes and storage classes the scheduler's volume plugins read,
//! kept in the [`Cluster`](super::Cluster) beside the nodes and pods.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube_core::object::ObjectKey;

/// PersistentVolumeClaims by key, PersistentVolumes and StorageClasses by name.
#[derive(Clone, Debug, Default)]
pub struct Volumes {
    claims: HashMap<ObjectKey, Arc<PersistentVolumeClaim>>,
    volumes: BTreeMap<String, Arc<PersistentVolume>>,
    classes: HashMap<String, Arc<StorageClass>>,
}

impl Volumes {
    /// Nothing known.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing is known (a cluster built from a plain snapshot tracks no volumes).
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty() && self.volumes.is_empty() && self.classes.is_empty()
    }

    /// Adds or replaces a claim.
    pub fn set_claim(&mut self, claim: PersistentVolumeClaim) {
        let key = ObjectKey::from_meta(&claim.metadata);
        self.claims.insert(key, Arc::new(claim));
    }

    /// Forgets a claim.
    pub fn remove_claim(&mut self, key: &ObjectKey) {
        self.claims.remove(key);
    }

    /// Adds or replaces a volume.
    pub fn set_volume(&mut self, volume: PersistentVolume) {
        let name = volume.metadata.name.clone().unwrap_or_default();
        self.volumes.insert(name, Arc::new(volume));
    }

    /// Forgets a volume.
    pub fn remove_volume(&mut self, name: &str) {
        self.volumes.remove(name);
    }

    /// Adds or replaces a storage class.
    pub fn set_class(&mut self, class: StorageClass) {
        let name = class.metadata.name.clone().unwrap_or_default();
        self.classes.insert(name, Arc::new(class));
    }

    /// Forgets a storage class.
    pub fn remove_class(&mut self, name: &str) {
        self.classes.remove(name);
    }

    /// The claim `name` in `namespace`.
    pub fn claim(&self, namespace: &str, name: &str) -> Option<&Arc<PersistentVolumeClaim>> {
        self.claims.get(&ObjectKey::namespaced(
            namespace.to_string(),
            name.to_string(),
        ))
    }

    /// The volume `name`.
    pub fn volume(&self, name: &str) -> Option<&Arc<PersistentVolume>> {
        self.volumes.get(name)
    }

    /// Every volume, by name.
    pub fn volumes(&self) -> impl Iterator<Item = &Arc<PersistentVolume>> {
        self.volumes.values()
    }

    /// The storage class `name`.
    pub fn class(&self, name: &str) -> Option<&Arc<StorageClass>> {
        self.classes.get(name)
    }
}
