//! Scheduling throughput, modelled on kube-scheduler's scheduler_perf.
//!
//! `cargo bench -p kube-sched --bench scheduling -- --workload W --nodes N --init-pods I --pods P`
//!
//! Workloads: `basic`, `node-affinity`, `pod-anti-affinity` (required, hostname topology),
//! `topology-spread` (zones, maxSkew 1, DoNotSchedule), `preemption` (5000 nodes full of
//! low-priority pods, as scheduler_perf's PreemptionBasic/5000Nodes: each measured pod evicts
//! one and comes back with `status.nominatedNodeName`, as the scheduling loop writes it).
//! Setup (nodes, init pods, the measured pods created unbound in a `MemStore`) is not timed. Timed: from the first measured pod entering the scheduling queue
//! to the last one bound in the store. One thread schedules (filter/score may fan out over
//! rayon's pool), one thread binds, so the next pod is scheduled while the last one binds.
//! `p99_ms` is the 99th percentile of pop-from-queue → bound-in-store per pod. `--sequential`
//! and `--parallel` force filtering and scoring on one thread or across rayon's pool (default:
//! across the pool when it has at least 4 threads).
//!
//! The last line printed is
//! `workload=W nodes=N init_pods=I pods=P pods_per_sec=<x> p99_ms=<x>`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::{Preconditions, Store};
use kube_sched::binding::{BindOutcome, bind_pod};
use kube_sched::framework::{Cluster, Framework, PodInfo};
use kube_sched::queue::SchedulingQueue;
use kube_store::MemStore;
use serde_json::{Value, json};

// Binaries that embed the store choose their allocator, as kube-store's benches do: glibc's
// arenas fault pages in and out under the binding writes' churn.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Workload {
    Basic,
    NodeAffinity,
    PodAntiAffinity,
    TopologySpread,
    Preemption,
}

impl Workload {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "basic" => Self::Basic,
            "node-affinity" => Self::NodeAffinity,
            "pod-anti-affinity" => Self::PodAntiAffinity,
            "topology-spread" => Self::TopologySpread,
            "preemption" => Self::Preemption,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Self::Basic => "basic",
            Self::NodeAffinity => "node-affinity",
            Self::PodAntiAffinity => "pod-anti-affinity",
            Self::TopologySpread => "topology-spread",
            Self::Preemption => "preemption",
        }
    }
    /// (nodes, init pods, measured pods), after scheduler_perf's 5000-node cases.
    fn defaults(self) -> (usize, usize, usize) {
        match self {
            Self::Basic | Self::NodeAffinity | Self::TopologySpread => (5000, 1000, 10000),
            Self::PodAntiAffinity => (5000, 1000, 1000),
            // PreemptionBasic/5000Nodes: every node full (4 × 900m of 4 cpu).
            Self::Preemption => (5000, 20000, 5000),
        }
    }
}

fn node(i: usize, w: Workload) -> Node {
    let name = format!("node-{i}");
    let zone = match w {
        // Half the nodes are in zones the pods' affinity accepts.
        Workload::NodeAffinity => format!("zone{}", i % 4),
        _ => format!("zone{}", i % 10),
    };
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone}},
        "status": {"allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"},
                   "capacity": {"cpu": "4", "memory": "32Gi", "pods": "110"}}
    }))
    .unwrap()
}

fn pod(name: &str, w: Workload, init: bool) -> Value {
    let mut spec = json!({
        "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]
    });
    let mut labels = json!({});
    match w {
        Workload::Basic => {}
        Workload::NodeAffinity => {
            spec["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "topology.kubernetes.io/zone",
                    "operator": "In", "values": ["zone0", "zone1"]}]}]}}});
        }
        Workload::PodAntiAffinity => {
            labels = json!({"color": "green"});
            spec["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"color": "green"}},
                 "topologyKey": "kubernetes.io/hostname"}]}});
        }
        Workload::TopologySpread => {
            if !init {
                labels = json!({"color": "blue"});
                spec["topologySpreadConstraints"] = json!([{"maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"color": "blue"}}}]);
            }
        }
        Workload::Preemption => {
            if init {
                spec["priority"] = json!(0);
                spec["containers"][0]["resources"]["requests"] =
                    json!({"cpu": "900m", "memory": "500Mi"});
            } else {
                spec["priority"] = json!(1000);
                spec["containers"][0]["resources"]["requests"] =
                    json!({"cpu": "1", "memory": "500Mi"});
            }
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "sched-test", "labels": labels},
        "spec": spec})
}

