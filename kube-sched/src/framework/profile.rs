//! Profiles: a configured plugin set ([`ProfileConfig`]) and the built [`Profile`] that runs a
//! scheduling cycle through it.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cluster::Cluster;
use super::cycle_state::CycleState;
use super::fit_error::FitError;
use super::node_info::NodeInfo;
use super::plugin::{FilterPlugin, NodeStatuses, PermitDecision, Plugin, ScorePlugin};
use super::pod_info::PodInfo;
use super::registry::Registry;
use super::status::{Code, Status};
use crate::error::SchedError;

/// Below this many nodes a cycle always evaluates every node (Kubernetes' `minFeasibleNodesToFind`).
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never goes below this (Kubernetes' `minFeasibleNodesPercentageToFind`).
pub const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;
/// Fewer nodes than this are filtered on one thread: spreading them costs more than it saves.
const PARALLEL_MIN_NODES: usize = 64;
/// Filter and score fan out by default only when rayon's pool has at least this many threads.
/// A cycle's work is tens of microseconds; on one or two cores (often shared with the binding
/// writes) waking helper threads costs more than it saves: measured on 2 cores, the basic
/// workload ran about twice as fast on one thread.
const PARALLEL_MIN_THREADS: usize = 4;

/// How many feasible nodes a cycle looks for before it stops filtering, as kube-scheduler's
/// `numFeasibleNodesToFind`: all of them below 100 nodes; otherwise `percentage` of them (when
/// 0 or unset, adaptively `50 - nodes/125`, at least 5%), and never fewer than 100.
pub fn num_feasible_nodes_to_find(nodes: usize, percentage: Option<u32>) -> usize {
    let percentage = percentage.unwrap_or(0) as usize;
    if nodes < MIN_FEASIBLE_NODES_TO_FIND || percentage >= 100 {
        return nodes;
    }
    let percentage = if percentage == 0 {
        50usize
            .saturating_sub(nodes / 125)
            .max(MIN_FEASIBLE_NODES_PERCENTAGE)
    } else {
        percentage
    };
    (nodes * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// One plugin in a profile.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PluginConfig {
    /// The registered name.
    pub name: String,
    /// Score weight (ignored for plugins that do not score).
    #[serde(default = "one")]
    pub weight: i64,
    /// Arguments for the plugin's factory.
    #[serde(default)]
    pub args: Value,
}

fn one() -> i64 {
    1
}

impl PluginConfig {
    /// `name` with weight 1 and no arguments.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            weight: 1,
            args: Value::Null,
        }
    }

    /// Sets the weight.
    pub fn weight(mut self, weight: i64) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the arguments.
    pub fn args(mut self, args: Value) -> Self {
        self.args = args;
        self
    }
}

/// A profile: the plugins (every extension point each implements is enabled, in this order),
/// their weights and arguments, served to pods whose `spec.schedulerName` is `scheduler_name`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProfileConfig {
    /// The scheduler name pods select.
    pub scheduler_name: String,
    /// The plugins, in order.
    pub plugins: Vec<PluginConfig>,
    /// Percentage of nodes to find feasible before scoring; `None`/0 is adaptive.
    #[serde(default)]
    pub percentage_of_nodes_to_score: Option<u32>,
}

impl ProfileConfig {
    /// Kubernetes' default profile under `default-scheduler` (see [`crate::plugins`]).
    pub fn default_profile() -> Self {
        Self {
            scheduler_name: crate::DEFAULT_SCHEDULER_NAME.into(),
            plugins: crate::plugins::default_plugin_configs(),
            percentage_of_nodes_to_score: None,
        }
    }

    /// Renames the profile.
    pub fn named(mut self, scheduler_name: impl Into<String>) -> Self {
        self.scheduler_name = scheduler_name.into();
        self
    }

    /// Adds (or replaces, keeping its position) a plugin.
    pub fn with_plugin(mut self, plugin: PluginConfig) -> Self {
        match self.plugins.iter_mut().find(|p| p.name == plugin.name) {
            Some(existing) => *existing = plugin,
            None => self.plugins.push(plugin),
        }
        self
    }

    /// Removes a plugin.
    pub fn without_plugin(mut self, name: &str) -> Self {
        self.plugins.retain(|p| p.name != name);
        self
    }
}

