//! [`ControllerManager`]: runs controllers over shared informers and per-controller work queues.

use std::fmt;
use std::sync::Arc;

use kube_core::controller::{Controller, ControllerContext};
use kube_core::informer::{Informer, InformerEvent};
use kube_core::object::{GroupKind, ObjectKey};
use kube_core::orchestrator::{BoxError, Component, ComponentContext};
use kube_core::workqueue::WorkQueue;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::leader::{LeaderElectionConfig, LeaderElector};
use crate::metrics::{Counters, ManagerMetrics};
use crate::{
    CronJobController, DaemonSetController, DeletionFinalizer, DeploymentController,
    EndpointSliceController, EndpointsController, GarbageCollector, JobController,
    NamespaceController, NodeLifecycleConfig, NodeLifecycleController, ReplicaSetController,
    ReplicationControllerController, ServiceAllocator, TtlAfterFinishedController,
};

/// Runs controllers as one orchestrator component.
///
/// For each controller it subscribes to the shared informers of the kinds the controller
/// watches, maps every change to a primary key (owned objects to their controlling owner),
/// queues the key (duplicates coalesce, one worker per key at a time), and calls
/// `reconcile` from a pool of workers once the caches are synced.
pub struct ControllerManager {
    controllers: Vec<Arc<dyn Controller>>,
    workers: usize,
    leader_election: Option<LeaderElectionConfig>,
    metrics: ManagerMetrics,
}

impl fmt::Debug for ControllerManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControllerManager")
            .field(
                "controllers",
                &self
                    .controllers
                    .iter()
                    .map(|c| c.name())
                    .collect::<Vec<_>>(),
            )
            .field("workers", &self.workers)
            .field("leader_election", &self.leader_election)
            .finish()
    }
}

impl Default for ControllerManager {
    fn default() -> Self {
        Self::new()
    }
}

impl ControllerManager {
    /// A manager with no controllers and 2 workers per controller.
    pub fn new() -> Self {
        Self {
            controllers: Vec::new(),
            workers: 2,
            leader_election: None,
            metrics: ManagerMetrics::default(),
        }
    }

    /// Adds the controllers kube-controller-manager runs for the kinds we serve: ReplicaSet,
    /// ReplicationController, Deployment, DaemonSet, Job, CronJob, TTL-after-finished,
    /// Endpoints, EndpointSlice, Service IP allocation, Namespace, the PV controller (binding,
    /// reclaiming, pvc/pv-protection; provisioners are added apart with
    /// [`crate::volume::with_provisioner`]), node lifecycle (with
    /// `node_lifecycle`), garbage collection of pods (owned by ReplicaSets,
    /// ReplicationControllers, DaemonSets and Jobs), of ReplicaSets (owned by Deployments) and
    /// of Jobs (owned by CronJobs), and the deletion finalizers of Deployments, ReplicaSets and
    /// ReplicationControllers (`propagationPolicy`).
    ///
    /// ```
    /// use kube_ctrl::{ControllerManager, NodeLifecycleConfig};
    /// let manager = ControllerManager::new().with_default_controllers(NodeLifecycleConfig::default());
    /// assert!(format!("{manager:?}").contains("deployment"));
    /// ```
    pub fn with_default_controllers(self, node_lifecycle: NodeLifecycleConfig) -> Self {
        let deployment = GroupKind::new("apps", "Deployment");
        let rc = GroupKind::from_static("", "ReplicationController");
        crate::volume::with_volume_controllers(self)
            .with(ReplicaSetController::new())
            .with(ReplicationControllerController::new())
            .with(DeploymentController::new())
            .with(DaemonSetController::new())
            .with_statefulsets()
            .with(JobController::new())
            .with(CronJobController::new())
            .with(TtlAfterFinishedController::new())
            .with(EndpointsController::new())
            .with(EndpointSliceController::new())
            .with(ServiceAllocator::new())
            .with(NamespaceController::new())
            .with(crate::ResourceQuotaController::new())
            .with(crate::DisruptionController::new())
            .with(NodeLifecycleController::with_config(node_lifecycle))
            .with(
                GarbageCollector::new(GroupKind::new("batch", "Job"))
                    .owner(GroupKind::new("batch", "CronJob")),
            )
            .with(
                GarbageCollector::new(GroupKind::POD)
                    .owner(GroupKind::REPLICA_SET)
                    .owner(rc)
                    .owner(GroupKind::new("apps", "DaemonSet"))
                    .owner(GroupKind::new("apps", "StatefulSet"))
                    .owner(GroupKind::new("batch", "Job")),
            )
            .with(GarbageCollector::new(GroupKind::REPLICA_SET).owner(deployment.clone()))
            .with(DeletionFinalizer::new(deployment))
            .with(DeletionFinalizer::new(GroupKind::REPLICA_SET))
            .with(DeletionFinalizer::new(GroupKind::from_static(
                "",
                "ReplicationController",
            )))
    }

    /// Adds a controller.
    pub fn with(self, controller: impl Controller + 'static) -> Self {
        self.with_arc(Arc::new(controller))
    }

    /// Adds a shared controller (the caller may keep a handle to it).
    pub fn with_arc(mut self, controller: Arc<dyn Controller>) -> Self {
        self.controllers.push(controller);
        self
    }

    /// Sets the number of concurrent reconciles per controller (at least 1).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Runs the controllers only while this replica holds the Lease named by `config`, so
    /// several replicas can run for availability with one acting. After losing the Lease the
    /// controllers stop and the replica campaigns again; on shutdown it releases the Lease.
    pub fn leader_election(mut self, config: LeaderElectionConfig) -> Self {
        self.leader_election = Some(config);
        self
    }

