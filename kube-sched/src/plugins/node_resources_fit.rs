//! NodeResourcesFit: the pod's requests must fit in what the node has left (Filter); nodes are
//! ranked by a scoring strategy (Score).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use kube_core::resources::Resources;

use crate::error::SchedError;
use crate::framework::{
    Code, CycleState, FilterPlugin, MAX_NODE_SCORE, NodeInfo, Plugin, PodInfo, ScorePlugin, Status,
};

/// Reason when the node has no room for one more pod.
pub const REASON_TOO_MANY_PODS: &str = "Too many pods";

/// A resource and its weight in scoring.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResourceWeight {
    /// `cpu`, `memory`, `ephemeral-storage` or an extended resource.
    pub name: String,
    /// Weight (default 1).
    #[serde(default = "one")]
    pub weight: i64,
}

fn one() -> i64 {
    1
}

/// A point of the RequestedToCapacityRatio shape: utilization 0..=100 → score 0..=10.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShapePoint {
    /// Utilization percentage.
    pub utilization: i64,
    /// Score at that utilization, 0..=10.
    pub score: i64,
}

/// How nodes are ranked.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type")]
pub enum ScoringStrategy {
    /// Prefer the emptiest node (spreads load). The default.
    LeastAllocated {
        /// Resources and weights (default cpu and memory, weight 1).
        #[serde(default = "default_resources")]
        resources: Vec<ResourceWeight>,
    },
    /// Prefer the fullest node (bin packing).
    MostAllocated {
        /// Resources and weights.
        #[serde(default = "default_resources")]
        resources: Vec<ResourceWeight>,
    },
    /// Score by a piecewise-linear function of utilization.
    RequestedToCapacityRatio {
        /// Resources and weights.
        #[serde(default = "default_resources")]
        resources: Vec<ResourceWeight>,
        /// The function, by increasing utilization.
        shape: Vec<ShapePoint>,
    },
}

/// cpu and memory, weight 1 each.
pub fn default_resources() -> Vec<ResourceWeight> {
    ["cpu", "memory"]
        .into_iter()
        .map(|name| ResourceWeight {
            name: name.into(),
            weight: 1,
        })
        .collect()
}

impl Default for ScoringStrategy {
    fn default() -> Self {
        Self::LeastAllocated {
            resources: default_resources(),
        }
    }
}

/// Arguments of NodeResourcesFit.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodeResourcesFitArgs {
    /// The scoring strategy.
    #[serde(default)]
    pub scoring_strategy: ScoringStrategy,
    /// Extended resources the filter does not check.
    #[serde(default)]
    pub ignored_resources: Vec<String>,
    /// Extended resource groups (the part before `/`) the filter does not check.
    #[serde(default)]
    pub ignored_resource_groups: Vec<String>,
}

/// The NodeResourcesFit plugin.
#[derive(Clone, Debug)]
pub struct NodeResourcesFit {
    args: NodeResourcesFitArgs,
    /// The scored resources, resolved once (scoring runs per node per cycle).
    kinds: Vec<(ResourceKind, i64)>,
}

/// A resource name resolved once, so per-node scoring compares no strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ResourceKind {
    Cpu,
    Memory,
    EphemeralStorage,
    Pods,
    Scalar(String),
}

impl ResourceKind {
    pub(crate) fn of(name: &str) -> Self {
        match name {
            "cpu" => Self::Cpu,
            "memory" => Self::Memory,
            "ephemeral-storage" => Self::EphemeralStorage,
            "pods" => Self::Pods,
            other => Self::Scalar(other.to_string()),
        }
    }

    fn get(&self, r: &Resources) -> i64 {
        match self {
            Self::Cpu => r.milli_cpu,
            Self::Memory => r.memory,
            Self::EphemeralStorage => r.ephemeral_storage,
            Self::Pods => r.pods,
            Self::Scalar(name) => r.scalar.get(name).copied().unwrap_or(0),
        }
    }
}

/// Resolves resource names with their weights.
pub(crate) fn resource_kinds(resources: &[ResourceWeight]) -> Vec<(ResourceKind, i64)> {
    resources
        .iter()
        .map(|r| (ResourceKind::of(&r.name), r.weight))
        .collect()
}

