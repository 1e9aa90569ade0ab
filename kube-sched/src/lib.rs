//! A Kubernetes-style pod scheduler: the scheduling framework with Kubernetes' default plugins,
//! embeddable without a store or runtime, and a component that schedules from a store.
//!
//! - [`framework`]: extension points (PreFilter, Filter, PostFilter, PreScore, Score,
//!   Reserve/Unreserve, Permit, PreBind, Bind, PostBind), [`Status`](framework::Status) codes,
//!   [`CycleState`](framework::CycleState), a [`Registry`](framework::Registry) of plugin
//!   factories, [`ProfileConfig`](framework::ProfileConfig)s chosen by `spec.schedulerName`, the
//!   incremental [`Cluster`](framework::Cluster) cache, and [`Framework`](framework::Framework),
//!   which runs cycles, places pods in a `Cluster`, and explains decisions.
//! - [`plugins`]: NodeName, NodeUnschedulable, NodeResourcesFit, NodeResourcesBalancedAllocation,
//!   NodeAffinity, TaintToleration, NodePorts, InterPodAffinity, PodTopologySpread,
//!   ImageLocality, DefaultPreemption, VolumeRestrictions, VolumeBinding (the loop writes a
//!   waiting claim's selected node or a static volume's `claimRef` and binds the pod once its
//!   claims are bound).
//! - [`queue`]: the scheduling queue (priority order, 1 s → 10 s backoff, unschedulable pods
//!   parked until a cluster event); [`binding`]: the pluggable [`Binder`](binding::Binder)
//!   the loop binds with ([`StoreBinder`](binding::StoreBinder) by default,
//!   [`BindingSubresource`](binding::BindingSubresource) for `pods/binding` semantics).
//! - [`DefaultScheduler`] implements [`kube_core::scheduler::Scheduler`] with the default profile.
//! - [`SchedulingLoop`] implements [`kube_core::orchestrator::Component`]: it watches pods and
//!   nodes (and Services and ReplicaSets, for default spread selectors) through the
//!   orchestrator's shared informers, queues pending pods in the [`queue`] by priority, decides
//!   for each, and binds while the next decision is made. [`SchedulingLoop::new`] runs any
//!   `Arc<dyn Scheduler>` on a snapshot built per pod; [`SchedulingLoop::with_framework`]
//!   decides over the incremental cache and preempts. [`SchedulingConfig::leader`] gates
//!   scheduling on leadership (a hook: leader election itself is not provided yet).
//!
//! # Performance
//!
//! `cargo bench -p kube-sched --bench scheduling -- --workload basic` runs scheduler_perf-style
//! workloads (`basic`, `node-affinity`, `pod-anti-affinity`, `topology-spread`, `preemption`)
//! from queue to binding in a `MemStore`. Filters stop after `percentageOfNodesToScore`
//! (Kubernetes' adaptive default); filter and score fan out over rayon when its pool has at
//! least 4 threads (on fewer, one thread is faster); topology counts for spread and pod
//! affinity come from an index kept up to date per pod change; a pod is parsed once when it is
//! queued, and the per-node hot path (filters, scores, cycle state reads, statuses) allocates
//! nothing. Nodes sit inline in the cache, so a cycle reads the nodes it filters in memory
//! order. A cycle where nothing fits records its statuses by node position (no name copied or
//! sorted); preemption's dry runs borrow the cluster's pods and check only verdicts; a pod
//! that preemption nominated a node for tries that node first (kube-scheduler's
//! `evaluateNominatedNode`). PodTopologySpread's Filter reads each node's domain from a
//! per-key index of node positions kept current with node changes (no label lookup or string
//! hashing per node).
//!
//! # Not yet
//!
//! Per-plugin queueing hints (any node event or freeing pod event moves every parked pod),
//! StatefulSets and ReplicationControllers as default spread selectors in the loop (the
//! [`Cluster`](framework::Cluster) takes them; the loop watches Services and ReplicaSets
//! only), the Reserve/Permit/PreBind/Bind plugin points in the loop (they run in
//! [`Framework::place`](framework::Framework::place)), and per-extension-point enable/disable
//! in profiles.
//!
//! # Embedding
//!
//! ```
//! use kube_sched::framework::{Cluster, Framework};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let node = serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "n1"},
//!     "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "110"}}
//! }))?;
//! let mut cluster = Cluster::from_objects([node], [])?;
//! let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "big", "namespace": "default"},
//!     "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]}
//! }))?;
//! let framework = Framework::new();
//! let err = framework.place(&mut cluster, pod.clone()).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: \
//!      1 No preemption victims found for incoming pod.."
//! );
//! println!("{}", framework.explain(&cluster, pod)?);
//! # Ok(()) }
//! ```
//!
//! # Usage in an orchestrator
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn kube_core::store::Store>) -> Result<(), kube_core::OrchestratorError> {
//! use std::sync::Arc;
//! use kube_core::Orchestrator;
//! use kube_sched::{DefaultScheduler, SchedulingLoop};
//!
//! let running = Orchestrator::builder()
//!     .store(store)
//!     .scheduler(SchedulingLoop::new(Arc::new(DefaultScheduler::new())))
//!     .build()?
//!     .start();
//! // Pods created in the store now get `spec.nodeName` set.
//! running.shutdown().await
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod binding;
mod default_scheduler;
mod error;
pub mod filter;
pub mod framework;
pub mod plugins;
pub mod queue;
mod scheduling_loop;
pub mod score;

pub use default_scheduler::{DEFAULT_SCHEDULER_NAME, DefaultScheduler};
pub use error::{Result, SchedError};
pub use scheduling_loop::{LeaderGate, SchedulingConfig, SchedulingLoop};

#[cfg(test)]
mod assertions {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        send_sync::<DefaultScheduler>();
        send_sync::<SchedulingLoop>();
        send_sync::<SchedulingConfig>();
        send_sync::<framework::Framework>();
        send_sync::<framework::Cluster>();
        let _object_safe: Option<std::sync::Arc<dyn framework::Plugin>> = None;
        let _binder: Option<std::sync::Arc<dyn binding::Binder>> = None;
    }
}