/// A node chosen for a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleResult {
    /// The node.
    pub node: String,
    /// Nodes filtered this cycle.
    pub evaluated_nodes: usize,
    /// Of those, nodes that fit.
    pub feasible_nodes: usize,
}

/// One scoring plugin's scores over the feasible nodes (same order).
#[derive(Clone, Debug)]
pub struct PluginScores {
    /// The plugin.
    pub plugin: String,
    /// Its weight in the profile.
    pub weight: i64,
    /// Scores before normalization.
    pub raw: Vec<i64>,
    /// Scores after normalization (`0..=100`), before weighting.
    pub normalized: Vec<i64>,
}

/// What Permit decided for a pod.
#[derive(Clone, Debug)]
pub enum PermitOutcome {
    /// Bind now.
    Allow,
    /// Do not bind.
    Reject(Status),
    /// Wait (up to the shortest timeout asked) for these plugins to allow the pod.
    Wait {
        /// The shortest timeout of the waiting plugins.
        timeout: std::time::Duration,
        /// The plugins that asked to wait.
        plugins: Vec<String>,
    },
}

/// A built profile: runs a scheduling cycle's extension points in order.
pub struct Profile {
    name: String,
    plugins: Vec<Arc<dyn Plugin>>,
    /// Plugin names, shared into statuses without copying.
    names: Vec<Arc<str>>,
    weights: Vec<i64>,
    /// Positions of the plugins with a PreFilter, and with a Filter (what-if checks run them
    /// many times per cycle).
    pre_filter_at: Vec<usize>,
    filter_at: Vec<usize>,
    percentage: Option<u32>,
    parallel: bool,
    /// Where the next cycle starts filtering, so that with percentageOfNodesToScore every node
    /// gets its turn (Kubernetes' `nextStartNodeIndex`).
    next_start: AtomicUsize,
    /// Source of randomness for breaking ties between equally scored nodes.
    ties: AtomicU64,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plugins: Vec<_> = self.plugins.iter().map(|p| p.name()).collect();
        f.debug_struct("Profile")
            .field("name", &self.name)
            .field("plugins", &plugins)
            .field("weights", &self.weights)
            .field("percentage", &self.percentage)
            .finish_non_exhaustive()
    }
}

impl Profile {
    /// Builds `config`'s plugins from `registry`.
    pub fn build(config: &ProfileConfig, registry: &Registry) -> Result<Self, SchedError> {
        let mut plugins = Vec::new();
        for p in &config.plugins {
            let plugin = registry.build(&p.name, &p.args)?;
            plugins.push((plugin, p.weight));
        }
        Ok(Self::from_plugins(
            config.scheduler_name.clone(),
            plugins,
            config.percentage_of_nodes_to_score,
        ))
    }

    /// A profile of already built plugins and their weights.
    pub fn from_plugins(
        name: impl Into<String>,
        plugins: Vec<(Arc<dyn Plugin>, i64)>,
        percentage_of_nodes_to_score: Option<u32>,
    ) -> Self {
        let (plugins, weights): (Vec<Arc<dyn Plugin>>, _) = plugins.into_iter().unzip();
        let positions = |has: fn(&dyn Plugin) -> bool| -> Vec<usize> {
            (plugins.iter().enumerate())
                .filter(|(_, p)| has(p.as_ref()))
                .map(|(i, _)| i)
                .collect()
        };
        let pre_filter_at = positions(|p| p.as_pre_filter().is_some());
        let filter_at = positions(|p| p.as_filter().is_some());
        Self {
            pre_filter_at,
            filter_at,
            name: name.into(),
            names: plugins.iter().map(|p| Arc::from(p.name())).collect(),
            plugins,
            weights,
            percentage: percentage_of_nodes_to_score,
            parallel: rayon::current_num_threads() >= PARALLEL_MIN_THREADS,
            next_start: AtomicUsize::new(0),
            ties: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
        }
    }

    /// Filters and scores on one thread only, or across rayon's pool (the default when the pool
    /// has at least 4 threads).
    pub fn set_parallel(&mut self, parallel: bool) {
        self.parallel = parallel;
    }

    /// The scheduler name this profile serves.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugins, in order.
    pub fn plugins(&self) -> &[Arc<dyn Plugin>] {
        &self.plugins
    }

    fn map<T: Send>(&self, n: usize, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
        if self.parallel && n >= PARALLEL_MIN_NODES {
            (0..n).into_par_iter().map(f).collect()
        } else {
            (0..n).map(f).collect()
        }
    }

