//! How fast the test harness gets a big cluster going: `TestCluster` with 1,000 nodes until
//! every Node is registered and Ready, then a Deployment of 1,000 pods until all run.
//!
//! `cargo bench -p kube-parts --bench harness --features testing`; smaller or larger runs with
//! `BENCH_NODES=.. BENCH_PODS=..`, and `BENCH_RUNTIME=current_thread` for the runtime
//! `#[tokio::test]` uses (default: multi-threaded). The last line is
//! `nodes=.. ready_ms=.. pods=.. pods_running_ms=..`.
//!
//! Measured (2 cores shared with other builds, load average ≈ 4.3): multi-threaded
//! `nodes=1000 ready_ms=177..348 pods=1000 pods_running_ms=1616..3050`; current-thread
//! `ready_ms=150 pods_running_ms=3985`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube_parts::testing::TestCluster;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let nodes = env("BENCH_NODES", 1_000);
    let pods = env("BENCH_PODS", 1_000);
    let runtime = match std::env::var("BENCH_RUNTIME").as_deref() {
        Ok("current_thread") => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    }
    .enable_all()
    .build()
    .unwrap();
    let (ready, running) = runtime.block_on(run(nodes, pods));
    println!(
        "nodes={nodes} ready_ms={:.0} pods={pods} pods_running_ms={:.0}",
        ready.as_secs_f64() * 1e3,
        running.as_secs_f64() * 1e3
    );
}

async fn run(nodes: usize, pods: usize) -> (Duration, Duration) {
    let started = Instant::now();
    let cluster = TestCluster::builder()
        .nodes(nodes)
        .wait_timeout(Duration::from_secs(300))
        .start()
        .await
        .unwrap();
    let ready = started.elapsed();

    let replicas = i32::try_from(pods).unwrap();
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bench"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {"containers": [{"name": "c", "image": "bench:1",
                                         "resources": {"requests": {"cpu": "10m"}}}]}
            }
        }
    }))
    .unwrap();
    let started = Instant::now();
    cluster
        .api::<Deployment>("default")
        .create(&deployment)
        .await
        .unwrap();
    cluster
        .wait_until_pods_running("default", "app=bench", pods)
        .await
        .unwrap();
    let running = started.elapsed();
    cluster.shutdown().await.unwrap();
    (ready, running)
}
