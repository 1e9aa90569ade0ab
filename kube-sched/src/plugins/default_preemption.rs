//! DefaultPreemption: when no node fits, find a node where evicting lower-priority pods makes
//! room, choosing the minimal set of victims and respecting PodDisruptionBudgets where possible.

use std::cmp::Reverse;
use std::sync::Arc;

use crate::framework::{
    Cluster, Code, CycleState, NodeInfo, NodeStatuses, Plugin, PodInfo, PostFilterPlugin,
    PostFilterResult, Profile, Status,
};

/// Reason for a node where evicting every lower-priority pod would not be enough.
pub const REASON_NO_VICTIMS: &str = "No preemption victims found for incoming pod";
/// Reason for a node rejected for a reason preemption cannot change.
pub const REASON_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";

/// Kubernetes looks for candidates on at least this share of nodes…
const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
/// …and at least this many.
const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

/// The DefaultPreemption plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultPreemption;

impl DefaultPreemption {
    /// Registered name.
    pub const NAME: &'static str = "DefaultPreemption";
}

impl Plugin for DefaultPreemption {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        Some(self)
    }
}

/// A node where preemption would work (borrowing from the cycle's cluster; only the chosen
/// one's victims are copied out).
#[derive(Debug)]
struct Candidate<'c> {
    node: &'c NodeInfo,
    /// Where the victims are in the dry runs' shared list.
    victims: std::ops::Range<usize>,
    pdb_violations: usize,
}

impl Candidate<'_> {
    /// Kubernetes' `pickOneNodeForPreemption` order: fewest PDB violations, lowest highest
    /// victim priority, lowest priority sum, fewest victims, latest-started top victim.
    fn rank(&self, all: &[&Arc<PodInfo>]) -> (usize, i64, i64, usize, Reverse<Option<String>>) {
        let victims = all.get(self.victims.clone()).unwrap_or_default();
        let highest = victims
            .iter()
            .map(|v| i64::from(v.priority))
            .max()
            .unwrap_or(i64::MIN);
        // Offset so negative priorities still add up to a comparable positive sum.
        let sum: i64 = victims
            .iter()
            .map(|v| i64::from(v.priority) + i64::from(i32::MAX) + 1)
            .sum();
        let start = victims
            .iter()
            .filter(|v| i64::from(v.priority) == highest)
            .filter_map(|v| v.pod.status.as_ref()?.start_time.as_ref())
            .map(|t| t.0.to_string())
            .min();
        (
            self.pdb_violations,
            highest,
            sum,
            victims.len(),
            Reverse(start),
        )
    }
}

/// Which of `pods` (in order) evicting would violate a budget: each budget allows
/// `disruptions_allowed` evictions of pods it selects. Empty when there are no budgets (no
/// pod violates any).
fn pdb_violating(pods: &[&Arc<PodInfo>], cluster: &Cluster) -> Vec<bool> {
    let mut allowed: Vec<(i64, &crate::framework::DisruptionBudget)> = cluster
        .budgets()
        .map(|b| (i64::from(b.disruptions_allowed), b))
        .collect();
    if allowed.is_empty() {
        return Vec::new();
    }
    pods.iter()
        .map(|p| {
            let mut violates = false;
            for (left, b) in allowed.iter_mut() {
                if b.namespace == p.namespace()
                    && !b.selector.is_empty()
                    && b.selector.matches(p.labels())
                {
                    *left -= 1;
                    if *left < 0 {
                        violates = true;
                    }
                }
            }
            violates
        })
        .collect()
}

