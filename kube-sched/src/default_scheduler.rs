//! [`DefaultScheduler`]: filter the nodes, score the survivors, pick the best.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use kube_core::resources::{Resources, pod_requests};
use kube_core::scheduler::{NodeInfo, ScheduleError, Scheduler, Snapshot};

use crate::{filter, score};

/// The scheduler name pods get when `spec.schedulerName` is unset.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// The default placement policy, a subset of kube-scheduler's default profile.
///
/// Filters, in Kubernetes' order, stopping at a node's first failure:
/// NodeUnschedulable (`spec.unschedulable` unless the pod tolerates
/// `node.kubernetes.io/unschedulable:NoSchedule`), NodeName (`spec.nodeName`), node selector
/// (`spec.nodeSelector`), NodeResourcesFit (requests, pod count included, against allocatable
/// minus what bound pods request).
///
/// Score: LeastAllocated on CPU and memory, counting 100m / 200Mi for containers without
/// requests. Nodes with the same best score are taken in turn, so equal nodes share the load.
///
/// ```
/// use std::sync::Arc;
/// use k8s_openapi::api::core::v1::{Node, Pod};
/// use kube_core::scheduler::{Scheduler, Snapshot};
/// use kube_sched::DefaultScheduler;
///
/// let node: Node = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "n1"},
///     "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}
/// })).unwrap();
/// let pod: Pod = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "p", "namespace": "default"},
///     "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "500m"}}}]}
/// })).unwrap();
/// let snapshot = Snapshot::new([Arc::new(node)], []);
/// assert_eq!(DefaultScheduler::new().schedule(&pod, &snapshot).unwrap(), "n1");
/// ```
pub struct DefaultScheduler {
    name: String,
    /// Turn counter for breaking ties between equally good nodes.
    turn: AtomicUsize,
}

impl fmt::Debug for DefaultScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultScheduler")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Default for DefaultScheduler {
    fn default() -> Self {
        Self::new()
    }
}

impl DefaultScheduler {
    /// The scheduler for pods that name no scheduler (`default-scheduler`).
    pub fn new() -> Self {
        Self::named(DEFAULT_SCHEDULER_NAME)
    }

    /// The same policy under another name: it serves only pods whose `spec.schedulerName` is
    /// `name`.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            turn: AtomicUsize::new(0),
        }
    }

    /// Runs the filters on one node; `Err` carries the Kubernetes reason text.
    fn filter(spec: &PodSpec, requests: &Resources, node: &NodeInfo) -> Result<(), String> {
        filter::node_unschedulable(spec, &node.node)?;
        filter::node_name(spec, node)?;
        filter::node_selector(spec, &node.node)?;
        filter::resources_fit(requests, node)
    }
}

impl Scheduler for DefaultScheduler {
    fn name(&self) -> &str {
        &self.name
    }

    fn schedule(&self, pod: &Pod, snapshot: &Snapshot) -> Result<String, ScheduleError> {
        let spec = pod
            .spec
            .as_ref()
            .ok_or_else(|| ScheduleError::InvalidPod("pod has no spec".into()))?;
        let requests = pod_requests(spec)?;
        let non_zero = score::pod_non_zero(spec);

        let mut reasons = BTreeMap::new();
        let mut best_score = i64::MIN;
        let mut best: Vec<&str> = Vec::new();
        for node in &snapshot.nodes {
            if let Err(reason) = Self::filter(spec, &requests, node) {
                reasons.insert(node.name().to_string(), reason);
                continue;
            }
            let score = score::least_allocated_score(non_zero, node);
            if score > best_score {
                best_score = score;
                best.clear();
            }
            if score == best_score {
                best.push(node.name());
            }
        }
        if best.is_empty() {
            return Err(ScheduleError::Unschedulable { reasons });
        }
        // Taking tied nodes in turn (rather than always the first by name) spreads pods over
        // equal nodes even when integer scores cannot tell them apart, yet stays reproducible.
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        Ok(best[turn % best.len()].to_string())
    }
}
