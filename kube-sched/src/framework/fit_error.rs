//! [`FitError`]: why a pod fits nowhere, with Kubernetes' `FailedScheduling` message.

use std::collections::BTreeMap;
use std::fmt;

use kube_core::object::ObjectKey;
use kube_core::scheduler::ScheduleError;

use super::plugin::{NodeStatuses, PostFilterResult};
use super::status::{Code, Status};

/// No node fits the pod (or a plugin failed); carries each node's rejection.
#[derive(Clone, Debug)]
pub struct FitError {
    /// The pod.
    pub pod: ObjectKey,
    /// Nodes in the cluster.
    pub num_nodes: usize,
    /// Why each node was rejected.
    pub statuses: NodeStatuses,
    /// What PostFilter (preemption) did, if it ran.
    pub post_filter: Option<PostFilterResult>,
    /// A plugin error that aborted the cycle (then `statuses` may be incomplete).
    pub error: Option<Status>,
}

impl FitError {
    /// The node preemption nominated, if any.
    pub fn nominated_node(&self) -> Option<&str> {
        self.post_filter.as_ref()?.nominated_node.as_deref()
    }

    /// Whether some node might fit after preemption (a node was rejected only as Unschedulable).
    pub fn resolvable(&self) -> bool {
        self.statuses
            .values()
            .any(|s| s.code() == Code::Unschedulable)
    }
}

/// "3 Insufficient cpu, 2 node(s) had untolerated taint {…}": each reason counted over the
/// nodes, the "N reason" strings sorted, as kube-scheduler's FitError does.
pub(crate) fn histogram<'a>(statuses: impl Iterator<Item = &'a Status>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for status in statuses {
        for reason in status.reasons() {
            *counts.entry(reason).or_default() += 1;
        }
    }
    let mut parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    parts.join(", ")
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(error) = &self.error {
            return write!(f, "running plugins: {error}");
        }
        write!(f, "0/{} nodes are available:", self.num_nodes)?;
        let reasons = histogram(self.statuses.values());
        if !reasons.is_empty() {
            write!(f, " {reasons}.")?;
        }
        if let Some(pf) = &self.post_filter {
            let msg: Vec<&str> = pf.status.reasons().collect();
            if !msg.is_empty() {
                write!(f, " {}.", msg.join(", "))?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for FitError {}

impl From<FitError> for ScheduleError {
    fn from(e: FitError) -> Self {
        if let Some(error) = e.error {
            return ScheduleError::Internal(error.to_string().into());
        }
        ScheduleError::Unschedulable {
            reasons: e
                .statuses
                .into_iter()
                .map(|(node, s)| (node.to_string(), s.reasons().collect::<Vec<_>>().join(", ")))
                .collect(),
        }
    }
}
