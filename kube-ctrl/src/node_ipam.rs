//! [`NodeIpamController`]: gives every Node a pod CIDR of its own, as kube-controller-manager's
//! node IPAM controller does with `--allocate-node-cidrs --cluster-cidr=10.244.0.0/16
//! --node-cidr-mask-size=24` (the range allocator).
//!
//! A Node without `spec.podCIDRs` gets the next free subnet of each cluster CIDR (one per
//! family: dual-stack clusters give an IPv4 and an IPv6 range), written to `spec.podCIDR` (the
//! first) and `spec.podCIDRs`. CIDRs already on Nodes are recorded before anything is handed
//! out, so a restarted controller never gives one twice; a deleted Node's CIDRs are free again.
//! A CIDR once set is never changed (Kubernetes' API server refuses such changes; ours does not
//! check, so this controller is the only guard). When a range is full the Node gets a
//! `CIDRNotAvailable` Event, and it is retried when another Node goes or after
//! [`NodeIpamConfig::retry_interval`].

mod cidr_set;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::typed::Api;

use crate::events::{EventRecorder, EventType};
use cidr_set::{Cidr, CidrSet, MAX_SUBNET_BITS};

/// How the node IPAM controller divides the cluster's pod ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIpamConfig {
    /// The pod ranges (`--cluster-cidr`): one, or two of different families for dual-stack.
    /// Default `10.244.0.0/16`.
    pub cluster_cidrs: Vec<String>,
    /// The prefix length of each IPv4 node CIDR (`--node-cidr-mask-size-ipv4`). Default 24.
    pub node_mask_v4: u8,
    /// The prefix length of each IPv6 node CIDR (`--node-cidr-mask-size-ipv6`). Default 64.
    pub node_mask_v6: u8,
    /// Service ranges never given to nodes where they overlap a cluster CIDR
    /// (`--service-cluster-ip-range`). Default `10.96.0.0/12`.
    pub service_cidrs: Vec<String>,
    /// How often a Node waiting for a full range is tried again. Default 5 s.
    pub retry_interval: Duration,
}

impl Default for NodeIpamConfig {
    fn default() -> Self {
        Self {
            cluster_cidrs: vec!["10.244.0.0/16".into()],
            node_mask_v4: 24,
            node_mask_v6: 64,
            service_cidrs: vec!["10.96.0.0/12".into()],
            retry_interval: Duration::from_secs(5),
        }
    }
}

/// Errors configuring a [`NodeIpamController`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeIpamError {
    /// A range is not `address/prefix`.
    #[error("invalid CIDR {0:?}")]
    InvalidCidr(String),
    /// No cluster CIDR, more than two, or two of one family.
    #[error("cluster CIDRs {0:?}: want one, or two of different families (dual-stack)")]
    ClusterCidrs(Vec<String>),
    /// The node mask does not fit the cluster CIDR.
    #[error(
        "node CIDR mask /{mask} does not fit cluster CIDR {cluster} (at least its prefix, at most {MAX_SUBNET_BITS} bits longer)"
    )]
    MaskSize {
        /// The cluster CIDR.
        cluster: String,
        /// The node mask size for its family.
        mask: u8,
    },
}

/// The allocations, behind one lock so concurrent reconciles cannot collide.
#[derive(Debug)]
struct Table {
    /// Filled from the Node cache on the first reconcile.
    loaded: bool,
    /// One per cluster CIDR, in configuration order.
    sets: Vec<CidrSet>,
    /// Nodes waiting for a CIDR of a full range, to retry when another Node goes.
    waiting: BTreeSet<String>,
}

impl Table {
    fn release(&mut self, node: &str) {
        for set in &mut self.sets {
            set.release_owner(node);
        }
    }

    /// Records the CIDRs `node` holds; false if none is set.
    fn record(&mut self, node: &Node) -> bool {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let cidrs = pod_cidrs(node);
        for text in &cidrs {
            let Some(cidr) = Cidr::parse(text) else {
                tracing::warn!(node = name, cidr = %text, "node has an unparseable pod CIDR; ignored");
                continue;
            };
            let taken = self
                .sets
                .iter_mut()
                .filter(|s| s.is_v6() == cidr.v6)
                .any(|s| s.occupy(&cidr, name));
            if !taken {
                tracing::warn!(node = name, %cidr, "node's pod CIDR is outside the cluster CIDRs");
            }
        }
        !cidrs.is_empty()
    }
}

