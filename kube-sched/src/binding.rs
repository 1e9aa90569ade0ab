//! Writing a decision to a [`Store`]: the binding the scheduling loop uses, public so that
//! embedders (and the benchmark) bind exactly as the loop does.

use std::sync::Arc;

use kube_core::object::ObjectKey;
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

/// Binds the pod at `key` (the one with `uid`, if given) to `node`: one write guarded by the
/// pod's resourceVersion, retried on conflict, setting `spec.nodeName` and `PodScheduled=True`.
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
