//! [`ReplicationControllerController`]: keeps `spec.replicas` pods of a ReplicationController's
//! template running.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ReplicaSetStatus;
use k8s_openapi::api::core::v1::ReplicationController;
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{GroupKind, ObjectKey};
use kube_core::selector::Selector;

use crate::replicaset::{ReplicaSpec, Replicas, Replicated};

/// Reconciles ReplicationControllers (core/v1) as the ReplicaSet controller reconciles
/// ReplicaSets, which is how Kubernetes runs them: its replication manager is the ReplicaSet
/// controller over a conversion. The selector is a label map (equality only; when empty, the
/// template's labels, as the API server defaults it). Pods matching it that nobody controls
/// are adopted, owned pods whose labels stop matching are released (their owner reference
/// removed), and `status` reports replicas, ready, available and fully labeled pods.
///
/// ```
/// use kube_ctrl::{ControllerManager, ReplicationControllerController};
/// let manager = ControllerManager::new().with(ReplicationControllerController::new());
/// assert!(format!("{manager:?}").contains("replicationcontroller"));
/// ```
#[derive(Debug, Clone)]
pub struct ReplicationControllerController {
    inner: Replicas,
}

impl Default for ReplicationControllerController {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplicationControllerController {
    /// A ReplicationController controller.
    pub fn new() -> Self {
        Self {
            inner: Replicas::new("replication-controller"),
        }
    }
}

impl Replicated for ReplicationController {
    fn replica_spec(&self) -> Option<ReplicaSpec> {
        let spec = self.spec.as_ref()?;
        let template_labels = || {
            spec.template
                .as_ref()
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default()
        };
        let labels: BTreeMap<String, String> = match &spec.selector {
            Some(selector) if !selector.is_empty() => selector.clone(),
            _ => template_labels(),
        };
        Some(ReplicaSpec {
            replicas: spec.replicas.unwrap_or(1),
            min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
            template: spec.template.clone(),
            selector: Ok(Selector::from_labels(&labels)),
        })
    }

    fn replica_status(&self) -> ReplicaSetStatus {
        // The two statuses have the same fields and JSON names.
        self.status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }

    fn set_replica_status(&mut self, status: ReplicaSetStatus) {
        self.status = serde_json::to_value(status)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok());
    }
}

#[async_trait::async_trait]
impl Controller for ReplicationControllerController {
    fn name(&self) -> &str {
        "replicationcontroller"
    }

    fn watches(&self) -> Watches {
        Watches::primary(GroupKind::from_static("", "ReplicationController")).owns(GroupKind::POD)
    }

    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        self.inner
            .reconcile::<ReplicationController>(key, ctx)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_selector_is_the_template_labels_and_status_converts() {
        let rc: ReplicationController = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "web"}}}},
            "status": {"replicas": 1, "readyReplicas": 1},
        }))
        .unwrap();
        let spec = rc.replica_spec().unwrap();
        assert_eq!(spec.replicas, 2);
        assert_eq!(spec.selector.unwrap().to_string(), "app=web");
        let mut status = rc.replica_status();
        assert_eq!((status.replicas, status.ready_replicas), (1, Some(1)));
        status.replicas = 2;
        let mut rc = rc;
        rc.set_replica_status(status);
        assert_eq!(rc.status.unwrap().replicas, 2);
    }
}
