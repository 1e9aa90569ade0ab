//! InterPodAffinity: required pod affinity and anti-affinity (the incoming pod's, and existing
//! pods' anti-affinity towards it) per topology domain; preferred terms score.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::framework::{
    AffinityTerm, Cluster, CycleState, FilterPlugin, MAX_NODE_SCORE, NodeInfo, Plugin, PodInfo,
    PreFilterPlugin, PreFilterResult, PreScorePlugin, ScorePlugin, Status,
};
use crate::framework::{NodeMatcher, PodMatcher};

/// Reason when the incoming pod's affinity is not satisfied.
pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// Reason when the incoming pod's anti-affinity is violated.
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
/// Reason when an existing pod's anti-affinity would be violated.
pub const REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

/// Arguments of InterPodAffinity.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct InterPodAffinityArgs {
    /// Score weight of existing pods' *required* affinity towards the incoming pod (default 1).
    #[serde(default = "one")]
    pub hard_pod_affinity_weight: i64,
}

fn one() -> i64 {
    1
}

impl Default for InterPodAffinityArgs {
    fn default() -> Self {
        Self {
            hard_pod_affinity_weight: 1,
        }
    }
}

/// The InterPodAffinity plugin.
#[derive(Clone, Debug, Default)]
pub struct InterPodAffinity {
    args: InterPodAffinityArgs,
}

impl InterPodAffinity {
    /// Registered name.
    pub const NAME: &'static str = "InterPodAffinity";

    /// With arguments.
    pub fn new(args: InterPodAffinityArgs) -> Self {
        Self { args }
    }
}

const KEY: &str = "InterPodAffinity/filter";
const SCORE_KEY: &str = "InterPodAffinity/score";

/// Counts per topology pair, nested (key → value → count) so lookups borrow instead of
/// allocating; `shared` holds the index's maps as they are, without copying them.
#[derive(Clone, Debug, Default)]
struct TopoCounts(
    HashMap<String, HashMap<String, i64>>,
    Vec<(String, Arc<HashMap<String, i64>>)>,
);

impl TopoCounts {
    fn add(&mut self, node: &NodeInfo, key: &str, n: i64) {
        if let Some(v) = node.labels().get(key) {
            *self
                .0
                .entry(key.to_string())
                .or_default()
                .entry(v.clone())
                .or_default() += n;
        }
    }

    fn add_shared(&mut self, key: &str, counts: Arc<HashMap<String, i64>>) {
        if counts.values().any(|n| *n != 0) {
            self.1.push((key.to_string(), counts));
        }
    }

    fn get(&self, key: &str, value: &str) -> i64 {
        let own = self
            .0
            .get(key)
            .and_then(|m| m.get(value))
            .copied()
            .unwrap_or(0);
        own + self
            .1
            .iter()
            .filter(|(k, _)| k == key)
            .filter_map(|(_, m)| m.get(value))
            .sum::<i64>()
    }

    /// Whether no topology pair has a non-zero count (what-if removals may have brought some
    /// back to zero).
    fn is_empty(&self) -> bool {
        let zero = |k: &str, v: &str| self.get(k, v) == 0;
        self.0.iter().all(|(k, m)| m.keys().all(|v| zero(k, v)))
            && self.1.iter().all(|(k, m)| m.keys().all(|v| zero(k, v)))
    }
}

/// PreFilter's counts, per topology pair (key, value).
#[derive(Clone, Debug, Default)]
struct Counts {
    /// Existing pods whose required anti-affinity matches the incoming pod.
    existing_anti: TopoCounts,
    /// Pods matching all the incoming pod's required affinity terms.
    affinity: TopoCounts,
    /// Pods matching one of the incoming pod's required anti-affinity terms.
    anti: TopoCounts,
}

impl Plugin for InterPodAffinity {
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

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        cluster: &Cluster,
    ) -> PreFilterResult {
        let has_required =
            !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
        if !has_required && !cluster.has_pods_with_affinity() {
            return PreFilterResult::skip();
        }
        let labels = cluster;
        let mut counts = Counts::default();
        // Everything below reads the cluster's incremental index: no walk over all pods.
        for (key, per_value) in cluster.existing_anti_affinity(pod) {
            counts.existing_anti.add_shared(&key, per_value);
        }
        let any_node: NodeMatcher = Arc::new(|_: &NodeInfo| true);
        for t in &pod.required_anti_affinity {
            let term = t.clone();
            let matcher: PodMatcher = Arc::new(move |p, ns| term.matches_with(p, ns));
            let signature = format!("term|{t:?}");
            let per_value =
                cluster.topology_counts(&signature, &t.topology_key, matcher, any_node.clone());
            counts.anti.add_shared(&t.topology_key, per_value);
        }
        if !pod.required_affinity.is_empty() {
            let terms = Arc::new(pod.required_affinity.clone());
            for t in pod.required_affinity.iter() {
                let all = terms.clone();
                let matcher: PodMatcher =
                    Arc::new(move |p, ns| all.iter().all(|t| t.matches_with(p, ns)));
                let signature = format!("affinity|{:?}|{}", pod.required_affinity, t.topology_key);
                let per_value =
                    cluster.topology_counts(&signature, &t.topology_key, matcher, any_node.clone());
                counts.affinity.add_shared(&t.topology_key, per_value);
            }
        }
        // A pod matching its own affinity may go first: with no matching pod anywhere, its
        // affinity terms are waived (see Filter).
        let self_match = !pod.required_affinity.is_empty()
            && pod.required_affinity.iter().all(|t| t.matches(pod, labels));
        state.write(KEY, (counts, self_match));
        PreFilterResult::success()
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        to_add: &PodInfo,
        node: &NodeInfo,
        cluster: &Cluster,
    ) -> Status {
        Self::update_counts(state, pod, to_add, node, cluster, 1)
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        to_remove: &PodInfo,
        node: &NodeInfo,
        cluster: &Cluster,
    ) -> Status {
        Self::update_counts(state, pod, to_remove, node, cluster, -1)
    }
}

