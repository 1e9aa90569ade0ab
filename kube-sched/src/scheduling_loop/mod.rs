//! [`SchedulingLoop`]: the component that finds unbound pods, asks a [`Scheduler`] where they
//! go, and binds them.
//!
//! Pipeline: shared Pod and Node informers (and Services and ReplicaSets, for default spread
//! selectors) → [`cache`] (typed mirror plus assumed pods) → the [`SchedulingQueue`] (active
//! pods by priority then age, per-pod backoff, unschedulable pods parked until a cluster event
//! or the periodic flush) → workers, each running one scheduling cycle (decide and assume,
//! serialized so decisions see each other) and then the [`Binder`]'s write, which may overlap
//! with the next cycle.

pub(crate) mod bind;
mod cache;
mod condition;
mod pod_state;
mod volumes;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kube_core::events::{EventRecorder, EventType};
use kube_core::informer::InformerEvent;
use kube_core::object::{GroupKind, ObjectKey};
use kube_core::orchestrator::{BoxError, Component, ComponentContext};
use kube_core::scheduler::{ScheduleError, Scheduler};
use kube_core::store::Store;
use kube_core::workqueue::Backoff;
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use bind::Written;

use crate::binding::{BindOutcome, Binder, StoreBinder};
use crate::framework::{Framework, PodInfo};
use crate::queue::SchedulingQueue;
use cache::{Requeue, SchedulerCache};

/// How a [`SchedulingLoop`] runs.
#[derive(Clone, Debug)]
pub struct SchedulingConfig {
    /// Concurrent workers. Decisions are always made one at a time (so they see each other's
    /// assumed pods); more workers overlap the binding writes with the next decisions
    /// (assume-then-bind). Default 4.
    pub workers: usize,
    /// Retry delays for a pod that did not fit or whose binding failed. Default 1 s doubling to
    /// 10 s, Kubernetes' pod backoff.
    pub backoff: Backoff,
    /// Whether to record core/v1 Events (`Scheduled`, `FailedScheduling`). Default true.
    pub record_events: bool,
    /// When set, pods are scheduled only while this says the process leads (a hook for leader
    /// election, which kube-ctrl does not offer yet). Default: always.
    pub leader: Option<LeaderGate>,
}

/// "Am I the leader?" — checked before each scheduling cycle.
#[derive(Clone)]
pub struct LeaderGate(pub Arc<dyn Fn() -> bool + Send + Sync>);

impl fmt::Debug for LeaderGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LeaderGate")
    }
}

/// How long a follower waits before looking at a pod again.
const FOLLOWER_RECHECK: Duration = Duration::from_secs(1);
/// How often the queue is flushed (backoff pods whose time came, pods parked too long) even
/// when nothing else happens.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

impl Default for SchedulingConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            backoff: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(10),
            },
            record_events: true,
            leader: None,
        }
    }
}

/// The scheduling component: give it to `Orchestrator::builder().scheduler(..)`.
///
/// It serves the pods whose `spec.schedulerName` is the scheduler's [`Scheduler::name`] (unset
/// means `default-scheduler`) that are unbound, not being deleted and not finished. For each it
/// builds a [`Snapshot`](kube_core::scheduler::Snapshot) from the shared informers plus the pods
/// it has bound but the informers do not show yet, and then:
///
/// - on a decision, sets `spec.nodeName` and `PodScheduled=True` in one write guarded by the
///   pod's resourceVersion (re-read on conflict; a deleted pod is dropped) and records a
///   `Scheduled` Event;
/// - when nothing fits, sets `PodScheduled=False` (reason `Unschedulable`, with the message)
///   and parks the pod until a cluster event may have made room (a node added or changed, a
///   pod deleted or finished); it is then retried once its backoff (1 s doubling to 10 s by
///   default) has passed, or after 5 minutes without such an event.
///
/// Pending pods wait in a [`SchedulingQueue`]: higher `spec.priority` first, then oldest.
/// Binding goes through a [`Binder`] ([`StoreBinder`] unless
/// [`with_binder`](Self::with_binder) says otherwise).
///
/// ```no_run
/// # async fn demo(store: std::sync::Arc<dyn kube_core::store::Store>) -> Result<(), kube_core::OrchestratorError> {
/// use std::sync::Arc;
/// use kube_core::Orchestrator;
/// use kube_sched::{DefaultScheduler, SchedulingLoop};
///
/// let running = Orchestrator::builder()
///     .store(store)
///     .scheduler(SchedulingLoop::new(Arc::new(DefaultScheduler::new())))
///     .build()?
///     .start();
/// running.shutdown().await
/// # }
/// ```
pub struct SchedulingLoop {
    scheduler: Arc<dyn Scheduler>,
    framework: Option<Arc<Framework>>,
    binder: Arc<dyn Binder>,
    config: SchedulingConfig,
}

