//! [`Cluster`]: the scheduler's cache of nodes and the pods counted on them, updated
//! incrementally (one node's aggregates per change), read by a cycle as its snapshot.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ReplicationController, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube_core::object::{GroupKind, ObjectKey};
use kube_core::selector::Selector;

use super::fast_hash::{FastMap, FastSet};
use super::index::{CountIndex, NodeMatcher, PodMatcher};
use super::node_info::NodeInfo;
use super::pod_info::PodInfo;
use super::topology::{TopologyIndex, TopologyIndexes};
use super::volumes::Volumes;
use crate::error::SchedError;

fn scores_others(pod: &PodInfo) -> bool {
    !(pod.required_affinity.is_empty()
        && pod.preferred_affinity.is_empty()
        && pod.preferred_anti_affinity.is_empty())
}

/// A PodDisruptionBudget as preemption reads it.
#[derive(Clone, Debug)]
pub struct DisruptionBudget {
    /// Its namespace.
    pub namespace: String,
    /// The pods it covers.
    pub selector: Selector,
    /// `status.disruptionsAllowed`.
    pub disruptions_allowed: i32,
}

/// A workload's pod selector: a ReplicationController's is a label map (merged with the
/// Services' maps), the others' a label selector (added as requirements).
#[derive(Clone, Debug)]
enum Workload {
    Labels(BTreeMap<String, String>),
    Selector(Selector),
}

/// Nodes, the pods counted on each (bound, or assumed by the scheduler while their binding is
/// in flight), namespaces' labels and disruption budgets.
///
/// Every change touches one node's aggregates, so keeping the cache current costs the size of
/// the change, not of the cluster. A scheduling cycle reads `&Cluster` as its snapshot: changes
/// are applied between cycles, never during one. Nodes are stored inline, one after another:
/// a cycle filters a run of consecutive nodes, and reading them in memory order (rather than
/// chasing one pointer per node) roughly halved the basic benchmark's cycle time.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    nodes: Vec<NodeInfo>,
    /// The nodes' names, in the same order, shared with the statuses of cycles where nothing
    /// fit (which then refer to nodes by position).
    names: Arc<Vec<Arc<str>>>,
    by_name: FastMap<String, usize>,
    /// Where each counted pod is.
    placement: FastMap<ObjectKey, String>,
    /// Pods bound to a node the cache does not know (yet); attached when it arrives.
    orphans: HashMap<String, Vec<Arc<PodInfo>>>,
    assumed: FastSet<ObjectKey>,
    /// How many nodes hold each image (ImageLocality scales by it).
    image_nodes: HashMap<String, usize>,
    namespaces: HashMap<String, BTreeMap<String, String>>,
    budgets: BTreeMap<ObjectKey, DisruptionBudget>,
    /// Services' selectors, by namespace then name (default spread selectors).
    services: HashMap<String, BTreeMap<String, BTreeMap<String, String>>>,
    /// Label selectors of the workloads that can own pods (ReplicaSets, StatefulSets,
    /// ReplicationControllers), by kind and key (default spread selectors).
    workloads: HashMap<(GroupKind, ObjectKey), Workload>,
    pods_with_affinity: usize,
    pods_with_scoring_affinity: usize,
    counts: CountIndex,
    topology: TopologyIndexes,
    /// Claims, volumes and storage classes (the volume plugins read them).
    volumes: Volumes,
}

impl Cluster {
    /// An empty cluster.
    pub fn new() -> Self {
        Self::default()
    }

    /// A cluster of these nodes and pods; unbound and finished pods are left out.
    pub fn from_objects(
        nodes: impl IntoIterator<Item = Node>,
        pods: impl IntoIterator<Item = Pod>,
    ) -> Result<Self, SchedError> {
        let mut cluster = Self::new();
        for node in nodes {
            cluster.set_node(node);
        }
        for pod in pods {
            cluster.set_pod(pod)?;
        }
        Ok(cluster)
    }

    /// The claims, volumes and storage classes.
    pub fn volumes(&self) -> &Volumes {
        &self.volumes
    }

    /// The claims, volumes and storage classes, to change.
    pub fn volumes_mut(&mut self) -> &mut Volumes {
        &mut self.volumes
    }

    /// The nodes, in the order they were added.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// The nodes' names, in the order of [`Cluster::nodes`].
    pub(crate) fn shared_names(&self) -> &Arc<Vec<Arc<str>>> {
        &self.names
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.by_name.get(name).map(|&i| &self.nodes[i])
    }