fn arg(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

enum Job {
    Bind {
        key: ObjectKey,
        uid: Option<String>,
        node: String,
        popped: Instant,
    },
    Delete(ObjectKey),
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let workload = arg(&args, "--workload")
        .map(|w| Workload::parse(&w).unwrap_or_else(|| panic!("unknown workload {w}")))
        .unwrap_or(Workload::Basic);
    let (dn, di, dp) = workload.defaults();
    let num = |flag: &str, d: usize| arg(&args, flag).map_or(d, |v| v.parse().unwrap());
    let (nodes, init_pods, pods) = (
        num("--nodes", dn),
        num("--init-pods", di),
        num("--pods", dp),
    );
    let sequential = args.iter().any(|a| a == "--sequential");
    let parallel = args.iter().any(|a| a == "--parallel");

    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let mut cluster = Cluster::new();
    use futures::executor::block_on as block;
    for i in 0..nodes {
        let n = node(i, workload);
        block(store.create(DynamicObject::from_typed(&n).unwrap())).unwrap();
        cluster.set_node(n);
    }
    for i in 0..init_pods {
        let mut p = pod(&format!("init-{i}"), workload, true);
        let on = match workload {
            Workload::Preemption => i / 4 % nodes.max(1),
            _ => i % nodes.max(1),
        };
        p["spec"]["nodeName"] = json!(format!("node-{on}"));
        let created = block(store.create(serde_json::from_value(p).unwrap())).unwrap();
        cluster.set_pod(created.to_typed::<Pod>().unwrap()).unwrap();
    }
    let mut measured = Vec::with_capacity(pods);
    for i in 0..pods {
        let p = pod(&format!("pod-{i}"), workload, false);
        let created = block(store.create(serde_json::from_value(p).unwrap())).unwrap();
        measured.push(Arc::new(
            PodInfo::from_pod(created.to_typed::<Pod>().unwrap()).unwrap(),
        ));
    }
    let framework = if sequential {
        Framework::new().sequential()
    } else if parallel {
        Framework::new().parallel()
    } else {
        Framework::new()
    };
    let profile = framework.profile("default-scheduler").unwrap();

    let (jobs, job_rx) = mpsc::channel::<Job>();
    let (done_tx, done_rx) = mpsc::channel::<(Instant, Duration)>();
    let binder_store = store.clone();
    let binder = std::thread::spawn(move || {
        for job in job_rx {
            match job {
                Job::Bind {
                    key,
                    uid,
                    node,
                    popped,
                } => {
                    let out = block(bind_pod(&binder_store, &key, uid.as_deref(), &node)).unwrap();
                    assert_eq!(out, BindOutcome::Bound, "{key}");
                    let now = Instant::now();
                    done_tx.send((now, now - popped)).unwrap();
                }
                Job::Delete(key) => {
                    block(binder_store.delete(&GroupKind::POD, &key, &Preconditions::default()))
                        .unwrap();
                }
            }
        }
    });

    let t0 = Instant::now();
    let mut queue = SchedulingQueue::default();
    for p in &measured {
        queue.add(p.clone(), t0);
    }
    let (mut scheduled, mut failed, mut preemptions) = (0usize, 0usize, 0usize);
    while let Some(q) = queue.pop(Instant::now()) {
        let popped = Instant::now();
        let key = q.pod.key.clone();
        match profile.schedule(&cluster, &q.pod) {
            Ok(r) => {
                cluster.assume(q.pod.clone(), &r.node);
                queue.done(&key);
                scheduled += 1;
                jobs.send(Job::Bind {
                    uid: q.pod.uid().map(str::to_string),
                    key,
                    node: r.node,
                    popped,
                })
                .unwrap();
            }
            Err(e) => match e.post_filter.as_ref().filter(|pf| pf.status.is_success()) {
                Some(pf) => {
                    // Evict the victims; their deletion is the event that sends the pod back.
                    preemptions += 1;
                    for v in &pf.victims {
                        cluster.remove_pod(&v.key);
                        jobs.send(Job::Delete(v.key.clone())).unwrap();
                    }
                    // The pod comes back with `status.nominatedNodeName`, as the scheduling
                    // loop writes it (and its informer brings it back).
                    let mut nominated = (*q.pod.pod).clone();
                    nominated.status.get_or_insert_default().nominated_node_name =
                        pf.nominated_node.clone();
                    let nominated = Arc::new(PodInfo::from_pod(nominated).unwrap());
                    queue.unschedulable(&key, popped);
                    queue.move_all_to_active_or_backoff(popped);
                    queue.flush(popped + Duration::from_secs(1));
                    queue.add(nominated.clone(), popped);
                    if queue.position(&key) != Some(kube_sched::queue::Where::Active) {
                        // Backoff would only add idle time here; retry now.
                        queue.done(&key);
                        queue.add(nominated, popped);
                    }
                }
                None => {
                    failed += 1;
                    queue.done(&key);
                    if failed <= 3 {
                        eprintln!("unschedulable: {e}");
                    }
                }
            },
        }
    }
    let scheduling_done = t0.elapsed();
    drop(jobs);
    let mut latencies = Vec::with_capacity(scheduled);
    let mut last = t0;
    for (at, latency) in done_rx {
        last = last.max(at);
        latencies.push(latency);
    }
    binder.join().unwrap();
    let elapsed = (last - t0).as_secs_f64().max(1e-9);
    latencies.sort();
    let p99 = latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default();
    eprintln!(
        "scheduled={scheduled} failed={failed} preemptions={preemptions} elapsed={elapsed:.3}s scheduling_loop={:.3}s mode={}",
        scheduling_done.as_secs_f64(),
        if sequential {
            "sequential"
        } else if parallel {
            "parallel"
        } else {
            "default (parallel with 4+ rayon threads)"
        }
    );
    println!(
        "workload={} nodes={nodes} init_pods={init_pods} pods={pods} pods_per_sec={:.0} p99_ms={:.2}",
        workload.name(),
        latencies.len() as f64 / elapsed,
        p99.as_secs_f64() * 1000.0
    );
}