/// Stands in for the scheduler's name when a [`Framework`] decides.
struct ProfileName(String);

impl Scheduler for ProfileName {
    fn name(&self) -> &str {
        &self.0
    }
    fn schedule(
        &self,
        _: &k8s_openapi::api::core::v1::Pod,
        _: &kube_core::scheduler::Snapshot,
    ) -> Result<String, ScheduleError> {
        Err(ScheduleError::Internal(
            "decisions are made by the framework".into(),
        ))
    }
}

impl fmt::Debug for SchedulingLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchedulingLoop")
            .field("scheduler", &self.scheduler.name())
            .field("binder", &self.binder)
            .field("config", &self.config)
            .finish()
    }
}

impl SchedulingLoop {
    /// A loop around `scheduler` with the default [`SchedulingConfig`].
    pub fn new(scheduler: Arc<dyn Scheduler>) -> Self {
        Self::with_config(scheduler, SchedulingConfig::default())
    }

    /// A loop around `scheduler` with `config`.
    pub fn with_config(scheduler: Arc<dyn Scheduler>, config: SchedulingConfig) -> Self {
        Self {
            scheduler,
            framework: None,
            binder: Arc::new(StoreBinder),
            config,
        }
    }

    /// A loop deciding with `framework`'s profile for pods of `scheduler_name`. It reads an
    /// incrementally maintained [`Cluster`](crate::framework::Cluster) (no snapshot is rebuilt
    /// per pod), reports failures with Kubernetes' full message (preemption included), and
    /// preempts: victims are deleted and the pod gets `status.nominatedNodeName`.
    pub fn with_framework(
        framework: Arc<Framework>,
        scheduler_name: impl Into<String>,
        config: SchedulingConfig,
    ) -> Self {
        Self {
            scheduler: Arc::new(ProfileName(scheduler_name.into())),
            framework: Some(framework),
            binder: Arc::new(StoreBinder),
            config,
        }
    }

    /// Binds with `binder` instead of [`StoreBinder`] (e.g.
    /// [`BindingSubresource`](crate::binding::BindingSubresource), or a client of an API
    /// server's `pods/binding`).
    pub fn with_binder(mut self, binder: Arc<dyn Binder>) -> Self {
        self.binder = binder;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &SchedulingConfig {
        &self.config
    }
}

#[async_trait::async_trait]
impl Component for SchedulingLoop {
    fn name(&self) -> String {
        format!("scheduler/{}", self.scheduler.name())
    }