    /// Runs every PreFilter. `Ok(Some(nodes))` narrows the candidates; `Err` rejects every node.
    pub fn run_pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        cluster: &Cluster,
    ) -> Result<Option<HashSet<String>>, Status> {
        let mut allowed: Option<HashSet<String>> = None;
        for (i, plugin) in self.plugins.iter().enumerate() {
            let Some(pf) = plugin.as_pre_filter() else {
                continue;
            };
            let result = pf.pre_filter(state, pod, cluster);
            match result.status.code() {
                Code::Success => {}
                Code::Skip => {
                    if i < 64 {
                        state.skip_filter |= 1 << i;
                    }
                }
                _ => return Err(result.status.with_plugin(plugin.name())),
            }
            if let Some(nodes) = result.nodes {
                allowed = Some(match allowed {
                    Some(prev) => prev.intersection(&nodes).cloned().collect(),
                    None => nodes,
                });
            }
        }
        Ok(allowed)
    }

    /// Runs the PreFilter extensions' `add_pod` (see [`PreFilterPlugin`](super::PreFilterPlugin))
    /// of the plugins whose PreFilter ran: `to_add` is now counted on `node`.
    pub fn run_pre_filter_add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        to_add: &PodInfo,
        node: &NodeInfo,
        cluster: &Cluster,
    ) -> Status {
        self.run_pre_filter_extension(state, |pf, state| {
            pf.add_pod(state, pod, to_add, node, cluster)
        })
    }

    /// Runs the PreFilter extensions' `remove_pod` of the plugins whose PreFilter ran:
    /// `to_remove` is no longer counted on `node`.
    pub fn run_pre_filter_remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        to_remove: &PodInfo,
        node: &NodeInfo,
        cluster: &Cluster,
    ) -> Status {
        self.run_pre_filter_extension(state, |pf, state| {
            pf.remove_pod(state, pod, to_remove, node, cluster)
        })
    }

    fn run_pre_filter_extension(
        &self,
        state: &mut CycleState,
        mut call: impl FnMut(&dyn super::plugin::PreFilterPlugin, &mut CycleState) -> Status,
    ) -> Status {
        for &i in &self.pre_filter_at {
            if i < 64 && state.skip_filter & (1 << i) != 0 {
                continue;
            }
            let Some(pf) = self.plugins.get(i).and_then(|p| p.as_pre_filter()) else {
                continue;
            };
            let status = call(pf, state);
            if !status.is_success() {
                return status.with_plugin(Arc::clone(&self.names[i]));
            }
        }
        Status::success()
    }

    /// Runs the Filters on one node, stopping at the first rejection.
    pub fn run_filters(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        for (i, (plugin, name)) in self.plugins.iter().zip(&self.names).enumerate() {
            if i < 64 && state.skip_filter & (1 << i) != 0 {
                continue;
            }
            let Some(f) = plugin.as_filter() else {
                continue;
            };
            let status = f.filter(state, pod, node);
            if !status.is_success() && !status.is_skip() {
                return status.with_plugin(Arc::clone(name));
            }
        }
        Status::success()
    }

    /// Whether every Filter not skipped accepts `node`: [`Profile::run_filters`] without the
    /// rejection's details (what-if checks only need the verdict).
    pub(crate) fn fits(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> bool {
        self.filter_at.iter().all(|&i| {
            if i < 64 && state.skip_filter & (1 << i) != 0 {
                return true;
            }
            let Some(f) = self.plugins.get(i).and_then(|p| p.as_filter()) else {
                return true;
            };
            let status = f.filter(state, pod, node);
            let ok = matches!(status.code(), Code::Success | Code::Skip);
            status.discard();
            ok
        })
    }

    /// The Filter plugins not skipped by PreFilter, resolved once per cycle so the per-node
    /// loop does no lookups.
    fn active_filters(&self, state: &CycleState) -> Vec<(&Arc<str>, &dyn FilterPlugin)> {
        self.plugins
            .iter()
            .zip(&self.names)
            .enumerate()
            .filter(|(i, _)| *i >= 64 || state.skip_filter & (1 << i) == 0)
            .filter_map(|(_, (p, name))| Some((name, p.as_filter()?)))
            .collect()
    }

    /// Runs every Filter on one node (for explanations): each plugin's verdict.
    pub fn run_all_filters(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
    ) -> Vec<(String, Status)> {
        let mut out = Vec::new();
        for (i, plugin) in self.plugins.iter().enumerate() {
            let Some(f) = plugin.as_filter() else {
                continue;
            };
            let status = if i < 64 && state.skip_filter & (1 << i) != 0 {
                Status::skip()
            } else {
                f.filter(state, pod, node)
            };
            out.push((plugin.name().to_string(), status));
        }
        out
    }

    /// Filters nodes until enough are feasible; returns the feasible ones, the rejected ones
    /// (their statuses are dropped: they matter only if nothing fits, and then are recomputed,
    /// which keeps the common path free of a large per-cycle allocation), and how many nodes
    /// were evaluated.
    fn find_feasible<'c>(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        cluster: &'c Cluster,
        allowed: Option<&HashSet<String>>,
    ) -> Feasible<'c> {
        let all = cluster.nodes();
        // Positions in `all`.
        let narrowed: Option<Vec<usize>> = allowed.map(|set| {
            let mut v: Vec<usize> = set.iter().filter_map(|n| cluster.position(n)).collect();
            v.sort_by(|&a, &b| all[a].name().cmp(all[b].name()));
            v
        });
        let total = narrowed.as_ref().map_or(all.len(), Vec::len);
        let start = if narrowed.is_some() || all.is_empty() {
            0
        } else {
            self.next_start.load(Ordering::Relaxed) % all.len()
        };
        let at = |i: usize| -> usize {
            match &narrowed {
                Some(v) => v[i],
                None => (start + i) % all.len(),
            }
        };
        let want = num_feasible_nodes_to_find(total, self.percentage);
        let filters = self.active_filters(state);
        let filters = &filters[..];
        let mut feasible = Vec::with_capacity(want.min(total));
        let mut failures = Vec::new();
        let mut rejected = Vec::new();
        let mut processed = 0;
        if !self.parallel || total < PARALLEL_MIN_NODES {
            // One thread: filter node by node and stop as soon as enough fit. Once as many
            // nodes as the cycle wants have been filtered and none fit, most likely none will
            // (a pod waiting for preemption): the rejections are then kept as they come, rather
            // than recomputed for every node afterwards.
            let mut visit = |i: usize, node: &'c NodeInfo| {
                processed += 1;
                if feasible.is_empty() && processed > want {
                    let status = run_active_filters(filters, state, pod, node);
                    if status.is_success() {
                        feasible.push(node);
                    } else {
                        rejected.push((i, status));
                    }
                } else if passes(filters, state, pod, node) {
                    feasible.push(node);
                } else {
                    failures.push(i);
                }
                feasible.len() < want
            };
            match &narrowed {
                Some(v) => {
                    for &i in v {
                        if !visit(i, &all[i]) {
                            break;
                        }
                    }
                }
                None => {
                    let (head, tail) = all.split_at(start);
                    for (node, i) in tail.iter().zip(start..).chain(head.iter().zip(0..)) {
                        if !visit(i, node) {
                            break;
                        }
                    }
                }
            }
        }
        while processed < total && feasible.len() < want {
            let round = (want - feasible.len())
                .max(PARALLEL_MIN_NODES)
                .min(total - processed);
            let base = processed;
            let fits = self.map(round, |j| passes(filters, state, pod, &all[at(base + j)]));
            for (j, fits) in fits.into_iter().enumerate() {
                processed = base + j + 1;
                let i = at(base + j);
                if fits {
                    feasible.push(&all[i]);
                    if feasible.len() >= want {
                        break;
                    }
                } else {
                    failures.push(i);
                }
            }
        }
        if narrowed.is_none() && !all.is_empty() {
            self.next_start
                .store((start + processed) % all.len(), Ordering::Relaxed);
        }
        Feasible {
            nodes: feasible,
            failures,
            rejected,
            evaluated: processed,
        }
    }

    /// Runs every PreScore, recording in `state` which plugins said Skip.
    fn run_pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        cluster: &Cluster,
        nodes: &[&NodeInfo],
    ) -> Result<(), Status> {
        for (i, plugin) in self.plugins.iter().enumerate() {
            let Some(ps) = plugin.as_pre_score() else {
                continue;
            };
            let status = ps.pre_score(state, pod, cluster, nodes);
            match status.code() {
                Code::Success => {}
                Code::Skip => {
                    if i < 64 {
                        state.skip_score |= 1 << i;
                    }
                }
                _ => return Err(status.with_plugin(plugin.name())),
            }
        }
        Ok(())
    }

    /// The Score plugins not skipped by PreScore, with their position in the profile.
    fn active_scorers(
        &self,
        state: &CycleState,
    ) -> impl Iterator<Item = (usize, &dyn ScorePlugin)> {
        let skip = state.skip_score;
        self.plugins
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i >= 64 || skip & (1 << i) == 0)
            .filter_map(|(i, p)| Some((i, p.as_score()?)))
    }

    /// One plugin's raw scores over `nodes` into `out` (cleared first).
    fn raw_scores(
        &self,
        sp: &dyn ScorePlugin,
        state: &CycleState,
        pod: &PodInfo,
        nodes: &[&NodeInfo],
        out: &mut Vec<i64>,
    ) -> Result<(), Status> {
        out.clear();
        if self.parallel && nodes.len() >= PARALLEL_MIN_NODES {
            let raw: Result<Vec<i64>, Status> = nodes
                .par_iter()
                .map(|node| sp.score(state, pod, node))
                .collect();
            *out = raw?;
        } else {
            for node in nodes {
                out.push(sp.score(state, pod, node)?);
            }
        }
        Ok(())
    }

    /// Runs PreScore and Score (with normalization) over `nodes`.
    pub fn score_nodes(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        cluster: &Cluster,
        nodes: &[&NodeInfo],
    ) -> Result<Vec<PluginScores>, Status> {
        self.run_pre_score(state, pod, cluster, nodes)?;
        let state = &*state;
        let mut out = Vec::new();
        for (i, sp) in self.active_scorers(state) {
            let name = self.plugins[i].name();
            let mut raw = Vec::with_capacity(nodes.len());
            self.raw_scores(sp, state, pod, nodes, &mut raw)
                .map_err(|s| s.with_plugin(name))?;
            let mut normalized = raw.clone();
            let status = sp.normalize(state, pod, &mut normalized);
            if !status.is_success() {
                return Err(status.with_plugin(name));
            }
            out.push(PluginScores {
                plugin: name.to_string(),
                weight: self.weights[i],
                raw,
                normalized,
            });
        }
        Ok(out)
    }

    /// PreScore and Score straight into weighted totals per node: what a cycle needs, without
    /// keeping each plugin's scores.
    fn weighted_totals(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        cluster: &Cluster,
        nodes: &[&NodeInfo],
    ) -> Result<Vec<i64>, Status> {
        self.run_pre_score(state, pod, cluster, nodes)?;
        let state = &*state;
        let mut totals = vec![0i64; nodes.len()];
        let mut scores = Vec::with_capacity(nodes.len());
        for (i, sp) in self.active_scorers(state) {
            let name = &self.names[i];
            self.raw_scores(sp, state, pod, nodes, &mut scores)
                .map_err(|s| s.with_plugin(Arc::clone(name)))?;
            let status = sp.normalize(state, pod, &mut scores);
            if !status.is_success() {
                return Err(status.with_plugin(Arc::clone(name)));
            }
            let weight = self.weights[i];
            for (t, v) in totals.iter_mut().zip(&scores) {
                *t += v * weight;
            }
        }
        Ok(totals)
    }

    /// One scheduling decision (PreFilter, Filter, PostFilter on failure, PreScore, Score),
    /// reading `cluster` as the cycle's snapshot.
    pub fn schedule(
        &self,
        cluster: &Cluster,
        pod: &PodInfo,
    ) -> Result<ScheduleResult, Box<FitError>> {
        self.schedule_with_state(&mut CycleState::new(), cluster, pod)
    }

    /// [`Profile::schedule`] with a caller-provided state (kept for Reserve, Permit and Bind).
    pub fn schedule_with_state(
        &self,
        state: &mut CycleState,
        cluster: &Cluster,
        pod: &PodInfo,
    ) -> Result<ScheduleResult, Box<FitError>> {
        let fit_error = |statuses: NodeStatuses| FitError {
            pod: pod.key.clone(),
            num_nodes: cluster.len(),
            statuses,
            post_filter: None,
            error: None,
        };
        let allowed = match self.run_pre_filter(state, pod, cluster) {
            Ok(allowed) => allowed,
            Err(status) => {
                if status.code() == Code::Error {
                    let mut e = fit_error(NodeStatuses::new());
                    e.error = Some(status);
                    return Err(Box::new(e));
                }
                let mut statuses = NodeStatuses::new();
                for i in 0..cluster.len() {
                    statuses.push_node(cluster, i, status.clone());
                }
                return Err(Box::new(self.post_filter(
                    state,
                    pod,
                    cluster,
                    fit_error(statuses),
                )));
            }
        };
        // A pod that preemption made room for tries its nominated node first, as
        // kube-scheduler's `evaluateNominatedNode`: if it fits, it is the decision.
        let nominated = pod
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| !n.is_empty() && allowed.as_ref().is_none_or(|a| a.contains(*n)))
            .and_then(|n| cluster.node(n));
        if let Some(node) = nominated {
            if self.fits(state, pod, node) {
                return Ok(ScheduleResult {
                    node: node.name().to_string(),
                    evaluated_nodes: 1,
                    feasible_nodes: 1,
                });
            }
        }
        let Feasible {
            nodes: feasible,
            failures,
            rejected,
            evaluated,
        } = self.find_feasible(state, pod, cluster, allowed.as_ref());
        if feasible.is_empty() {
            let mut statuses = NodeStatuses::new();
            let nodes = cluster.nodes();
            for i in failures {
                statuses.push_node(cluster, i, self.run_filters(state, pod, &nodes[i]));
            }
            for (i, status) in rejected {
                statuses.push_node(cluster, i, status);
            }
            if let Some(e) = statuses.values().find(|s| s.code() == Code::Error) {
                let mut err = fit_error(NodeStatuses::new());
                err.error = Some(e.clone());
                return Err(Box::new(err));
            }
            if allowed.is_some() {
                // Nodes PreFilter ruled out (e.g. not the pod's spec.nodeName).
                for (i, node) in cluster.nodes().iter().enumerate() {
                    if !statuses.contains(node.name()) {
                        statuses.push_node(
                            cluster,
                            i,
                            Status::unresolvable("node(s) didn't satisfy plugin(s) PreFilter"),
                        );
                    }
                }
            }
            return Err(Box::new(self.post_filter(
                state,
                pod,
                cluster,
                fit_error(statuses),
            )));
        }
        let result = |node: &NodeInfo| ScheduleResult {
            node: node.name().to_string(),
            evaluated_nodes: evaluated,
            feasible_nodes: feasible.len(),
        };
        if feasible.len() == 1 {
            return Ok(result(feasible[0]));
        }
        let totals = self
            .weighted_totals(state, pod, cluster, &feasible)
            .map_err(|status| {
                let mut e = fit_error(NodeStatuses::new());
                e.error = Some(status);
                Box::new(e)
            })?;
        let best = self.select(&totals);
        Ok(result(feasible[best]))
    }

    /// The highest total; among ties, one at random (reservoir sampling), as kube-scheduler.
    fn select(&self, totals: &[i64]) -> usize {
        let mut seed = self
            .ties
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        let mut best = 0;
        let mut ties = 1u64;
        for (i, &t) in totals.iter().enumerate().skip(1) {
            if t > totals[best] {
                best = i;
                ties = 1;
            } else if t == totals[best] {
                ties += 1;
                seed = splitmix(seed);
                if seed % ties == 0 {
                    best = i;
                }
            }
        }
        best
    }

    fn post_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        cluster: &Cluster,
        mut error: FitError,
    ) -> FitError {
        for plugin in &self.plugins {
            let Some(pf) = plugin.as_post_filter() else {
                continue;
            };
            let result = pf.post_filter(state, pod, cluster, &error.statuses, self);
            let done = result.status.is_success();
            error.post_filter = Some(result);
            if done {
                break;
            }
        }
        error
    }

    /// Runs Reserve; on a failure, unreserves the plugins already reserved and returns it.
    pub fn run_reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status {
        for (i, plugin) in self.plugins.iter().enumerate() {
            let Some(r) = plugin.as_reserve() else {
                continue;
            };
            let status = r.reserve(state, pod, node);
            if !status.is_success() {
                for p in self.plugins[..=i].iter().rev() {
                    if let Some(r) = p.as_reserve() {
                        r.unreserve(state, pod, node);
                    }
                }
                return status.with_plugin(plugin.name());
            }
        }
        Status::success()
    }

    /// Runs Unreserve in reverse order.
    pub fn run_unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) {
        for plugin in self.plugins.iter().rev() {
            if let Some(r) = plugin.as_reserve() {
                r.unreserve(state, pod, node);
            }
        }
    }

    /// Runs Permit: a rejection wins; otherwise any wait makes the pod wait.
    pub fn run_permit(&self, state: &CycleState, pod: &PodInfo, node: &str) -> PermitOutcome {
        let mut waiting = Vec::new();
        let mut timeout = std::time::Duration::MAX;
        for plugin in &self.plugins {
            let Some(p) = plugin.as_permit() else {
                continue;
            };
            match p.permit(state, pod, node) {
                PermitDecision::Allow => {}
                PermitDecision::Reject(s) => {
                    return PermitOutcome::Reject(s.with_plugin(plugin.name()));
                }
                PermitDecision::Wait(t) => {
                    timeout = timeout.min(t);
                    waiting.push(plugin.name().to_string());
                }
            }
        }
        if waiting.is_empty() {
            PermitOutcome::Allow
        } else {
            PermitOutcome::Wait {
                timeout,
                plugins: waiting,
            }
        }
    }

    /// Runs PreBind, stopping at the first failure.
    pub fn run_pre_bind(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status {
        for plugin in &self.plugins {
            if let Some(p) = plugin.as_pre_bind() {
                let s = p.pre_bind(state, pod, node);
                if !s.is_success() {
                    return s.with_plugin(plugin.name());
                }
            }
        }
        Status::success()
    }

    /// Runs the binders until one does not Skip; Skip when none bound (the caller binds).
    pub fn run_bind(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status {
        for plugin in &self.plugins {
            if let Some(b) = plugin.as_bind() {
                let s = b.bind(state, pod, node);
                if !s.is_skip() {
                    return s.with_plugin(plugin.name());
                }
            }
        }
        Status::skip()
    }

    /// Runs PostBind.
    pub fn run_post_bind(&self, state: &CycleState, pod: &PodInfo, node: &str) {
        for plugin in &self.plugins {
            if let Some(p) = plugin.as_post_bind() {
                p.post_bind(state, pod, node);
            }
        }
    }

    /// Plugin names with their weights, for explanations.
    pub fn weights(&self) -> BTreeMap<String, i64> {
        self.plugins
            .iter()
            .zip(&self.weights)
            .map(|(p, w)| (p.name().to_string(), *w))
            .collect()
    }
}

/// The active filters on `node` until one rejects it (with the plugin's name), as
/// [`Profile::run_filters`].
fn run_active_filters(
    filters: &[(&Arc<str>, &dyn FilterPlugin)],
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
) -> Status {
    for (name, f) in filters {
        let status = f.filter(state, pod, node);
        if !status.is_success() && !status.is_skip() {
            return status.with_plugin(Arc::clone(name));
        }
    }
    Status::success()
}

/// What filtering found: the feasible nodes, and the rejected ones by position in the
/// cluster, without their statuses (`failures`, evaluated first) or with them (`rejected`).
struct Feasible<'c> {
    nodes: Vec<&'c NodeInfo>,
    failures: Vec<usize>,
    rejected: Vec<(usize, Status)>,
    evaluated: usize,
}

