//! Writing a decision to a [`Store`]: the [`Binder`] the scheduling loop binds with, pluggable
//! as kube-scheduler's Bind plugin is.
//!
//! - [`StoreBinder`] (the default) edits the pod in the store: `spec.nodeName` and
//!   `PodScheduled=True` in one write guarded by the pod's resourceVersion, re-read and retried
//!   on conflict.
//! - [`BindingSubresource`] follows the API server's `pods/binding` semantics, for stores that
//!   stand for an API server and for tests that want its behaviour: the caller gives no
//!   resourceVersion; the server reads the pod and writes `spec.nodeName` (and
//!   `PodScheduled=True`) with a compare-and-swap on what it read, retrying internally when
//!   something else changed the pod meanwhile, and fails with [`StoreError::Conflict`] when the
//!   pod is already bound (to any node, the same one included), being deleted, or has another
//!   uid than the one bound for.
//!
//! A store client of a real API server cannot update `spec.nodeName` with a plain update (the
//! API server forbids it); it implements [`Binder`] by POSTing a `Binding` to
//! `pods/{name}/binding`, which is what [`BindingSubresource`] models.

use std::fmt;
use std::sync::Arc;

use kube_core::object::{GroupKind, ObjectKey};
use kube_core::store::{Store, StoreError};

use crate::scheduling_loop::bind::{self, Written};

/// What a binding write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindOutcome {
    /// `spec.nodeName` and `PodScheduled=True` were written.
    Bound,
    /// The pod was already bound to that node.
    AlreadyBound,
    /// The pod is gone, being deleted, replaced (other uid) or bound elsewhere.
    Gone,
}

/// Writes the binding of a pod to a node: the loop's Bind step.
///
/// The scheduling loop treats `Ok(Bound | AlreadyBound)` as bound, `Ok(Gone)` and errors for
/// which [`StoreError::is_not_found`] or [`StoreError::is_conflict`] hold as "the pod is gone
/// or someone else bound it" (the assumption is dropped; the informer shows what happened),
/// and any other error as a failure retried with backoff.
#[async_trait::async_trait]
pub trait Binder: Send + Sync + fmt::Debug {
    /// Binds the pod at `key` (the one with `uid`, if given) to `node` in `store`.
    async fn bind(
        &self,
        store: &Arc<dyn Store>,
        key: &ObjectKey,
        uid: Option<&str>,
        node: &str,
    ) -> Result<BindOutcome, StoreError>;
}

/// The default [`Binder`]: a read-modify-write of the pod guarded by its resourceVersion.
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreBinder;

#[async_trait::async_trait]
impl Binder for StoreBinder {
    async fn bind(
        &self,
        store: &Arc<dyn Store>,
        key: &ObjectKey,
        uid: Option<&str>,
        node: &str,
    ) -> Result<BindOutcome, StoreError> {
        bind_pod(store, key, uid, node).await
    }
}

/// A [`Binder`] with the API server's `pods/binding` semantics (see the module docs): a
/// resourceVersion-less compare-and-swap of `spec.nodeName` that fails with
/// [`StoreError::Conflict`] if the pod is already bound, and with [`StoreError::NotFound`] if
/// there is no such pod.
#[derive(Clone, Copy, Debug, Default)]
pub struct BindingSubresource;

/// How often the server side of a binding re-reads a pod that changed under it.
const BINDING_CAS_RETRIES: usize = 5;

#[async_trait::async_trait]
impl Binder for BindingSubresource {
    async fn bind(
        &self,
        store: &Arc<dyn Store>,
        key: &ObjectKey,
        uid: Option<&str>,
        node: &str,
    ) -> Result<BindOutcome, StoreError> {
        let kind = GroupKind::POD;
        let conflict = |message: String| StoreError::Conflict {
            kind: kind.clone(),
            key: key.clone(),
            message,
        };
        let mut last = None;
        for _ in 0..BINDING_CAS_RETRIES {
            let mut pod = store.get(&kind, key).await?;
            if let Some(uid) = uid {
                let actual = pod.metadata.uid.as_deref().unwrap_or("");
                if actual != uid {
                    return Err(conflict(format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    )));
                }
            }
            if pod.metadata.deletion_timestamp.is_some() {
                return Err(conflict(format!("pod {} is being deleted", key.name)));
            }
            if let Some(bound) = bind::current_node(&pod) {
                return Err(conflict(format!(
                    "pod {} is already assigned to node \"{bound}\"",
                    key.name
                )));
            }
            bind::set_node(&mut pod, node);
            // The resourceVersion just read makes the write a compare-and-swap: a concurrent
            // change (another binding included) makes it fail, and the loop re-checks.
            match store.update(pod).await {
                Ok(_) => return Ok(BindOutcome::Bound),
                Err(e) if e.is_conflict() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| conflict("pod kept changing".into())))
    }
}

/// Binds the pod at `key` (the one with `uid`, if given) to `node`: one write guarded by the
/// pod's resourceVersion, retried on conflict, setting `spec.nodeName` and `PodScheduled=True`
/// ([`StoreBinder`]'s write).
pub async fn bind_pod(
    store: &Arc<dyn Store>,
    key: &ObjectKey,
    uid: Option<&str>,
    node: &str,
) -> Result<BindOutcome, StoreError> {
    Ok(match bind::bind(store, key, uid, node).await? {
        Written::Updated(_) => BindOutcome::Bound,
        Written::AlreadySo => BindOutcome::AlreadyBound,
        Written::Gone => BindOutcome::Gone,
    })
}
