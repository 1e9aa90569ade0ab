//! PodTopologySpread: keep matching pods spread over topology domains (`DoNotSchedule`
//! constraints filter, `ScheduleAnyway` ones score).

use std::sync::Arc;

use k8s_openapi::api::core::v1::Toleration;

use serde::{Deserialize, Serialize};

use super::node_affinity::NodeSelectorMatcher;
use super::taint_toleration::untolerated;
use crate::framework::fast_hash::FastMap;
use crate::framework::{
    Cluster, CycleState, FilterPlugin, MAX_NODE_SCORE, NodeInfo, NodeMatcher, Plugin, PodInfo,
    PodMatcher, PreFilterPlugin, PreFilterResult, PreScorePlugin, ScorePlugin, SpreadConstraint,
    Status, TopologyIndex,
};

/// Reason when placing the pod would exceed a constraint's skew.
pub const REASON_SKEW: &str = "node(s) didn't match pod topology spread constraints";
/// Reason when the node lacks a constraint's topology label.
pub const REASON_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// A cluster-level default constraint, applied to pods that have none.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DefaultConstraint {
    /// maxSkew.
    pub max_skew: i64,
    /// The node label defining domains.
    pub topology_key: String,
    /// `DoNotSchedule` or `ScheduleAnyway`.
    pub when_unsatisfiable: String,
}

/// Arguments of PodTopologySpread.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodTopologySpreadArgs {
    /// Constraints for pods without their own. They count the pods selected by the Services
    /// that select the pod and the ReplicaSet, StatefulSet or ReplicationController that
    /// controls it, as Kubernetes does; a pod selected by none gets no default constraint.
    #[serde(default = "system_defaults")]
    pub default_constraints: Vec<DefaultConstraint>,
}

/// Kubernetes' system defaults: hostname maxSkew 3 and zone maxSkew 5, both ScheduleAnyway.
pub fn system_defaults() -> Vec<DefaultConstraint> {
    vec![
        DefaultConstraint {
            max_skew: 3,
            topology_key: "kubernetes.io/hostname".into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
        },
        DefaultConstraint {
            max_skew: 5,
            topology_key: "topology.kubernetes.io/zone".into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
        },
    ]
}

impl Default for PodTopologySpreadArgs {
    fn default() -> Self {
        Self {
            default_constraints: system_defaults(),
        }
    }
}

/// The PodTopologySpread plugin.
#[derive(Clone, Debug, Default)]
pub struct PodTopologySpread {
    args: PodTopologySpreadArgs,
}

impl PodTopologySpread {
    /// Registered name.
    pub const NAME: &'static str = "PodTopologySpread";

    /// With arguments.
    pub fn new(args: PodTopologySpreadArgs) -> Self {
        Self { args }
    }

    /// The pod's constraints, or, when it has none, the default constraints counting pods by
    /// the selectors of the Services and workload that select or control it (kube-scheduler's
    /// `DefaultPodTopologySpread`; see [`Cluster::default_spread_selector`]).
    fn constraints(&self, pod: &PodInfo, cluster: &Cluster) -> Vec<SpreadConstraint> {
        if !pod.spread.is_empty() {
            return pod.spread.clone();
        }
        if self.args.default_constraints.is_empty() {
            return Vec::new();
        }
        let Some(selector) = cluster.default_spread_selector(pod) else {
            return Vec::new();
        };
        self.args
            .default_constraints
            .iter()
            .map(|d| SpreadConstraint {
                max_skew: d.max_skew.max(1),
                topology_key: d.topology_key.clone(),
                hard: d.when_unsatisfiable == "DoNotSchedule",
                selector: Some(selector.clone()),
                min_domains: None,
                honor_node_affinity: true,
                honor_node_taints: false,
            })
            .collect()
    }
}

/// Matching pods per domain for one constraint, and the global minimum.
#[derive(Clone, Debug, Default)]
struct Domains {
    counts: FastMap<String, i64>,
    min: i64,
    /// `counts` by the domain ids of the constraint's [`TopologyIndex`] (Filter's per-node read).
    by_id: Vec<i64>,
}

impl Domains {
    /// Fills `by_id` from `counts`.
    fn index(&mut self, index: &TopologyIndex) {
        self.by_id.clear();
        self.by_id.resize(index.domains(), 0);
        for (value, n) in &self.counts {
            if let Some(slot) = index.id(value).and_then(|id| self.by_id.get_mut(id)) {
                *slot = *n;
            }
        }
    }
}

#[derive(Clone, Debug)]
struct SpreadState {
    constraints: Vec<SpreadConstraint>,
    domains: Vec<Domains>,
    self_match: Vec<i64>,
    /// Each constraint's topology key's domains per node.
    indexes: Vec<Arc<TopologyIndex>>,
}

const KEY: &str = "PodTopologySpread/filter";
const SCORE_KEY: &str = "PodTopologySpread/score";

