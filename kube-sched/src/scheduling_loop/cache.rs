//! The scheduler's view of the cluster: typed nodes and pods mirrored from the shared
//! informers, plus the pods it has bound but the informers do not show bound yet.
//!
//! The "assumed" pods are what keep two quick scheduling cycles from overcommitting a node:
//! without them, the second cycle would not see the first cycle's pod until its binding came
//! back through the watch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube_core::informer::InformerEvent;
use kube_core::object::{GroupKind, ObjectKey};
use kube_core::scheduler::Snapshot;

use super::pod_state::{bound_node, is_terminal, needs_scheduling};
use crate::framework::{Cluster, PodInfo};

/// What a cache change means for the work queue.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Requeue {
    /// Nothing to do.
    Nothing,
    /// This pending pod is new or its spec changed: try it.
    Pod(ObjectKey),
    /// Room may have appeared (a node was added or changed, a pod freed resources): move the
    /// parked pods back to be tried again.
    AllPending,
}

#[derive(Debug)]
pub(crate) struct SchedulerCache {
    scheduler: String,
    nodes: BTreeMap<String, Arc<Node>>,
    /// Pods bound to a node that still hold resources.
    bound: HashMap<ObjectKey, Arc<Pod>>,
    /// Pods this scheduler should place.
    pending: HashMap<ObjectKey, Arc<Pod>>,
    /// Pods this scheduler has bound (with `spec.nodeName` set) whose binding the informer has
    /// not delivered yet.
    assumed: HashMap<ObjectKey, Arc<Pod>>,
    /// The same nodes and counted pods as the framework's incremental cache, for framework
    /// loops: each change updates one node's aggregates, no cycle rebuilds anything.
    cluster: Cluster,
}

impl SchedulerCache {
    pub(crate) fn new(scheduler: impl Into<String>) -> Self {
        Self {
            scheduler: scheduler.into(),
            nodes: BTreeMap::new(),
            bound: HashMap::new(),
            pending: HashMap::new(),
            assumed: HashMap::new(),
            cluster: Cluster::new(),
        }
    }

    /// The incremental cluster cache (bound and assumed pods).
    pub(crate) fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The claims, volumes and storage classes of the cluster cache.
    pub(crate) fn volumes_mut(&mut self) -> &mut crate::framework::Volumes {
        self.cluster.volumes_mut()
    }

    /// Stops counting a pod in the cluster cache (a preemption victim being deleted).
    pub(crate) fn evict(&mut self, key: &ObjectKey) {
        self.cluster.remove_pod(key);
    }

    /// Applies a pod informer event.
    pub(crate) fn apply_pod(&mut self, event: &InformerEvent) -> Requeue {
        let object = event.object();
        let key = object.key();
        let held_resources = self.bound.remove(&key).is_some();
        let was_pending = self.pending.remove(&key);
        let pod: Pod = match (event, object.to_typed()) {
            (InformerEvent::Deleted(_), _) => {
                self.cluster.remove_pod(&key);
                let was_assumed = self.assumed.remove(&key).is_some();
                return if held_resources || was_assumed {
                    Requeue::AllPending
                } else {
                    Requeue::Nothing
                };
            }
            (InformerEvent::Applied(_), Ok(pod)) => pod,
            (InformerEvent::Applied(_), Err(e)) => {
                // Not a pod we can reason about; dropping it is all we can do until it changes.
                tracing::warn!(pod = %key, error = %e, "pod does not decode; ignoring it");
                return Requeue::Nothing;
            }
        };
        if bound_node(&pod).is_some() {
            // The informer caught up with a binding (ours or anyone's).
            self.assumed.remove(&key);
            if let Err(e) = self.cluster.set_pod(pod.clone()) {
                tracing::debug!(pod = %key, error = %e, "bound pod not counted in the cluster cache");
            }
            if is_terminal(&pod) {
                return if held_resources {
                    Requeue::AllPending
                } else {
                    Requeue::Nothing
                };
            }
            self.bound.insert(key, Arc::new(pod));
            return Requeue::Nothing;
        }
        if !needs_scheduling(&pod, &self.scheduler) {
            return Requeue::Nothing;
        }
        // Status-only updates (such as our own PodScheduled=False condition) must not bypass the
        // retry backoff; a changed spec or labels may make the pod fit, so try it now.
        let changed = was_pending
            .is_none_or(|old| old.spec != pod.spec || old.metadata.labels != pod.metadata.labels);
        self.pending.insert(key.clone(), Arc::new(pod));
        if changed {
            Requeue::Pod(key)
        } else {
            Requeue::Nothing
        }
    }

