//! Cascading deletion with foreground and orphan propagation: [`delete`] and
//! [`DeletionFinalizer`].
//!
//! Kubernetes' API server marks an object deleted with `propagationPolicy: Foreground` or
//! `Orphan` by setting `deletionTimestamp` and a finalizer (`foregroundDeletion`, `orphan`);
//! the garbage collector deletes (or orphans) the dependents, then removes the finalizer and the
//! object goes. Our stores delete immediately and run no finalizers, so [`delete`] does the API
//! server's part (a marking update) and [`DeletionFinalizer`] the collector's. Background
//! propagation is a plain delete: [`crate::GarbageCollector`] collects the dependents after.
//!
//! Foreground deletion is recursive, as Kubernetes' garbage collector: a dependent that has
//! dependents of its own is itself deleted in foreground (marked, its dependents deleted first,
//! then it), so deleting a Deployment in foreground deletes its Pods, then its ReplicaSets, then
//! it. The owner waits only for dependents whose owner reference sets `blockOwnerDeletion`.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey, now};
use kube_core::store::{Preconditions, Store, StoreError};

use crate::index::OwnerIndex;

/// Deepest chain of owners a foreground deletion follows (guards against ownership cycles).
const MAX_DEPTH: usize = 16;

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
/// In a foreground deletion, a dependent with dependents of its own is deleted in foreground
/// too, recursively, so list every kind of the ownership tree below the owner (for a
/// Deployment: ReplicaSets *and* Pods). The owner is deleted once no dependent whose owner
/// reference sets `blockOwnerDeletion` remains; other dependents are deleted without waiting
/// for them. A dependent already being deleted by someone else (a `deletionTimestamp` without
/// our `foregroundDeletion` finalizer) is waited for, not deleted again.
#[derive(Debug, Clone)]
pub struct DeletionFinalizer {
    owner: GroupKind,
    dependents: Vec<(GroupKind, Arc<OwnerIndex>)>,
    name: String,
}

/// Whether `object` has an owner reference to `uid` that blocks the owner's deletion.
fn blocks(object: &DynamicObject, uid: &str) -> bool {
    object
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
}

fn has_finalizer(object: &DynamicObject, finalizer: &str) -> bool {
    object
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == finalizer)
}

/// Ignores "gone" and "changed meanwhile": the next pass sees the new state.
fn tolerate(result: Result<(), StoreError>) -> Result<(), StoreError> {
    match result {
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        other => other,
    }
}

impl DeletionFinalizer {
    /// Finalizes deletions of `owner` objects. Add dependent kinds with [`Self::dependent`].
    ///
    /// The dependent kinds Kubernetes' own controllers give a built-in owner are included
    /// (a ReplicaSet's or ReplicationController's Pods, a Deployment's ReplicaSets and their
    /// Pods, ...), so an orphaning deletion removes their owner references.
    pub fn new(owner: GroupKind) -> Self {
        let name = format!("deletion-{}", owner.kind.to_ascii_lowercase());
        let builtin: &[GroupKind] = match (owner.group.as_ref(), owner.kind.as_ref()) {
            ("apps", "Deployment") => &[GroupKind::REPLICA_SET, GroupKind::POD],
            ("apps", "ReplicaSet" | "DaemonSet" | "StatefulSet")
            | ("", "ReplicationController")
            | ("batch", "Job") => &[GroupKind::POD],
            ("batch", "CronJob") => &[GroupKind::from_static("batch", "Job"), GroupKind::POD],
            _ => &[],
        };
        builtin.iter().fold(
            Self {
                owner,
                dependents: Vec::new(),
                name,
            },
            |finalizer, kind| finalizer.dependent(kind.clone()),
        )
    }

    /// Also deletes or orphans dependents of `kind` (direct dependents of the owner, or
    /// dependents of its dependents).
    pub fn dependent(mut self, kind: GroupKind) -> Self {
        if self.dependents.iter().any(|(k, _)| *k == kind) {
            return self;
        }
        let index = Arc::new(OwnerIndex::new(kind.clone()));
        self.dependents.push((kind, index));
        self
    }