    async fn run(self: Box<Self>, ctx: ComponentContext) -> Result<(), BoxError> {
        let pods = ctx.informers.informer(&GroupKind::POD);
        let nodes = ctx.informers.informer(&GroupKind::NODE);
        tokio::select! {
            () = ctx.shutdown.cancelled() => return Ok(()),
            () = async { tokio::join!(pods.wait_until_synced(), nodes.wait_until_synced()); } => {}
        }
        let name = self.scheduler.name().to_string();
        let shared = Arc::new(Shared {
            name: name.clone(),
            cache: Mutex::new(SchedulerCache::new(self.scheduler.name())),
            queue: Mutex::new(SchedulingQueue::new(
                self.config.backoff.base,
                self.config.backoff.max,
            )),
            wake: Notify::new(),
            scheduler: self.scheduler,
            framework: self.framework,
            binder: self.binder,
            store: ctx.store.clone(),
            events: self.config.record_events.then(|| EventRecorder::new(name)),
            leader: self.config.leader.clone(),
        });

        // Nodes first, so the first pods are not judged against an empty cluster. A new
        // subscription starts with every cached object, which `try_recv` drains. Services and
        // ReplicaSets (default spread selectors) are not waited for: pods are not held up by
        // kinds a store may not serve.
        let mut node_events = nodes.subscribe();
        let mut pod_events = pods.subscribe();
        let mut service_events = ctx.informers.informer(&GroupKind::SERVICE).subscribe();
        let mut replica_set_events = ctx.informers.informer(&GroupKind::REPLICA_SET).subscribe();
        let mut claim_events = ctx.informers.informer(&volumes::CLAIM).subscribe();
        let mut volume_events = ctx.informers.informer(&volumes::VOLUME).subscribe();
        let mut class_events = ctx.informers.informer(&volumes::CLASS).subscribe();
        shared.drain(&mut class_events, volumes::apply_class);
        shared.drain(&mut volume_events, volumes::apply_volume);
        shared.drain(&mut claim_events, volumes::apply_claim);
        shared.drain(&mut node_events, SchedulerCache::apply_node);
        shared.drain(&mut service_events, SchedulerCache::apply_service);
        shared.drain(&mut replica_set_events, SchedulerCache::apply_replica_set);
        shared.drain(&mut pod_events, SchedulerCache::apply_pod);

        let stop = ctx.shutdown.child_token();
        let mut workers = JoinSet::new();
        for _ in 0..self.config.workers.max(1) {
            workers.spawn(shared.clone().work(stop.clone()));
        }
        let mut flush = tokio::time::interval(FLUSH_INTERVAL);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(scheduler = %shared.name, "scheduling loop started");
        loop {
            tokio::select! {
                () = ctx.shutdown.cancelled() => break,
                event = pod_events.recv() => match event {
                    Some(event) => shared.on_event(&event, SchedulerCache::apply_pod),
                    None => break,
                },
                event = node_events.recv() => match event {
                    Some(event) => shared.on_event(&event, SchedulerCache::apply_node),
                    None => break,
                },
                Some(event) = service_events.recv() => {
                    shared.on_event(&event, SchedulerCache::apply_service);
                }
                Some(event) = replica_set_events.recv() => {
                    shared.on_event(&event, SchedulerCache::apply_replica_set);
                }
                Some(event) = claim_events.recv() => shared.on_event(&event, volumes::apply_claim),
                Some(event) = volume_events.recv() => shared.on_event(&event, volumes::apply_volume),
                Some(event) = class_events.recv() => shared.on_event(&event, volumes::apply_class),
                _ = flush.tick() => {
                    shared.queue().flush(Instant::now());
                    shared.wake.notify_waiters();
                }
            }
        }
        stop.cancel();
        while workers.join_next().await.is_some() {}
        tracing::info!(scheduler = %shared.name, "scheduling loop stopped");
        Ok(())
    }
}

/// A pod to evict: its key and uid.
type Victim = (ObjectKey, Option<String>);

/// Why a pod was not placed, and what preemption decided.
struct Failure {
    reason: &'static str,
    message: String,
    /// Nominated node and victims (key, uid).
    preempt: Option<(String, Vec<Victim>)>,
}

impl Failure {
    fn from_error(e: &ScheduleError) -> Self {
        let reason = if matches!(e, ScheduleError::Unschedulable { .. }) {
            "Unschedulable"
        } else {
            "SchedulerError"
        };
        Self {
            reason,
            message: failed_scheduling_message(e),
            preempt: None,
        }
    }
}

/// A decision by the framework over the incremental cluster cache. `info` is the queue's
/// parsed pod, used when it is still the cache's version of the pod.
fn decide_with_framework(
    fw: &Framework,
    cache: &mut SchedulerCache,
    pod: &Arc<k8s_openapi::api::core::v1::Pod>,
    info: &Arc<PodInfo>,
) -> Result<String, Failure> {
    let error = |message: String| Failure {
        reason: "SchedulerError",
        message,
        preempt: None,
    };
    let info = if Arc::ptr_eq(&info.pod, pod) {
        info.clone()
    } else {
        Arc::new(PodInfo::new(pod.clone()).map_err(|e| error(e.to_string()))?)
    };
    let profile = fw.profile_for(&info).map_err(|e| error(e.to_string()))?;
    match profile.schedule(cache.cluster(), &info) {
        Ok(result) => Ok(result.node),
        Err(fit) => {
            let reason = if fit.error.is_some() {
                "SchedulerError"
            } else {
                "Unschedulable"
            };
            let preempt = fit
                .post_filter
                .as_ref()
                .filter(|pf| pf.status.is_success())
                .and_then(|pf| {
                    let victims: Vec<_> = pf
                        .victims
                        .iter()
                        .map(|v| (v.key.clone(), v.uid().map(str::to_string)))
                        .collect();
                    Some((pf.nominated_node.clone()?, victims))
                });
            if let Some((_, victims)) = &preempt {
                // Stop counting the victims now, so the next cycles do not preempt for them
                // again; their deletion events confirm it.
                for (victim, _) in victims {
                    cache.evict(victim);
                }
            }
            Err(Failure {
                reason,
                message: fit.to_string(),
                preempt,
            })
        }
    }
}

/// The `FailedScheduling` text in Kubernetes' wording: "0/5 nodes are available: 3 Insufficient
/// cpu, 2 node(s) had untolerated taint {…}." (each reason counted over nodes, sorted).
fn failed_scheduling_message(e: &ScheduleError) -> String {
    let ScheduleError::Unschedulable { reasons } = e else {
        return e.to_string();
    };
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for reason in reasons.values() {
        for r in reason.split(", ").filter(|r| !r.is_empty()) {
            *counts.entry(r).or_default() += 1;
        }
    }
    let mut parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    format!(
        "0/{} nodes are available: {}.",
        reasons.len(),
        parts.join(", ")
    )
}

/// State shared by the event pump and the workers.
struct Shared {
    name: String,
    scheduler: Arc<dyn Scheduler>,
    framework: Option<Arc<Framework>>,
    binder: Arc<dyn Binder>,
    store: Arc<dyn Store>,
    cache: Mutex<SchedulerCache>,
    queue: Mutex<SchedulingQueue>,
    /// Wakes idle workers when the queue may have a pod for them.
    wake: Notify,
    /// Events about pods (`Scheduled`, `FailedScheduling`), when recorded.
    events: Option<EventRecorder>,
    leader: Option<LeaderGate>,
}

/// How one pod's turn ended.
enum Outcome {
    /// Nothing more to do for it (bound, gone, or no longer ours).
    Done,
    /// It fits nowhere: park it until a cluster event.
    Unschedulable,
    /// Try again after its backoff (an error, or a failed binding).
    Retry,
}

/// The queue's entry for a pending pod: parsed once here, reused by the cycles. A pod that
/// does not parse is queued by priority alone; its cycle reports why it cannot be scheduled.
fn queue_entry(pod: &Arc<k8s_openapi::api::core::v1::Pod>) -> Arc<PodInfo> {
    match PodInfo::new(pod.clone()) {
        Ok(info) => Arc::new(info),
        Err(_) => {
            // A different allocation than the cache's pod, so the cycle re-parses it and
            // reports the error.
            let copy = Arc::new((**pod).clone());
            Arc::new(PodInfo {
                key: ObjectKey::from_meta(&copy.metadata),
                requests: Default::default(),
                non_zero: Default::default(),
                priority: copy.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
                ports: Vec::new(),
                required_affinity: Vec::new(),
                required_anti_affinity: Vec::new(),
                preferred_affinity: Vec::new(),
                preferred_anti_affinity: Vec::new(),
                spread: Vec::new(),
                pod: copy,
            })
        }
    }
}

impl Shared {
    fn cache(&self) -> MutexGuard<'_, SchedulerCache> {
        // The cache is rebuilt from informer events; a panicked holder cannot leave it worse
        // than stale, so keep going.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn queue(&self) -> MutexGuard<'_, SchedulingQueue> {
        // Every queue operation leaves it consistent before it can panic.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn drain(
        &self,
        events: &mut UnboundedReceiver<InformerEvent>,
        apply: fn(&mut SchedulerCache, &InformerEvent) -> Requeue,
    ) {
        while let Ok(event) = events.try_recv() {
            self.on_event(&event, apply);
        }
    }

