//! [`NamespaceController`]: deleting a namespace deletes what is in it, then the namespace.

use std::sync::Arc;
use std::time::Duration;

use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::kind::Registry;
use kube_core::object::{GroupKind, ObjectKey, now};
use kube_core::store::{ListOptions, Preconditions, Store, StoreError};

/// The Namespace kind.
const NAMESPACE: GroupKind = GroupKind::from_static("", "Namespace");
/// The finalizer the namespace controller removes once the namespace is empty.
pub const NAMESPACE_FINALIZER: &str = "kubernetes";

/// Starts deleting a namespace as Kubernetes' API server does: `deletionTimestamp`, phase
/// `Terminating` and the `kubernetes` finalizer; a [`NamespaceController`] empties it and then
/// deletes it. (A namespace deleted outright from the store also has its contents deleted, but
/// after it is gone.)
pub async fn delete_namespace(store: &Arc<dyn Store>, name: &str) -> Result<(), StoreError> {
    let key = ObjectKey::cluster(name);
    loop {
        let mut ns = store.get(&NAMESPACE, &key).await?;
        if ns.metadata.deletion_timestamp.is_none() {
            ns.metadata.deletion_timestamp = Some(now());
        }
        ns.data.insert(
            "spec".into(),
            serde_json::json!({"finalizers": [NAMESPACE_FINALIZER]}),
        );
        ns.data
            .insert("status".into(), serde_json::json!({"phase": "Terminating"}));
        match store.update(ns).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Empties terminating namespaces (every namespaced kind in the builtin registry, or the
/// registry given), then deletes them.
#[derive(Debug, Clone)]
pub struct NamespaceController {
    registry: &'static Registry,
}

impl Default for NamespaceController {
    fn default() -> Self {
        Self::new()
    }
}

impl NamespaceController {
    /// A namespace controller over the builtin kinds.
    pub fn new() -> Self {
        Self {
            registry: Registry::builtin(),
        }
    }

    /// A namespace controller over the kinds of `registry` (e.g. with custom kinds).
    pub fn with_registry(registry: &'static Registry) -> Self {
        Self { registry }
    }

    /// Deletes everything in `namespace`; returns how many objects were found.
    async fn purge(&self, store: &Arc<dyn Store>, namespace: &str) -> Result<usize, StoreError> {
        let mut found = 0;
        for info in self.registry.iter().filter(|i| i.namespaced) {
            let kind = info.group_kind();
            let list = match store
                .list(&kind, Some(namespace), &ListOptions::default())
                .await
            {
                Ok(l) => l,
                // A kind this store does not serve holds nothing.
                Err(StoreError::Invalid(_)) => continue,
                Err(e) => return Err(e),
            };
            for object in list.items {
                found += 1;
                let pre = Preconditions::uid(object.metadata.uid.clone().unwrap_or_default());
                match store.delete(&kind, &object.key(), &pre).await {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() || e.is_conflict() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(found)
    }
}

#[async_trait::async_trait]
impl Controller for NamespaceController {
    fn name(&self) -> &str {
        "namespace"
    }

    fn watches(&self) -> Watches {
        Watches::primary(NAMESPACE)
    }

    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        let ns = match ctx.store.get(&NAMESPACE, key).await {
            Ok(ns) => Some(ns),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        let Some(ns) = ns else {
            // Deleted outright: what was in it must not outlive it.
            self.purge(&ctx.store, &key.name).await?;
            return Ok(Action::await_change());
        };
        if ns.metadata.deletion_timestamp.is_none() {
            return Ok(Action::await_change());
        }
        if self.purge(&ctx.store, &key.name).await? > 0 {
            // Check again: controllers may still be creating things in it.
            return Ok(Action::requeue(Duration::from_millis(50)));
        }
        let pre = Preconditions::uid(ns.metadata.uid.clone().unwrap_or_default());
        match ctx.store.delete(&NAMESPACE, key, &pre).await {
            Ok(_) => tracing::info!(namespace = %key, "namespace deleted"),
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Action::await_change())
    }
}