    /// Each node's domain for the label `key`, by node position.
    pub(crate) fn topology_index(&self, key: &str) -> Arc<TopologyIndex> {
        self.topology.get(key, &self.nodes)
    }

    /// Where the node called `name` is in [`Cluster::nodes`].
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The node a counted pod is on.
    pub fn node_of(&self, pod: &ObjectKey) -> Option<&str> {
        self.placement.get(pod).map(String::as_str)
    }

    /// How many nodes have `image` (normalized name).
    pub fn nodes_with_image(&self, image: &str) -> usize {
        self.image_nodes.get(image).copied().unwrap_or(0)
    }

    /// Labels of a namespace, if known.
    pub fn namespace_labels(&self, namespace: &str) -> Option<&BTreeMap<String, String>> {
        self.namespaces.get(namespace)
    }

    /// The disruption budgets.
    pub fn budgets(&self) -> impl Iterator<Item = &DisruptionBudget> {
        self.budgets.values()
    }

    /// Whether any counted pod has a pod (anti-)affinity term (InterPodAffinity skips its work
    /// when none has and the incoming pod has none either).
    pub fn has_pods_with_affinity(&self) -> bool {
        self.pods_with_affinity > 0
    }

    /// Whether any counted pod has a term that scores other pods (required affinity or any
    /// preferred term); required anti-affinity alone only filters.
    pub fn has_pods_with_scoring_affinity(&self) -> bool {
        self.pods_with_scoring_affinity > 0
    }

    /// Whether `key` is assumed (placed by the scheduler, binding not yet confirmed).
    pub fn is_assumed(&self, key: &ObjectKey) -> bool {
        self.assumed.contains(key)
    }

    /// Adds or replaces a node, keeping its pods.
    pub fn set_node(&mut self, node: Node) {
        let node = Arc::new(node);
        let name = node.metadata.name.clone().unwrap_or_default();
        match self.by_name.get(&name) {
            Some(&i) => {
                self.count_images(i, -1);
                let ns = &self.namespaces;
                self.counts
                    .node_pods_changed(&self.nodes[i], -1, &|n| ns.get(n));
                self.nodes[i].set_node(node);
                self.counts
                    .node_pods_changed(&self.nodes[i], 1, &|n| ns.get(n));
                self.topology.node_set(i, &self.nodes[i]);
                self.count_images(i, 1);
            }
            None => {
                let mut info = NodeInfo::new(node);
                for pod in self.orphans.remove(&name).into_iter().flatten() {
                    info.add_pod(pod);
                }
                let ns = &self.namespaces;
                self.counts.node_pods_changed(&info, 1, &|n| ns.get(n));
                let at = self.nodes.len();
                info.set_position(at);
                self.by_name.insert(name, at);
                Arc::make_mut(&mut self.names).push(Arc::clone(info.shared_name()));
                self.topology.node_set(at, &info);
                self.nodes.push(info);
                self.count_images(self.nodes.len() - 1, 1);
            }
        }
    }

    fn count_images(&mut self, i: usize, delta: isize) {
        for image in self.nodes[i].image_names() {
            let n = self.image_nodes.entry(image.to_string()).or_default();
            *n = n.saturating_add_signed(delta);
        }
    }

