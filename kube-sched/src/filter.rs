//! Filters: can this pod run on this node at all?
//!
//! Each filter mirrors a Kubernetes scheduler plugin and, when it rejects a node, says why in
//! the words Kubernetes uses, so `kubectl describe`-style messages read the same.

use k8s_openapi::api::core::v1::{Node, PodSpec, Toleration};
use kube_core::resources::Resources;
use kube_core::scheduler::NodeInfo;

/// Reason of the NodeName filter.
pub const REASON_NODE_NAME: &str = "node(s) didn't match the requested node name";
/// Reason of the NodeUnschedulable filter.
pub const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
/// Reason of the node selector filter.
pub const REASON_NODE_SELECTOR: &str = "node(s) didn't match Pod's node selector";
/// Reason of the NodeResourcesFit filter when the node has no room for one more pod.
pub const REASON_TOO_MANY_PODS: &str = "Too many pods";

/// The taint key Kubernetes puts on cordoned nodes; tolerating it lets a pod ignore
/// `spec.unschedulable`.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// NodeName: a pod that names its node fits only there.
pub(crate) fn node_name(spec: &PodSpec, node: &NodeInfo) -> Result<(), String> {
    match spec.node_name.as_deref() {
        Some(wanted) if !wanted.is_empty() && wanted != node.name() => {
            Err(REASON_NODE_NAME.to_string())
        }
        _ => Ok(()),
    }
}

/// NodeUnschedulable: a cordoned node takes only pods that tolerate the unschedulable taint.
pub(crate) fn node_unschedulable(spec: &PodSpec, node: &Node) -> Result<(), String> {
    let cordoned = node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let tolerated = spec
        .tolerations
        .iter()
        .flatten()
        .any(tolerates_unschedulable_taint);
    if cordoned && !tolerated {
        Err(REASON_UNSCHEDULABLE.to_string())
    } else {
        Ok(())
    }
}

/// Kubernetes' `ToleratesTaint` for the taint `node.kubernetes.io/unschedulable:NoSchedule`
/// (which has an empty value).
fn tolerates_unschedulable_taint(t: &Toleration) -> bool {
    let effect_ok = matches!(t.effect.as_deref(), None | Some("") | Some("NoSchedule"));
    let key = t.key.as_deref().unwrap_or("");
    match t.operator.as_deref() {
        // An empty key with Exists tolerates every taint.
        Some("Exists") => effect_ok && (key.is_empty() || key == TAINT_UNSCHEDULABLE),
        // Equal (the default) compares the value, which is empty for this taint.
        None | Some("") | Some("Equal") => {
            effect_ok && key == TAINT_UNSCHEDULABLE && t.value.as_deref().unwrap_or("").is_empty()
        }
        _ => false,
    }
}

/// Node selector: every `spec.nodeSelector` pair must be a label of the node.
pub(crate) fn node_selector(spec: &PodSpec, node: &Node) -> Result<(), String> {
    let Some(selector) = &spec.node_selector else {
        return Ok(());
    };
    let labels = node.metadata.labels.as_ref();
    let matches = selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
    if matches {
        Ok(())
    } else {
        Err(REASON_NODE_SELECTOR.to_string())
    }
}

/// NodeResourcesFit: the pod's requests (one pod included) must fit in what the node has left.
///
/// Several shortfalls are joined into one reason ("Insufficient cpu, Insufficient memory")
/// because the trait reports one reason per node.
pub(crate) fn resources_fit(requests: &Resources, node: &NodeInfo) -> Result<(), String> {
    let missing = requests.insufficient(&node.requested, &node.allocatable);
    if missing.is_empty() {
        return Ok(());
    }
    Err(missing
        .iter()
        .map(|name| match name.as_str() {
            "pods" => REASON_TOO_MANY_PODS.to_string(),
            other => format!("Insufficient {other}"),
        })
        .collect::<Vec<_>>()
        .join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toleration(json: serde_json::Value) -> Toleration {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn unschedulable_taint_toleration_follows_kubernetes_matching() {
        let ok = [
            serde_json::json!({"key": TAINT_UNSCHEDULABLE, "operator": "Exists", "effect": "NoSchedule"}),
            serde_json::json!({"key": TAINT_UNSCHEDULABLE, "operator": "Exists"}),
            serde_json::json!({"operator": "Exists"}),
            serde_json::json!({"key": TAINT_UNSCHEDULABLE, "effect": "NoSchedule"}),
        ];
        for t in ok {
            assert!(tolerates_unschedulable_taint(&toleration(t.clone())), "{t}");
        }
        let not_ok = [
            serde_json::json!({"key": TAINT_UNSCHEDULABLE, "operator": "Exists", "effect": "NoExecute"}),
            serde_json::json!({"key": "other", "operator": "Exists"}),
            serde_json::json!({"key": TAINT_UNSCHEDULABLE, "value": "x"}),
        ];
        for t in not_ok {
            assert!(
                !tolerates_unschedulable_taint(&toleration(t.clone())),
                "{t}"
            );
        }
    }
}