    /// Applies a node informer event.
    pub(crate) fn apply_node(&mut self, event: &InformerEvent) -> Requeue {
        let object = event.object();
        let name = object.key().name;
        match event {
            InformerEvent::Deleted(_) => {
                self.nodes.remove(&name);
                self.cluster.remove_node(&name);
                Requeue::Nothing
            }
            InformerEvent::Applied(_) => {
                let node: Node = match object.to_typed() {
                    Ok(node) => node,
                    Err(e) => {
                        tracing::warn!(node = %name, error = %e, "node does not decode; ignoring it");
                        return Requeue::Nothing;
                    }
                };
                self.cluster.set_node(node.clone());
                let old = self.nodes.insert(name, Arc::new(node.clone()));
                // Heartbeats change only conditions; re-trying every pending pod on each one
                // would be wasted work.
                let relevant = old.is_none_or(|old| {
                    old.metadata.labels != node.metadata.labels
                        || old.spec != node.spec
                        || old.status.as_ref().map(|s| (&s.allocatable, &s.capacity))
                            != node.status.as_ref().map(|s| (&s.allocatable, &s.capacity))
                });
                if relevant {
                    Requeue::AllPending
                } else {
                    Requeue::Nothing
                }
            }
        }
    }

    /// The pending pod at `key`, unless it was already bound by us (assumed).
    pub(crate) fn pending_pod(&self, key: &ObjectKey) -> Option<Arc<Pod>> {
        if self.assumed.contains_key(key) {
            return None;
        }
        self.pending.get(key).cloned()
    }

