//! [`NetworkPolicyEnforcer`]: Kubernetes NetworkPolicy on nftables.

mod compile;
mod model;
mod ranges;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube_core::informer::InformerEvent;
use kube_core::object::{DynamicObject, GroupKind};
use kube_core::orchestrator::{BoxError, Component, ComponentContext};
use kube_core::workqueue::Backoff;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::cmd::run;
use crate::error::Result;
use compile::{Cluster, Ruleset};
use model::{PodInfo, PolicyInfo, namespace_labels};

/// How a [`NetworkPolicyEnforcer`] runs.
#[derive(Clone, Debug)]
pub struct NetworkPolicyConfig {
    /// The nftables table it owns (family `inet`). Default `kube-net-policy`.
    pub table: String,
    /// Program the rules inside this named network namespace (`ip netns exec`), not the
    /// caller's. Default: none.
    pub netns: Option<String>,
    /// Enforce for the pods on this node (their ingress and their egress); pods elsewhere are
    /// their own node's business. `None` (the default): enforce for every pod, as on a
    /// one-node cluster or a router that sees all pod traffic.
    pub node_name: Option<String>,
    /// At least this long between two programming runs: changes arriving meanwhile are
    /// coalesced into the next one. Default 50 ms.
    pub min_sync_interval: Duration,
    /// Delays between attempts while `nft` keeps failing. Default 100 ms doubling to 30 s.
    pub backoff: Backoff,
}

impl Default for NetworkPolicyConfig {
    fn default() -> Self {
        Self {
            table: "kube-net-policy".into(),
            netns: None,
            node_name: None,
            min_sync_interval: Duration::from_millis(50),
            backoff: Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(30),
            },
        }
    }
}

/// What a [`NetworkPolicyEnforcer`] has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkPolicyStats {
    /// Transactions that rewrote the whole table.
    pub full_syncs: u64,
    /// Transactions that only added and deleted set and map elements.
    pub incremental_syncs: u64,
    /// Elements the last incremental transaction changed.
    pub last_changed_elements: usize,
    /// Rules in the table now.
    pub rules: usize,
    /// Set and map elements in the table now.
    pub elements: usize,
    /// Failed transactions.
    pub failures: u64,
    /// How long computing the last ruleset took.
    pub last_render: Duration,
    /// How long `nft` took to apply the last transaction.
    pub last_apply: Duration,
}

/// Reads a [`NetworkPolicyEnforcer`]'s stats while it runs; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct NetworkPolicyStatsHandle(Arc<Mutex<NetworkPolicyStats>>);

impl NetworkPolicyStatsHandle {
    /// The stats now.
    pub fn get(&self) -> NetworkPolicyStats {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut NetworkPolicyStats)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// Enforces NetworkPolicies (`networking.k8s.io/v1`) with nftables, as a [`Component`].
///
/// From the orchestrator's shared NetworkPolicy, Pod and Namespace informers it computes one
/// `inet` table of its own ([`NetworkPolicyConfig::table`]) and programs it with `nft -f -`,
/// each sync one atomic transaction, as Kubernetes specifies policies:
///
/// - A pod selected by a policy of type Ingress accepts only the traffic some rule of some
///   such policy allows; likewise Egress. Traffic between two pods needs both the sender's
///   egress and the receiver's ingress.
/// - Peers: `podSelector` (the policy's namespace), `namespaceSelector` (every namespace
///   carries `kubernetes.io/metadata.name`), both together, `ipBlock` with `except`; ports
///   with protocol, number, `endPort` ranges, and names resolved against the destination
///   pod's container ports; `ingress: [{}]` allows everything, no rules deny everything.
/// - `ct state established,related accept` comes first: replies pass, and a policy change
///   applies to new connections at once while established ones carry on.
/// - It hooks `forward`: pod traffic crosses the node's L3 stack (routed veths), after the
///   service DNAT of prerouting, so rules see backend pod addresses. Traffic between the
///   node and its pods (kubelet probes) does not pass `forward` and is always allowed, as
///   Kubernetes requires.
/// - Only pods on [`NetworkPolicyConfig::node_name`] are policed here (their ingress and
///   egress); addresses sit in sets and verdict maps keyed by pod address, so a pod change
///   is a few element updates rather than a rewrite. Changes are coalesced for
///   [`NetworkPolicyConfig::min_sync_interval`]; updates touching nothing policies read (a
///   pod's conditions) program nothing.
/// - The table is deleted on shutdown.
///
/// ```no_run
/// # fn demo(builder: kube_core::orchestrator::OrchestratorBuilder) {
/// use kube_net::{NetworkPolicyConfig, NetworkPolicyEnforcer};
/// let enforcer = NetworkPolicyEnforcer::new(NetworkPolicyConfig {
///     node_name: Some("node-1".into()),
///     ..NetworkPolicyConfig::default()
/// });
/// let stats = enforcer.stats();
/// let builder = builder.component(enforcer);
/// # }
/// ```
#[derive(Debug)]
pub struct NetworkPolicyEnforcer {
    config: NetworkPolicyConfig,
    stats: NetworkPolicyStatsHandle,
}

impl NetworkPolicyEnforcer {
    /// An enforcer with `config`; it programs nothing until the orchestrator runs it.
    pub fn new(config: NetworkPolicyConfig) -> Self {
        Self {
            config,
            stats: NetworkPolicyStatsHandle::default(),
        }
    }