impl InterPodAffinity {
    /// PreFilter extension: `other` was added to (`delta` 1) or removed from (-1) `node`.
    fn update_counts(
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        cluster: &Cluster,
        delta: i64,
    ) -> Status {
        state.modify::<(Counts, bool)>(KEY, |(counts, _)| {
            for term in &other.required_anti_affinity {
                if term.matches(pod, cluster) {
                    counts.existing_anti.add(node, &term.topology_key, delta);
                }
            }
            for t in &pod.required_anti_affinity {
                if t.matches(other, cluster) {
                    counts.anti.add(node, &t.topology_key, delta);
                }
            }
            if !pod.required_affinity.is_empty()
                && pod
                    .required_affinity
                    .iter()
                    .all(|t| t.matches(other, cluster))
            {
                for t in &pod.required_affinity {
                    counts.affinity.add(node, &t.topology_key, delta);
                }
            }
        });
        Status::success()
    }
}

fn count(map: &TopoCounts, key: &str, value: &str) -> i64 {
    map.get(key, value)
}

impl FilterPlugin for InterPodAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some((counts, self_match)) = state.read::<(Counts, bool)>(KEY) else {
            return Status::success();
        };
        // Kubernetes' order: the pod's affinity, its anti-affinity, then existing pods'.
        let labels = node.labels();
        let mut pods_exist = true;
        for t in &pod.required_affinity {
            match labels.get(&t.topology_key) {
                Some(v) => {
                    if count(&counts.affinity, &t.topology_key, v) <= 0 {
                        pods_exist = false;
                    }
                }
                None => return Status::unresolvable(REASON_AFFINITY),
            }
        }
        if !(pods_exist || (counts.affinity.is_empty() && *self_match)) {
            return Status::unresolvable(REASON_AFFINITY);
        }
        for t in &pod.required_anti_affinity {
            if let Some(v) = labels.get(&t.topology_key) {
                if count(&counts.anti, &t.topology_key, v) > 0 {
                    return Status::unschedulable(REASON_ANTI_AFFINITY);
                }
            }
        }
        if !counts.existing_anti.is_empty()
            && labels
                .iter()
                .any(|(k, v)| count(&counts.existing_anti, k, v) > 0)
        {
            return Status::unschedulable(REASON_EXISTING_ANTI_AFFINITY);
        }
        Status::success()
    }
}

/// PreScore's per-pair scores.
struct Scores(TopoCounts);

impl InterPodAffinity {
    fn add_terms<'t>(
        scores: &mut TopoCounts,
        terms: impl Iterator<Item = (i64, &'t AffinityTerm)>,
        target: &PodInfo,
        node: &NodeInfo,
        labels: &Cluster,
    ) {
        for (weight, term) in terms {
            if weight != 0 && term.matches(target, labels) {
                scores.add(node, &term.topology_key, weight);
            }
        }
    }
}

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        cluster: &Cluster,
        _: &[&NodeInfo],
    ) -> Status {
        let has_preferred =
            !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
        if !has_preferred && !cluster.has_pods_with_scoring_affinity() {
            return Status::skip();
        }
        let labels = cluster;
        let mut scores = TopoCounts::default();
        for node in cluster.nodes() {
            if !has_preferred && node.pods_with_affinity == 0 {
                continue;
            }
            for existing in node.pods() {
                // The incoming pod's preferences about existing pods.
                Self::add_terms(
                    &mut scores,
                    pod.preferred_affinity.iter().map(|w| (w.weight, &w.term)),
                    existing,
                    node,
                    labels,
                );
                Self::add_terms(
                    &mut scores,
                    pod.preferred_anti_affinity
                        .iter()
                        .map(|w| (-w.weight, &w.term)),
                    existing,
                    node,
                    labels,
                );
                if existing.has_affinity() {
                    // Existing pods' preferences (and required affinity) about the incoming pod.
                    let hard = self.args.hard_pod_affinity_weight;
                    Self::add_terms(
                        &mut scores,
                        existing.required_affinity.iter().map(|t| (hard, t)),
                        pod,
                        node,
                        labels,
                    );
                    Self::add_terms(
                        &mut scores,
                        existing
                            .preferred_affinity
                            .iter()
                            .map(|w| (w.weight, &w.term)),
                        pod,
                        node,
                        labels,
                    );
                    Self::add_terms(
                        &mut scores,
                        existing
                            .preferred_anti_affinity
                            .iter()
                            .map(|w| (-w.weight, &w.term)),
                        pod,
                        node,
                        labels,
                    );
                }
            }
        }
        if scores.is_empty() {
            return Status::skip();
        }
        state.write(SCORE_KEY, Scores(scores));
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(Scores(scores)) = state.read::<Scores>(SCORE_KEY) else {
            return Ok(0);
        };
        let labels = node.labels();
        Ok(scores
            .0
            .iter()
            .filter_map(|(k, values)| values.get(labels.get(k)?))
            .sum())
    }

    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) -> Status {
        let min = scores.iter().copied().min().unwrap_or(0);
        let max = scores.iter().copied().max().unwrap_or(0);
        let diff = max - min;
        for s in scores.iter_mut() {
            *s = if diff > 0 {
                MAX_NODE_SCORE * (*s - min) / diff
            } else {
                0
            };
        }
        Status::success()
    }
}