impl NodeResourcesFit {
    /// Registered name.
    pub const NAME: &'static str = "NodeResourcesFit";

    /// With arguments; the RequestedToCapacityRatio shape is validated.
    pub fn new(args: NodeResourcesFitArgs) -> Result<Self, SchedError> {
        if let ScoringStrategy::RequestedToCapacityRatio { shape, .. } = &args.scoring_strategy {
            let sorted = shape
                .windows(2)
                .all(|w| w[0].utilization < w[1].utilization);
            let in_range = shape
                .iter()
                .all(|p| (0..=100).contains(&p.utilization) && (0..=10).contains(&p.score));
            if shape.is_empty() || !sorted || !in_range {
                return Err(SchedError::InvalidArgs {
                    plugin: Self::NAME.into(),
                    message: "shape needs increasing utilizations in 0..=100 and scores in 0..=10"
                        .into(),
                });
            }
        }
        let kinds = resource_kinds(strategy_resources(&args.scoring_strategy));
        Ok(Self { args, kinds })
    }

    /// LeastAllocated over cpu and memory (the default).
    pub fn least_allocated() -> Self {
        let args = NodeResourcesFitArgs::default();
        let kinds = resource_kinds(strategy_resources(&args.scoring_strategy));
        Self { args, kinds }
    }

    fn ignored(&self, name: &str) -> bool {
        self.args.ignored_resources.iter().any(|r| r == name)
            || name.split_once('/').is_some_and(|(group, _)| {
                self.args.ignored_resource_groups.iter().any(|g| g == group)
            })
    }
}

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl FilterPlugin for NodeResourcesFit {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let want = &pod.requests;
        let used = &node.requested;
        let cap = &node.allocatable;
        // Fast path: the common pod asks for cpu and memory only, and fits.
        let fits = |w: i64, u: i64, c: i64| w == 0 || u + w <= c;
        if used.pods < cap.pods
            && fits(want.milli_cpu, used.milli_cpu, cap.milli_cpu)
            && fits(want.memory, used.memory, cap.memory)
            && fits(
                want.ephemeral_storage,
                used.ephemeral_storage,
                cap.ephemeral_storage,
            )
            && want.scalar.is_empty()
        {
            return Status::success();
        }
        let mut status: Option<Status> = None;
        let mut add = |reason: Cow<'static, str>| {
            status = Some(match (status.take(), reason) {
                (Some(s), reason) => s.with_reason(reason),
                (None, Cow::Borrowed(reason)) => Status::with_static(Code::Unschedulable, reason),
                (None, reason) => Status::unschedulable(reason),
            });
        };
        if used.pods + 1 > cap.pods {
            add(Cow::Borrowed(REASON_TOO_MANY_PODS));
        }
        if !fits(want.milli_cpu, used.milli_cpu, cap.milli_cpu) {
            add(Cow::Borrowed("Insufficient cpu"));
        }
        if !fits(want.memory, used.memory, cap.memory) {
            add(Cow::Borrowed("Insufficient memory"));
        }
        if !fits(
            want.ephemeral_storage,
            used.ephemeral_storage,
            cap.ephemeral_storage,
        ) {
            add(Cow::Borrowed("Insufficient ephemeral-storage"));
        }
        for (name, w) in &want.scalar {
            if self.ignored(name) {
                continue;
            }
            let u = used.scalar.get(name).copied().unwrap_or(0);
            let c = cap.scalar.get(name).copied().unwrap_or(0);
            if !fits(*w, u, c) {
                add(Cow::Owned(format!("Insufficient {name}")));
            }
        }
        status.unwrap_or_else(Status::success)
    }
}

