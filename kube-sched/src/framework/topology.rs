//! [`TopologyIndex`]: each node's topology domain for one label key, as a small number, so a
//! filter that runs for thousands of nodes per cycle (PodTopologySpread) reads one array entry
//! per node instead of looking a label up in the node's label map and hashing its value.
//!
//! A cluster builds an index per key on first use and keeps it current as nodes come, change
//! and go (one entry per node change).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::fast_hash::FastMap;
use super::node_info::NodeInfo;

/// Marks a node without the key's label.
const NO_DOMAIN: u32 = u32::MAX;

/// The domains of one topology key over a cluster's nodes.
#[derive(Clone, Debug, Default)]
pub(crate) struct TopologyIndex {
    key: String,
    /// Domain id by value.
    ids: FastMap<String, u32>,
    /// Per node position: its domain id, or [`NO_DOMAIN`].
    node_domain: Vec<u32>,
    /// Per node position: the address of the node object indexed, so that a [`NodeInfo`] that
    /// is not the one at that position (or a changed one) is recognized.
    node_object: Vec<usize>,
}

fn object_address(node: &NodeInfo) -> usize {
    Arc::as_ptr(node.node()) as usize
}

impl TopologyIndex {
    fn build(key: &str, nodes: &[NodeInfo]) -> Self {
        let mut index = Self {
            key: key.to_string(),
            ..Self::default()
        };
        for node in nodes {
            let domain = index.domain_id(node.labels());
            index.node_domain.push(domain);
            index.node_object.push(object_address(node));
        }
        index
    }

    fn domain_id(&mut self, labels: &BTreeMap<String, String>) -> u32 {
        let Some(value) = labels.get(&self.key) else {
            return NO_DOMAIN;
        };
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = u32::try_from(self.ids.len()).unwrap_or(NO_DOMAIN);
        self.ids.insert(value.clone(), id);
        id
    }

    /// The id of the domain `value`, if some node has it.
    pub(crate) fn id(&self, value: &str) -> Option<usize> {
        self.ids.get(value).map(|&id| id as usize)
    }

    /// Number of domains (ids are `0..domains()`).
    pub(crate) fn domains(&self) -> usize {
        self.ids.len()
    }

    /// `node`'s domain id (`Some(None)`: the node lacks the label), or `None` when `node` is
    /// not a node this index covers (the caller then reads its labels).
    #[inline]
    pub(crate) fn domain_of(&self, node: &NodeInfo) -> Option<Option<usize>> {
        let at = node.position()?;
        if self.node_object.get(at).copied() != Some(object_address(node)) {
            return None;
        }
        let domain = *self.node_domain.get(at)?;
        Some((domain != NO_DOMAIN).then_some(domain as usize))
    }
}

/// The indexes a cluster has built, by key.
#[derive(Debug, Default)]
pub(crate) struct TopologyIndexes {
    by_key: Mutex<FastMap<String, Arc<TopologyIndex>>>,
}

impl Clone for TopologyIndexes {
    fn clone(&self) -> Self {
        Self {
            by_key: Mutex::new(self.lock().clone()),
        }
    }
}

impl TopologyIndexes {
    fn lock(&self) -> MutexGuard<'_, FastMap<String, Arc<TopologyIndex>>> {
        // Indexes are rebuilt on demand; a poisoned lock's data is still consistent (each
        // change replaces whole entries).
        self.by_key.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get_mut(&mut self) -> &mut FastMap<String, Arc<TopologyIndex>> {
        self.by_key.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    /// The index of `key` over `nodes`, built on first use.
    pub(crate) fn get(&self, key: &str, nodes: &[NodeInfo]) -> Arc<TopologyIndex> {
        let mut by_key = self.lock();
        if let Some(index) = by_key.get(key) {
            return Arc::clone(index);
        }
        let index = Arc::new(TopologyIndex::build(key, nodes));
        by_key.insert(key.to_string(), Arc::clone(&index));
        index
    }

    /// The node at `at` was added or replaced.
    pub(crate) fn node_set(&mut self, at: usize, node: &NodeInfo) {
        for index in self.get_mut().values_mut() {
            let index = Arc::make_mut(index);
            let domain = index.domain_id(node.labels());
            let object = object_address(node);
            match (index.node_domain.get_mut(at), index.node_object.get_mut(at)) {
                (Some(d), Some(o)) => {
                    *d = domain;
                    *o = object;
                }
                _ => {
                    index.node_domain.push(domain);
                    index.node_object.push(object);
                }
            }
        }
    }

    /// The node at `at` was removed, the last node taking its position.
    pub(crate) fn node_removed(&mut self, at: usize) {
        for index in self.get_mut().values_mut() {
            let index = Arc::make_mut(index);
            if at < index.node_domain.len() {
                index.node_domain.swap_remove(at);
                index.node_object.swap_remove(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Cluster;
    use k8s_openapi::api::core::v1::Node;

    fn node(name: &str, zone: Option<&str>) -> Node {
        let mut labels = serde_json::json!({"kubernetes.io/hostname": name});
        if let Some(zone) = zone {
            labels["zone"] = zone.into();
        }
        serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": labels}}))
            .unwrap_or_default()
    }

    /// Every node's indexed domain is the one its labels say, through adds, label changes and
    /// removals after the index was built.
    fn assert_consistent(cluster: &Cluster) {
        let index = cluster.topology_index("zone");
        for n in cluster.nodes() {
            let expected = n.labels().get("zone").and_then(|z| index.id(z));
            assert_eq!(index.domain_of(n), Some(expected), "{}", n.name());
            assert_eq!(n.labels().contains_key("zone"), expected.is_some());
        }
    }

    #[test]
    fn index_follows_node_changes() {
        let mut cluster = Cluster::new();
        cluster.set_node(node("a", Some("z1")));
        cluster.set_node(node("b", Some("z2")));
        cluster.set_node(node("c", None));
        assert_consistent(&cluster);
        let before = cluster.topology_index("zone");
        cluster.set_node(node("a", Some("z3")));
        cluster.set_node(node("d", Some("z1")));
        assert_consistent(&cluster);
        cluster.remove_node("a");
        assert_consistent(&cluster);
        cluster.set_node(node("c", Some("z2")));
        assert_consistent(&cluster);
        // A node of a cluster the index is not for is not answered by position.
        let other = Cluster::from_objects([node("x", Some("z1"))], []).unwrap_or_default();
        assert_eq!(before.domain_of(&other.nodes()[0]), None);
        // The snapshot taken before the changes is unchanged.
        assert_eq!(before.domains(), 2);
    }
}