    /// A handle on its stats, to keep before handing it to the orchestrator.
    pub fn stats(&self) -> NetworkPolicyStatsHandle {
        self.stats.clone()
    }
}

/// The informers' objects, reduced to what enforcement reads.
#[derive(Default)]
struct Model {
    cluster: Cluster,
}

impl Model {
    /// Applies an event; whether anything enforcement reads changed.
    fn apply(&mut self, event: &InformerEvent) -> bool {
        let object = event.object();
        let deleted = matches!(event, InformerEvent::Deleted(_));
        let key = object.key();
        let kind = object.group_kind();
        let cluster = &mut self.cluster;
        if kind == GroupKind::POD {
            let info = (!deleted).then(|| typed::<Pod>(object)).flatten();
            replace(
                &mut cluster.pods,
                key,
                info.as_ref().and_then(PodInfo::from_pod),
            )
        } else if kind == GroupKind::of::<Namespace>() {
            let labels = (!deleted)
                .then(|| typed::<Namespace>(object))
                .flatten()
                .map(|ns| namespace_labels(&ns));
            replace(&mut cluster.namespaces, key.name, labels)
        } else if kind == GroupKind::of::<NetworkPolicy>() {
            let info = (!deleted)
                .then(|| typed::<NetworkPolicy>(object))
                .flatten()
                .map(|p| PolicyInfo::from_policy(&p));
            replace(&mut cluster.policies, key, info)
        } else {
            false
        }
    }
}

fn typed<K: serde::de::DeserializeOwned>(object: &DynamicObject) -> Option<K> {
    object
        .to_typed()
        .map_err(
            |e| tracing::warn!(object = %object.key(), error = %e, "does not decode; ignoring it"),
        )
        .ok()
}

/// Sets or removes `map[key]`; whether the map changed.
fn replace<K: Ord, V: PartialEq>(map: &mut BTreeMap<K, V>, key: K, value: Option<V>) -> bool {
    match value {
        Some(value) => {
            if map.get(&key) == Some(&value) {
                return false;
            }
            map.insert(key, value);
            true
        }
        None => map.remove(&key).is_some(),
    }
}

/// Applies rulesets to the kernel, incrementally when it can.
struct Programmer {
    config: NetworkPolicyConfig,
    stats: NetworkPolicyStatsHandle,
    /// What the table holds (`None`: unknown, rewrite it).
    applied: Option<Ruleset>,
}

impl Programmer {
    async fn nft(&self, script: &str) -> Result<Duration> {
        let started = Instant::now();
        run(
            self.config.netns.as_deref(),
            "nft",
            &["-f", "-"],
            Some(script),
        )
        .await?;
        Ok(started.elapsed())
    }

    async fn program(&mut self, cluster: &Cluster) -> Result<()> {
        let started = Instant::now();
        let ruleset = compile::compile(cluster, self.config.node_name.as_deref());
        let render = started.elapsed();
        let table = &self.config.table;
        if let Some(applied) = &self.applied {
            if *applied == ruleset {
                return Ok(());
            }
            if let Some((script, changed)) = ruleset.increment(applied, table) {
                match self.nft(&script).await {
                    Ok(took) => {
                        self.stats.update(|s| {
                            s.incremental_syncs += 1;
                            s.last_changed_elements = changed;
                            s.elements = ruleset.element_count();
                            s.last_render = render;
                            s.last_apply = took;
                        });
                        tracing::debug!(changed, ?took, "network policy elements updated");
                        self.applied = Some(ruleset);
                        return Ok(());
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "incremental network policy update failed; rewriting");
                    }
                }
            }
        }
        self.applied = None;
        let took = self.nft(&ruleset.full_script(table)).await?;
        self.stats.update(|s| {
            s.full_syncs += 1;
            s.rules = ruleset.rules;
            s.elements = ruleset.element_count();
            s.last_render = render;
            s.last_apply = took;
        });
        tracing::debug!(
            rules = ruleset.rules,
            ?took,
            "network policy table programmed"
        );
        self.applied = Some(ruleset);
        Ok(())
    }

