//! [`NodeLifecycleController`]: notices nodes that stopped heartbeating, taints them, and
//! evicts their pods once the pods' tolerations run out.
//!
//! A node heartbeats by renewing its Lease in `kube-node-lease` and by updating its `Ready`
//! condition's `lastHeartbeatTime`. Like Kubernetes, the controller times heartbeats on its own
//! monotonic clock (when it *saw* a change), so node and controller clocks need not agree.
//! After `grace_period` without one, the node's conditions become `Unknown` and it is tainted
//! `node.kubernetes.io/unreachable` (`NoExecute` and `NoSchedule`); a node reporting
//! `Ready=False` is tainted `node.kubernetes.io/not-ready` likewise. Pods on a node with a
//! `NoExecute` taint are deleted when their toleration of it runs out (Kubernetes' default is
//! 300 s for these two taints), so their controllers recreate them elsewhere. The taints go when
//! heartbeats return.

pub(crate) mod taints;

pub use taints::{NOT_READY, UNREACHABLE};

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint};
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey, now};
use kube_core::store::Preconditions;
use kube_core::typed::Api;
use tokio::time::Instant;

use crate::events::{EventRecorder, EventType};
use crate::pods::is_active;
use taints::allowed_time;

/// Where node Leases live.
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Timing of the node lifecycle controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLifecycleConfig {
    /// How long a node may go without a heartbeat before it is unreachable (default 40 s, as
    /// Kubernetes' `--node-monitor-grace-period`).
    pub grace_period: Duration,
    /// How long pods without their own toleration stay on a not-ready or unreachable node
    /// (default 300 s, as Kubernetes' DefaultTolerationSeconds).
    pub default_toleration: Duration,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(40),
            default_toleration: Duration::from_secs(300),
        }
    }
}

/// What the controller remembers about one node, on its own clock.
#[derive(Debug, Clone)]
struct Health {
    lease_version: Option<String>,
    heartbeat: Option<String>,
    seen_at: Instant,
    /// When each NoExecute taint was first seen, by key.
    tainted_at: HashMap<String, Instant>,
}

/// Watches node heartbeats, marks silent nodes `Unknown` with NoExecute taints, and evicts
/// pods from tainted nodes after their toleration. See the module docs.
#[derive(Debug)]
pub struct NodeLifecycleController {
    config: NodeLifecycleConfig,
    health: Mutex<HashMap<String, Health>>,
    events: EventRecorder,
}

impl Default for NodeLifecycleController {
    fn default() -> Self {
        Self::new()
    }
}

impl NodeLifecycleController {
    /// A controller with Kubernetes' default timing.
    pub fn new() -> Self {
        Self::with_config(NodeLifecycleConfig::default())
    }

    /// A controller with this timing.
    pub fn with_config(config: NodeLifecycleConfig) -> Self {
        Self {
            config,
            health: Mutex::default(),
            events: EventRecorder::new("node-controller"),
        }
    }
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

fn taint(key: &str, effect: &str) -> Taint {
    Taint {
        key: key.into(),
        effect: effect.into(),
        time_added: Some(now()),
        value: None,
    }
}

/// `taints` with the not-ready/unreachable pair replaced by what `ready` calls for.
fn desired_taints(current: &[Taint], ready: &str) -> Vec<Taint> {
    let want: &[&str] = match ready {
        "True" => &[],
        "False" => &[NOT_READY],
        _ => &[UNREACHABLE],
    };
    let mut taints: Vec<Taint> = current
        .iter()
        .filter(|t| {
            let ours = t.key == NOT_READY || t.key == UNREACHABLE;
            !ours || want.contains(&t.key.as_str())
        })
        .cloned()
        .collect();
    for key in want {
        for effect in ["NoSchedule", "NoExecute"] {
            if !taints.iter().any(|t| t.key == *key && t.effect == effect) {
                taints.push(taint(key, effect));
            }
        }
    }
    taints
}

fn heartbeat_of(node: &Node) -> Option<String> {
    ready_condition(node)
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0.to_string())
}

