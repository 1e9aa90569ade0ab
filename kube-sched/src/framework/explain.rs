//! [`Explanation`]: for one pod, every node's filter verdicts and per-plugin scores — what
//! kube-scheduler-simulator shows — computed without changing anything.

use std::fmt;

use super::cluster::Cluster;
use super::cycle_state::CycleState;
use super::fit_error::histogram;
use super::node_info::NodeInfo;
use super::pod_info::PodInfo;
use super::profile::{Profile, total_scores};
use super::status::Status;

/// One node's part of an [`Explanation`].
#[derive(Clone, Debug)]
pub struct NodeExplanation {
    /// The node.
    pub node: String,
    /// Each Filter plugin's verdict (all are run, not only up to the first rejection).
    pub filters: Vec<(String, Status)>,
    /// Whether every filter passed.
    pub feasible: bool,
    /// Per scoring plugin: (plugin, raw score, normalized score, weight). Empty if infeasible.
    pub scores: Vec<(String, i64, i64, i64)>,
    /// Weighted total (0 if infeasible).
    pub total: i64,
}

/// Why a pod would go where it would go.
#[derive(Clone, Debug)]
pub struct Explanation {
    /// The pod (`namespace/name`).
    pub pod: String,
    /// The profile used.
    pub profile: String,
    /// PreFilter's verdict when it rejected the pod outright.
    pub pre_filter: Option<Status>,
    /// Every node.
    pub nodes: Vec<NodeExplanation>,
    /// The best node (ties: the first in node order), if any fits.
    pub selected: Option<String>,
    /// A scoring error, if one stopped scoring.
    pub score_error: Option<Status>,
}

pub(crate) fn explain(profile: &Profile, cluster: &Cluster, pod: &PodInfo) -> Explanation {
    let mut out = Explanation {
        pod: pod.key.to_string(),
        profile: profile.name().to_string(),
        pre_filter: None,
        nodes: Vec::new(),
        selected: None,
        score_error: None,
    };
    let mut state = CycleState::new();
    let allowed = match profile.run_pre_filter(&mut state, pod, cluster) {
        Ok(a) => a,
        Err(s) => {
            out.pre_filter = Some(s);
            None
        }
    };
    let mut nodes: Vec<&NodeInfo> = cluster.nodes().iter().collect();
    nodes.sort_by(|a, b| a.name().cmp(b.name()));
    let mut feasible = Vec::new();
    for node in nodes {
        let mut filters = if out.pre_filter.is_some() {
            Vec::new()
        } else {
            profile.run_all_filters(&state, pod, node)
        };
        if allowed.as_ref().is_some_and(|a| !a.contains(node.name())) {
            filters.insert(
                0,
                (
                    "PreFilter".to_string(),
                    Status::unresolvable("node(s) didn't satisfy plugin(s) PreFilter"),
                ),
            );
        }
        let ok =
            out.pre_filter.is_none() && filters.iter().all(|(_, s)| s.is_success() || s.is_skip());
        if ok {
            feasible.push(out.nodes.len());
        }
        out.nodes.push(NodeExplanation {
            node: node.name().to_string(),
            filters,
            feasible: ok,
            scores: Vec::new(),
            total: 0,
        });
    }
    let feasible_nodes: Vec<&NodeInfo> = feasible
        .iter()
        .filter_map(|&i| cluster.node(&out.nodes[i].node))
        .collect();
    if feasible_nodes.is_empty() {
        return out;
    }
    match profile.score_nodes(&mut state, pod, cluster, &feasible_nodes) {
        Ok(scores) => {
            let totals = total_scores(&scores, feasible_nodes.len());
            for (k, &i) in feasible.iter().enumerate() {
                let n = &mut out.nodes[i];
                n.total = totals[k];
                n.scores = scores
                    .iter()
                    .map(|s| (s.plugin.clone(), s.raw[k], s.normalized[k], s.weight))
                    .collect();
            }
            let best = feasible
                .iter()
                .copied()
                .max_by_key(|&i| (out.nodes[i].total, std::cmp::Reverse(i)));
            out.selected = best.map(|i| out.nodes[i].node.clone());
        }
        Err(s) => out.score_error = Some(s),
    }
    out
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "pod {} (profile {})", self.pod, self.profile)?;
        if let Some(s) = &self.pre_filter {
            writeln!(f, "  PreFilter rejected every node: {s}")?;
        }
        for n in &self.nodes {
            if n.feasible {
                let parts: Vec<String> = n
                    .scores
                    .iter()
                    .map(|(p, raw, norm, w)| format!("{p}={norm}x{w} (raw {raw})"))
                    .collect();
                writeln!(
                    f,
                    "  {}: feasible, total {}: {}",
                    n.node,
                    n.total,
                    parts.join(", ")
                )?;
            } else {
                let failed: Vec<String> = n
                    .filters
                    .iter()
                    .filter(|(_, s)| !s.is_success() && !s.is_skip())
                    .map(|(p, s)| {
                        let reasons: Vec<&str> = s.reasons().collect();
                        format!("{p}: {}", reasons.join(", "))
                    })
                    .collect();
                writeln!(f, "  {}: rejected by {}", n.node, failed.join("; "))?;
            }
        }
        match &self.selected {
            Some(node) => write!(f, "  => {node}"),
            None => {
                let statuses: Vec<Status> = self
                    .nodes
                    .iter()
                    .filter_map(|n| {
                        n.filters
                            .iter()
                            .find(|(_, s)| !s.is_success() && !s.is_skip())
                            .map(|(_, s)| s.clone())
                    })
                    .collect();
                write!(
                    f,
                    "  => 0/{} nodes are available: {}.",
                    self.nodes.len(),
                    histogram(statuses.iter())
                )
            }
        }
    }
}
