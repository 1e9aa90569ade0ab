//! [`CountIndex`]: matching-pod counts per topology domain, kept up to date as pods are placed
//! and removed, so PodTopologySpread and InterPodAffinity do not walk every pod every cycle.
//!
//! An entry is created the first time a cycle asks for a (selector, namespaces, topology key,
//! node eligibility) combination — one walk of the cluster — and then updated by each pod
//! change in O(entries). Node and namespace changes drop every entry (they are rare, and
//! eligibility or namespace selection may change).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use super::node_info::NodeInfo;
use super::pod_info::{AffinityTerm, PodInfo};

/// Whether a pod counts for an entry (namespace labels are passed for `namespaceSelector`).
pub type PodMatcher = Arc<
    dyn for<'m> Fn(&PodInfo, &dyn Fn(&str) -> Option<&'m BTreeMap<String, String>>) -> bool
        + Send
        + Sync,
>;
/// Whether a node takes part (its domain is registered, its pods counted).
pub type NodeMatcher = Arc<dyn Fn(&NodeInfo) -> bool + Send + Sync>;

/// Upper bound on entries; past it the index is reset (workloads have few distinct terms).
const MAX_ENTRIES: usize = 256;

#[derive(Clone)]
struct Entry {
    topology_key: String,
    pods: PodMatcher,
    nodes: NodeMatcher,
    /// Shared with the cycles reading it; a cycle's copy is dropped before the next change, so
    /// `Arc::make_mut` does not copy in the steady state.
    counts: Arc<HashMap<String, i64>>,
}

/// Existing pods' required anti-affinity terms, grouped by identical term.
#[derive(Clone)]
struct AntiTerm {
    term: AffinityTerm,
    /// Topology value → pods holding the term there.
    counts: Arc<HashMap<String, i64>>,
}

#[derive(Clone, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    anti_terms: HashMap<String, AntiTerm>,
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct CountIndex {
    inner: Mutex<Inner>,
}

impl Clone for CountIndex {
    fn clone(&self) -> Self {
        Self {
            inner: Mutex::new(self.lock().clone()),
        }
    }
}

impl fmt::Debug for CountIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("CountIndex")
            .field("entries", &inner.entries.len())
            .field("anti_terms", &inner.anti_terms.len())
            .finish()
    }
}

fn term_signature(t: &AffinityTerm) -> String {
    format!("{t:?}")
}

impl CountIndex {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Counts are rebuilt on demand; a poisoned lock's data is dropped below if in doubt.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops the per-selector entries (after node or namespace changes).
    pub(crate) fn invalidate(&mut self) {
        self.lock().entries.clear();
    }

    /// Counts for `signature`, computing them with `nodes` on first use.
    pub(crate) fn counts<'m>(
        &self,
        signature: &str,
        topology_key: &str,
        pods: PodMatcher,
        node_ok: NodeMatcher,
        all_nodes: &mut dyn Iterator<Item = &NodeInfo>,
        ns: &dyn Fn(&str) -> Option<&'m BTreeMap<String, String>>,
    ) -> Arc<HashMap<String, i64>> {
        let mut inner = self.lock();
        if let Some(e) = inner.entries.get(signature) {
            return e.counts.clone();
        }
        let mut counts: HashMap<String, i64> = HashMap::new();
        for node in all_nodes {
            if !node_ok(node) {
                continue;
            }
            let Some(value) = node.labels().get(topology_key) else {
                continue;
            };
            let n = node.pods().iter().filter(|p| pods(p, ns)).count() as i64;
            *counts.entry(value.clone()).or_default() += n;
        }
        if inner.entries.len() >= MAX_ENTRIES {
            inner.entries.clear();
        }
        let counts = Arc::new(counts);
        inner.entries.insert(
            signature.to_string(),
            Entry {
                topology_key: topology_key.to_string(),
                pods,
                nodes: node_ok,
                counts: counts.clone(),
            },
        );
        counts
    }

    /// A pod was counted on (`delta` 1) or removed from (`delta` -1) `node`.
    pub(crate) fn pod_changed<'m>(
        &mut self,
        pod: &PodInfo,
        node: &NodeInfo,
        delta: i64,
        ns: &dyn Fn(&str) -> Option<&'m BTreeMap<String, String>>,
    ) {
        let inner = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        for e in inner.entries.values_mut() {
            if let Some(value) = node.labels().get(&e.topology_key) {
                if (e.nodes)(node) && (e.pods)(pod, ns) {
                    *Arc::make_mut(&mut e.counts)
                        .entry(value.clone())
                        .or_default() += delta;
                }
            }
        }
        for term in &pod.required_anti_affinity {
            let Some(value) = node.labels().get(&term.topology_key) else {
                continue;
            };
            let t = inner
                .anti_terms
                .entry(term_signature(term))
                .or_insert_with(|| AntiTerm {
                    term: term.clone(),
                    counts: Arc::default(),
                });
            *Arc::make_mut(&mut t.counts)
                .entry(value.clone())
                .or_default() += delta;
        }
    }

    /// A node (with its pods) appeared or is going away: keep the anti-affinity term counts.
    pub(crate) fn node_pods_changed<'m>(
        &mut self,
        node: &NodeInfo,
        delta: i64,
        ns: &dyn Fn(&str) -> Option<&'m BTreeMap<String, String>>,
    ) {
        self.invalidate();
        for pod in node.pods() {
            self.pod_changed(pod, node, delta, ns);
        }
    }

    /// For every distinct existing required anti-affinity term matching `pod`: its topology
    /// key and the pods holding it per value.
    pub(crate) fn existing_anti_affinity<'m>(
        &self,
        pod: &PodInfo,
        ns: &dyn Fn(&str) -> Option<&'m BTreeMap<String, String>>,
    ) -> Vec<(String, Arc<HashMap<String, i64>>)> {
        self.lock()
            .anti_terms
            .values()
            .filter(|t| t.counts.values().any(|n| *n > 0) && t.term.matches_with(pod, ns))
            .map(|t| (t.term.topology_key.clone(), t.counts.clone()))
            .collect()
    }
}
