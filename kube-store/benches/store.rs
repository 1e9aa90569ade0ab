//! Store benchmark: one workload on every backend.
//!
//! 64 concurrent writers create and then update ~1 KiB pod objects (8 namespaces of 8
//! writers), one watcher per 8 writers (one per namespace), and 8 concurrent readers, for a
//! fixed time per backend (after a 1 s warm-up on a throwaway in-memory store, `--warmup S`).
//! Watch latency is measured from a write's acknowledgement to its
//! delivery to the watcher of its namespace. Writers and readers use the `*_shared` calls (the
//! stored object comes back shared, not copied), as the API server does.
//!
//! ```sh
//! cargo bench -p kube-store --bench store --features etcd      # memory, durable, etcd
//! cargo bench -p kube-store --bench store -- --seconds 5 --backend durable
//! ```
//! Updates change an annotation, which shares the object's spec and status with the version
//! before (copy-on-write `Fields`); `--update status` makes every update also write `status`,
//! as node agents do, so the fields are copied each time.
//! Prints one line per backend:
//! `backend=<memory|durable|etcd> writes_per_sec=<n> reads_per_sec=<n> watch_p50_ms=<x> watch_p99_ms=<x>`

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::{Store, WatchEvent, WatchOptions};
use kube_store::{DurableStore, MemStore};

// Binaries that embed the store choose their allocator; glibc's arenas fault pages in and out
// under the store's churn (a retained history of 100,000 changes freed oldest-first).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use serde_json::json;

const WRITERS: usize = 64;
const PER_NAMESPACE: usize = 8;
const READERS: usize = 8;
const OBJECTS_PER_WRITER: usize = 16;

fn pod(namespace: &str, name: &str, generation: u64) -> DynamicObject {
    // About 1 KiB once serialized, like a small real pod.
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": namespace,
            "labels": {"app": "bench", "tier": "backend", "writer": name},
            "annotations": {"bench/generation": generation.to_string(), "bench/padding": "x".repeat(420)}
        },
        "spec": {
            "nodeName": "node-1",
            "containers": [{
                "name": "app", "image": "registry.example/app:1.2.3",
                "command": ["/bin/app", "--serve", "--port=8080"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "env": [{"name": "MODE", "value": "bench"}, {"name": "LEVEL", "value": "info"}]
            }]
        }
    }))
    .expect("valid pod")
}

struct Figures {
    writes_per_sec: f64,
    reads_per_sec: f64,
    watch_p50_ms: f64,
    watch_p99_ms: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

async fn run(store: Arc<dyn Store>, seconds: f64, status_updates: bool) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let start_revision = store.current_revision().await.expect("revision");
    let namespaces = WRITERS / PER_NAMESPACE;