/// What `resource` the node would have requested with the pod, and its allocatable. CPU and
/// memory count non-zero requests (defaults for containers without requests).
#[inline]
pub(crate) fn requested_and_allocatable(
    kind: &ResourceKind,
    pod: &PodInfo,
    node: &NodeInfo,
    non_zero: bool,
) -> (i64, i64) {
    match (non_zero, kind) {
        (true, ResourceKind::Cpu) => (
            node.non_zero_requested.milli_cpu + pod.non_zero.milli_cpu,
            node.allocatable.milli_cpu,
        ),
        (true, ResourceKind::Memory) => (
            node.non_zero_requested.memory + pod.non_zero.memory,
            node.allocatable.memory,
        ),
        _ => (
            kind.get(&node.requested) + kind.get(&pod.requests),
            kind.get(&node.allocatable),
        ),
    }
}

fn strategy_resources(strategy: &ScoringStrategy) -> &[ResourceWeight] {
    match strategy {
        ScoringStrategy::LeastAllocated { resources }
        | ScoringStrategy::MostAllocated { resources }
        | ScoringStrategy::RequestedToCapacityRatio { resources, .. } => resources,
    }
}

fn shape_score(shape: &[ShapePoint], utilization: i64) -> i64 {
    let scale = MAX_NODE_SCORE / 10;
    let Some(first) = shape.first() else {
        return 0;
    };
    if utilization <= first.utilization {
        return first.score * scale;
    }
    for w in shape.windows(2) {
        let (a, b) = (w[0], w[1]);
        if utilization <= b.utilization {
            let y = a.score * scale
                + (b.score - a.score) * scale * (utilization - a.utilization)
                    / (b.utilization - a.utilization);
            return y;
        }
    }
    shape.last().map_or(0, |p| p.score * scale)
}

impl NodeResourcesFit {
    /// One resource's score under the strategy.
    fn resource_score(&self, req: i64, cap: i64) -> i64 {
        match &self.args.scoring_strategy {
            ScoringStrategy::LeastAllocated { .. } => {
                if cap == 0 || req > cap {
                    0
                } else {
                    (cap - req) * MAX_NODE_SCORE / cap
                }
            }
            ScoringStrategy::MostAllocated { .. } => {
                if cap == 0 {
                    0
                } else {
                    req.min(cap) * MAX_NODE_SCORE / cap
                }
            }
            ScoringStrategy::RequestedToCapacityRatio { shape, .. } => {
                if cap == 0 || req > cap {
                    shape_score(shape, 100)
                } else {
                    shape_score(shape, req * 100 / cap)
                }
            }
        }
    }
}