    /// Cached objects of the dependent kinds with an owner reference to `uid`.
    fn dependents_of(
        &self,
        ctx: &ControllerContext,
        uid: &str,
    ) -> Vec<(GroupKind, Arc<DynamicObject>)> {
        let mut found = Vec::new();
        for (kind, index) in &self.dependents {
            for d in index.view(&ctx.informers).owned_by(uid) {
                found.push((kind.clone(), d));
            }
        }
        found
    }

    /// One pass of a foreground deletion below the object `uid`: deletes its dependents (in
    /// foreground, recursively, those that have dependents) and returns whether any dependent
    /// that blocks its deletion is still there.
    fn delete_dependents<'a>(
        &'a self,
        ctx: &'a ControllerContext,
        uid: String,
        depth: usize,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let mut blocked = false;
            for (kind, dependent) in self.dependents_of(ctx, &uid) {
                // Until the cache stops showing it, it is there.
                blocked |= blocks(&dependent, &uid);
                let being_deleted = dependent.metadata.deletion_timestamp.is_some();
                let ours = has_finalizer(&dependent, FOREGROUND);
                if being_deleted && !ours {
                    // Someone else's deletion (orphaning, or other finalizers): wait for it.
                    continue;
                }
                let key = dependent.key();
                let dependent_uid = dependent.metadata.uid.clone().unwrap_or_default();
                let pre = Preconditions::uid(dependent_uid.clone());
                if !ours && self.dependents_of(ctx, &dependent_uid).is_empty() {
                    tolerate(ctx.store.delete(&kind, &key, &pre).await.map(|_| ()))?;
                    continue;
                }
                if depth >= MAX_DEPTH {
                    tracing::warn!(object = %key, kind = %kind, "ownership chain too deep; not following it");
                    continue;
                }
                if !ours {
                    // It has dependents: it goes in foreground too, after them.
                    tolerate(delete(&ctx.store, &kind, &key, Propagation::Foreground).await)?;
                }
                if !self
                    .delete_dependents(ctx, dependent_uid, depth + 1)
                    .await?
                {
                    tolerate(ctx.store.delete(&kind, &key, &pre).await.map(|_| ()))?;
                }
            }
            Ok(blocked)
        })
    }
}

#[async_trait::async_trait]
impl Controller for DeletionFinalizer {
    fn name(&self) -> &str {
        &self.name
    }

    fn watches(&self) -> Watches {
        let mut watches = Watches::primary(self.owner.clone());
        watches.related = self.dependents.iter().map(|(k, _)| k.clone()).collect();
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
        let blocked = if orphan {
            let dependents = self.dependents_of(ctx, &uid);
            for (_, dependent) in &dependents {
                let mut updated = (**dependent).clone();
                if let Some(refs) = updated.metadata.owner_references.as_mut() {
                    refs.retain(|r| r.uid != uid);
                }
                // No references left: none at all, as Kubernetes writes it.
                if updated
                    .metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(Vec::is_empty)
                {
                    updated.metadata.owner_references = None;
                }
                tolerate(ctx.store.update(updated).await.map(|_| ()))?;
            }
            !dependents.is_empty()
        } else {
            self.delete_dependents(ctx, uid.clone(), 0).await?
        };
        if blocked {
            // Wait until the caches show the dependents gone (or orphaned) before the owner goes.
            return Ok(Action::requeue(Duration::from_millis(50)));
        }
        // Our finalizers removed, as Kubernetes' garbage collector does: through an API
        // server that deletes the object (its last finalizer gone); other finalizers keep it.
        let mut finalized = owner.clone();
        if let Some(list) = finalized.metadata.finalizers.as_mut() {
            list.retain(|f| f != FOREGROUND && f != ORPHAN);
        }
        let others = finalized
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| !f.is_empty());
        match ctx.store.update(finalized).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(Action::await_change()),
            Err(e) if e.is_conflict() => return Ok(Action::requeue(Duration::from_millis(50))),
            Err(e) => return Err(e.into()),
        }
        if others {
            return Ok(Action::await_change());
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
