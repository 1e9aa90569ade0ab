//! The PriorityClasses every cluster has, written by the API server at start as
//! kube-apiserver's scheduling storage does: `system-cluster-critical` and
//! `system-node-critical`.

use kube_core::object::DynamicObject;
use kube_core::store::{Store, StoreError};
use serde_json::json;

/// Priority of `system-cluster-critical`; `system-node-critical` is 1000 more.
pub(crate) const SYSTEM_CRITICAL_PRIORITY: i64 = 2_000_000_000;
/// The highest value a user's class may have.
pub(crate) const HIGHEST_USER_DEFINABLE_PRIORITY: i64 = 1_000_000_000;

/// The built-in classes: name, value, description.
pub(crate) const SYSTEM_CLASSES: [(&str, i64, &str); 2] = [
    (
        "system-node-critical",
        SYSTEM_CRITICAL_PRIORITY + 1000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        SYSTEM_CRITICAL_PRIORITY,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// Creates the built-in classes that are missing (existing ones are left as they are, as
/// Kubernetes does: their value cannot change anyway).
pub(crate) async fn ensure(store: &dyn Store) -> Result<(), StoreError> {
    for (name, value, description) in SYSTEM_CLASSES {
        let class: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
            "description": description,
            "preemptionPolicy": "PreemptLowerPriority",
        }))
        .map_err(|e| StoreError::Invalid(format!("system priority class: {e}")))?;
        match store.create(class).await {
            Ok(_) => {}
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