impl NodeLifecycleController {
    /// Records heartbeats seen now; returns the time of the last one and the taint times.
    fn observe(&self, name: &str, node: &Node, lease: Option<&DynamicObject>) -> Health {
        let now = Instant::now();
        let lease_version = lease.and_then(|l| l.metadata.resource_version.clone());
        let heartbeat = heartbeat_of(node);
        let mut all = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let health = all.entry(name.to_string()).or_insert_with(|| Health {
            lease_version: lease_version.clone(),
            heartbeat: heartbeat.clone(),
            // A node first seen gets a full grace period, as after a controller restart.
            seen_at: now,
            tainted_at: HashMap::new(),
        });
        if health.lease_version != lease_version || health.heartbeat != heartbeat {
            health.lease_version = lease_version;
            health.heartbeat = heartbeat;
            health.seen_at = now;
        }
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        health.tainted_at.retain(|key, _| {
            taints
                .iter()
                .any(|t| t.effect == "NoExecute" && &t.key == key)
        });
        for t in taints.iter().filter(|t| t.effect == "NoExecute") {
            health.tainted_at.entry(t.key.clone()).or_insert(now);
        }
        health.clone()
    }

    /// Writes `Unknown` conditions and the right taints, if they differ.
    async fn update_node(
        &self,
        ctx: &ControllerContext,
        name: &str,
        stale: bool,
    ) -> Result<Option<Node>, ReconcileError> {
        let nodes: Api<Node> = Api::all(ctx.store.clone());
        let Some(mut node) = nodes.get_opt(name).await? else {
            return Ok(None);
        };
        let mut changed = false;
        if stale {
            let stamp = now();
            let status = node.status.get_or_insert_with(Default::default);
            for c in status.conditions.iter_mut().flatten() {
                if c.status != "Unknown" {
                    c.status = "Unknown".into();
                    c.reason = Some("NodeStatusUnknown".into());
                    c.message = Some("Kubelet stopped posting node status.".into());
                    c.last_transition_time = Some(stamp.clone());
                    changed = true;
                }
            }
        }
        let ready = ready_condition(&node)
            .map_or("Unknown", |c| c.status.as_str())
            .to_string();
        let spec = node.spec.get_or_insert_with(Default::default);
        let current = spec.taints.clone().unwrap_or_default();
        let desired = desired_taints(&current, &ready);
        if desired != current {
            spec.taints = (!desired.is_empty()).then_some(desired);
            changed = true;
        }
        if changed {
            tracing::info!(node = %name, ready, "node health changed");
            node = nodes.replace(&node).await?;
            let (type_, reason) = match ready.as_str() {
                "True" => (EventType::Normal, "NodeReady"),
                _ => (EventType::Warning, "NodeNotReady"),
            };
            self.events
                .record(
                    &ctx.store,
                    &node,
                    type_,
                    reason,
                    format!("Node {name} status is now: {reason}"),
                )
                .await;
        }
        Ok(Some(node))
    }

