//! Reconciliation for orchestrators built from kube-parts.
//!
//! - [`ControllerManager`]: runs any number of [`kube_core::Controller`]s, each over shared
//!   informer caches and its own work queue, as one orchestrator component.
//! - [`ReplicaSetController`]: keeps `spec.replicas` pods of a ReplicaSet's template.
//! - [`DeploymentController`]: rolls a Deployment's template out through ReplicaSets.
//! - [`NodeLifecycleController`]: taints silent nodes and evicts their pods after their
//!   tolerations, so their controllers recreate them elsewhere.
//! - [`GarbageCollector`]: deletes objects whose owners are gone.
//! - [`leader`]: leader election on a coordination/v1 Lease ([`LeaderElector`]), for the
//!   manager ([`ControllerManager::leader_election`]) or any component ([`LeaderElected`]).
//! - [`deletion`]: foreground and orphan propagation ([`deletion::delete`],
//!   [`DeletionFinalizer`]).
//! - [`NamespaceController`]: deleting a namespace deletes its contents, then the namespace.
//! - [`finalizers`]: add and remove finalizers with conflict retries.
//! - [`EventRecorder`]: Kubernetes Events, deduplicated and aggregated.
//! - [`ServiceAllocator`]: ClusterIPs and NodePorts for Services, never duplicated.
//! - [`ServiceLbController`]: LoadBalancer Services get the Ready nodes' addresses as their
//!   ingress (k3s's ServiceLB).
//! - [`ReplicationControllerController`]: ReplicationControllers (equality selectors), as
//!   ReplicaSets are reconciled.
//! - [`JobController`]: runs a Job's pods to completion (completions, parallelism,
//!   backoffLimit, activeDeadlineSeconds, Indexed completion, suspend, podFailurePolicy,
//!   backoffLimitPerIndex, tracking with the pod finalizer).
//! - [`TtlAfterFinishedController`]: deletes finished Jobs after `ttlSecondsAfterFinished`.
//! - [`CronJobController`]: Jobs on a cron schedule (time zones, concurrency policies,
//!   starting deadlines, missed runs and history limits as Kubernetes' controller v2).
//! - [`DaemonSetController`]: one pod per eligible node, rolling update.
//! - [`EndpointSliceController`]: discovery/v1 EndpointSlices with ready/serving/terminating.
//! - [`EndpointsController`]: keeps each Service's Endpoints equal to its ready pods.
//! - [`StatefulSetController`]: stable, ordered pods with claims from templates, rolling
//!   updates with partitions, ControllerRevision history (DaemonSets keep history too).
//! - [`volume`]: the PV controller ([`ClaimBinder`], [`VolumeReclaimer`], the protection
//!   finalizers), provisioners and k3s's [`LocalPathProvisioner`].
//! - [`NodeIpamController`]: a pod CIDR for every Node (`--allocate-node-cidrs`).
//! - [`DisruptionController`]: PodDisruptionBudget status, which eviction obeys.
//! - [`ResourceQuotaController`]: ResourceQuota usage in `status.used`.
//!
//! # Performance
//!
//! Controllers find dependents through owner indexes (pods by owning ReplicaSet, ReplicaSets by
//! owning Deployment, dependents by owner for the garbage collector and foreground deletion),
//! kept from the shared informers, so a reconcile costs what its own objects cost, never a scan
//! of the cluster. `cargo bench -p kube-ctrl --bench controllers` brings N Deployments of 3
//! replicas to availability over FakeRuntime node agents, MemStore and kube-sched's incremental
//! scheduler (2 shared cores, load average ≈ 5):
//!
//! | deployments / nodes | plain MemStore | `BENCH_WATCH_CACHE=1` |
//! |---|---|---|
//! | 300 / 30 | 1.56 s, 88 MB | 1.89 s, 91 MB |
//! | 2000 / 200 | 51.9 s, 516 MB | 9.0 s, 509 MB |
//! | 10000 / 1000 | 512 available after 400 s (stopped) | 237.9 s, 2230 MB |
//!
//! With a plain MemStore the large runs are bound by the store, not the controllers: each node
//! agent's `spec.nodeName` watch reads every change of every kind and evaluates its field
//! selector (`DynamicObject::field` clones the pod's `spec` to read one string), so every write
//! costs O(nodes); at 1000 nodes that is 95% of the CPU. `BENCH_WATCH_CACHE=1` puts a watch
//! cache in front of the store that routes pod changes by node, as kube-apiserver's does.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kube_core::OrchestratorError> {
//! use std::sync::Arc;
//! use kube_core::{GroupKind, Orchestrator};
//! use kube_ctrl::{ControllerManager, EndpointsController, GarbageCollector, ReplicaSetController};
//!
//! let manager = ControllerManager::new()
//!     .with(ReplicaSetController::new())
//!     .with(GarbageCollector::new(GroupKind::POD).owner(GroupKind::REPLICA_SET))
//!     .with(EndpointsController::new());
//! let store = Arc::new(kube_store::MemStore::new());
//! let running = Orchestrator::builder().store(store).controllers(manager).build()?.start();
//! running.shutdown().await
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod cronjob;
pub mod daemonset;
pub mod deletion;
pub mod deployment;
pub mod disruption;
mod endpoints;
pub mod endpointslice;
pub use kube_core::events;
mod expectations;
pub mod finalizers;
mod gc;
mod index;
pub mod job;
pub mod leader;
mod manager;
mod metrics;
mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
mod pods;
mod replicaset;
mod replicationcontroller;
pub mod resource_quota;
mod service_alloc;
pub mod service_lb;
pub mod statefulset;
mod ttl;
pub mod volume;

pub use cronjob::CronJobController;
pub use daemonset::DaemonSetController;
pub use deletion::{DeletionFinalizer, Propagation};
pub use deployment::DeploymentController;
pub use disruption::DisruptionController;
pub use endpoints::EndpointsController;
pub use endpointslice::EndpointSliceController;
pub use events::{EventRecorder, EventType};
pub use gc::GarbageCollector;
pub use job::JobController;
pub use leader::{
    LeaderElected, LeaderElectionConfig, LeaderElectionError, LeaderElector, Leadership,
};
pub use manager::ControllerManager;
pub use metrics::{ControllerStats, ManagerMetrics};
pub use namespace::{NAMESPACE_FINALIZER, NamespaceController, delete_namespace};
pub use node_ipam::{NodeIpamConfig, NodeIpamController, NodeIpamError};
pub use node_lifecycle::{NodeLifecycleConfig, NodeLifecycleController};
pub use replicaset::ReplicaSetController;
pub use replicationcontroller::ReplicationControllerController;
pub use resource_quota::ResourceQuotaController;
pub use service_alloc::{AllocatorError, ServiceAllocator};
pub use service_lb::ServiceLbController;
pub use statefulset::StatefulSetController;
pub use ttl::TtlAfterFinishedController;
pub use volume::{ClaimBinder, LocalPathProvisioner, VolumeReclaimer};
