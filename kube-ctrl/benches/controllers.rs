//! Deployments to availability: N Deployments of R replicas over M FakeRuntime nodes, with the
//! in-memory store, kube-sched's scheduler and the Deployment and ReplicaSet controllers.
//!
//! `cargo bench -p kube-ctrl --bench controllers` (Kubernetes-scale defaults: 10000 × 3 over
//! 1000 nodes). Smaller runs: `BENCH_DEPLOYMENTS=500 BENCH_NODES=50 cargo bench ...`;
//! `BENCH_TIMEOUT=<seconds>` gives up after that long (the line then says `timed_out`);
//! `BENCH_RESYNC_SECONDS` is the node agents' periodic pod sync (default 10);
//! `BENCH_WATCH_CACHE=1` puts [`NodeWatchCache`] in front of the store (see there).
//! The last line is `deployments=.. replicas=.. nodes=.. seconds_to_all_available=..
//! peak_rss_mb=..`.
//!
//! The scheduler is kube-sched's framework over its incremental cluster cache
//! ([`SchedulingLoop::with_framework`]), as a production scheduler runs; the snapshot-per-pod
//! loop around a plain `Scheduler` ([`SchedulingLoop::new`]) does work proportional to the
//! cluster for every pod. Availability is counted from a Deployment informer, not by listing
//! every Deployment repeatedly.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube_core::informer::{Informer, InformerEvent};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::orchestrator::Orchestrator;
use kube_core::store::{
    ListOptions, ObjectList, Preconditions, Store, StoreError, WatchEvent, WatchOptions,
    WatchStream,
};
use kube_core::typed::Api;
use kube_ctrl::{ControllerManager, DeploymentController, ReplicaSetController};
use kube_node::{FakeRuntime, NodeAgent};
use kube_sched::framework::Framework;
use kube_sched::{DEFAULT_SCHEDULER_NAME, SchedulingConfig, SchedulingLoop};
use kube_store::MemStore;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A watch cache for the node agents' pod watches, as kube-apiserver's (which indexes pod
/// watchers by `spec.nodeName`): one watch of every pod, each change routed to the watchers of
/// its node. Without it, each of the N node agents' filtered watches reads every change in the
/// store and evaluates its field selector, so a write costs O(N) (see the crate's notes).
/// Everything else goes straight to the store.
#[derive(Debug)]
struct NodeWatchCache {
    inner: Arc<dyn Store>,
    hub: Arc<Mutex<Hub>>,
}

/// Routed events kept for watches that start a little in the past (after their list).
const RECENT: usize = 50_000;

type Sender = mpsc::UnboundedSender<Result<WatchEvent, StoreError>>;

#[derive(Debug, Default)]
struct Hub {
    /// The node of every pod bound to one.
    nodes: HashMap<ObjectKey, String>,
    /// Recently routed `(revision, node, event)`.
    recent: VecDeque<(u64, String, WatchEvent)>,
    /// Every routed event after this revision is in `recent`.
    complete_after: u64,
    /// Last routed revision.
    position: u64,
    /// Watchers per node, each with the revision it watches from.
    watchers: HashMap<String, Vec<(u64, Sender)>>,
}

fn node_of(o: &DynamicObject) -> Option<String> {
    let node = o.data.get("spec")?.get("nodeName")?.as_str()?;
    (!node.is_empty()).then(|| node.to_string())
}

/// The node of a `spec.nodeName=<node>` pod watch.
fn node_filter(kind: &GroupKind, namespace: Option<&str>, options: &ListOptions) -> Option<String> {
    if *kind != GroupKind::POD || namespace.is_some() || options.label_selector.is_some() {
        return None;
    }
    match options.field_selector.as_ref()?.requirements() {
        [r] if r.path == "spec.nodeName" && !r.negated && !r.value.is_empty() => {
            Some(r.value.clone())
        }
        _ => None,
    }
}

impl Hub {
    fn lock(hub: &Mutex<Hub>) -> std::sync::MutexGuard<'_, Hub> {
        hub.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts over from a list at `revision`: current watchers must re-list.
    fn reset(&mut self, list: &ObjectList) {
        self.nodes = list
            .items
            .iter()
            .filter_map(|o| Some((o.key(), node_of(o)?)))
            .collect();
        self.recent.clear();
        self.complete_after = list.resource_version;
        self.position = list.resource_version;
        for (_, watchers) in self.watchers.drain() {
            for (_, tx) in watchers {
                let _ = tx.send(Err(StoreError::TooOld {
                    requested: 0,
                    oldest: list.resource_version,
                }));
            }
        }
    }

    fn route(&mut self, event: WatchEvent) {
        let mut out: Vec<(String, WatchEvent)> = Vec::new();
        let rev = match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                let rev = o.revision().unwrap_or(self.position + 1);
                let key = o.key();
                let new = node_of(&o);
                let old = match &new {
                    Some(n) => self.nodes.insert(key, n.clone()),
                    None => self.nodes.remove(&key),
                };
                match (old, new) {
                    (Some(a), Some(b)) if a == b => out.push((b, WatchEvent::Modified(o))),
                    (old, new) => {
                        if let Some(a) = old {
                            let mut last = (*o).clone();
                            last.metadata.resource_version = Some(rev.to_string());
                            out.push((a, WatchEvent::Deleted(Arc::new(last))));
                        }
                        if let Some(b) = new {
                            out.push((b, WatchEvent::Added(o)));
                        }
                    }
                }
                rev
            }
            WatchEvent::Deleted(o) => {
                let rev = o.revision().unwrap_or(self.position + 1);
                if let Some(a) = self.nodes.remove(&o.key()) {
                    out.push((a, WatchEvent::Deleted(o)));
                }
                rev
            }
            WatchEvent::Bookmark { .. } => return,
        };
        self.position = rev;
        for (node, event) in out {
            if let Some(watchers) = self.watchers.get_mut(&node) {
                watchers.retain(|(from, tx)| rev <= *from || tx.send(Ok(event.clone())).is_ok());
            }
            self.recent.push_back((rev, node, event));
            if self.recent.len() > RECENT {
                if let Some((r, _, _)) = self.recent.pop_front() {
                    self.complete_after = r;
                }
            }
        }
    }

    fn register(&mut self, node: String, from: Option<u64>) -> Result<WatchStream, StoreError> {
        let from = from.unwrap_or(self.position);
        if from < self.complete_after {
            return Err(StoreError::TooOld {
                requested: from,
                oldest: self.complete_after,
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        for (rev, n, event) in &self.recent {
            if *rev > from && *n == node {
                let _ = tx.send(Ok(event.clone()));
            }
        }
        self.watchers.entry(node).or_default().push((from, tx));
        Ok(
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
                .boxed(),
        )
    }
}

impl NodeWatchCache {
    /// A cache over `inner`, following it from now on.
    async fn new(inner: Arc<dyn Store>) -> Arc<Self> {
        let hub = Arc::new(Mutex::new(Hub::default()));
        let list = inner
            .list(&GroupKind::POD, None, &ListOptions::default())
            .await
            .unwrap();
        Hub::lock(&hub).reset(&list);
        tokio::spawn(follow(inner.clone(), hub.clone(), list.resource_version));
        Arc::new(Self { inner, hub })
    }
}

/// Routes every pod change; after falling behind the store's history, starts over.
async fn follow(inner: Arc<dyn Store>, hub: Arc<Mutex<Hub>>, mut from: u64) {
    loop {
        let options = WatchOptions::from_revision(from);
        if let Ok(mut stream) = inner.watch(&GroupKind::POD, None, &options).await {
            while let Some(Ok(event)) = stream.next().await {
                Hub::lock(&hub).route(event);
            }
        }
        match inner
            .list(&GroupKind::POD, None, &ListOptions::default())
            .await
        {
            Ok(list) => {
                Hub::lock(&hub).reset(&list);
                from = list.resource_version;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[async_trait::async_trait]
impl Store for NodeWatchCache {
    async fn get(&self, kind: &GroupKind, key: &ObjectKey) -> Result<DynamicObject, StoreError> {
        self.inner.get(kind, key).await
    }

    async fn list(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ObjectList, StoreError> {
        self.inner.list(kind, namespace, options).await
    }

    async fn create(&self, object: DynamicObject) -> Result<DynamicObject, StoreError> {
        self.inner.create(object).await
    }

    async fn update(&self, object: DynamicObject) -> Result<DynamicObject, StoreError> {
        self.inner.update(object).await
    }

    async fn delete(
        &self,
        kind: &GroupKind,
        key: &ObjectKey,
        preconditions: &Preconditions,
    ) -> Result<DynamicObject, StoreError> {
        self.inner.delete(kind, key, preconditions).await
    }

    async fn watch(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &WatchOptions,
    ) -> Result<WatchStream, StoreError> {
        match node_filter(kind, namespace, &options.filter) {
            Some(node) if !options.bookmarks => {
                Hub::lock(&self.hub).register(node, options.resource_version)
            }
            _ => self.inner.watch(kind, namespace, options).await,
        }
    }

    async fn current_revision(&self) -> Result<u64, StoreError> {
        self.inner.current_revision().await
    }

    async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A memory figure of this process from /proc/self/status, in MiB (Linux; 0 elsewhere).
fn status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Peak resident set size of this process, in MiB.
fn peak_rss_mb() -> f64 {
    status_mb("VmHWM:")
}

/// Whether a Deployment reports `want` available replicas.
fn available(d: &DynamicObject, want: i64) -> bool {
    d.data
        .get("status")
        .and_then(|s| s.get("availableReplicas"))
        .and_then(serde_json::Value::as_i64)
        == Some(want)
}

fn main() {
    // cargo passes `--bench`; no other flags are used.
    let deployments = env("BENCH_DEPLOYMENTS", 10_000);
    let replicas = env("BENCH_REPLICAS", 3);
    let nodes = env("BENCH_NODES", 1_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let timeout = env("BENCH_TIMEOUT", 0);
    let timeout = (timeout > 0).then(|| Duration::from_secs(timeout as u64));
    let result = runtime.block_on(run(deployments, replicas, nodes, timeout));
    let seconds = match result {
        Ok(seconds) => format!("{seconds:.2}"),
        Err(available) => format!("timed_out({available}/{deployments})"),
    };
    println!(
        "deployments={deployments} replicas={replicas} nodes={nodes} seconds_to_all_available={seconds} peak_rss_mb={:.1}",
        peak_rss_mb()
    );
}

/// Seconds until every Deployment is available, or how many were when `timeout` passed.
async fn run(
    deployments: usize,
    replicas: usize,
    nodes: usize,
    timeout: Option<Duration>,
) -> Result<f64, usize> {
    // How often each node agent re-syncs every pod it runs (Kubernetes' kubelet:
    // --sync-frequency, 1 min by default). No container exits here, so this is overhead.
    let resync = env("BENCH_RESYNC_SECONDS", 10) as u64;
    let mut store: Arc<dyn Store> = Arc::new(MemStore::new());
    if env("BENCH_WATCH_CACHE", 0) == 1 {
        store = NodeWatchCache::new(store).await;
    }
    let mut builder = Orchestrator::builder()
        .store(store.clone())
        .scheduler(SchedulingLoop::with_framework(
            Arc::new(Framework::new()),
            DEFAULT_SCHEDULER_NAME,
            SchedulingConfig::default(),
        ))
        .controllers(
            ControllerManager::new()
                .workers(8)
                .with(DeploymentController::new())
                .with(ReplicaSetController::new()),
        );
    for i in 0..nodes {
        let agent = NodeAgent::builder(format!("node-{i}"), Arc::new(FakeRuntime::new()))
            .capacity("pods", "250")
            .resync_interval(Duration::from_secs(resync))
            .build()
            .unwrap();
        builder = builder.node(agent);
    }
    let running = builder.build().unwrap().start();
    let api: Api<Deployment> = Api::namespaced(store.clone(), "default");
    let want = i32::try_from(replicas).unwrap();

    let watching = CancellationToken::new();
    let informer = Informer::new(store.clone(), GroupKind::of::<Deployment>());
    informer.start(watching.clone());
    let mut events = informer.subscribe();
    let want_i64 = i64::from(want);

    let start = Instant::now();
    for i in 0..deployments {
        let d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("app-{i}")},
            "spec": {
                "replicas": want,
                "selector": {"matchLabels": {"app": format!("app-{i}")}},
                "template": {
                    "metadata": {"labels": {"app": format!("app-{i}")}},
                    "spec": {"containers": [{"name": "c", "image": "app:1"}]}
                }
            }
        }))
        .unwrap();
        api.create(&d).await.unwrap();
    }
    eprintln!(
        "created {deployments} deployments in {:.2?}",
        start.elapsed()
    );
    let mut done: HashSet<String> = HashSet::new();
    let mut last_report = Instant::now();
    let outcome = loop {
        if done.len() == deployments {
            break Ok(start.elapsed().as_secs_f64());
        }
        if timeout.is_some_and(|t| start.elapsed() > t) {
            break Err(done.len());
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "{}/{deployments} available after {:.0?}, rss {:.0} MiB",
                done.len(),
                start.elapsed(),
                status_mb("VmRSS:")
            );
            last_report = Instant::now();
        }
        match tokio::time::timeout(Duration::from_secs(1), events.recv()).await {
            Ok(Some(InformerEvent::Applied(d))) if available(&d, want_i64) => {
                done.insert(d.key().name);
            }
            Ok(Some(event)) => {
                done.remove(&event.object().key().name);
            }
            Ok(None) => break Err(done.len()),
            Err(_) => {}
        }
    };
    watching.cancel();
    let _ = running.shutdown().await;
    outcome
}