    // Watchers record when each revision arrived.
    let mut watchers = Vec::new();
    for n in 0..namespaces {
        let store = store.clone();
        let stop = stop.clone();
        watchers.push(tokio::spawn(async move {
            let ns = format!("bench-{n}");
            let mut arrivals = Vec::new();
            let mut w = store
                .watch(
                    &GroupKind::POD,
                    Some(&ns),
                    &WatchOptions::from_revision(start_revision),
                )
                .await
                .expect("watch");
            loop {
                let next = tokio::time::timeout(Duration::from_millis(500), w.next()).await;
                match next {
                    Ok(Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)))) => {
                        arrivals.push((o.revision().unwrap_or(0), Instant::now()));
                    }
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(e))) => panic!("watch failed: {e}"),
                    Ok(None) => break,
                    Err(_) if stop.load(Ordering::Relaxed) => break,
                    Err(_) => {}
                }
            }
            arrivals
        }));
    }

    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for r in 0..READERS {
        let store = store.clone();
        let stop = stop.clone();
        let reads = reads.clone();
        readers.push(tokio::spawn(async move {
            let mut i = r;
            while !stop.load(Ordering::Relaxed) {
                let w = i % WRITERS;
                let key = ObjectKey::namespaced(
                    format!("bench-{}", w / PER_NAMESPACE),
                    format!("w{w}-{}", i % OBJECTS_PER_WRITER),
                );
                // Not-found reads (objects not yet created) count: they are served reads too.
                let _ = store.get_shared(&GroupKind::POD, &key).await;
                reads.fetch_add(1, Ordering::Relaxed);
                i += 7;
                // An in-memory get never waits: yield so readers share the threads with writers.
                tokio::task::yield_now().await;
            }
        }));
    }

    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let ns = format!("bench-{}", w / PER_NAMESPACE);
            let mut acks = Vec::new();
            // The objects as last written, shared with the store (`*_shared`: no copy back).
            let mut current: HashMap<usize, Arc<DynamicObject>> = HashMap::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let slot = (i as usize) % OBJECTS_PER_WRITER;
                let result = match current.remove(&slot) {
                    None => {
                        store
                            .create_shared(pod(&ns, &format!("w{w}-{slot}"), i))
                            .await
                    }
                    Some(last) => {
                        let mut o = Arc::unwrap_or_clone(last);
                        o.metadata
                            .annotations
                            .get_or_insert_default()
                            .insert("bench/generation".into(), i.to_string());
                        if status_updates {
                            // As a node agent reports a pod: the fields are copied on write.
                            o.data.insert(
                                "status".into(),
                                json!({"phase": "Running", "observedGeneration": i}),
                            );
                        }
                        store.update_shared(o).await
                    }
                };
                let o = result.expect("write");
                tokio::task::yield_now().await;
                acks.push((o.revision().unwrap_or(0), Instant::now()));
                current.insert(slot, o);
                i += 1;
            }
            acks
        }));
    }
    let mut acked = HashMap::new();
    for w in writers {
        for (revision, at) in w.await.expect("writer") {
            acked.insert(revision, at);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let total_reads = reads.load(Ordering::Relaxed);
    for r in readers {
        r.await.expect("reader");
    }
    let mut latencies = Vec::new();
    for w in watchers {
        for (revision, arrived) in w.await.expect("watcher") {
            if let Some(ack) = acked.get(&revision) {
                latencies.push(arrived.saturating_duration_since(*ack));
            }
        }
    }
    latencies.sort();
    Figures {
        writes_per_sec: acked.len() as f64 / elapsed,
        reads_per_sec: total_reads as f64 / elapsed,
        watch_p50_ms: percentile(&latencies, 0.50),
        watch_p99_ms: percentile(&latencies, 0.99),
    }
}

fn print(backend: &str, f: &Figures) {
    println!(
        "backend={backend} writes_per_sec={:.0} reads_per_sec={:.0} watch_p50_ms={:.2} watch_p99_ms={:.2}",
        f.writes_per_sec, f.reads_per_sec, f.watch_p50_ms, f.watch_p99_ms
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let seconds: f64 = value("--seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let only = value("--backend");
    let status = value("--update").as_deref() == Some("status");
    let wanted = |b: &str| only.as_deref().is_none_or(|o| o == b);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let warmup: f64 = value("--warmup")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    runtime.block_on(async {
        // The same workload on a throwaway store first, not counted: the first seconds on a
        // machine that was idle ran a third slower (clock and scheduler ramp-up), which
        // otherwise lands on whichever backend is measured first.
        if warmup > 0.0 {
            let _ = run(Arc::new(MemStore::new()), warmup, status).await;
        }
        if wanted("memory") {
            print(
                "memory",
                &run(Arc::new(MemStore::new()), seconds, status).await,
            );
        }
        if wanted("durable") {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = DurableStore::open(dir.path()).expect("open");
            print("durable", &run(Arc::new(store), seconds, status).await);
        }
        #[cfg(feature = "etcd")]
        if wanted("etcd") {
            let etcd = kube_store::local_etcd::LocalEtcd::single().expect("start etcd");
            let store =
                kube_store::EtcdStore::connect(kube_store::EtcdConfig::new(etcd.endpoints()))
                    .await
                    .expect("connect");
            print("etcd", &run(Arc::new(store), seconds, status).await);
        }
        #[cfg(not(feature = "etcd"))]
        if wanted("etcd") {
            eprintln!("backend=etcd skipped: build with --features etcd");
        }
    });
}
