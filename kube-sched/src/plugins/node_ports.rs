//! NodePorts: a pod's host ports must be free on the node.

use crate::framework::{
    Cluster, CycleState, FilterPlugin, NodeInfo, Plugin, PodInfo, PreFilterPlugin, PreFilterResult,
    Status,
};

/// Reason when a host port is taken.
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

/// The NodePorts plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodePorts;

impl NodePorts {
    /// Registered name.
    pub const NAME: &'static str = "NodePorts";
}

impl Plugin for NodePorts {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for NodePorts {
    fn pre_filter(&self, _: &mut CycleState, pod: &PodInfo, _: &Cluster) -> PreFilterResult {
        if pod.ports.is_empty() {
            PreFilterResult::skip()
        } else {
            PreFilterResult::success()
        }
    }
}

impl FilterPlugin for NodePorts {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let conflict = pod
            .ports
            .iter()
            .any(|want| node.used_ports.iter().any(|used| used.conflicts(want)));
        if conflict {
            Status::unschedulable(REASON)
        } else {
            Status::success()
        }
    }
}