/// Kubernetes' `SelectVictimsOnNode`: remove every lower-priority pod (telling the PreFilter
/// extensions, so affinity and spread counts follow), check that the pod fits, then put pods
/// back one by one, most important first and PDB-protected ones before others, keeping out only
/// those whose return would make the pod not fit again.
///
/// `lower` is scratch space; the victims are appended to `victims`.
fn select_victims<'c>(
    state: &CycleState,
    pod: &PodInfo,
    node: &'c NodeInfo,
    cluster: &Cluster,
    profile: &Profile,
    lower: &mut Vec<&'c Arc<PodInfo>>,
    victims: &mut Vec<&'c Arc<PodInfo>>,
) -> Option<Candidate<'c>> {
    lower.clear();
    lower.extend((node.pods().iter()).filter(|p| p.priority < pod.priority));
    if lower.is_empty() {
        return None;
    }
    let mut state = state.clone();
    let mut what_if = node.clone();
    for p in lower.iter() {
        what_if.remove_pod(&p.key);
        if !profile
            .run_pre_filter_remove_pod(&mut state, pod, p, &what_if, cluster)
            .is_success()
        {
            return None;
        }
    }
    if !profile.fits(&state, pod, &what_if) {
        return None;
    }
    // Most important first, so they are the first to be spared.
    lower.sort_by_key(|p| Reverse(p.priority));
    let violating = pdb_violating(lower, cluster);
    let violates = |i: usize| violating.get(i).copied().unwrap_or(false);
    // PDB-protected pods are put back first.
    let order = (0..lower.len())
        .filter(|&i| violates(i))
        .chain((0..lower.len()).filter(|&i| !violates(i)));
    let first = victims.len();
    let mut pdb_violations = 0;
    for i in order {
        let p = lower[i];
        what_if.add_pod(Arc::clone(p));
        if !profile
            .run_pre_filter_add_pod(&mut state, pod, p, &what_if, cluster)
            .is_success()
        {
            victims.truncate(first);
            return None;
        }
        if !profile.fits(&state, pod, &what_if) {
            what_if.remove_pod(&p.key);
            if !profile
                .run_pre_filter_remove_pod(&mut state, pod, p, &what_if, cluster)
                .is_success()
            {
                victims.truncate(first);
                return None;
            }
            if violates(i) {
                pdb_violations += 1;
            }
            victims.push(p);
        }
    }
    Some(Candidate {
        node,
        victims: first..victims.len(),
        pdb_violations,
    })
}

impl PostFilterPlugin for DefaultPreemption {
    fn post_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        cluster: &Cluster,
        statuses: &NodeStatuses,
        profile: &Profile,
    ) -> PostFilterResult {
        let fail = |reason: String| PostFilterResult {
            status: Status::unschedulable(reason),
            nominated_node: None,
            victims: Vec::new(),
        };
        if pod.never_preempts() {
            return fail("preemption: not eligible due to preemptionPolicy=Never.".into());
        }
        let n = cluster.len();
        let want = (n * MIN_CANDIDATE_NODES_PERCENTAGE / 100)
            .max(MIN_CANDIDATE_NODES_ABSOLUTE)
            .min(n);
        let mut candidates = Vec::new();
        let (mut no_victims, mut not_helpful) = (0, 0);
        let (mut lower, mut victims) = (Vec::new(), Vec::new());
        for (node, status) in statuses.nodes_in(cluster) {
            if status.code() != Code::Unschedulable {
                not_helpful += 1;
                continue;
            }
            let Some(node) = node else {
                continue;
            };
            match select_victims(state, pod, node, cluster, profile, &mut lower, &mut victims) {
                Some(c) => {
                    candidates.push(c);
                    if candidates.len() >= want {
                        break;
                    }
                }
                None => no_victims += 1,
            }
        }
        let Some(best) = candidates.into_iter().min_by_key(|c| c.rank(&victims)) else {
            let mut parts = Vec::new();
            if no_victims > 0 {
                parts.push(format!("{no_victims} {REASON_NO_VICTIMS}"));
            }
            if not_helpful > 0 {
                parts.push(format!("{not_helpful} {REASON_NOT_HELPFUL}"));
            }
            parts.sort();
            return fail(format!(
                "preemption: 0/{n} nodes are available: {}.",
                parts.join(", ")
            ));
        };
        PostFilterResult {
            status: Status::success(),
            nominated_node: Some(best.node.name().to_string()),
            victims: (victims.get(best.victims).unwrap_or_default().iter())
                .map(|&v| Arc::clone(v))
                .collect(),
        }
    }
}