    /// Marks the node's pods not ready (their node cannot vouch for them any more).
    async fn mark_pods_not_ready(
        &self,
        ctx: &ControllerContext,
        pods: &[Pod],
    ) -> Result<(), ReconcileError> {
        for pod in pods {
            let conditions = pod.status.as_ref().and_then(|s| s.conditions.clone());
            let Some(mut conditions) = conditions else {
                continue;
            };
            let Some(ready) = conditions.iter_mut().find(|c| c.type_ == "Ready") else {
                continue;
            };
            if ready.status == "False" {
                continue;
            }
            *ready = PodCondition {
                status: "False".into(),
                last_transition_time: Some(now()),
                ..ready.clone()
            };
            let api: Api<Pod> = Api::namespaced(
                ctx.store.clone(),
                pod.metadata.namespace.as_deref().unwrap_or_default(),
            );
            let name = pod.metadata.name.clone().unwrap_or_default();
            match api
                .patch_merge(
                    &name,
                    &serde_json::json!({"status": {"conditions": conditions}}),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Deletes pods whose tolerations of the node's NoExecute taints ran out; returns when the
    /// next one will.
    async fn evict(
        &self,
        ctx: &ControllerContext,
        node: &Node,
        health: &Health,
        pods: &[Pod],
    ) -> Result<Option<Instant>, ReconcileError> {
        let taints: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.effect == "NoExecute")
            .collect();
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for pod in pods {
            let deadline = taints
                .iter()
                .filter_map(|t| {
                    let since = health.tainted_at.get(&t.key).copied().unwrap_or(now);
                    Some(since + allowed_time(pod, t, self.config.default_toleration)?)
                })
                .min();
            let Some(deadline) = deadline else { continue };
            if deadline > now {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
                continue;
            }
            let api: Api<Pod> = Api::namespaced(
                ctx.store.clone(),
                pod.metadata.namespace.as_deref().unwrap_or_default(),
            );
            let name = pod.metadata.name.clone().unwrap_or_default();
            let pre = Preconditions::uid(pod.metadata.uid.clone().unwrap_or_default());
            match api.delete(&name, &pre).await {
                Ok(_) => {
                    tracing::info!(pod = %name, node = ?node.metadata.name, "evicted pod from tainted node")
                }
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(next)
    }
}

#[async_trait::async_trait]
impl Controller for NodeLifecycleController {
    fn name(&self) -> &str {
        "node-lifecycle"
    }

    fn watches(&self) -> Watches {
        Watches::primary(GroupKind::NODE)
            .related(GroupKind::of::<Lease>())
            .related(GroupKind::POD)
    }

    fn map_related(
        &self,
        kind: &GroupKind,
        object: &DynamicObject,
        _ctx: &ControllerContext,
    ) -> Vec<ObjectKey> {
        if *kind == GroupKind::POD {
            // A pod landing on (or changing on) a node may need evicting from it.
            return object
                .field("spec.nodeName")
                .and_then(|v| v.as_str().map(str::to_string))
                .filter(|n| !n.is_empty())
                .map(ObjectKey::cluster)
                .into_iter()
                .collect();
        }
        if object.metadata.namespace.as_deref() == Some(LEASE_NAMESPACE) {
            return vec![ObjectKey::cluster(object.key().name)];
        }
        Vec::new()
    }

    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        let name = key.name.as_str();
        let Some(node) = ctx
            .informers
            .informer(&GroupKind::NODE)
            .get_typed::<Node>(key)
        else {
            self.health
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
            return Ok(Action::await_change());
        };
        let lease = ctx
            .informers
            .informer(&GroupKind::of::<Lease>())
            .get(&ObjectKey::namespaced(LEASE_NAMESPACE, name));
        let health = self.observe(name, &node, lease.as_deref());
        let silent_for = health.seen_at.elapsed();
        let stale = silent_for > self.config.grace_period;
        let Some(node) = self.update_node(ctx, name, stale).await? else {
            return Ok(Action::await_change());
        };
        // Taints just written count from now.
        let health = self.observe(name, &node, lease.as_deref());
        let pods: Vec<Pod> = ctx
            .informers
            .informer(&GroupKind::POD)
            .list()
            .iter()
            .filter(|p| {
                p.field("spec.nodeName")
                    .and_then(|v| v.as_str().map(str::to_string))
                    .as_deref()
                    == Some(name)
            })
            .filter_map(|p| p.to_typed::<Pod>().ok())
            .filter(is_active)
            .collect();
        if stale {
            self.mark_pods_not_ready(ctx, &pods).await?;
        }
        let next_eviction = self.evict(ctx, &node, &health, &pods).await?;
        // Look again when the grace period would run out, or the next eviction is due.
        let mut wake = if stale {
            None
        } else {
            Some(health.seen_at + self.config.grace_period + Duration::from_millis(10))
        };
        if let Some(e) = next_eviction {
            wake = Some(wake.map_or(e, |w| w.min(e)));
        }
        Ok(match wake {
            Some(at) => Action::requeue(
                at.saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(10)),
            ),
            None => Action::await_change(),
        })
    }
}
