//! [`NodeInfo`]: one node with the pods counted on it and aggregates kept up to date as pods
//! come and go, so no filter or score walks the node's pods for resources, ports or images.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Taint};
use kube_core::object::ObjectKey;
use kube_core::resources::Resources;

use super::pod_info::{HostPort, PodInfo};
use crate::score::NonZero;

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// A node and the pods counted on it (bound or assumed), with incremental aggregates.
#[derive(Clone, Debug)]
#[repr(C)]
pub struct NodeInfo {
    // What the default filters and scores read for every node comes first, in as few cache
    // lines as possible: a cycle reads it for hundreds of nodes.
    /// Copied out of the node object: filters read them for every node, and one pointer less
    /// to chase per node is a measurable share of a cycle.
    cordoned: bool,
    /// Where the node is in its cluster's node list (`u32::MAX`: in none), so per-cluster
    /// tables indexed by node (topology domains) can be read without a lookup.
    position: u32,
    taints: Vec<Taint>,
    /// Sum of the pods' effective requests.
    pub requested: Resources,
    /// Allocatable (capacity when allocatable is unset; unparsable counts as zero).
    pub allocatable: Resources,
    /// Sum of the pods' non-zero CPU and memory (what scoring counts).
    pub non_zero_requested: NonZero,
    /// Host ports in use (a multiset: one entry per pod port).
    pub used_ports: Vec<HostPort>,
    node: Arc<Node>,
    name: Arc<str>,
    pods: Vec<Arc<PodInfo>>,
    /// Pods on the node that have any pod (anti-)affinity term.
    pub pods_with_affinity: usize,
    /// Pods on the node that have a required anti-affinity term.
    pub pods_with_required_anti_affinity: usize,
    images: HashMap<String, i64>,
}

impl NodeInfo {
    /// A node with no pods.
    pub fn new(node: Arc<Node>) -> Self {
        let mut info = Self {
            name: Arc::from(""),
            node: node.clone(),
            pods: Vec::new(),
            requested: Resources::default(),
            non_zero_requested: NonZero::default(),
            allocatable: Resources::default(),
            used_ports: Vec::new(),
            pods_with_affinity: 0,
            pods_with_required_anti_affinity: 0,
            images: HashMap::new(),
            cordoned: false,
            taints: Vec::new(),
            position: u32::MAX,
        };
        info.set_node(node);
        info
    }

    /// Replaces the node object, keeping the pods.
    pub fn set_node(&mut self, node: Arc<Node>) {
        self.name = Arc::from(node.metadata.name.as_deref().unwrap_or_default());
        self.allocatable = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .and_then(|list| Resources::from_list(list).ok())
            .unwrap_or_default();
        self.images.clear();
        for image in node
            .status
            .as_ref()
            .and_then(|s| s.images.as_ref())
            .into_iter()
            .flatten()
        {
            let size = image.size_bytes.unwrap_or(0);
            for name in image.names.iter().flatten() {
                self.images.insert(normalize_image(name), size);
            }
        }
        self.cordoned = node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        self.taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        self.node = node;
    }

    /// The node object.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the node is in its cluster's [`nodes`](super::Cluster::nodes), if it is in one.
    #[inline]
    pub(crate) fn position(&self) -> Option<usize> {
        (self.position != u32::MAX).then_some(self.position as usize)
    }

    pub(crate) fn set_position(&mut self, at: usize) {
        self.position = u32::try_from(at).unwrap_or(u32::MAX);
    }

    /// The node's name, shared (statuses keep it without copying).
    pub(crate) fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    /// The node's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.node.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
    }

    /// The node's taints.
    pub fn taints(&self) -> &[Taint] {
        &self.taints
    }

    /// Whether the node is cordoned (`spec.unschedulable`).
    pub fn unschedulable(&self) -> bool {
        self.cordoned
    }

    /// The pods counted on the node.
    pub fn pods(&self) -> &[Arc<PodInfo>] {
        &self.pods
    }

    /// Size in bytes of an image present on the node (names normalized as the kubelet reports
    /// them: `nginx` is `nginx:latest`).
    pub fn image_size(&self, image: &str) -> Option<i64> {
        self.images.get(&normalize_image(image)).copied()
    }

    /// Normalized names of the images present on the node.
    pub fn image_names(&self) -> impl Iterator<Item = &str> {
        self.images.keys().map(String::as_str)
    }

    /// Counts `pod` on the node.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.non_zero_requested.milli_cpu += pod.non_zero.milli_cpu;
        self.non_zero_requested.memory += pod.non_zero.memory;
        self.used_ports.extend(pod.ports.iter().cloned());
        if pod.has_affinity() {
            self.pods_with_affinity += 1;
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        self.pods.push(pod);
    }

    /// Stops counting the pod with `key`; returns it if it was counted.
    pub fn remove_pod(&mut self, key: &ObjectKey) -> Option<Arc<PodInfo>> {
        // Callers usually pass the key of the very pod counted here: compare addresses first.
        let i = (self.pods.iter())
            .position(|p| std::ptr::eq(&p.key, key))
            .or_else(|| self.pods.iter().position(|p| &p.key == key))?;
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests);
        self.non_zero_requested.milli_cpu -= pod.non_zero.milli_cpu;
        self.non_zero_requested.memory -= pod.non_zero.memory;
        for port in &pod.ports {
            if let Some(j) = self.used_ports.iter().position(|p| p == port) {
                self.used_ports.swap_remove(j);
            }
        }
        if pod.has_affinity() {
            self.pods_with_affinity -= 1;
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity -= 1;
        }
        Some(pod)
    }
}

/// `name` → `name:latest` unless a tag or digest is given (as the kubelet reports images).
pub fn normalize_image(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if name.contains('@') || last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}
