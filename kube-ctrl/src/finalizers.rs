//! Finalizer helpers: add or remove a controller's finalizer on any object, retrying on
//! concurrent writes.
//!
//! A controller that must clean up outside the object before it goes adds its finalizer when it
//! first sees the object, and removes it once cleanup is done after `deletionTimestamp` is set.
//! (Our stores delete immediately; finalizers are honoured by [`crate::deletion::delete`] and by
//! controllers that check them, not by the store.)

use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::{Store, StoreError};

/// Whether `object` carries `finalizer`.
pub fn has_finalizer(object: &DynamicObject, finalizer: &str) -> bool {
    object
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == finalizer)
}

async fn edit(
    store: &dyn Store,
    kind: &GroupKind,
    key: &ObjectKey,
    change: impl Fn(&mut Vec<String>) -> bool,
) -> Result<bool, StoreError> {
    loop {
        let mut object = store.get(kind, key).await?;
        let mut finalizers = object.metadata.finalizers.take().unwrap_or_default();
        if !change(&mut finalizers) {
            return Ok(false);
        }
        object.metadata.finalizers = (!finalizers.is_empty()).then_some(finalizers);
        match store.update(object).await {
            Ok(_) => return Ok(true),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Adds `finalizer` to the object (no-op if present); returns whether it wrote.
pub async fn add_finalizer(
    store: &dyn Store,
    kind: &GroupKind,
    key: &ObjectKey,
    finalizer: &str,
) -> Result<bool, StoreError> {
    edit(store, kind, key, |fs| {
        if fs.iter().any(|f| f == finalizer) {
            return false;
        }
        fs.push(finalizer.to_string());
        true
    })
    .await
}

/// Removes `finalizer` from the object (no-op if absent or the object is gone); returns
/// whether it wrote.
pub async fn remove_finalizer(
    store: &dyn Store,
    kind: &GroupKind,
    key: &ObjectKey,
    finalizer: &str,
) -> Result<bool, StoreError> {
    let result = edit(store, kind, key, |fs| {
        let before = fs.len();
        fs.retain(|f| f != finalizer);
        fs.len() != before
    })
    .await;
    match result {
        Err(e) if e.is_not_found() => Ok(false),
        other => other,
    }
}
