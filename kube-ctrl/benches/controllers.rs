//! Deployments to availability: N Deployments of R replicas over M FakeRuntime nodes, with the
//! in-memory store, kube-sched's scheduler and the Deployment and ReplicaSet controllers.
//!
//! `cargo bench -p kube-ctrl --bench controllers` (Kubernetes-scale defaults: 10000 × 3 over
//! 1000 nodes). Smaller runs: `BENCH_DEPLOYMENTS=500 BENCH_NODES=50 cargo bench ...`.
//! The last line is `deployments=.. replicas=.. nodes=.. seconds_to_all_available=..
//! peak_rss_mb=..`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube_core::orchestrator::Orchestrator;
use kube_core::store::Store;
use kube_core::typed::Api;
use kube_ctrl::{ControllerManager, DeploymentController, ReplicaSetController};
use kube_node::{FakeRuntime, NodeAgent};
use kube_sched::{DefaultScheduler, SchedulingLoop};
use kube_store::MemStore;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident set size of this process, in MiB (Linux; 0 elsewhere).
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
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
    let seconds = runtime.block_on(run(deployments, replicas, nodes));
    println!(
        "deployments={deployments} replicas={replicas} nodes={nodes} seconds_to_all_available={seconds:.2} peak_rss_mb={:.1}",
        peak_rss_mb()
    );
}

async fn run(deployments: usize, replicas: usize, nodes: usize) -> f64 {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let mut builder = Orchestrator::builder()
        .store(store.clone())
        .scheduler(SchedulingLoop::new(Arc::new(DefaultScheduler::new())))
        .controllers(
            ControllerManager::new()
                .workers(8)
                .with(DeploymentController::new())
                .with(ReplicaSetController::new()),
        );
    for i in 0..nodes {
        let agent = NodeAgent::builder(format!("node-{i}"), Arc::new(FakeRuntime::new()))
            .capacity("pods", "250")
            .build()
            .unwrap();
        builder = builder.node(agent);
    }
    let running = builder.build().unwrap().start();
    let api: Api<Deployment> = Api::namespaced(store.clone(), "default");
    let want = i32::try_from(replicas).unwrap();

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
    let mut last_report = Instant::now();
    loop {
        let list = api.list(&Default::default()).await.unwrap().items;
        let available = list
            .iter()
            .filter(|d| d.status.as_ref().and_then(|s| s.available_replicas) == Some(want))
            .count();
        if available == deployments {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "{available}/{deployments} available after {:.0?}",
                start.elapsed()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let _ = running.shutdown().await;
    seconds
}
