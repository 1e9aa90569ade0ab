//! Deployments to availability: N Deployments of R replicas over M FakeRuntime nodes, with the
//! in-memory store, kube-sched's scheduler and the Deployment and ReplicaSet controllers.
//!
//! `cargo bench -p kube-ctrl --bench controllers` (Kubernetes-scale defaults: 10000 × 3 over
//! 1000 nodes). Smaller runs: `BENCH_DEPLOYMENTS=500 BENCH_NODES=50 cargo bench ...`;
//! `BENCH_TIMEOUT=<seconds>` gives up after that long (the line then says `timed_out`);
//! `BENCH_RESYNC_SECONDS` is the node agents' periodic pod sync (default 10);
//! The last line is `deployments=.. replicas=.. nodes=.. seconds_to_all_available=..
//! peak_rss_mb=..`.
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

use k8s_openapi::api::apps::v1::Deployment;
use kube_core::informer::{Informer, InformerEvent};
use kube_core::object::{DynamicObject, GroupKind};
use kube_core::orchestrator::Orchestrator;
use kube_core::store::Store;
use kube_core::typed::Api;
use kube_ctrl::{ControllerManager, DeploymentController, ReplicaSetController};
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
    // The node agents' pod watches (`spec.nodeName=<node>`) go to the store, which routes each
    // pod change to its node's watch only.
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
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