fn matching_pods(node: &NodeInfo, c: &SpreadConstraint, namespace: &str) -> i64 {
    let Some(sel) = &c.selector else {
        return 0;
    };
    node.pods()
        .iter()
        .filter(|p| p.namespace() == namespace && !p.terminating() && sel.matches(p.labels()))
        .count() as i64
}

/// Whether `node` takes part in counting for `c`: it has every constraint's key (Kubernetes
/// requires all of them) and passes the node inclusion policies.
fn eligible(
    node: &NodeInfo,
    all: &[SpreadConstraint],
    c: &SpreadConstraint,
    pod: &PodInfo,
    affinity: &NodeSelectorMatcher,
) -> bool {
    let labels = node.labels();
    all.iter().all(|c| labels.contains_key(&c.topology_key))
        && (!c.honor_node_affinity || affinity.matches(node))
        && (!c.honor_node_taints
            || untolerated(
                node.taints(),
                pod.spec().tolerations.as_deref().unwrap_or(&[]),
            )
            .is_none())
}

/// Domains and counts of each constraint over the cluster, from the cluster's incremental index.
fn count_domains_indexed(
    cluster: &Cluster,
    pod: &PodInfo,
    constraints: &[SpreadConstraint],
) -> Vec<Domains> {
    let affinity = Arc::new(NodeSelectorMatcher::new(pod.spec()));
    let keys: Arc<Vec<String>> =
        Arc::new(constraints.iter().map(|c| c.topology_key.clone()).collect());
    let tolerations: Arc<Vec<Toleration>> =
        Arc::new(pod.spec().tolerations.clone().unwrap_or_default());
    constraints
        .iter()
        .map(|c| {
            let Some(selector) = c.selector.clone() else {
                return finish(c, FastMap::default());
            };
            let honor_affinity = c.honor_node_affinity && !affinity.is_empty();
            let namespace = pod.namespace().to_string();
            let signature = format!(
                "spread|{namespace}|{selector:?}|{}|{keys:?}|{}|{}",
                c.topology_key,
                if honor_affinity {
                    format!("{affinity:?}")
                } else {
                    String::new()
                },
                if c.honor_node_taints {
                    format!("{tolerations:?}")
                } else {
                    String::new()
                },
            );
            let pods: PodMatcher = Arc::new(move |p, _| {
                p.namespace() == namespace && !p.terminating() && selector.matches(p.labels())
            });
            let (keys, affinity, tolerations) =
                (keys.clone(), affinity.clone(), tolerations.clone());
            let honor_taints = c.honor_node_taints;
            let nodes: NodeMatcher = Arc::new(move |n: &NodeInfo| {
                keys.iter().all(|k| n.labels().contains_key(k))
                    && (!honor_affinity || affinity.matches(n))
                    && (!honor_taints || untolerated(n.taints(), &tolerations).is_none())
            });
            let counts = cluster.topology_counts(&signature, &c.topology_key, pods, nodes);
            finish(c, counts.iter().map(|(k, v)| (k.clone(), *v)).collect())
        })
        .collect()
}

fn finish(c: &SpreadConstraint, counts: FastMap<String, i64>) -> Domains {
    let mut min = counts.values().copied().min().unwrap_or(0);
    if c.min_domains.is_some_and(|m| (counts.len() as i64) < m) {
        min = 0;
    }
    Domains {
        counts,
        min,
        by_id: Vec::new(),
    }
}

/// Domains and counts of each constraint over `nodes` only (a walk; for scoring on the
/// feasible nodes).
fn count_domains(
    nodes: &mut dyn Iterator<Item = &NodeInfo>,
    pod: &PodInfo,
    constraints: &[SpreadConstraint],
) -> Vec<Domains> {
    let affinity = NodeSelectorMatcher::new(pod.spec());
    let mut counts: Vec<FastMap<String, i64>> =
        constraints.iter().map(|_| FastMap::default()).collect();
    for node in nodes {
        for (c, d) in constraints.iter().zip(counts.iter_mut()) {
            if !eligible(node, constraints, c, pod, &affinity) {
                continue;
            }
            let Some(value) = node.labels().get(&c.topology_key) else {
                continue;
            };
            let n = matching_pods(node, c, pod.namespace());
            *d.entry(value.clone()).or_default() += n;
        }
    }
    constraints
        .iter()
        .zip(counts)
        .map(|(c, d)| finish(c, d))
        .collect()
}

