//! Which pods a scheduler is responsible for, read from a pod's spec and status.

use k8s_openapi::api::core::v1::Pod;

use crate::default_scheduler::DEFAULT_SCHEDULER_NAME;

/// The node the pod is bound to (`spec.nodeName`, empty counts as unset).
pub(crate) fn bound_node(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

/// Whether the pod has finished (Succeeded or Failed) and so holds no resources.
pub(crate) fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether `scheduler` should place this pod: unbound, addressed to it (an unset or empty
/// `spec.schedulerName` means `default-scheduler`), not being deleted, not finished.
pub(crate) fn needs_scheduling(pod: &Pod, scheduler: &str) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    let wanted = spec
        .scheduler_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_SCHEDULER_NAME);
    bound_node(pod).is_none()
        && wanted == scheduler
        && pod.metadata.deletion_timestamp.is_none()
        && !is_terminal(pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn only_unbound_live_pods_of_this_scheduler_need_scheduling() {
        let plain = pod(serde_json::json!({"spec": {"containers": []}}));
        assert!(needs_scheduling(&plain, "default-scheduler"));
        assert!(!needs_scheduling(&plain, "other"));
        let named = pod(serde_json::json!({"spec": {"containers": [], "schedulerName": "other"}}));
        assert!(needs_scheduling(&named, "other"));
        assert!(!needs_scheduling(&named, "default-scheduler"));
        let empty_name = pod(serde_json::json!({"spec": {"containers": [], "schedulerName": ""}}));
        assert!(needs_scheduling(&empty_name, "default-scheduler"));
        let bound = pod(serde_json::json!({"spec": {"containers": [], "nodeName": "n1"}}));
        assert!(!needs_scheduling(&bound, "default-scheduler"));
        let deleting = pod(serde_json::json!({
            "metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"containers": []}
        }));
        assert!(!needs_scheduling(&deleting, "default-scheduler"));
        let done =
            pod(serde_json::json!({"spec": {"containers": []}, "status": {"phase": "Failed"}}));
        assert!(!needs_scheduling(&done, "default-scheduler"));
    }
}
