//! The extension points. A plugin implements [`Plugin`] and any subset of the extension traits,
//! and says which through the `as_*` methods (each defaults to "not implemented").

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use super::cluster::Cluster;
use super::cycle_state::CycleState;
use super::node_info::NodeInfo;
use super::pod_info::PodInfo;
use super::profile::Profile;
use super::status::Status;

/// The highest score a node gets from one plugin after normalization (Kubernetes' `MaxNodeScore`).
pub const MAX_NODE_SCORE: i64 = 100;

/// A named plugin. Override the `as_*` methods of the extension points you implement:
///
/// ```
/// use kube_sched::framework::{FilterPlugin, CycleState, NodeInfo, Plugin, PodInfo, Status};
///
/// /// Keeps pods off nodes whose name starts with "spot-".
/// #[derive(Debug)]
/// struct NoSpot;
/// impl Plugin for NoSpot {
///     fn name(&self) -> &str { "NoSpot" }
///     fn as_filter(&self) -> Option<&dyn FilterPlugin> { Some(self) }
/// }
/// impl FilterPlugin for NoSpot {
///     fn filter(&self, _: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
///         if node.name().starts_with("spot-") {
///             Status::unresolvable("node(s) were spot nodes")
///         } else {
///             Status::success()
///         }
///     }
/// }
/// ```
pub trait Plugin: Send + Sync + fmt::Debug {
    /// The name profiles refer to it by, and reasons are attributed to.
    fn name(&self) -> &str;
    /// PreFilter, if implemented.
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        None
    }
    /// Filter, if implemented.
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        None
    }
    /// PostFilter, if implemented.
    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        None
    }
    /// PreScore, if implemented.
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        None
    }
    /// Score, if implemented.
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        None
    }
    /// Reserve/Unreserve, if implemented.
    fn as_reserve(&self) -> Option<&dyn ReservePlugin> {
        None
    }
    /// Permit, if implemented.
    fn as_permit(&self) -> Option<&dyn PermitPlugin> {
        None
    }
    /// PreBind, if implemented.
    fn as_pre_bind(&self) -> Option<&dyn PreBindPlugin> {
        None
    }
    /// Bind, if implemented.
    fn as_bind(&self) -> Option<&dyn BindPlugin> {
        None
    }
    /// PostBind, if implemented.
    fn as_post_bind(&self) -> Option<&dyn PostBindPlugin> {
        None
    }
}

/// What PreFilter says: a status, and optionally the only nodes worth filtering.
#[derive(Clone, Debug)]
pub struct PreFilterResult {
    /// Success, Skip (this plugin's Filter is skipped for the pod), or a rejection of every node.
    pub status: Status,
    /// When set, only these nodes can fit (e.g. `spec.nodeName`); others are not evaluated.
    pub nodes: Option<HashSet<String>>,
}

impl PreFilterResult {
    /// Success, all nodes.
    pub fn success() -> Self {
        Self::from(Status::success())
    }
    /// Skip this plugin's Filter for this pod.
    pub fn skip() -> Self {
        Self::from(Status::skip())
    }
}

impl From<Status> for PreFilterResult {
    fn from(status: Status) -> Self {
        Self {
            status,
            nodes: None,
        }
    }
}

/// Runs once per pod before filtering: validate, precompute into the [`CycleState`].
///
/// A plugin whose PreFilter state depends on the pods already placed (counts for affinity or
/// spreading) also implements the PreFilter extensions [`add_pod`](Self::add_pod) and
/// [`remove_pod`](Self::remove_pod), as kube-scheduler's `PreFilterExtensions`: preemption
/// evaluates "what if these pods were gone" on a copy of the cycle state and calls them for
/// each pod it removes or puts back, so Filter then sees the counts of that hypothetical
/// cluster. They are not called for a plugin whose PreFilter said Skip.
pub trait PreFilterPlugin: Send + Sync {
    /// See [`PreFilterResult`].
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        cluster: &Cluster,
    ) -> PreFilterResult;

    /// `to_add` is now counted on `node` (already in `node.pods()`): update what PreFilter
    /// wrote in `state` for `pod`. The default changes nothing.
    fn add_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _to_add: &PodInfo,
        _node: &NodeInfo,
        _cluster: &Cluster,
    ) -> Status {
        Status::success()
    }

    /// `to_remove` is no longer counted on `node` (already gone from `node.pods()`): update
    /// what PreFilter wrote in `state` for `pod`. The default changes nothing.
    fn remove_pod(
        &self,
        _state: &mut CycleState,
        _pod: &PodInfo,
        _to_remove: &PodInfo,
        _node: &NodeInfo,
        _cluster: &Cluster,
    ) -> Status {
        Status::success()
    }
}