    async fn remove(&self) -> Result<()> {
        let name = &self.config.table;
        self.nft(&format!(
            "table inet {name} {{}}\ndelete table inet {name}\n"
        ))
        .await
        .map(drop)
    }
}

fn drain(events: &mut UnboundedReceiver<InformerEvent>, model: &mut Model) -> bool {
    let mut changed = false;
    while let Ok(event) = events.try_recv() {
        changed |= model.apply(&event);
    }
    changed
}

#[async_trait::async_trait]
impl Component for NetworkPolicyEnforcer {
    fn name(&self) -> String {
        "network-policy".into()
    }

    async fn run(self: Box<Self>, ctx: ComponentContext) -> Result<(), BoxError> {
        let policies = ctx.informers.informer(&GroupKind::of::<NetworkPolicy>());
        let pods = ctx.informers.informer(&GroupKind::POD);
        let namespaces = ctx.informers.informer(&GroupKind::of::<Namespace>());
        tokio::select! {
            () = ctx.shutdown.cancelled() => return Ok(()),
            () = async {
                tokio::join!(
                    policies.wait_until_synced(),
                    pods.wait_until_synced(),
                    namespaces.wait_until_synced(),
                );
            } => {}
        }
        // A subscription replays the cache first: the model starts from it.
        let mut policy_events = policies.subscribe();
        let mut pod_events = pods.subscribe();
        let mut namespace_events = namespaces.subscribe();
        let mut model = Model::default();
        drain(&mut policy_events, &mut model);
        drain(&mut pod_events, &mut model);
        drain(&mut namespace_events, &mut model);

        let mut programmer = Programmer {
            config: self.config.clone(),
            stats: self.stats.clone(),
            applied: None,
        };
        let mut dirty = true;
        let mut failures = 0u32;
        let mut retry_at: Option<tokio::time::Instant> = None;
        let mut last_sync = tokio::time::Instant::now() - self.config.min_sync_interval;
        loop {
            if dirty && retry_at.is_none() {
                // Coalesce: not sooner than the minimum interval after the last sync; what
                // arrives meanwhile joins this one.
                tokio::select! {
                    () = ctx.shutdown.cancelled() => break,
                    () = tokio::time::sleep_until(last_sync + self.config.min_sync_interval) => {}
                }
                drain(&mut policy_events, &mut model);
                drain(&mut pod_events, &mut model);
                drain(&mut namespace_events, &mut model);
                last_sync = tokio::time::Instant::now();
                match programmer.program(&model.cluster).await {
                    Ok(()) => {
                        failures = 0;
                        dirty = false;
                    }
                    Err(e) => {
                        let delay = self.config.backoff.delay(failures);
                        failures = failures.saturating_add(1);
                        self.stats.update(|s| s.failures += 1);
                        tracing::warn!(error = %e, ?delay, "programming network policies failed");
                        retry_at = Some(tokio::time::Instant::now() + delay);
                    }
                }
                continue;
            }
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let changed = tokio::select! {
                () = ctx.shutdown.cancelled() => break,
                event = policy_events.recv() => match event {
                    Some(event) => model.apply(&event),
                    None => break,
                },
                event = pod_events.recv() => match event {
                    Some(event) => model.apply(&event),
                    None => break,
                },
                event = namespace_events.recv() => match event {
                    Some(event) => model.apply(&event),
                    None => break,
                },
                () = retry => {
                    retry_at = None;
                    false
                }
            };
            dirty |= changed;
        }
        if let Err(e) = programmer.remove().await {
            tracing::warn!(error = %e, "removing the network policy table failed");
        }
        tracing::info!("network policy enforcer stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        send_sync::<NetworkPolicyEnforcer>();
        send_sync::<NetworkPolicyConfig>();
        send_sync::<NetworkPolicyStatsHandle>();
    }
}
