//! [`GarbageCollector`]: deletes objects whose owners are all gone.

use std::sync::Arc;

use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::kind::Registry;
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::{Preconditions, StoreError};

use crate::index::OwnerIndex;

/// Collects dependents of one kind (e.g. Pods) whose owners (e.g. ReplicaSets) no longer exist,
/// as Kubernetes' garbage collector does with background propagation: a dependent all of whose
/// owner references dangle is deleted; one with some live owners has the dangling references
/// removed.
///
/// An owner missing from the cache is confirmed missing with a live read before anything is
/// deleted, so a dependent created right after its owner is never collected by mistake.
#[derive(Debug, Clone)]
pub struct GarbageCollector {
    dependent: GroupKind,
    owners: Vec<GroupKind>,
    name: String,
    /// Dependents by owner UID, so an owner's change does not scan every dependent.
    index: Arc<OwnerIndex>,
}

impl GarbageCollector {
    /// A collector of `dependent` objects. Add the owner kinds to react to with [`Self::owner`].
    pub fn new(dependent: GroupKind) -> Self {
        let name = format!("garbage-collector-{}", dependent.kind.to_ascii_lowercase());
        Self {
            index: Arc::new(OwnerIndex::new(dependent.clone())),
            dependent,
            owners: Vec::new(),
            name,
        }
    }

    /// Reacts to deletions of `owner` objects by checking their dependents.
    pub fn owner(mut self, owner: GroupKind) -> Self {
        self.owners.push(owner);
        self
    }

    /// Whether the owner named by `reference` exists with the same UID (live read if the cache
    /// does not have it).
    async fn owner_exists(
        &self,
        ctx: &ControllerContext,
        namespace: Option<&str>,
        reference: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    ) -> Result<bool, StoreError> {
        let kind = GroupKind::from_api_version(&reference.api_version, &reference.kind);
        let namespaced = Registry::builtin()
            .get(&kind)
            .is_none_or(|info| info.namespaced);
        let key = ObjectKey {
            namespace: if namespaced {
                namespace.map(str::to_string)
            } else {
                None
            },
            name: reference.name.clone(),
        };
        if self.owners.contains(&kind) {
            if let Some(cached) = ctx.informers.informer(&kind).get(&key) {
                if cached.metadata.uid.as_deref() == Some(reference.uid.as_str()) {
                    return Ok(true);
                }
            }
        }
        match ctx.store.get(&kind, &key).await {
            Ok(owner) => Ok(owner.metadata.uid.as_deref() == Some(reference.uid.as_str())),
            Err(e) if e.is_not_found() => Ok(false),
            // An owner of a kind this store does not serve cannot exist.
            Err(StoreError::Invalid(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[async_trait::async_trait]
impl Controller for GarbageCollector {
    fn name(&self) -> &str {
        &self.name
    }

    fn watches(&self) -> Watches {
        let mut watches = Watches::primary(self.dependent.clone());
        watches.related = self.owners.clone();
        watches
    }

    fn map_related(
        &self,
        _kind: &GroupKind,
        owner: &DynamicObject,
        ctx: &ControllerContext,
    ) -> Vec<ObjectKey> {
        let Some(uid) = owner.metadata.uid.as_deref() else {
            return Vec::new();
        };
        self.index
            .view(&ctx.informers)
            .owned_by(uid)
            .iter()
            .map(|d| d.key())
            .collect()
    }

    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        let dependent = match ctx.store.get(&self.dependent, key).await {
            Ok(d) => d,
            Err(e) if e.is_not_found() => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        };
        let references = dependent
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default();
        if references.is_empty() {
            return Ok(Action::await_change());
        }
        let mut live = Vec::new();
        for reference in &references {
            if self
                .owner_exists(ctx, key.namespace.as_deref(), reference)
                .await?
            {
                live.push(reference.clone());
            }
        }
        if live.is_empty() {
            let pre = Preconditions::uid(dependent.metadata.uid.clone().unwrap_or_default());
            match ctx.store.delete(&self.dependent, key, &pre).await {
                Ok(_) => tracing::debug!(object = %key, kind = %self.dependent, "collected orphan"),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        } else if live.len() < references.len() {
            let mut updated = dependent;
            updated.metadata.owner_references = Some(live);
            ctx.store.update(updated).await?;
        }
        Ok(Action::await_change())
    }
}
