//! The [`Scheduler`] trait: choose a node for a pod from a snapshot of the cluster.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::quantity::QuantityError;
use crate::resources::{Resources, pod_requests};

/// One node with the pods bound to it and the aggregates placement decisions need.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The node.
    pub node: Arc<Node>,
    /// Pods bound to the node that still hold resources (not Succeeded or Failed).
    pub pods: Vec<Arc<Pod>>,
    /// Sum of the effective requests of `pods`.
    pub requested: Resources,
    /// The node's allocatable resources (capacity if allocatable is unset).
    pub allocatable: Resources,
}

impl NodeInfo {
    /// Builds the aggregates for a node and its pods. Pods or nodes with unparsable quantities
    /// count as zero for that resource set (they are reported when scheduled themselves).
    pub fn new(node: Arc<Node>, pods: Vec<Arc<Pod>>) -> Self {
        let mut requested = Resources::default();
        for pod in &pods {
            if let Some(spec) = &pod.spec {
                if let Ok(r) = pod_requests(spec) {
                    requested.add(&r);
                }
            }
        }
        let allocatable = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .and_then(|list| Resources::from_list(list).ok())
            .unwrap_or_default();
        Self {
            node,
            pods,
            requested,
            allocatable,
        }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }
}

/// The cluster as one scheduling decision sees it: every node and the pods bound to each.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Nodes in a stable order (by name).
    pub nodes: Vec<NodeInfo>,
}

impl Snapshot {
    /// Builds a snapshot from nodes and pods; pods are grouped by `spec.nodeName`, and pods
    /// that are unbound or finished (Succeeded, Failed) are left out.
    pub fn new(
        nodes: impl IntoIterator<Item = Arc<Node>>,
        pods: impl IntoIterator<Item = Arc<Pod>>,
    ) -> Self {
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for pod in pods {
            let bound = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if let Some(node) = bound {
                if !matches!(phase, Some("Succeeded" | "Failed")) {
                    by_node.entry(node).or_default().push(pod);
                }
            }
        }
        let mut nodes: Vec<NodeInfo> = nodes
            .into_iter()
            .map(|node| {
                let name = node.metadata.name.clone().unwrap_or_default();
                let pods = by_node.remove(&name).unwrap_or_default();
                NodeInfo::new(node, pods)
            })
            .collect();
        nodes.sort_by(|a, b| a.name().cmp(b.name()));
        Self { nodes }
    }

    /// The node with this name.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.iter().find(|n| n.name() == name)
    }
}

/// Why a pod could not be placed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// No node fits; `reasons` says why for each node (node name → reason).
    #[error("0/{} nodes are available: {}", .reasons.len(), summarize(.reasons))]
    Unschedulable {
        /// Why each node was rejected.
        reasons: BTreeMap<String, String>,
    },
    /// The pod itself is malformed (e.g. an unparsable quantity).
    #[error("invalid pod: {0}")]
    InvalidPod(String),
    /// The scheduler failed internally.
    #[error("scheduler error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<QuantityError> for ScheduleError {
    fn from(e: QuantityError) -> Self {
        Self::InvalidPod(e.to_string())
    }
}

/// Kubernetes-style summary: "2 Insufficient cpu, 1 node(s) didn't match Pod's node selector".
fn summarize(reasons: &BTreeMap<String, String>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reasons.values() {
        *counts.entry(r.as_str()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(r, n)| format!("{n} {r}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Chooses a node for a pod.
///
/// Synchronous and free of I/O, so it can be called from a plain test without an async runtime
/// or a store; the scheduling loop (`kube_sched::SchedulingLoop`) builds the snapshot and binds.
///
/// ```
/// use std::sync::Arc;
/// use k8s_openapi::api::core::v1::{Node, Pod};
/// use kube_core::scheduler::{Scheduler, ScheduleError, Snapshot};
///
/// /// Places every pod on the first node.
/// struct First;
/// impl Scheduler for First {
///     fn schedule(&self, _pod: &Pod, snapshot: &Snapshot) -> Result<String, ScheduleError> {
///         snapshot.nodes.first().map(|n| n.name().to_string()).ok_or_else(|| {
///             ScheduleError::Unschedulable { reasons: Default::default() }
///         })
///     }
/// }
///
/// let mut node = Node::default();
/// node.metadata.name = Some("n1".into());
/// let snapshot = Snapshot::new([Arc::new(node)], []);
/// let chosen = First.schedule(&Pod::default(), &snapshot).unwrap();
/// assert_eq!(chosen, "n1");
/// let _object_safe: Arc<dyn Scheduler> = Arc::new(First);
/// ```
pub trait Scheduler: Send + Sync {
    /// The scheduler name pods select with `spec.schedulerName`.
    fn name(&self) -> &str {
        "default-scheduler"
    }

    /// Picks the node for `pod`, or says why no node fits.
    fn schedule(&self, pod: &Pod, snapshot: &Snapshot) -> Result<String, ScheduleError>;
}
