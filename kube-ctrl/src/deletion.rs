//! Cascading deletion with foreground and orphan propagation: [`delete`] and
//! [`DeletionFinalizer`].
//!
//! Kubernetes' API server marks an object deleted with `propagationPolicy: Foreground` or
//! `Orphan` by setting `deletionTimestamp` and a finalizer (`foregroundDeletion`, `orphan`);
//! the garbage collector deletes (or orphans) the dependents, then removes the finalizer and the
//! object goes. Our stores delete immediately and run no finalizers, so [`delete`] does the API
//! server's part (a marking update) and [`DeletionFinalizer`] the collector's. Background
//! propagation is a plain delete: [`crate::GarbageCollector`] collects the dependents after.

use std::sync::Arc;
use std::time::Duration;

use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey, now};
use kube_core::store::{Preconditions, Store, StoreError};

/// The finalizer of a foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of an orphaning deletion.
pub const ORPHAN: &str = "orphan";

/// What happens to an object's dependents when it is deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Delete the object now; dependents are collected afterwards.
    #[default]
    Background,
    /// Delete the dependents first, then the object.
    Foreground,
    /// Keep the dependents, without their owner reference to the object.
    Orphan,
}

/// Deletes an object with `propagation`. Foreground and orphan deletions only mark the object
/// (deletionTimestamp and a finalizer): a [`DeletionFinalizer`] for its kind completes them.
pub async fn delete(
    store: &Arc<dyn Store>,
    kind: &GroupKind,
    key: &ObjectKey,
    propagation: Propagation,
) -> Result<(), StoreError> {
    let finalizer = match propagation {
        Propagation::Background => {
            return store
                .delete(kind, key, &Preconditions::default())
                .await
                .map(|_| ());
        }
        Propagation::Foreground => FOREGROUND,
        Propagation::Orphan => ORPHAN,
    };
    loop {
        let mut object = store.get(kind, key).await?;
        let finalizers = object.metadata.finalizers.get_or_insert_with(Vec::new);
        if !finalizers.iter().any(|f| f == finalizer) {
            finalizers.push(finalizer.to_string());
        }
        if object.metadata.deletion_timestamp.is_none() {
            object.metadata.deletion_timestamp = Some(now());
        }
        match store.update(object).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Completes foreground and orphan deletions of objects of one owner kind: deletes (or
/// orphans) their dependents of the configured kinds, then deletes the owner.
///
/// The owner is deleted once no dependent of *these* kinds refers to it; add every dependent
/// kind of the owner kind here.
#[derive(Debug, Clone)]
pub struct DeletionFinalizer {
    owner: GroupKind,
    dependents: Vec<GroupKind>,
    name: String,
}

impl DeletionFinalizer {
    /// Finalizes deletions of `owner` objects. Add dependent kinds with [`Self::dependent`].
    pub fn new(owner: GroupKind) -> Self {
        let name = format!("deletion-{}", owner.kind.to_ascii_lowercase());
        Self {
            owner,
            dependents: Vec::new(),
            name,
        }
    }

    /// Also deletes or orphans dependents of `kind`.
    pub fn dependent(mut self, kind: GroupKind) -> Self {
        self.dependents.push(kind);
        self
    }

    fn dependents_of(
        &self,
        ctx: &ControllerContext,
        uid: &str,
    ) -> Vec<(GroupKind, Arc<DynamicObject>)> {
        let mut found = Vec::new();
        for kind in &self.dependents {
            for d in ctx.informers.informer(kind).list() {
                if d.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == uid)
                {
                    found.push((kind.clone(), d));
                }
            }
        }
        found
    }
}

#[async_trait::async_trait]
impl Controller for DeletionFinalizer {
    fn name(&self) -> &str {
        &self.name
    }

    fn watches(&self) -> Watches {
        let mut watches = Watches::primary(self.owner.clone());
        watches.related = self.dependents.clone();
        watches
    }

    fn map_related(
        &self,
        _kind: &GroupKind,
        dependent: &DynamicObject,
        _ctx: &ControllerContext,
    ) -> Vec<ObjectKey> {
        dependent
            .metadata
            .owner_references
            .iter()
            .flatten()
            .filter(|r| GroupKind::from_api_version(&r.api_version, &r.kind) == self.owner)
            .map(|r| ObjectKey {
                namespace: dependent.metadata.namespace.clone(),
                name: r.name.clone(),
            })
            .collect()
    }

    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        let owner = match ctx.store.get(&self.owner, key).await {
            Ok(o) => o,
            Err(e) if e.is_not_found() => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        };
        if owner.metadata.deletion_timestamp.is_none() {
            return Ok(Action::await_change());
        }
        let finalizers = owner.metadata.finalizers.clone().unwrap_or_default();
        let foreground = finalizers.iter().any(|f| f == FOREGROUND);
        let orphan = finalizers.iter().any(|f| f == ORPHAN);
        if !foreground && !orphan {
            return Ok(Action::await_change());
        }
        let uid = owner.metadata.uid.clone().unwrap_or_default();
        let dependents = self.dependents_of(ctx, &uid);
        for (kind, dependent) in &dependents {
            let dkey = dependent.key();
            let result = if orphan {
                let mut updated = (**dependent).clone();
                if let Some(refs) = updated.metadata.owner_references.as_mut() {
                    refs.retain(|r| r.uid != uid);
                }
                ctx.store.update(updated).await.map(|_| ())
            } else {
                let pre = Preconditions::uid(dependent.metadata.uid.clone().unwrap_or_default());
                ctx.store.delete(kind, &dkey, &pre).await.map(|_| ())
            };
            match result {
                Ok(()) => {}
                // Gone or changed meanwhile: the next pass sees the new state.
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !dependents.is_empty() {
            // Wait until the caches show the dependents gone (or orphaned) before the owner goes.
            return Ok(Action::requeue(Duration::from_millis(50)));
        }
        match ctx
            .store
            .delete(&self.owner, key, &Preconditions::uid(uid))
            .await
        {
            Ok(_) => {
                tracing::debug!(object = %key, kind = %self.owner, foreground, "deletion finalized")
            }
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Action::await_change())
    }
}