/// Whether every active filter accepts `node` (the hot path: no status is kept).
#[inline]
fn passes(
    filters: &[(&Arc<str>, &dyn FilterPlugin)],
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
) -> bool {
    filters.iter().all(|(_, f)| {
        let status = f.filter(state, pod, node);
        let ok = matches!(status.code(), Code::Success | Code::Skip);
        status.discard();
        ok
    })
}

/// Weighted sums per node.
pub(crate) fn total_scores(scores: &[PluginScores], nodes: usize) -> Vec<i64> {
    let mut totals = vec![0i64; nodes];
    for s in scores {
        for (t, v) in totals.iter_mut().zip(&s.normalized) {
            *t += v * s.weight;
        }
    }
    totals
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_percentage_matches_kubernetes() {
        assert_eq!(num_feasible_nodes_to_find(50, None), 50);
        assert_eq!(num_feasible_nodes_to_find(100, None), 100);
        assert_eq!(num_feasible_nodes_to_find(5000, None), 500);
        assert_eq!(num_feasible_nodes_to_find(1000, None), 420);
        assert_eq!(num_feasible_nodes_to_find(10000, None), 500);
        assert_eq!(num_feasible_nodes_to_find(5000, Some(100)), 5000);
        assert_eq!(num_feasible_nodes_to_find(500, Some(10)), 100);
    }
}