    /// The cluster for one decision: nodes, bound pods and assumed pods.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot::new(
            self.nodes.values().cloned(),
            self.bound.values().chain(self.assumed.values()).cloned(),
        )
    }

    /// Counts `pod` on `node` until the informer shows it bound (or it is forgotten).
    /// `parsed` is the pod already parsed, if at hand (it is reused, not parsed again).
    pub(crate) fn assume(
        &mut self,
        key: ObjectKey,
        pod: &Pod,
        parsed: Option<&PodInfo>,
        node: &str,
    ) {
        let mut pod = pod.clone();
        if let Some(spec) = &mut pod.spec {
            spec.node_name = Some(node.to_string());
        }
        let pod = Arc::new(pod);
        let info = match parsed {
            Some(parsed) => Some(PodInfo {
                pod: pod.clone(),
                ..parsed.clone()
            }),
            None => PodInfo::new(pod.clone()).ok(),
        };
        if let Some(info) = info {
            self.cluster.assume(Arc::new(info), node);
        }
        self.assumed.insert(key, pod);
    }

    /// Whether `key` is a pod this scheduler should place (including one assumed, whose
    /// binding the informer has not shown yet).
    pub(crate) fn is_pending(&self, key: &ObjectKey) -> bool {
        self.pending.contains_key(key)
    }

    /// Applies a Service informer event (default spread selectors).
    pub(crate) fn apply_service(&mut self, event: &InformerEvent) -> Requeue {
        let object = event.object();
        match (event, object.to_typed::<Service>()) {
            (InformerEvent::Deleted(_), _) => self.cluster.remove_service(&object.key()),
            (InformerEvent::Applied(_), Ok(service)) => self.cluster.set_service(&service),
            (InformerEvent::Applied(_), Err(e)) => {
                tracing::debug!(service = %object.key(), error = %e, "service does not decode");
            }
        }
        Requeue::Nothing
    }

    /// Applies a ReplicaSet informer event (default spread selectors).
    pub(crate) fn apply_replica_set(&mut self, event: &InformerEvent) -> Requeue {
        let object = event.object();
        let key = object.key();
        match (event, object.to_typed::<ReplicaSet>()) {
            (InformerEvent::Deleted(_), _) => {
                self.cluster.remove_workload(&GroupKind::REPLICA_SET, &key);
            }
            (InformerEvent::Applied(_), Ok(rs)) => {
                if let Err(e) = self.cluster.set_replica_set(&rs) {
                    tracing::debug!(replica_set = %key, error = %e, "selector not usable");
                    self.cluster.remove_workload(&GroupKind::REPLICA_SET, &key);
                }
            }
            (InformerEvent::Applied(_), Err(e)) => {
                tracing::debug!(replica_set = %key, error = %e, "replica set does not decode");
            }
        }
        Requeue::Nothing
    }

    /// Stops counting an assumed pod (its binding failed or the pod is gone).
    pub(crate) fn forget(&mut self, key: &ObjectKey) {
        self.cluster.forget(key);
        self.assumed.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_core::object::DynamicObject;

    fn applied(json: serde_json::Value) -> InformerEvent {
        InformerEvent::Applied(Arc::new(
            serde_json::from_value::<DynamicObject>(json).unwrap(),
        ))
    }

    fn pod(node: Option<&str>) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c"}], "nodeName": node}
        })
    }

    #[test]
    fn assumed_pods_count_until_the_informer_shows_the_binding() {
        let mut cache = SchedulerCache::new("default-scheduler");
        assert_eq!(
            cache.apply_node(&applied(serde_json::json!({
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}
            }))),
            Requeue::AllPending
        );
        let key = ObjectKey::namespaced("ns", "p");
        assert_eq!(
            cache.apply_pod(&applied(pod(None))),
            Requeue::Pod(key.clone())
        );
        let pending = cache.pending_pod(&key).unwrap();

        cache.assume(key.clone(), &pending, None, "n1");
        assert!(
            cache.pending_pod(&key).is_none(),
            "an assumed pod is not scheduled twice"
        );
        assert_eq!(cache.snapshot().node("n1").unwrap().pods.len(), 1);

        // A status-only update of the still-unbound pod neither requeues nor drops the assumption.
        assert_eq!(cache.apply_pod(&applied(pod(None))), Requeue::Nothing);
        assert_eq!(cache.snapshot().node("n1").unwrap().pods.len(), 1);

        assert_eq!(cache.apply_pod(&applied(pod(Some("n1")))), Requeue::Nothing);
        assert!(cache.assumed.is_empty());
        assert_eq!(cache.snapshot().node("n1").unwrap().pods.len(), 1);
        assert!(!cache.is_pending(&key));
    }

    #[test]
    fn node_heartbeats_do_not_requeue_but_label_changes_do() {
        let mut cache = SchedulerCache::new("default-scheduler");
        let node = |labels: serde_json::Value, heartbeat: &str| {
            applied(serde_json::json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "n1", "labels": labels},
                "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat}]}
            }))
        };
        let t1 = "2024-01-01T00:00:00Z";
        let t2 = "2024-01-01T00:00:10Z";
        assert_eq!(
            cache.apply_node(&node(serde_json::json!({}), t1)),
            Requeue::AllPending
        );
        assert_eq!(
            cache.apply_node(&node(serde_json::json!({}), t2)),
            Requeue::Nothing
        );
        assert_eq!(
            cache.apply_node(&node(serde_json::json!({"disk": "ssd"}), t2)),
            Requeue::AllPending
        );
    }
}
