//! Writing decisions to the store: the binding (`spec.nodeName`) and the `PodScheduled`
//! condition, each a read-modify-write guarded by the pod's resourceVersion.

use std::sync::Arc;

use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::{Store, StoreError};
use serde_json::Value;

use super::condition::{set_pod_scheduled, with_object};

/// How often a write is retried when the pod changed between our read and our write.
const CONFLICT_RETRIES: usize = 5;

/// What became of a write.
#[derive(Debug)]
pub(crate) enum Written {
    /// The pod was updated; this is its new state.
    Updated(Box<DynamicObject>),
    /// The pod already said what we wanted to write.
    AlreadySo,
    /// The pod we decided for is gone: deleted, replaced by another with the same name, being
    /// deleted, or bound elsewhere.
    Gone,
}

/// What an edit decides after looking at the current pod.
enum Edit {
    Write,
    AlreadySo,
    Gone,
}

/// Binds the pod at `key` (the one with `uid`) to `node` and marks it `PodScheduled=True`.
pub(crate) async fn bind(
    store: &Arc<dyn Store>,
    key: &ObjectKey,
    uid: Option<&str>,
    node: &str,
) -> Result<Written, StoreError> {
    modify(store, key, uid, |pod| {
        match current_node(pod) {
            Some(bound) if bound == node => return Edit::AlreadySo,
            Some(_) => return Edit::Gone,
            None => {}
        }
        set_node(pod, node);
        Edit::Write
    })
    .await
}

/// Marks the still-unbound pod at `key` `PodScheduled=False` with `reason` and `message`.
pub(crate) async fn mark_unschedulable(
    store: &Arc<dyn Store>,
    key: &ObjectKey,
    uid: Option<&str>,
    reason: &str,
    message: &str,
) -> Result<Written, StoreError> {
    modify(store, key, uid, |pod| {
        if current_node(pod).is_some() {
            return Edit::Gone;
        }
        if set_pod_scheduled(pod, false, Some(reason), Some(message)) {
            Edit::Write
        } else {
            Edit::AlreadySo
        }
    })
    .await
}

/// Records `status.nominatedNodeName` on the still-unbound pod (preemption made room there).
pub(crate) async fn nominate(
    store: &Arc<dyn Store>,
    key: &ObjectKey,
    uid: Option<&str>,
    node: &str,
) -> Result<Written, StoreError> {
    modify(store, key, uid, |pod| {
        if current_node(pod).is_some() {
            return Edit::Gone;
        }
        if pod
            .field("status.nominatedNodeName")
            .and_then(|v| v.as_str().map(str::to_string))
            == Some(node.to_string())
        {
            return Edit::AlreadySo;
        }
        with_object(&mut pod.data, "status", |status| {
            status.insert("nominatedNodeName".into(), Value::from(node));
        });
        Edit::Write
    })
    .await
}

/// Sets `spec.nodeName` and `PodScheduled=True`.
pub(crate) fn set_node(pod: &mut DynamicObject, node: &str) {
    with_object(&mut pod.data, "spec", |spec| {
        spec.insert("nodeName".into(), Value::from(node));
    });
    set_pod_scheduled(pod, true, None, None);
}

/// The pod's `spec.nodeName`, if set.
pub(crate) fn current_node(pod: &DynamicObject) -> Option<String> {
    pod.field("spec.nodeName")
        .and_then(|v| v.as_str().map(str::to_string))
        .filter(|n| !n.is_empty())
}

/// Reads the pod, lets `edit` change it, and writes it back with the resourceVersion read, so a
/// concurrent change is never overwritten: on conflict, read and edit again.
async fn modify(
    store: &Arc<dyn Store>,
    key: &ObjectKey,
    uid: Option<&str>,
    mut edit: impl FnMut(&mut DynamicObject) -> Edit,
) -> Result<Written, StoreError> {
    let kind = GroupKind::POD;
    let mut last_conflict = None;
    for _ in 0..CONFLICT_RETRIES {
        let mut pod = match store.get(&kind, key).await {
            Ok(pod) => pod,
            Err(e) if e.is_not_found() => return Ok(Written::Gone),
            Err(e) => return Err(e),
        };
        let same_pod = uid.is_none_or(|uid| pod.metadata.uid.as_deref() == Some(uid));
        if !same_pod || pod.metadata.deletion_timestamp.is_some() {
            return Ok(Written::Gone);
        }
        match edit(&mut pod) {
            Edit::AlreadySo => return Ok(Written::AlreadySo),
            Edit::Gone => return Ok(Written::Gone),
            Edit::Write => {}
        }
        match store.update(pod).await {
            Ok(updated) => return Ok(Written::Updated(Box::new(updated))),
            Err(e) if e.is_conflict() => last_conflict = Some(e),
            Err(e) if e.is_not_found() => return Ok(Written::Gone),
            Err(e) => return Err(e),
        }
    }
    Err(last_conflict.unwrap_or_else(|| StoreError::Conflict {
        kind,
        key: key.clone(),
        message: "pod kept changing".into(),
    }))
}
