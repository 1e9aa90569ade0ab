//! [`SchedulingLoop`]: the component that finds unbound pods, asks a [`Scheduler`] where they
//! go, and binds them.
//!
//! Pipeline: shared Pod and Node informers → [`cache`] (typed mirror plus assumed pods) → a
//! [`WorkQueue`] of pod keys → workers, each running one scheduling cycle (snapshot, decide,
//! assume; serialized so decisions see each other) and then a binding write ([`bind`]) that may
//! overlap with the next cycle.

pub(crate) mod bind;
mod cache;
mod condition;
mod events;
mod pod_state;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kube_core::informer::InformerEvent;
use kube_core::object::{GroupKind, ObjectKey};
use kube_core::orchestrator::{BoxError, Component, ComponentContext};
use kube_core::scheduler::{ScheduleError, Scheduler};
use kube_core::store::Store;
use kube_core::workqueue::{Backoff, WorkQueue};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use bind::Written;
use cache::{Requeue, SchedulerCache};

/// How a [`SchedulingLoop`] runs.
#[derive(Clone, Debug)]
pub struct SchedulingConfig {
    /// Concurrent workers. Decisions are always made one at a time (so they see each other's
    /// assumed pods); more workers only overlap the store writes. Default 1.
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

impl Default for SchedulingConfig {
    fn default() -> Self {
        Self {
            workers: 1,
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
///   and retries with backoff, or at once when a node is added or changes or a pod frees
///   resources.
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
    config: SchedulingConfig,
}

impl fmt::Debug for SchedulingLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchedulingLoop")
            .field("scheduler", &self.scheduler.name())
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
        Self { scheduler, config }
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
        let shared = Arc::new(Shared {
            name: self.scheduler.name().to_string(),
            cache: Mutex::new(SchedulerCache::new(self.scheduler.name())),
            queue: WorkQueue::new(self.config.backoff),
            scheduler: self.scheduler,
            store: ctx.store.clone(),
            record_events: self.config.record_events,
            leader: self.config.leader.clone(),
        });

        // Nodes first, so the first pods are not judged against an empty cluster. A new
        // subscription starts with every cached object, which `try_recv` drains.
        let mut node_events = nodes.subscribe();
        let mut pod_events = pods.subscribe();
        shared.drain(&mut node_events, SchedulerCache::apply_node);
        shared.drain(&mut pod_events, SchedulerCache::apply_pod);

        let mut workers = JoinSet::new();
        for _ in 0..self.config.workers.max(1) {
            workers.spawn(shared.clone().work(ctx.shutdown.clone()));
        }
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
            }
        }
        shared.queue.shut_down();
        while workers.join_next().await.is_some() {}
        tracing::info!(scheduler = %shared.name, "scheduling loop stopped");
        Ok(())
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
    store: Arc<dyn Store>,
    cache: Mutex<SchedulerCache>,
    queue: WorkQueue<ObjectKey>,
    record_events: bool,
    leader: Option<LeaderGate>,
}

/// How one pod's turn ended.
enum Outcome {
    /// Nothing more to do for it.
    Done,
    /// Try again after its backoff.
    Retry,
}

impl Shared {
    fn cache(&self) -> MutexGuard<'_, SchedulerCache> {
        // The cache is rebuilt from informer events; a panicked holder cannot leave it worse
        // than stale, so keep going.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
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
        let keys = {
            let mut cache = self.cache();
            match apply(&mut cache, event) {
                Requeue::Nothing => Vec::new(),
                Requeue::Pod(key) => vec![key],
                Requeue::AllPending => cache.pending_keys(),
            }
        };
        for key in keys {
            self.queue.add(key);
        }
    }

    async fn work(self: Arc<Self>, shutdown: CancellationToken) {
        while let Some(key) = self.queue.get().await {
            if self.leader.as_ref().is_some_and(|gate| !(gate.0)()) {
                // Not the leader: leave the pod to the one that is, and look again later.
                self.queue.add_after(key.clone(), FOLLOWER_RECHECK);
                self.queue.done(&key);
                continue;
            }
            let span = tracing::debug_span!("schedule", pod = %key, scheduler = %self.name);
            let outcome = tokio::select! {
                () = shutdown.cancelled() => None,
                outcome = self.schedule_one(&key).instrument(span) => Some(outcome),
            };
            match outcome {
                Some(Outcome::Done) => self.queue.forget(&key),
                Some(Outcome::Retry) => self.queue.add_rate_limited(key.clone()),
                None => {}
            }
            self.queue.done(&key);
        }
    }

    /// One pod's turn: decide (under the cache lock, so decisions see each other), then write.
    async fn schedule_one(&self, key: &ObjectKey) -> Outcome {
        let (pod, decision) = {
            let mut cache = self.cache();
            let Some(pod) = cache.pending_pod(key) else {
                // Bound, deleted, or no longer ours since it was queued.
                return Outcome::Done;
            };
            let decision = self.scheduler.schedule(&pod, &cache.snapshot());
            if let Ok(node) = &decision {
                cache.assume(key.clone(), &pod, node);
            }
            (pod, decision)
        };
        let uid = pod.metadata.uid.as_deref();
        match decision {
            Ok(node) => self.bind(key, uid, &node).await,
            Err(e) => {
                let message = failed_scheduling_message(&e);
                let reason = if matches!(e, ScheduleError::Unschedulable { .. }) {
                    tracing::debug!(%message, "pod does not fit");
                    "Unschedulable"
                } else {
                    tracing::warn!(%message, "could not schedule pod");
                    "SchedulerError"
                };
                self.report_failure(key, uid, reason, &message).await;
                Outcome::Retry
            }
        }
    }

    async fn bind(&self, key: &ObjectKey, uid: Option<&str>, node: &str) -> Outcome {
        match bind::bind(&self.store, key, uid, node).await {
            Ok(Written::Updated(pod)) => {
                tracing::debug!(node, "bound pod");
                if self.record_events {
                    let message = format!("Successfully assigned {key} to {node}");
                    events::record(
                        &self.store,
                        &self.name,
                        &pod,
                        events::NORMAL,
                        "Scheduled",
                        message,
                    )
                    .await;
                }
                Outcome::Done
            }
            // Bound to this node already (a retried write that had landed): the informer will
            // show it and release the assumption.
            Ok(Written::AlreadySo) => Outcome::Done,
            Ok(Written::Gone) => {
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
            Ok(Written::Updated(pod)) if self.record_events => {
                events::record(
                    &self.store,
                    &self.name,
                    &pod,
                    events::WARNING,
                    "FailedScheduling",
                    message.to_string(),
                )
                .await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not write the PodScheduled condition"),
        }
    }
}