/// A Node's pod CIDRs: `spec.podCIDRs`, or `spec.podCIDR` alone where the list is unset.
fn pod_cidrs(node: &Node) -> Vec<String> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    match (&spec.pod_cidrs, &spec.pod_cidr) {
        (Some(list), _) if !list.is_empty() => list.clone(),
        (_, Some(one)) if !one.is_empty() => vec![one.clone()],
        _ => Vec::new(),
    }
}

/// Allocates pod CIDRs to Nodes; see the module docs.
///
/// ```
/// use kube_ctrl::{ControllerManager, NodeIpamConfig, NodeIpamController};
/// let ipam = NodeIpamController::new(NodeIpamConfig {
///     cluster_cidrs: vec!["10.244.0.0/16".into(), "fd00:10:244::/56".into()],
///     ..NodeIpamConfig::default()
/// })
/// .unwrap();
/// let manager = ControllerManager::new().with(ipam);
/// assert!(format!("{manager:?}").contains("node-ipam"));
/// ```
#[derive(Debug)]
pub struct NodeIpamController {
    retry: Duration,
    table: Mutex<Table>,
    events: EventRecorder,
}

impl NodeIpamController {
    /// A controller dividing `config`'s cluster CIDRs; fails on ranges that do not parse or
    /// do not fit their node mask.
    pub fn new(config: NodeIpamConfig) -> Result<Self, NodeIpamError> {
        let parse = |text: &String| {
            Cidr::parse(text).ok_or_else(|| NodeIpamError::InvalidCidr(text.clone()))
        };
        let clusters = config
            .cluster_cidrs
            .iter()
            .map(parse)
            .collect::<Result<Vec<_>, _>>()?;
        let families_differ = clusters.len() < 2 || clusters[0].v6 != clusters[1].v6;
        if clusters.is_empty() || clusters.len() > 2 || !families_differ {
            return Err(NodeIpamError::ClusterCidrs(config.cluster_cidrs));
        }
        let mut sets = Vec::new();
        for cluster in clusters {
            let mask = if cluster.v6 {
                config.node_mask_v6
            } else {
                config.node_mask_v4
            };
            let set = CidrSet::new(cluster, mask).ok_or_else(|| NodeIpamError::MaskSize {
                cluster: cluster.to_string(),
                mask,
            })?;
            sets.push(set);
        }
        for service in config.service_cidrs.iter().map(parse) {
            let service = service?;
            for set in sets.iter_mut().filter(|s| s.is_v6() == service.v6) {
                // Reserved for no node; only where the ranges overlap.
                if set.occupy(&service, "") {
                    tracing::debug!(cluster = %set.cluster(), %service, "service range kept out of node CIDRs");
                }
            }
        }
        Ok(Self {
            retry: config.retry_interval,
            table: Mutex::new(Table {
                loaded: false,
                sets,
                waiting: BTreeSet::new(),
            }),
            events: EventRecorder::new("cidrAllocator"),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one CIDR from every set for `name`; `None` (nothing taken) when a range is
    /// full even after freeing the CIDRs of Nodes no longer in the cache.
    fn take(table: &mut Table, name: &str, ctx: &ControllerContext) -> Option<Vec<Cidr>> {
        let nodes = ctx.informers.informer(&GroupKind::NODE);
        for attempt in 0..2 {
            let mut taken = Vec::new();
            for set in &mut table.sets {
                match set.allocate(name) {
                    Some(cidr) => taken.push(cidr),
                    None => break,
                }
            }
            if taken.len() == table.sets.len() {
                table.waiting.remove(name);
                return Some(taken);
            }
            table.release(name);
            if attempt == 0 {
                // A Node deleted since is freed by its own reconcile, which may not have run
                // yet: free what the cache no longer holds, then look again.
                for set in &mut table.sets {
                    set.retain_owners(|owner| {
                        owner == name || nodes.get(&ObjectKey::cluster(owner)).is_some()
                    });
                }
            }
        }
        table.waiting.insert(name.to_string());
        None
    }
}

#[async_trait::async_trait]
impl Controller for NodeIpamController {
    fn name(&self) -> &str {
        "node-ipam"
    }

    fn watches(&self) -> Watches {
        // Nodes again as related: any Node change wakes the Nodes waiting for a full range
        // (a deleted Node frees its CIDRs).
        Watches::primary(GroupKind::NODE).related(GroupKind::NODE)
    }

    fn map_related(
        &self,
        _kind: &GroupKind,
        object: &DynamicObject,
        _ctx: &ControllerContext,
    ) -> Vec<ObjectKey> {
        let table = self.table();
        table
            .waiting
            .iter()
            .filter(|w| object.metadata.name.as_deref() != Some(w.as_str()))
            .map(ObjectKey::cluster)
            .collect()
    }

    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        let nodes: Api<Node> = Api::all(ctx.store.clone());
        let Some(mut node) = nodes.get_opt(&key.name).await? else {
            let mut table = self.table();
            table.release(&key.name);
            table.waiting.remove(&key.name);
            return Ok(Action::await_change());
        };
        let taken = {
            let mut table = self.table();
            if !table.loaded {
                // Every CIDR already on a Node is recorded before any is handed out.
                for node in ctx
                    .informers
                    .informer(&GroupKind::NODE)
                    .list_typed::<Node>()
                {
                    table.record(&node);
                }
                table.loaded = true;
            }
            // This Node's entries mirror the stored object; whatever a failed earlier pass
            // took but never wrote is given back here.
            table.release(&key.name);
            if table.record(&node) {
                // Set once, never changed.
                table.waiting.remove(&key.name);
                return Ok(Action::await_change());
            }
            Self::take(&mut table, &key.name, ctx)
        };
        let Some(cidrs) = taken else {
            tracing::warn!(node = %key.name, "no pod CIDR available for node");
            self.events
                .record(
                    &ctx.store,
                    &node,
                    EventType::Normal,
                    "CIDRNotAvailable",
                    format!("Node {} status is now: CIDRNotAvailable", key.name),
                )
                .await;
            return Ok(Action::requeue(self.retry));
        };
        let texts: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
        let spec = node.spec.get_or_insert_with(Default::default);
        spec.pod_cidr = texts.first().cloned();
        spec.pod_cidrs = Some(texts.clone());
        // A replace at the read resourceVersion: a Node changed meanwhile (its CIDRs set by
        // someone else included) conflicts and is read again, never overwritten.
        match nodes.replace(&node).await {
            Ok(_) => {
                tracing::info!(node = %key.name, cidrs = ?texts, "set node pod CIDRs");
                Ok(Action::await_change())
            }
            Err(e) => {
                // Not written: give back what this pass took; the retry takes afresh.
                self.table().release(&key.name);
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked() {
        let with = |cidrs: &[&str], v4: u8| NodeIpamConfig {
            cluster_cidrs: cidrs.iter().map(|s| s.to_string()).collect(),
            node_mask_v4: v4,
            ..NodeIpamConfig::default()
        };
        assert!(NodeIpamController::new(NodeIpamConfig::default()).is_ok());
        assert!(NodeIpamController::new(with(&["10.244.0.0/16", "fd00::/48"], 24)).is_ok());
        assert!(matches!(
            NodeIpamController::new(with(&["10.244.0.0/16", "10.245.0.0/16"], 24)),
            Err(NodeIpamError::ClusterCidrs(_))
        ));
        assert!(matches!(
            NodeIpamController::new(with(&[], 24)),
            Err(NodeIpamError::ClusterCidrs(_))
        ));
        assert!(matches!(
            NodeIpamController::new(with(&["10.244.0.0"], 24)),
            Err(NodeIpamError::InvalidCidr(_))
        ));
        assert!(matches!(
            NodeIpamController::new(with(&["10.244.0.0/16"], 8)),
            Err(NodeIpamError::MaskSize { .. })
        ));
    }

    #[test]
    fn an_overlapping_service_range_is_never_given_out() {
        let ipam = NodeIpamController::new(NodeIpamConfig {
            cluster_cidrs: vec!["10.96.0.0/11".into()],
            node_mask_v4: 12,
            ..NodeIpamConfig::default()
        })
        .unwrap();
        let mut table = ipam.table();
        let got = table.sets[0].allocate("n").unwrap();
        // 10.96.0.0/12 is the service range: the other half is left.
        assert_eq!(got.to_string(), "10.112.0.0/12");
        assert!(table.sets[0].allocate("m").is_none());
    }
}