impl Plugin for PodTopologySpread {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        cluster: &Cluster,
    ) -> PreFilterResult {
        let constraints: Vec<SpreadConstraint> = self
            .constraints(pod, cluster)
            .into_iter()
            .filter(|c| c.hard)
            .collect();
        if constraints.is_empty() {
            return PreFilterResult::skip();
        }
        let mut domains = count_domains_indexed(cluster, pod, &constraints);
        let indexes: Vec<Arc<TopologyIndex>> = (constraints.iter())
            .map(|c| cluster.topology_index(&c.topology_key))
            .collect();
        for (d, index) in domains.iter_mut().zip(&indexes) {
            d.index(index);
        }
        let self_match = constraints
            .iter()
            .map(|c| i64::from(c.selector.as_ref().is_some_and(|s| s.matches(pod.labels()))))
            .collect();
        state.write(
            KEY,
            SpreadState {
                constraints,
                domains,
                self_match,
                indexes,
            },
        );
        PreFilterResult::success()
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        to_add: &PodInfo,
        node: &NodeInfo,
        _: &Cluster,
    ) -> Status {
        update_counts(state, pod, to_add, node, 1);
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        to_remove: &PodInfo,
        node: &NodeInfo,
        _: &Cluster,
    ) -> Status {
        update_counts(state, pod, to_remove, node, -1);
        Status::success()
    }
}

/// PreFilter extension: `other` was added to (`delta` 1) or removed from (-1) `node`; its
/// domain's count changes for every constraint it counts for, and the minimum with it.
fn update_counts(
    state: &mut CycleState,
    pod: &PodInfo,
    other: &PodInfo,
    node: &NodeInfo,
    delta: i64,
) {
    if other.namespace() != pod.namespace() || other.terminating() {
        return;
    }
    state.modify::<SpreadState>(KEY, |s| {
        let affinity = NodeSelectorMatcher::new(pod.spec());
        for ((c, d), index) in (s.constraints.iter())
            .zip(s.domains.iter_mut())
            .zip(&s.indexes)
        {
            let counted = c
                .selector
                .as_ref()
                .is_some_and(|sel| sel.matches(other.labels()));
            if !counted || !eligible(node, &s.constraints, c, pod, &affinity) {
                continue;
            }
            let Some(value) = node.labels().get(&c.topology_key) else {
                continue;
            };
            *d.counts.entry(value.clone()).or_default() += delta;
            *d = finish(c, std::mem::take(&mut d.counts));
            d.index(index);
        }
    });
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<SpreadState>(KEY) else {
            return Status::success();
        };
        let constraints = s.constraints.iter().zip(&s.domains).zip(&s.self_match);
        for (((c, d), self_match), index) in constraints.zip(&s.indexes) {
            let count = match index.domain_of(node) {
                Some(Some(id)) => d.by_id.get(id).copied().unwrap_or(0),
                Some(None) => return Status::unresolvable(REASON_MISSING_LABEL),
                // Not one of the indexed cluster's nodes: read its labels.
                None => match node.labels().get(&c.topology_key) {
                    Some(value) => d.counts.get(value).copied().unwrap_or(0),
                    None => return Status::unresolvable(REASON_MISSING_LABEL),
                },
            };
            if count + self_match - d.min > c.max_skew {
                return Status::unschedulable(REASON_SKEW);
            }
        }
        Status::success()
    }
}

struct ScoreState {
    constraints: Vec<SpreadConstraint>,
    domains: Vec<Domains>,
    weights: Vec<f64>,
}

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        cluster: &Cluster,
        nodes: &[&NodeInfo],
    ) -> Status {
        let constraints: Vec<SpreadConstraint> = self
            .constraints(pod, cluster)
            .into_iter()
            .filter(|c| !c.hard)
            .collect();
        if constraints.is_empty() {
            return Status::skip();
        }
        // Kubernetes counts hostname domains on the feasible nodes only: other nodes' counts
        // cannot affect any feasible node's score.
        let by_host = constraints
            .iter()
            .all(|c| c.topology_key == "kubernetes.io/hostname");
        let domains = if by_host {
            count_domains(&mut nodes.iter().copied(), pod, &constraints)
        } else {
            count_domains_indexed(cluster, pod, &constraints)
        };
        let weights = domains
            .iter()
            .map(|d| ((d.counts.len() + 2) as f64).ln())
            .collect();
        state.write(
            SCORE_KEY,
            ScoreState {
                constraints,
                domains,
                weights,
            },
        );
        Status::success()
    }
}

impl ScorePlugin for PodTopologySpread {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<ScoreState>(SCORE_KEY) else {
            return Ok(0);
        };
        let labels = node.labels();
        let mut score = 0f64;
        for ((c, d), w) in s.constraints.iter().zip(&s.domains).zip(&s.weights) {
            // Nodes missing a key are scored as the worst (-1 marks them for normalize).
            let Some(value) = labels.get(&c.topology_key) else {
                return Ok(-1);
            };
            let count = d.counts.get(value).copied().unwrap_or(0);
            score += count as f64 * w + (c.max_skew - 1) as f64;
        }
        Ok(score.round() as i64)
    }

    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) -> Status {
        let valid = scores.iter().copied().filter(|s| *s >= 0);
        let min = valid.clone().min().unwrap_or(0);
        let max = valid.max().unwrap_or(0);
        for s in scores.iter_mut() {
            *s = if *s < 0 {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *s) / max
            };
        }
        Status::success()
    }
}
