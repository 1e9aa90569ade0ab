//! Filter reasons, worded as Kubernetes words them (so `kubectl describe`-style messages read
//! the same). The filters themselves are the [`plugins`](crate::plugins).

/// Reason of the NodeName filter.
pub const REASON_NODE_NAME: &str = "node(s) didn't match the requested node name";
/// Reason of the NodeUnschedulable filter.
pub const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
/// Reason of the NodeAffinity filter (node selector and required node affinity).
pub const REASON_NODE_SELECTOR: &str = "node(s) didn't match Pod's node affinity/selector";
/// Reason of the NodeResourcesFit filter when the node has no room for one more pod.
pub const REASON_TOO_MANY_PODS: &str = "Too many pods";
/// The taint Kubernetes puts on cordoned nodes; tolerating it lets a pod ignore
/// `spec.unschedulable`.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
