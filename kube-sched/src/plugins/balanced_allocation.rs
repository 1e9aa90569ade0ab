//! NodeResourcesBalancedAllocation: prefer nodes whose resources would be used evenly
//! (low standard deviation of the requested fractions).

use serde::{Deserialize, Serialize};

use super::node_resources_fit::{
    ResourceKind, ResourceWeight, default_resources, requested_and_allocatable, resource_kinds,
};
use crate::framework::{
    Cluster, CycleState, MAX_NODE_SCORE, NodeInfo, Plugin, PodInfo, PreScorePlugin, ScorePlugin,
    Status,
};

/// Arguments of NodeResourcesBalancedAllocation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BalancedAllocationArgs {
    /// Resources compared (default cpu and memory; weights are ignored, as in Kubernetes).
    #[serde(default = "default_resources")]
    pub resources: Vec<ResourceWeight>,
}

impl Default for BalancedAllocationArgs {
    fn default() -> Self {
        Self {
            resources: default_resources(),
        }
    }
}

/// The NodeResourcesBalancedAllocation plugin.
#[derive(Clone, Debug)]
pub struct NodeResourcesBalancedAllocation {
    /// The compared resources, resolved once.
    kinds: Vec<ResourceKind>,
}

impl NodeResourcesBalancedAllocation {
    /// Registered name.
    pub const NAME: &'static str = "NodeResourcesBalancedAllocation";

    /// With arguments.
    pub fn new(args: BalancedAllocationArgs) -> Self {
        Self {
            kinds: resource_kinds(&args.resources)
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
        }
    }
}

impl Plugin for NodeResourcesBalancedAllocation {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreScorePlugin for NodeResourcesBalancedAllocation {
    fn pre_score(&self, _: &mut CycleState, pod: &PodInfo, _: &Cluster, _: &[&NodeInfo]) -> Status {
        // A pod requesting none of the resources changes no node's balance.
        let requests_any = self.kinds.iter().any(|k| match k {
            ResourceKind::Cpu => pod.requests.milli_cpu > 0,
            ResourceKind::Memory => pod.requests.memory > 0,
            ResourceKind::EphemeralStorage => pod.requests.ephemeral_storage > 0,
            ResourceKind::Pods => false,
            ResourceKind::Scalar(name) => pod.requests.scalar.get(name).is_some_and(|v| *v > 0),
        });
        if requests_any {
            Status::success()
        } else {
            Status::skip()
        }
    }
}

impl ScorePlugin for NodeResourcesBalancedAllocation {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        if let [ResourceKind::Cpu, ResourceKind::Memory] = self.kinds.as_slice() {
            // The default configuration without the general loop (this runs for every feasible
            // node of every cycle). Same arithmetic as below.
            let fraction =
                |req: i64, alloc: i64| (alloc != 0).then(|| (req as f64 / alloc as f64).min(1.0));
            let cpu = fraction(
                node.requested.milli_cpu + pod.requests.milli_cpu,
                node.allocatable.milli_cpu,
            );
            let memory = fraction(
                node.requested.memory + pod.requests.memory,
                node.allocatable.memory,
            );
            let std = match (cpu, memory) {
                (Some(a), Some(b)) => (a - b).abs() / 2.0,
                _ => 0.0,
            };
            return Ok(((1.0 - std) * MAX_NODE_SCORE as f64) as i64);
        }
        let mut fractions = [0f64; 8];
        let mut n = 0;
        for kind in &self.kinds {
            let (req, alloc) = requested_and_allocatable(kind, pod, node, false);
            if alloc == 0 || n == fractions.len() {
                continue;
            }
            fractions[n] = (req as f64 / alloc as f64).min(1.0);
            n += 1;
        }
        let f = &fractions[..n];
        let std = match n {
            0 | 1 => 0.0,
            2 => (f[0] - f[1]).abs() / 2.0,
            _ => {
                let mean = f.iter().sum::<f64>() / n as f64;
                (f.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64).sqrt()
            }
        };
        Ok(((1.0 - std) * MAX_NODE_SCORE as f64) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn even_use_scores_higher() {
        let node = NodeInfo::new(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "n"},
                "status": {"allocatable": {"cpu": "4", "memory": "4Gi"}}}))
            .unwrap(),
        ));
        let pod = |cpu: &str, mem: &str| {
            PodInfo::from_pod(serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {
                "containers": [{"name": "a", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}})).unwrap()).unwrap()
        };
        let b = NodeResourcesBalancedAllocation::new(BalancedAllocationArgs::default());
        let s = CycleState::new();
        assert_eq!(b.score(&s, &pod("2", "2Gi"), &node).unwrap(), 100);
        // cpu 50%, memory 0%: std = 0.25.
        assert_eq!(b.score(&s, &pod("2", "0"), &node).unwrap(), 75);
    }
}
