//! Deployments to availability: N Deployments of R replicas over M FakeRuntime nodes, with the
//! in-memory store, kube-sched's scheduler and the Deployment and ReplicaSet controllers.
//!
//! `cargo bench -p kube-ctrl --bench controllers` (Kubernetes-scale defaults: 10000 × 3 over
//! 1000 nodes). Smaller runs: `BENCH_DEPLOYMENTS=500 BENCH_NODES=50 cargo bench ...`;
//! `BENCH_TIMEOUT=<seconds>` gives up after that long (the line then says `timed_out`);
//! `BENCH_RESYNC_SECONDS` is the node agents' periodic pod sync (default 10);
//! It prints `deployments=.. replicas=.. nodes=.. seconds_to_all_available=.. peak_rss_mb=..`.
//!
//! Then StatefulSets: `BENCH_STATEFULSETS` (default 1000) OrderedReady sets of
//! `BENCH_REPLICAS` over `BENCH_STS_NODES` (default 100) fresh nodes, with the StatefulSet
//! controller (no claim templates); the last line is `statefulsets=.. replicas=..
//! seconds_to_all_ready=.. peak_rss_mb=..` (the peak since the phase began).
//! `BENCH_DEPLOYMENTS=0` or `BENCH_STATEFULSETS=0` skips a phase.
//!
//! The scheduler is kube-sched's framework over its incremental cluster cache
//! ([`SchedulingLoop::with_framework`]), as a production scheduler runs; the snapshot-per-pod
//! loop around a plain `Scheduler` ([`SchedulingLoop::new`]) does work proportional to the
//! cluster for every pod. Availability is counted from a Deployment informer, not by listing
//! every Deployment repeatedly.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube_core::informer::{Informer, InformerEvent};
use kube_core::object::{DynamicObject, GroupKind};
use kube_core::orchestrator::Orchestrator;
use kube_core::store::Store;
use kube_core::typed::Api;
use kube_ctrl::{
    ControllerManager, DeploymentController, ReplicaSetController, StatefulSetController,
};
use kube_node::{FakeRuntime, NodeAgent};
use kube_sched::framework::Framework;
use kube_sched::{DEFAULT_SCHEDULER_NAME, SchedulingConfig, SchedulingLoop};
use kube_store::MemStore;
use tokio_util::sync::CancellationToken;

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
    if deployments > 0 {
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
    let sets = env("BENCH_STATEFULSETS", 1_000);
    if sets > 0 {
        // The peak of this phase alone: writing 5 to clear_refs resets VmHWM (Linux).
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let sts_nodes = env("BENCH_STS_NODES", 100);
        let result = runtime.block_on(run_statefulsets(sets, replicas, sts_nodes, timeout));
        let seconds = match result {
            Ok(seconds) => format!("{seconds:.2}"),
            Err(ready) => format!("timed_out({ready}/{sets})"),
        };
        println!(
            "statefulsets={sets} replicas={replicas} nodes={sts_nodes} seconds_to_all_ready={seconds} peak_rss_mb={:.1}",
            peak_rss_mb()
        );
    }
}

/// An orchestrator over a fresh MemStore with kube-sched's scheduler, `nodes` FakeRuntime
/// node agents and `controllers`.
fn cluster(
    nodes: usize,
    controllers: ControllerManager,
) -> (Arc<dyn Store>, kube_core::orchestrator::RunningOrchestrator) {
    let resync = env("BENCH_RESYNC_SECONDS", 10) as u64;
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let mut builder = Orchestrator::builder()
        .store(store.clone())
        .scheduler(SchedulingLoop::with_framework(
            Arc::new(Framework::new()),
            DEFAULT_SCHEDULER_NAME,
            SchedulingConfig::default(),
        ))
        .controllers(controllers);
    for i in 0..nodes {
        let agent = NodeAgent::builder(format!("node-{i}"), Arc::new(FakeRuntime::new()))
            .capacity("pods", "250")
            .resync_interval(Duration::from_secs(resync))
            .build()
            .unwrap();
        builder = builder.node(agent);
    }
    (store, builder.build().unwrap().start())
}

/// Seconds until every StatefulSet reports all its replicas ready, or how many did when
/// `timeout` passed.
async fn run_statefulsets(
    sets: usize,
    replicas: usize,
    nodes: usize,
    timeout: Option<Duration>,
) -> Result<f64, usize> {
    let (store, running) = cluster(
        nodes,
        ControllerManager::new()
            .workers(8)
            .with(StatefulSetController::new()),
    );
    let api: Api<StatefulSet> = Api::namespaced(store.clone(), "default");
    let want = i64::try_from(replicas).unwrap();
    let watching = CancellationToken::new();
    let informer = Informer::new(store.clone(), GroupKind::of::<StatefulSet>());
    informer.start(watching.clone());
    let mut events = informer.subscribe();
    let ready = |s: &DynamicObject| {
        s.data
            .get("status")
            .and_then(|s| s.get("readyReplicas"))
            .and_then(serde_json::Value::as_i64)
            == Some(want)
    };
    let start = Instant::now();
    for i in 0..sets {
        let set: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("db-{i}")},
            "spec": {
                "replicas": want,
                "serviceName": format!("db-{i}"),
                "selector": {"matchLabels": {"app": format!("db-{i}")}},
                "template": {
                    "metadata": {"labels": {"app": format!("db-{i}")}},
                    "spec": {"containers": [{"name": "c", "image": "db:1"}]}
                }
            }
        }))
        .unwrap();
        api.create(&set).await.unwrap();
    }
    eprintln!("created {sets} statefulsets in {:.2?}", start.elapsed());
    let mut done: HashSet<String> = HashSet::new();
    let mut last_report = Instant::now();
    let outcome = loop {
        if done.len() == sets {
            break Ok(start.elapsed().as_secs_f64());
        }
        if timeout.is_some_and(|t| start.elapsed() > t) {
            break Err(done.len());
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "{}/{sets} ready after {:.0?}, rss {:.0} MiB",
                done.len(),
                start.elapsed(),
                status_mb("VmRSS:")
            );
            last_report = Instant::now();
        }
        match tokio::time::timeout(Duration::from_secs(1), events.recv()).await {
            Ok(Some(InformerEvent::Applied(s))) if ready(&s) => {
                done.insert(s.key().name);
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

/// Seconds until every Deployment is available, or how many were when `timeout` passed.
async fn run(
    deployments: usize,
    replicas: usize,
    nodes: usize,
    timeout: Option<Duration>,
) -> Result<f64, usize> {
    // The node agents re-sync every pod they run each BENCH_RESYNC_SECONDS (Kubernetes'
    // kubelet: --sync-frequency, 1 min by default); no container exits here, so this is
    // overhead. Their pod watches (`spec.nodeName=<node>`) go to the store, which routes each
    // pod change to its node's watch only.
    let (store, running) = cluster(
        nodes,
        ControllerManager::new()
            .workers(8)
            .with(DeploymentController::new())
            .with(ReplicaSetController::new()),
    );
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