/// Can the pod run on this node? Called for many nodes in parallel.
pub trait FilterPlugin: Send + Sync {
    /// Success, or why not.
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;
}

/// Rejection statuses per node name, in the order the nodes were evaluated (a cycle's
/// rotating start first, as kube-scheduler's `nextStartNodeIndex`).
///
/// A cycle where nothing fits records one status per node: entries refer to the cluster's
/// shared list of node names by position (no name is copied, hashed or sorted), and the name
/// index [`get`](Self::get) uses is built on first use.
#[derive(Clone, Debug, Default)]
pub struct NodeStatuses {
    /// The cluster's node names when entries refer to them by position.
    names: Option<Arc<Vec<Arc<str>>>>,
    entries: Vec<(NodeRef, Status)>,
    index: OnceLock<HashMap<Arc<str>, usize>>,
}

#[derive(Clone, Debug)]
enum NodeRef {
    /// Position in `names`.
    At(usize),
    Name(Arc<str>),
}

impl NodeStatuses {
    /// No statuses.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of nodes with a status.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no node has a status.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn name_of<'a>(&'a self, node: &'a NodeRef) -> &'a str {
        match node {
            NodeRef::At(i) => self
                .names
                .as_ref()
                .and_then(|names| names.get(*i))
                .map_or("", |n| n),
            NodeRef::Name(n) => n,
        }
    }

    fn index(&self) -> &HashMap<Arc<str>, usize> {
        self.index.get_or_init(|| {
            self.entries
                .iter()
                .enumerate()
                .map(|(i, (node, _))| (Arc::from(self.name_of(node)), i))
                .collect()
        })
    }

    /// The status of `node`.
    pub fn get(&self, node: &str) -> Option<&Status> {
        let &i = self.index().get(node)?;
        self.entries.get(i).map(|(_, s)| s)
    }

    /// Whether `node` has a status.
    pub fn contains(&self, node: &str) -> bool {
        self.get(node).is_some()
    }

    /// Sets `node`'s status; returns the one it replaces.
    pub fn insert(&mut self, node: impl Into<Arc<str>>, status: Status) -> Option<Status> {
        let node = node.into();
        if let Some(&i) = self.index().get(&node) {
            return self
                .entries
                .get_mut(i)
                .map(|(_, s)| std::mem::replace(s, status));
        }
        self.push(NodeRef::Name(node), status);
        None
    }

    fn push(&mut self, node: NodeRef, status: Status) {
        if self.index.get().is_some() {
            let name: Arc<str> = Arc::from(self.name_of(&node));
            let at = self.entries.len();
            if let Some(index) = self.index.get_mut() {
                index.insert(name, at);
            }
        }
        self.entries.push((node, status));
    }

    /// Appends the status of the node at position `at` of `cluster` (which has none yet).
    pub(crate) fn push_node(&mut self, cluster: &Cluster, at: usize, status: Status) {
        let names = cluster.shared_names();
        match &self.names {
            None => self.names = Some(Arc::clone(names)),
            Some(mine) if Arc::ptr_eq(mine, names) => {}
            Some(_) => {
                let name = names.get(at).cloned().unwrap_or_else(|| Arc::from(""));
                return self.push(NodeRef::Name(name), status);
            }
        }
        self.push(NodeRef::At(at), status);
    }

    /// Node names and statuses, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Status)> {
        self.entries.iter().map(|(n, s)| (self.name_of(n), s))
    }

    /// The statuses, in order.
    pub fn values(&self) -> impl Iterator<Item = &Status> {
        self.entries.iter().map(|(_, s)| s)
    }

    /// The nodes of `cluster` (`None` for a name it does not know) and their statuses, in
    /// order; by position when the statuses were recorded against this very cluster.
    pub(crate) fn nodes_in<'a, 'c>(
        &'a self,
        cluster: &'c Cluster,
    ) -> impl Iterator<Item = (Option<&'c NodeInfo>, &'a Status)> {
        let same = self
            .names
            .as_ref()
            .is_some_and(|n| Arc::ptr_eq(n, cluster.shared_names()));
        self.entries.iter().map(move |(node, s)| {
            let info = match node {
                NodeRef::At(i) if same => cluster.nodes().get(*i),
                _ => cluster.node(self.name_of(node)),
            };
            (info, s)
        })
    }
}