    /// Removes a node; its pods are kept aside in case it comes back.
    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.by_name.remove(name) else {
            return;
        };
        self.count_images(i, -1);
        let ns = &self.namespaces;
        self.counts
            .node_pods_changed(&self.nodes[i], -1, &|n| ns.get(n));
        let info = self.nodes.swap_remove(i);
        Arc::make_mut(&mut self.names).swap_remove(i);
        self.topology.node_removed(i);
        if let Some(moved) = self.nodes.get_mut(i) {
            moved.set_position(i);
            self.by_name.insert(moved.name().to_string(), i);
        }
        if !info.pods().is_empty() {
            self.orphans.insert(name.to_string(), info.pods().to_vec());
        }
    }

    /// Applies a pod as the store shows it: a bound, unfinished pod is counted on its node
    /// (replacing an earlier version or assumption); any other pod is not counted, except
    /// that an assumed pod stays counted until its binding shows up or it is forgotten.
    pub fn set_pod(&mut self, pod: Pod) -> Result<(), SchedError> {
        let info = PodInfo::from_pod(pod)?;
        let finished = matches!(
            info.pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        match info.node_name().map(str::to_string) {
            Some(node) if !finished => {
                self.assumed.remove(&info.key);
                self.place(Arc::new(info), node);
            }
            Some(_) => {
                self.assumed.remove(&info.key);
                self.remove_pod(&info.key);
            }
            None if self.assumed.contains(&info.key) => {}
            None => {
                self.remove_pod(&info.key);
            }
        }
        Ok(())
    }

    /// Counts `pod` on `node` before its binding is confirmed, so the next cycles see it.
    pub fn assume(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.assumed.insert(pod.key.clone());
        self.place(pod, node.to_string());
    }

    /// Drops an assumption (the binding failed or the pod went away).
    pub fn forget(&mut self, key: &ObjectKey) {
        if self.assumed.remove(key) {
            self.remove_pod(key);
        }
    }

    /// Marks an assumed pod as bound: it stays counted and is no longer an assumption.
    pub fn confirm(&mut self, key: &ObjectKey) {
        self.assumed.remove(key);
    }

    fn place(&mut self, pod: Arc<PodInfo>, node: String) {
        self.remove_pod(&pod.key);
        if pod.has_affinity() {
            self.pods_with_affinity += 1;
        }
        if scores_others(&pod) {
            self.pods_with_scoring_affinity += 1;
        }
        self.placement.insert(pod.key.clone(), node.clone());
        match self.by_name.get(&node) {
            Some(&i) => {
                let ns = &self.namespaces;
                self.counts
                    .pod_changed(&pod, &self.nodes[i], 1, &|n| ns.get(n));
                self.nodes[i].add_pod(pod);
            }
            None => self.orphans.entry(node).or_default().push(pod),
        }
    }

    /// Stops counting a pod; returns it if it was counted.
    pub fn remove_pod(&mut self, key: &ObjectKey) -> Option<Arc<PodInfo>> {
        let node = self.placement.remove(key)?;
        self.assumed.remove(key);
        let removed = match self.by_name.get(&node) {
            Some(&i) => {
                let removed = self.nodes[i].remove_pod(key);
                if let Some(pod) = &removed {
                    let ns = &self.namespaces;
                    self.counts
                        .pod_changed(pod, &self.nodes[i], -1, &|n| ns.get(n));
                }
                removed
            }
            None => {
                let list = self.orphans.get_mut(&node)?;
                let j = list.iter().position(|p| &p.key == key)?;
                Some(list.swap_remove(j))
            }
        };
        if removed.as_ref().is_some_and(|p| p.has_affinity()) {
            self.pods_with_affinity -= 1;
        }
        if removed.as_ref().is_some_and(|p| scores_others(p)) {
            self.pods_with_scoring_affinity -= 1;
        }
        removed
    }

    /// Adds or replaces a namespace (for affinity `namespaceSelector`).
    pub fn set_namespace(&mut self, namespace: &Namespace) {
        let name = namespace.metadata.name.clone().unwrap_or_default();
        let labels = namespace.metadata.labels.clone().unwrap_or_default();
        self.namespaces.insert(name, labels);
        self.counts.invalidate();
    }

    /// Matching pods per value of `topology_key` over the nodes `nodes` accepts (every such
    /// node's domain is present, possibly with 0), from the incremental index: `signature`
    /// must identify the (pods, nodes, key) combination.
    pub fn topology_counts(
        &self,
        signature: &str,
        topology_key: &str,
        pods: PodMatcher,
        nodes: NodeMatcher,
    ) -> Arc<HashMap<String, i64>> {
        let ns = &self.namespaces;
        self.counts.counts(
            signature,
            topology_key,
            pods,
            nodes,
            &mut self.nodes.iter(),
            &|n| ns.get(n),
        )
    }

    /// For each distinct required anti-affinity term of existing pods that matches `pod`: the
    /// term's topology key and how many pods hold it per topology value.
    pub fn existing_anti_affinity(
        &self,
        pod: &PodInfo,
    ) -> Vec<(String, Arc<HashMap<String, i64>>)> {
        let ns = &self.namespaces;
        self.counts.existing_anti_affinity(pod, &|n| ns.get(n))
    }

    /// Adds or replaces a PodDisruptionBudget (preemption avoids violating it where it can).
    pub fn set_budget(&mut self, pdb: &PodDisruptionBudget) -> Result<(), SchedError> {
        let key = ObjectKey::from_meta(&pdb.metadata);
        let selector = pdb
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .map(Selector::from_label_selector)
            .transpose()
            .map_err(|e| SchedError::InvalidObject(e.to_string()))?
            // A PDB without selector selects nothing; an impossible requirement says so.
            .unwrap_or_else(|| {
                Selector::from_requirements(vec![kube_core::selector::Requirement {
                    key: "kube-sched.invalid/none".into(),
                    operator: kube_core::selector::Operator::Exists,
                }])
            });
        self.budgets.insert(
            key.clone(),
            DisruptionBudget {
                namespace: key.namespace.clone().unwrap_or_default(),
                selector,
                disruptions_allowed: pdb
                    .status
                    .as_ref()
                    .map(|s| s.disruptions_allowed)
                    .unwrap_or(0),
            },
        );
        Ok(())
    }

    /// Removes a PodDisruptionBudget.
    pub fn remove_budget(&mut self, key: &ObjectKey) {
        self.budgets.remove(key);
    }

    /// Adds or replaces a Service (its selector makes pods it selects spread by default).
    pub fn set_service(&mut self, service: &Service) {
        let key = ObjectKey::from_meta(&service.metadata);
        let selector = service
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        self.services
            .entry(key.namespace.unwrap_or_default())
            .or_default()
            .insert(key.name, selector);
    }

    /// Removes a Service.
    pub fn remove_service(&mut self, key: &ObjectKey) {
        let namespace = key.namespace.as_deref().unwrap_or("");
        if let Some(services) = self.services.get_mut(namespace) {
            services.remove(&key.name);
            if services.is_empty() {
                self.services.remove(namespace);
            }
        }
    }

    /// Adds or replaces a ReplicaSet (its selector spreads the pods it controls by default).
    pub fn set_replica_set(&mut self, rs: &ReplicaSet) -> Result<(), SchedError> {
        let selector = rs.spec.as_ref().map(|s| &s.selector);
        self.set_workload(GroupKind::REPLICA_SET, &rs.metadata, selector)
    }

    /// Adds or replaces a StatefulSet (its selector spreads the pods it controls by default).
    pub fn set_stateful_set(&mut self, ss: &StatefulSet) -> Result<(), SchedError> {
        let selector = ss.spec.as_ref().map(|s| &s.selector);
        self.set_workload(GroupKind::of::<StatefulSet>(), &ss.metadata, selector)
    }

    /// Adds or replaces a ReplicationController (its selector spreads the pods it controls by
    /// default).
    pub fn set_replication_controller(&mut self, rc: &ReplicationController) {
        let key = ObjectKey::from_meta(&rc.metadata);
        let labels = rc
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        self.workloads.insert(
            (GroupKind::of::<ReplicationController>(), key),
            Workload::Labels(labels),
        );
    }

    fn set_workload(
        &mut self,
        kind: GroupKind,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        selector: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    ) -> Result<(), SchedError> {
        let selector = selector
            .map(Selector::from_label_selector)
            .transpose()
            .map_err(|e| SchedError::InvalidObject(e.to_string()))?
            .unwrap_or_default();
        self.workloads.insert(
            (kind, ObjectKey::from_meta(meta)),
            Workload::Selector(selector),
        );
        Ok(())
    }

    /// Removes a ReplicaSet, StatefulSet or ReplicationController (`kind` says which).
    pub fn remove_workload(&mut self, kind: &GroupKind, key: &ObjectKey) {
        self.workloads.remove(&(kind.clone(), key.clone()));
    }

    /// The selector default topology spread constraints count pods with, as kube-scheduler's
    /// `DefaultSelector`: the merged selectors of the Services in the pod's namespace that
    /// select it, plus the selector of the ReplicationController, ReplicaSet or StatefulSet
    /// that controls it (its controller owner reference). `None` when that is empty: the pod
    /// then gets no default constraints.
    pub fn default_spread_selector(&self, pod: &PodInfo) -> Option<Selector> {
        let labels = pod.labels();
        let mut merged: BTreeMap<String, String> = BTreeMap::new();
        for selector in self
            .services
            .get(pod.namespace())
            .into_iter()
            .flatten()
            .map(|(_, s)| s)
        {
            if selector.is_empty() || !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                continue;
            }
            merged.extend(selector.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let mut requirements = Vec::new();
        let owner = pod
            .pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true));
        if let Some(owner) = owner {
            let group = owner
                .api_version
                .split_once('/')
                .map_or("", |(group, _)| group);
            let kind = GroupKind::new(group.to_string(), owner.kind.clone());
            let key = ObjectKey::namespaced(pod.namespace(), owner.name.as_str());
            match self.workloads.get(&(kind, key)) {
                Some(Workload::Labels(rc)) => {
                    merged.extend(rc.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                Some(Workload::Selector(selector)) => {
                    requirements.extend(selector.requirements().iter().cloned());
                }
                None => {}
            }
        }
        let mut all = Selector::from_labels(&merged).requirements().to_vec();
        all.extend(requirements);
        (!all.is_empty()).then(|| Selector::from_requirements(all))
    }
}
