//! NodeName: a pod that names its node (`spec.nodeName`) fits only there.

use crate::framework::{CycleState, FilterPlugin, NodeInfo, Plugin, PodInfo, Status};

/// Reason when the node is not the one the pod names.
pub const REASON: &str = "node(s) didn't match the requested node name";

/// The NodeName plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeName;

impl NodeName {
    /// Registered name.
    pub const NAME: &'static str = "NodeName";
}

impl Plugin for NodeName {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl FilterPlugin for NodeName {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match pod.node_name() {
            Some(wanted) if wanted != node.name() => Status::unresolvable(REASON),
            _ => Status::success(),
        }
    }
}
