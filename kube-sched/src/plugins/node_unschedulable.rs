//! NodeUnschedulable: a cordoned node takes only pods tolerating its unschedulable taint.

use k8s_openapi::api::core::v1::Taint;

use super::taint_toleration::tolerates;
use crate::framework::{CycleState, FilterPlugin, NodeInfo, Plugin, PodInfo, Status};

/// Reason for a cordoned node.
pub const REASON: &str = "node(s) were unschedulable";
/// The taint Kubernetes puts on cordoned nodes.
pub const TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

/// The NodeUnschedulable plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeUnschedulable;

impl NodeUnschedulable {
    /// Registered name.
    pub const NAME: &'static str = "NodeUnschedulable";
}

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl FilterPlugin for NodeUnschedulable {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if !node.unschedulable() {
            return Status::success();
        }
        let taint = Taint {
            key: TAINT_KEY.into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        let tolerated = pod
            .spec()
            .tolerations
            .iter()
            .flatten()
            .any(|t| tolerates(t, &taint));
        if tolerated {
            Status::success()
        } else {
            Status::unresolvable(REASON)
        }
    }
}
