//! The `hello_cluster` flow: compose a two-node cluster, run a ReplicaSet, scale it, delete it.
//!
//! [`run`] takes the node runtimes, so `examples/hello_cluster.rs` runs it with real host
//! processes (`ProcessRuntime`) and a test runs it with `FakeRuntime`.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube_core::runtime::{ContainerFilter, ContainerState, ContainerStatus, Runtime};
use kube_core::store::{ListOptions, Preconditions, Store};
use kube_core::typed::Api;
use kube_core::{GroupKind, ObjectKey, Orchestrator, Selector};
use kube_ctrl::{ControllerManager, EndpointsController, GarbageCollector, ReplicaSetController};
use kube_net::{MemoryProxy, ProxyLoop};
use kube_node::NodeAgent;
use kube_sched::{DefaultScheduler, SchedulingLoop};
use kube_store::MemStore;
use serde_json::json;

/// How long any one step may take before the flow fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// Decides whether a container the runtime reports is really alive (e.g. its pid exists).
pub type Liveness = fn(&ContainerStatus) -> bool;

/// What the flow observed, for callers that check it.
#[derive(Debug, Default)]
pub struct Report {
    /// Pods seen running at the start, as (name, node).
    pub placed: Vec<(String, String)>,
    /// Backends of the `hello` service in the proxy's table while 3 pods ran.
    pub backends: usize,
    /// Wall time of the whole flow.
    pub elapsed: Duration,
}

/// Polls `check` until it yields a value, or fails naming `what`.
async fn wait_for<T, Fut>(what: &str, mut check: impl FnMut() -> Fut) -> anyhow::Result<T>
where
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {STEP_TIMEOUT:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Containers alive across every runtime.
async fn live_containers(
    runtimes: &[Arc<dyn Runtime>],
    alive: Liveness,
) -> anyhow::Result<Vec<ContainerStatus>> {
    let mut out = Vec::new();
    for runtime in runtimes {
        let filter = ContainerFilter::default();
        out.extend(
            runtime
                .list_containers(&filter)
                .await?
                .into_iter()
                .filter(&alive),
        );
    }
    Ok(out)
}

fn running_pods(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count()
}

fn print_pods(pods: &[Pod]) {
    println!("{:<16} {:<8} {:<10} {:<10}", "NAME", "NODE", "PHASE", "IP");
    for pod in pods {
        let status = pod.status.clone().unwrap_or_default();
        println!(
            "{:<16} {:<8} {:<10} {:<10}",
            pod.metadata.name.as_deref().unwrap_or(""),
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or("<none>"),
            status.phase.as_deref().unwrap_or(""),
            status.pod_ip.as_deref().unwrap_or(""),
        );
    }
}

/// Runs the flow on a cluster whose nodes use `runtimes` (one node per runtime).
///
/// `alive` says whether a container the runtime lists is really running; the flow checks
/// it for 3, then 1, then 0 containers.
pub async fn run(runtimes: Vec<Arc<dyn Runtime>>, alive: Liveness) -> anyhow::Result<Report> {
    let started = Instant::now();
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let proxy = Arc::new(MemoryProxy::new());

    let mut builder = Orchestrator::builder()
        .store(store.clone())
        .scheduler(SchedulingLoop::new(Arc::new(DefaultScheduler::new())))
        .controllers(
            ControllerManager::new()
                .with(ReplicaSetController::new())
                .with(GarbageCollector::new(GroupKind::POD).owner(GroupKind::REPLICA_SET))
                .with(EndpointsController::new()),
        )
        .proxy(ProxyLoop::new(proxy.clone()));
    for (i, runtime) in runtimes.iter().enumerate() {
        let agent = NodeAgent::builder(format!("node-{}", i + 1), runtime.clone())
            .heartbeat_interval(Duration::from_secs(2))
            .resync_interval(Duration::from_millis(200))
            .default_grace_period(Duration::from_secs(2))
            .build()
            .context("configuring a node agent")?;
        builder = builder.node(agent);
    }
    let running = builder
        .shutdown_timeout(Duration::from_secs(10))
        .build()?
        .start();

    let sets: Api<ReplicaSet> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let services: Api<Service> = Api::namespaced(store.clone(), "default");
    let selector = ListOptions::default().labels(Selector::parse("app=hello")?);

    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {"selector": {"app": "hello"}, "clusterIP": "10.96.0.10",
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    }))?;
    services.create(&service).await?;
    let replica_set: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "hello"}},
            "template": {
                "metadata": {"labels": {"app": "hello"}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{
                        "name": "sleep", "image": "busybox", "command": ["sleep", "30"],
                        "ports": [{"name": "http", "containerPort": 8080}]
                    }]
                }
            }
        }
    }))?;
    sets.create(&replica_set).await?;
    println!("created ReplicaSet hello (replicas: 3) and Service hello");

    let three = wait_for("3 pods Running with 3 live containers", || async {
        let list = pods.list(&selector).await?.items;
        let live = live_containers(&runtimes, alive).await?;
        Ok((list.len() == 3 && running_pods(&list) == 3 && live.len() == 3).then_some(list))
    })
    .await?;
    print_pods(&three);
    let placed: Vec<(String, String)> = three
        .iter()
        .map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            (name, node)
        })
        .collect();
    let nodes: BTreeSet<&str> = placed.iter().map(|(_, n)| n.as_str()).collect();
    println!("3 pods running on {} node(s)", nodes.len());

    // Pods sharing an address (host processes all report the node's) are one backend.
    let addresses: BTreeSet<&str> = three
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.as_deref())
        .collect();
    let hello_key = ObjectKey::namespaced("default", "hello");
    let table = wait_for(
        "the proxy to receive the hello service's backends",
        || async {
            let table = proxy.table();
            let ready = table.services.get(&hello_key).is_some_and(|e| {
                e.ports.iter().map(|p| p.endpoints.len()).sum::<usize>() >= addresses.len()
            });
            Ok(ready.then_some(table))
        },
    )
    .await?;
    let backends: usize = table
        .services
        .get(&hello_key)
        .map_or(0, |e| e.ports.iter().map(|p| p.endpoints.len()).sum());
    println!("proxy: service default/hello -> {backends} backend(s)");

    sets.patch_merge("hello", &json!({"spec": {"replicas": 1}}))
        .await?;
    println!("scaled ReplicaSet hello to 1");
    let one = wait_for("1 pod and 1 live container", || async {
        let list = pods.list(&selector).await?.items;
        let live = live_containers(&runtimes, alive).await?;
        Ok((list.len() == 1 && running_pods(&list) == 1 && live.len() == 1).then_some(list))
    })
    .await?;
    print_pods(&one);

    sets.delete("hello", &Preconditions::default()).await?;
    println!("deleted ReplicaSet hello");
    wait_for("no pod and no live container", || async {
        let list = pods.list(&selector).await?.items;
        let live = live_containers(&runtimes, alive).await?;
        Ok((list.is_empty() && live.is_empty()).then_some(()))
    })
    .await?;
    println!("no pods and no processes left");

    running.shutdown().await?;
    let elapsed = started.elapsed();
    println!("done in {:.1}s", elapsed.as_secs_f64());
    Ok(Report {
        placed,
        backends,
        elapsed,
    })
}

/// Liveness for runtimes that report state only: `Running` counts as alive.
pub fn reported_running(status: &ContainerStatus) -> bool {
    status.state == ContainerState::Running
}