impl IntoIterator for NodeStatuses {
    type Item = (Arc<str>, Status);
    type IntoIter = std::vec::IntoIter<(Arc<str>, Status)>;
    fn into_iter(self) -> Self::IntoIter {
        let names = self.names;
        let named: Vec<(Arc<str>, Status)> = self
            .entries
            .into_iter()
            .map(|(node, s)| {
                let name = match node {
                    NodeRef::At(i) => names
                        .as_ref()
                        .and_then(|n| n.get(i).cloned())
                        .unwrap_or_else(|| Arc::from("")),
                    NodeRef::Name(n) => n,
                };
                (name, s)
            })
            .collect();
        named.into_iter()
    }
}

impl<N: Into<Arc<str>>> FromIterator<(N, Status)> for NodeStatuses {
    fn from_iter<I: IntoIterator<Item = (N, Status)>>(iter: I) -> Self {
        let mut statuses = Self::new();
        for (node, status) in iter {
            statuses.insert(node, status);
        }
        statuses
    }
}

/// What PostFilter says when no node fit.
#[derive(Clone, Debug)]
pub struct PostFilterResult {
    /// Success when it made room (the pod should be retried on `nominated_node`).
    pub status: Status,
    /// The node the pod should get once the victims are gone.
    pub nominated_node: Option<String>,
    /// Pods to evict to make room.
    pub victims: Vec<Arc<PodInfo>>,
}

/// Runs when no node fits; DefaultPreemption is one.
pub trait PostFilterPlugin: Send + Sync {
    /// Try to make the pod schedulable. `profile` runs filters for what-if checks.
    fn post_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        cluster: &Cluster,
        statuses: &NodeStatuses,
        profile: &Profile,
    ) -> PostFilterResult;
}

/// Runs once per pod before scoring, with the feasible nodes.
pub trait PreScorePlugin: Send + Sync {
    /// Success, Skip (this plugin's Score is skipped), or Error.
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        cluster: &Cluster,
        nodes: &[&NodeInfo],
    ) -> Status;
}

/// Ranks feasible nodes. Scores are normalized to `0..=MAX_NODE_SCORE`, then weighted.
pub trait ScorePlugin: Send + Sync {
    /// The raw score of one node.
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status>;
    /// Rescales the raw scores (one per feasible node, in order) to `0..=MAX_NODE_SCORE`.
    /// The default keeps them.
    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, _scores: &mut [i64]) -> Status {
        Status::success()
    }
}

/// Told when a node is chosen (reserve) and when that choice is undone (unreserve).
pub trait ReservePlugin: Send + Sync {
    /// The pod is assumed on `node`. A failure undoes the cycle.
    fn reserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str) -> Status;
    /// A later step failed: release whatever `reserve` took. Must be idempotent.
    fn unreserve(&self, state: &mut CycleState, pod: &PodInfo, node: &str);
}

/// Permit's verdict.
#[derive(Clone, Debug)]
pub enum PermitDecision {
    /// Go on to bind.
    Allow,
    /// Do not bind; the pod is unschedulable for this reason.
    Reject(Status),
    /// Hold the pod until allowed or rejected through
    /// [`WaitingPods`](super::WaitingPods), rejecting it after this long.
    Wait(Duration),
}

/// The last word before binding.
pub trait PermitPlugin: Send + Sync {
    /// Allow, reject, or wait.
    fn permit(&self, state: &CycleState, pod: &PodInfo, node: &str) -> PermitDecision;
}

/// Runs before binding (e.g. to provision something the pod needs).
pub trait PreBindPlugin: Send + Sync {
    /// A failure unreserves the pod.
    fn pre_bind(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status;
}

/// Writes the binding. The first binder that does not return Skip wins.
pub trait BindPlugin: Send + Sync {
    /// Success, Skip (let the next binder do it), or an error.
    fn bind(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status;
}

/// Informational, after a successful bind.
pub trait PostBindPlugin: Send + Sync {
    /// The pod is bound to `node`.
    fn post_bind(&self, state: &CycleState, pod: &PodInfo, node: &str);
}