    /// A handle on per-controller metrics (queue depth, reconciles, errors, latency); take it
    /// before handing the manager to the orchestrator.
    pub fn metrics(&self) -> ManagerMetrics {
        self.metrics.clone()
    }
}

#[async_trait::async_trait]
impl Component for ControllerManager {
    fn name(&self) -> String {
        "controller-manager".into()
    }

    async fn run(self: Box<Self>, ctx: ComponentContext) -> Result<(), BoxError> {
        let Some(config) = self.leader_election.clone() else {
            run_all(&self.controllers, ctx, self.workers, &self.metrics).await;
            return Ok(());
        };
        let elector = LeaderElector::new(ctx.store.clone(), config)?;
        elector
            .run(&ctx.shutdown, |leadership| {
                let ctx = ComponentContext {
                    shutdown: leadership.token,
                    ..ctx.clone()
                };
                run_all(&self.controllers, ctx, self.workers, &self.metrics)
            })
            .await;
        Ok(())
    }
}

/// Runs every controller until `ctx.shutdown` fires.
async fn run_all(
    controllers: &[Arc<dyn Controller>],
    ctx: ComponentContext,
    workers: usize,
    metrics: &ManagerMetrics,
) {
    let mut tasks = JoinSet::new();
    for controller in controllers {
        let counters = metrics.counters(controller.name());
        tasks.spawn(run_controller(
            controller.clone(),
            ctx.clone(),
            workers,
            counters,
        ));
    }
    while tasks.join_next().await.is_some() {}
}

/// Forwards informer events to the queue, mapped to primary keys by `map`.
fn forward(
    mut events: UnboundedReceiver<InformerEvent>,
    queue: WorkQueue<ObjectKey>,
    tasks: &mut JoinSet<()>,
    map: impl Fn(&InformerEvent) -> Vec<ObjectKey> + Send + 'static,
) {
    tasks.spawn(async move {
        while let Some(event) = events.recv().await {
            for key in map(&event) {
                queue.add(key);
            }
        }
    });
}

async fn run_controller(
    controller: Arc<dyn Controller>,
    ctx: ComponentContext,
    workers: usize,
    counters: Arc<Counters>,
) {
    let name = controller.name().to_string();
    let watches = controller.watches();
    let cctx = ControllerContext {
        store: ctx.store.clone(),
        informers: ctx.informers.clone(),
    };
    let queue: WorkQueue<ObjectKey> = WorkQueue::default();
    counters.set_queue(queue.clone());
    let mut tasks = JoinSet::new();
    let mut informers: Vec<Informer> = Vec::new();

    let primary = ctx.informers.informer(&watches.primary);
    informers.push(primary.clone());
    forward(primary.subscribe(), queue.clone(), &mut tasks, |e| {
        vec![e.object().key()]
    });

    for owned in &watches.owns {
        let informer = ctx.informers.informer(owned);
        informers.push(informer.clone());
        let primary_kind = watches.primary.clone();
        forward(informer.subscribe(), queue.clone(), &mut tasks, move |e| {
            let object = e.object();
            match object.controller_ref() {
                Some(owner)
                    if GroupKind::from_api_version(&owner.api_version, &owner.kind)
                        == primary_kind =>
                {
                    vec![ObjectKey {
                        namespace: object.metadata.namespace.clone(),
                        name: owner.name.clone(),
                    }]
                }
                _ => Vec::new(),
            }
        });
    }

    for related in &watches.related {
        let informer = ctx.informers.informer(related);
        informers.push(informer.clone());
        let controller = controller.clone();
        let cctx = cctx.clone();
        let kind = related.clone();
        forward(informer.subscribe(), queue.clone(), &mut tasks, move |e| {
            controller.map_related(&kind, e.object(), &cctx)
        });
    }

    tokio::select! {
        () = ctx.shutdown.cancelled() => return,
        () = async { for i in &informers { i.wait_until_synced().await } } => {}
    }
    tracing::debug!(controller = %name, "caches synced; starting workers");

    let mut pool = JoinSet::new();
    for _ in 0..workers {
        let queue = queue.clone();
        let controller = controller.clone();
        let cctx = cctx.clone();
        let counters = counters.clone();
        pool.spawn(async move {
            while let Some(key) = queue.get().await {
                let span = tracing::info_span!("reconcile", controller = controller.name(), object = %key);
                let started = tokio::time::Instant::now();
                let result = controller.reconcile(&key, &cctx).instrument(span).await;
                counters.observe(started.elapsed(), result.is_err());
                match result {
                    Ok(action) => {
                        queue.forget(&key);
                        if let Some(after) = action.requeue_after() {
                            queue.add_after(key.clone(), after);
                        }
                    }
                    Err(error) => {
                        let failures = queue.record_failure(&key);
                        tracing::debug!(controller = controller.name(), object = %key, %error, failures, "reconcile failed");
                        let action = controller.error_policy(&key, &error, failures);
                        if let Some(after) = action.requeue_after() {
                            queue.add_after(key.clone(), after);
                        }
                    }
                }
                queue.done(&key);
            }
        });
    }

    ctx.shutdown.cancelled().await;
    // Workers finish the reconcile they are in, then find the queue closed.
    queue.shut_down();
    tasks.shutdown().await;
    while pool.join_next().await.is_some() {}
}
