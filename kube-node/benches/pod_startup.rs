//! Pod startup latency: from a pod bound to the node (created with `spec.nodeName`) to the pod
//! Running with Ready=True, node agent and runtime together.
//!
//! ```sh
//! cargo bench -p kube-node --bench pod_startup -- --runtime <fake|process|runc|containerd|docker> --pods N [--concurrency C] [--warmup W]
//! ```
//!
//! Pods are created `C` at a time (default 1: each pod alone, pure latency), after `W`
//! warm-up pods (default 1) whose one-time costs (the first CNI bridge, the first snapshot)
//! are reported on their own line but not counted; the final line is
//! `runtime=R pods=N startup_p50_ms=<x> startup_p99_ms=<x>`. runc, containerd and docker need
//! root; containerd and dockerd are started privately (see `tests/it/containerd_env.rs`), and
//! dockerd pulls busybox from a registry on loopback (`tests/it/registry.rs`) through its
//! mirror setting.

#[path = "../tests/it/containerd_env.rs"]
mod containerd_env;
#[path = "../tests/it/registry.rs"]
mod registry;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use kube_core::api::Pod;
use kube_core::orchestrator::Orchestrator;
use kube_core::runtime::Runtime;
use kube_core::store::{Preconditions, Store};
use kube_core::typed::Api;
use kube_node::{FakeRuntime, NodeAgent, OciRuntime, ProcessRuntime};

struct Args {
    runtime: String,
    pods: usize,
    concurrency: usize,
    warmup: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        runtime: "fake".into(),
        pods: 20,
        concurrency: 1,
        warmup: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runtime" => a.runtime = it.next().context("--runtime needs a value")?,
            "--pods" => a.pods = it.next().context("--pods needs a value")?.parse()?,
            "--warmup" => a.warmup = it.next().context("--warmup needs a value")?.parse()?,
            "--concurrency" => {
                a.concurrency = it.next().context("--concurrency needs a value")?.parse()?
            }
            // cargo passes --bench; anything else unknown is ignored too.
            _ => {}
        }
    }
    anyhow::ensure!(
        a.pods > 0 && a.concurrency > 0,
        "--pods and --concurrency must be > 0"
    );
    Ok(a)
}

fn pod(name: &str, image: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": "bench-node",
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": image, "command": ["sleep", "3600"]}]
        }
    }))?)
}

fn ready(p: &Pod) -> bool {
    let Some(s) = &p.status else { return false };
    s.phase.as_deref() == Some("Running")
        && s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let dir = tempfile::tempdir()?;
    let mut containerd = None;
    let mut docker = None;
    let (runtime, image): (Arc<dyn Runtime>, &str) = match a.runtime.as_str() {
        "fake" => (Arc::new(FakeRuntime::new()), "busybox"),
        "process" => (Arc::new(ProcessRuntime::temp()?), "busybox"),
        "runc" => {
            let rootfs = kube_node::image::busybox_rootfs(
                &dir.path().join("busybox"),
                std::path::Path::new(kube_node::image::HOST_BUSYBOX),
            )?;
            let oci = OciRuntime::builder()
                .root_dir(dir.path().join("oci"))
                .image("busybox", rootfs)
                .build()?;
            (Arc::new(oci), "busybox")
        }
        "containerd" => {
            let c = containerd_env::Containerd::start("kn-bench0", "10.215.0.0/24")?;
            let rt = c.runtime().await?;
            containerd = Some(c);
            (Arc::new(rt), "busybox")
        }
        "docker" => {
            let reg = registry::Registry::start();
            reg.push(
                "library/busybox",
                "1",
                &registry::TestImage::busybox(&[], &["sh"]),
            )
            .await;
            let d = containerd_env::Dockerd::start(Some(&reg.host()), &[])?;
            let rt = d.runtime("busybox:1").await?;
            // Pulled once up front, and tagged (policy IfNotPresent): startup latency, not
            // pull time, is measured.
            rt.pull_image("busybox:1", None, None).await?;
            docker = Some((d, reg));
            (Arc::new(rt), "busybox:1")
        }
        other => {
            anyhow::bail!("unknown runtime {other:?} (fake, process, runc, containerd, docker)")
        }
    };
    let store = Arc::new(kube_store::MemStore::new()) as Arc<dyn Store>;
    // Pods stay until the end: the node must fit them all (the default is Kubernetes' 110).
    let total = a.warmup + a.pods;
    let agent = NodeAgent::builder("bench-node", runtime.clone())
        .capacity("pods", (total + 10).to_string())
        .build()?;
    let running = Orchestrator::builder()
        .store(store.clone())
        .node(agent)
        .build()?
        .start();
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");

    let mut latencies = Vec::with_capacity(total);
    let mut n = 0;
    while n < total {
        let wave = if n < a.warmup {
            1
        } else {
            a.concurrency.min(total - n)
        };
        let mut created: HashMap<String, Instant> = HashMap::new();
        for i in n..n + wave {
            let name = format!("p{i}");
            pods.create(&pod(&name, image)?).await?;
            created.insert(name, Instant::now());
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while !created.is_empty() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "pods not ready after 60 s: {created:?}"
            );
            for p in pods.list(&Default::default()).await?.items {
                let name = p.metadata.name.clone().unwrap_or_default();
                if ready(&p)
                    && let Some(t0) = created.remove(&name)
                {
                    latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        n += wave;
    }
    for i in 0..total {
        pods.delete(&format!("p{i}"), &Preconditions::default())
            .await?;
    }
    // Let the agent tear the pods down before the runtime goes.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !runtime.list_pod_sandboxes().await?.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.shutdown().await?;
    if let Some(c) = containerd {
        c.stop().await?;
    }
    drop(docker);

    let warm: Vec<f64> = latencies.drain(..a.warmup).collect();
    if !warm.is_empty() {
        println!("warmup_pods={} warmup_ms={warm:.1?}", warm.len());
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "concurrency={} min_ms={:.1} max_ms={:.1}",
        a.concurrency,
        latencies[0],
        latencies[latencies.len() - 1]
    );
    println!(
        "runtime={} pods={} startup_p50_ms={:.1} startup_p99_ms={:.1}",
        a.runtime,
        a.pods,
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0)
    );
    Ok(())
}