    fn on_event(
        &self,
        event: &InformerEvent,
        apply: fn(&mut SchedulerCache, &InformerEvent) -> Requeue,
    ) {
        let now = Instant::now();
        {
            let mut cache = self.cache();
            let requeue = apply(&mut cache, event);
            let mut queue = self.queue();
            match requeue {
                Requeue::Nothing => {}
                Requeue::Pod(key) => {
                    if let Some(pod) = cache.pending_pod(&key) {
                        queue.add(queue_entry(&pod), now);
                    }
                }
                Requeue::AllPending => queue.move_all_to_active_or_backoff(now),
            }
            if event.object().group_kind() == GroupKind::POD {
                // A pod bound, deleted or handed to another scheduler leaves the queue; one
                // being scheduled right now is finished by its worker.
                let key = event.object().key();
                if !cache.is_pending(&key)
                    && queue
                        .position(&key)
                        .is_some_and(|w| w != crate::queue::Where::InFlight)
                {
                    queue.delete(&key);
                }
            }
        }
        self.wake.notify_waiters();
    }

    async fn work(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = {
                let now = Instant::now();
                let mut queue = self.queue();
                queue.pop(now).ok_or_else(|| queue.next_ready_in(now))
            };
            let queued = match next {
                Ok(queued) => queued,
                Err(ready_in) => {
                    let wait = ready_in.unwrap_or(FLUSH_INTERVAL).min(FLUSH_INTERVAL);
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = &mut notified => {}
                        () = tokio::time::sleep(wait) => {}
                    }
                    continue;
                }
            };
            let key = queued.pod.key.clone();
            if self.leader.as_ref().is_some_and(|gate| !(gate.0)()) {
                // Not the leader: leave the pod to the one that is, and look again later.
                self.queue()
                    .requeue_after(&key, FOLLOWER_RECHECK, Instant::now());
                continue;
            }
            let span = tracing::debug_span!("schedule", pod = %key, scheduler = %self.name);
            let outcome = tokio::select! {
                () = stop.cancelled() => return,
                outcome = self.schedule_one(&queued.pod).instrument(span) => outcome,
            };
            let now = Instant::now();
            {
                let mut queue = self.queue();
                match outcome {
                    Outcome::Done => queue.done(&key),
                    Outcome::Unschedulable => queue.unschedulable(&key, now),
                    Outcome::Retry => queue.retry(&key, now),
                }
            }
            self.wake.notify_waiters();
        }
    }

    /// One pod's turn: decide (under the cache lock, so decisions see each other), then write.
    async fn schedule_one(&self, info: &Arc<PodInfo>) -> Outcome {
        let key = &info.key;
        let (pod, decision, volume_actions) = {
            let mut cache = self.cache();
            let Some(pod) = cache.pending_pod(key) else {
                // Bound, deleted, or no longer ours since it was queued.
                return Outcome::Done;
            };
            let decision = match &self.framework {
                Some(fw) => decide_with_framework(fw, &mut cache, &pod, info),
                None => {
                    // A plain scheduler knows nothing of volumes: it chooses among the nodes
                    // that can serve the pod's claims.
                    let (snapshot, rejected) =
                        volumes::filter_snapshot(cache.cluster(), &pod, cache.snapshot());
                    let result = self.scheduler.schedule(&pod, &snapshot);
                    volumes::merge_rejections(result, rejected).map_err(|e| Failure::from_error(&e))
                }
            };
            let mut volume_actions = Vec::new();
            if let Ok(node) = &decision {
                volume_actions = volumes::reserve(&mut cache, &pod, node);
                let parsed = Arc::ptr_eq(&info.pod, &pod).then_some(&**info);
                cache.assume(key.clone(), &pod, parsed, node);
            }
            (pod, decision, volume_actions)
        };
        let uid = pod.metadata.uid.as_deref();
        match decision {
            Ok(node) => {
                if !volume_actions.is_empty() {
                    if let Err(message) =
                        volumes::bind_volumes(&self.store, &node, &volume_actions).await
                    {
                        tracing::warn!(node, %message, "binding the pod's volumes failed");
                        self.cache().forget(key);
                        self.report_failure(key, uid, "SchedulerError", &message)
                            .await;
                        return Outcome::Retry;
                    }
                }
                self.bind(key, &pod, &node).await
            }
            Err(failure) => {
                if let Some((node, victims)) = &failure.preempt {
                    self.preempt(key, uid, node, victims).await;
                }
                let outcome = if failure.reason == "SchedulerError" {
                    tracing::warn!(message = %failure.message, "could not schedule pod");
                    Outcome::Retry
                } else {
                    tracing::debug!(message = %failure.message, "pod does not fit");
                    Outcome::Unschedulable
                };
                self.report_failure(key, uid, failure.reason, &failure.message)
                    .await;
                outcome
            }
        }
    }

    /// Deletes preemption victims (guarded by uid) and nominates the node for the pod.
    async fn preempt(&self, key: &ObjectKey, uid: Option<&str>, node: &str, victims: &[Victim]) {
        for (victim, victim_uid) in victims {
            let pre = match victim_uid {
                Some(uid) => kube_core::store::Preconditions::uid(uid.clone()),
                None => kube_core::store::Preconditions::default(),
            };
            match self.store.delete(&GroupKind::POD, victim, &pre).await {
                Ok(_) => tracing::debug!(%victim, node, "preempted pod"),
                Err(e) if e.is_not_found() => {}
                Err(e) => tracing::warn!(%victim, error = %e, "could not preempt pod"),
            }
        }
        if let Err(e) = bind::nominate(&self.store, key, uid, node).await {
            tracing::warn!(error = %e, "could not write nominatedNodeName");
        }
    }

    async fn bind(
        &self,
        key: &ObjectKey,
        pod: &k8s_openapi::api::core::v1::Pod,
        node: &str,
    ) -> Outcome {
        let uid = pod.metadata.uid.as_deref();
        match self.binder.bind(&self.store, key, uid, node).await {
            Ok(BindOutcome::Bound) => {
                tracing::debug!(node, "bound pod");
                if let Some(events) = &self.events {
                    let message = format!("Successfully assigned {key} to {node}");
                    events
                        .record(&self.store, pod, EventType::Normal, "Scheduled", message)
                        .await;
                }
                Outcome::Done
            }
            // Bound to this node already (a retried write that had landed): the informer will
            // show it and release the assumption.
            Ok(BindOutcome::AlreadyBound) => Outcome::Done,
            Ok(BindOutcome::Gone) => {
                self.cache().forget(key);
                Outcome::Done
            }
            // Gone, or bound by someone else (`pods/binding` says Conflict): the informer
            // shows what happened; a pod that still needs a node comes back through it.
            Err(e) if e.is_not_found() || e.is_conflict() => {
                tracing::debug!(node, error = %e, "pod not bound: gone or bound elsewhere");
                self.cache().forget(key);
                Outcome::Done
            }
            Err(e) => {
                tracing::warn!(node, error = %e, "binding failed; will retry");
                self.cache().forget(key);
                Outcome::Retry
            }
        }
    }

    /// Writes `PodScheduled=False` (and an Event when the message is new). A failed write is
    /// only logged: the pod is retried anyway, and the write with it.
    async fn report_failure(
        &self,
        key: &ObjectKey,
        uid: Option<&str>,
        reason: &str,
        message: &str,
    ) {
        match bind::mark_unschedulable(&self.store, key, uid, reason, message).await {
            Ok(Written::Updated(pod)) => {
                if let Some(events) = &self.events {
                    let regarding = pod.object_reference();
                    events
                        .record_reference(
                            &self.store,
                            regarding,
                            EventType::Warning,
                            "FailedScheduling",
                            message,
                        )
                        .await;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not write the PodScheduled condition"),
        }
    }
}