impl ScorePlugin for NodeResourcesFit {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        if let (
            ScoringStrategy::LeastAllocated { .. },
            [(ResourceKind::Cpu, wc), (ResourceKind::Memory, wm)],
        ) = (&self.args.scoring_strategy, self.kinds.as_slice())
        {
            // The default configuration, without the general loop's dispatch (this runs for
            // every feasible node of every cycle). Same arithmetic as below.
            let least = |req: i64, cap: i64| {
                if cap == 0 || req > cap {
                    0
                } else {
                    (cap - req) * MAX_NODE_SCORE / cap
                }
            };
            let cpu_cap = node.allocatable.milli_cpu;
            let mem_cap = node.allocatable.memory;
            let cpu_req = node.non_zero_requested.milli_cpu + pod.non_zero.milli_cpu;
            let mem_req = node.non_zero_requested.memory + pod.non_zero.memory;
            let (mut sum, mut weights) = (0, 0);
            if cpu_cap != 0 {
                sum += least(cpu_req, cpu_cap) * wc;
                weights += wc;
            }
            if mem_cap != 0 {
                sum += least(mem_req, mem_cap) * wm;
                weights += wm;
            }
            return Ok(if weights == 0 { 0 } else { sum / weights });
        }
        let (mut sum, mut weights) = (0, 0);
        for (kind, weight) in &self.kinds {
            let (req, alloc) = requested_and_allocatable(kind, pod, node, true);
            if alloc == 0 {
                continue;
            }
            sum += self.resource_score(req, alloc) * weight;
            weights += weight;
        }
        Ok(if weights == 0 { 0 } else { sum / weights })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn node(alloc: serde_json::Value) -> NodeInfo {
        NodeInfo::new(Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": "n"}, "status": {"allocatable": alloc}}),
            )
            .unwrap(),
        ))
    }
    fn pod(spec: serde_json::Value) -> PodInfo {
        PodInfo::from_pod(
            serde_json::from_value(
                json!({"metadata": {"name": "p", "namespace": "d"}, "spec": spec}),
            )
            .unwrap(),
        )
        .unwrap()
    }
    fn reasons(s: Status) -> Vec<String> {
        s.reasons().map(str::to_string).collect()
    }

    #[test]
    fn init_containers_count_as_a_peak_and_overhead_adds() {
        let fit = NodeResourcesFit::least_allocated();
        let n = node(json!({"cpu": "1", "memory": "1Gi", "pods": "10"}));
        // Containers sum to 600m, the init container needs 900m, overhead 200m: 1100m > 1000m.
        let p = pod(json!({
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "300m"}}},
                           {"name": "b", "resources": {"requests": {"cpu": "300m"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "900m"}}}],
            "overhead": {"cpu": "200m"}
        }));
        assert_eq!(
            reasons(fit.filter(&CycleState::new(), &p, &n)),
            ["Insufficient cpu"]
        );
        let p = pod(json!({
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "300m"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "800m"}}}]
        }));
        assert!(
            fit.filter(&CycleState::new(), &p, &n).is_success(),
            "max, not sum"
        );
    }

    #[test]
    fn extended_resources_and_pod_count() {
        let fit = NodeResourcesFit::least_allocated();
        let mut n = node(json!({"cpu": "4", "memory": "1Gi", "pods": "1", "example.com/gpu": "1"}));
        let gpu2 = pod(
            json!({"containers": [{"name": "a", "resources": {"limits": {"example.com/gpu": "2"}}}]}),
        );
        assert_eq!(
            reasons(fit.filter(&CycleState::new(), &gpu2, &n)),
            ["Insufficient example.com/gpu"]
        );
        let ignoring = NodeResourcesFit::new(NodeResourcesFitArgs {
            ignored_resource_groups: vec!["example.com".into()],
            ..Default::default()
        })
        .unwrap();
        assert!(ignoring.filter(&CycleState::new(), &gpu2, &n).is_success());
        n.add_pod(Arc::new(pod(json!({"containers": []}))));
        assert_eq!(
            reasons(fit.filter(&CycleState::new(), &gpu2, &n)),
            ["Too many pods", "Insufficient example.com/gpu"]
        );
    }

    #[test]
    fn strategies_score_as_kubernetes() {
        let n = node(json!({"cpu": "4", "memory": "4Gi", "pods": "10"}));
        let p = pod(
            json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}),
        );
        let s = CycleState::new();
        assert_eq!(
            NodeResourcesFit::least_allocated()
                .score(&s, &p, &n)
                .unwrap(),
            75
        );
        let most = NodeResourcesFit::new(NodeResourcesFitArgs {
            scoring_strategy: ScoringStrategy::MostAllocated {
                resources: default_resources(),
            },
            ..Default::default()
        })
        .unwrap();
        assert_eq!(most.score(&s, &p, &n).unwrap(), 25);
        let ratio = NodeResourcesFit::new(
            serde_json::from_value(
                json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
                "shape": [{"utilization": 0, "score": 0}, {"utilization": 100, "score": 10}]}}),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(ratio.score(&s, &p, &n).unwrap(), 25);
        assert!(
            NodeResourcesFit::new(
                serde_json::from_value(
                    json!({"scoringStrategy": {"type": "RequestedToCapacityRatio",
                "shape": [{"utilization": 50, "score": 0}, {"utilization": 10, "score": 10}]}})
                )
                .unwrap()
            )
            .is_err()
        );
        // Request-less pods count 100m / 200Mi.
        let empty = pod(json!({"containers": [{"name": "a"}]}));
        let cpu = (4000 - 100) * 100 / 4000;
        let mem = ((4i64 << 30) - (200 << 20)) * 100 / (4i64 << 30);
        assert_eq!(
            NodeResourcesFit::least_allocated()
                .score(&s, &empty, &n)
                .unwrap(),
            (cpu + mem) / 2
        );
    }
}
