use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube_core::orchestrator::{Orchestrator, RunningOrchestrator};
use kube_core::store::Store;
use kube_core::typed::Api;
use kube_ctrl::node_lifecycle::UNREACHABLE;
use kube_ctrl::{
    ControllerManager, NodeLifecycleConfig, NodeLifecycleController, ReplicaSetController,
};
use kube_node::{FakeRuntime, NodeAgent};
use kube_sched::{DefaultScheduler, SchedulingLoop};
use kube_store::MemStore;
use serde_json::json;
use tokio::time::Instant;

use crate::support::eventually_within;

const GRACE: Duration = Duration::from_secs(8);
const TOLERATION: Duration = Duration::from_secs(20);

fn node(store: &Arc<dyn Store>, name: &str) -> RunningOrchestrator {
    let agent = NodeAgent::builder(name, Arc::new(FakeRuntime::new()))
        .capacity("cpu", "8")
        .heartbeat_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    Orchestrator::builder()
        .store(store.clone())
        .node(agent)
        .build()
        .unwrap()
        .start()
}

fn placement(pods: &[Pod]) -> Vec<(String, bool)> {
    pods.iter()
        .map(|p| {
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            (node, running)
        })
        .collect()
}

fn unreachable(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| {
            t.iter()
                .any(|t| t.key == UNREACHABLE && t.effect == "NoExecute")
        })
}

#[tokio::test(start_paused = true)]
async fn a_lost_nodes_pods_are_recreated_elsewhere_after_grace_and_toleration() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let lifecycle = NodeLifecycleController::with_config(NodeLifecycleConfig {
        grace_period: GRACE,
        default_toleration: TOLERATION,
    });
    let control = Orchestrator::builder()
        .store(store.clone())
        .scheduler(SchedulingLoop::new(Arc::new(DefaultScheduler::new())))
        .controllers(
            ControllerManager::new()
                .with(ReplicaSetController::new())
                .with(lifecycle),
        )
        .build()
        .unwrap()
        .start();
    let node_a = node(&store, "node-a");
    let node_b = node(&store, "node-b");
    let sets: Api<ReplicaSet> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let nodes: Api<Node> = Api::all(store.clone());
    eventually_within("two nodes", Duration::from_secs(10), || async {
        (nodes.list(&Default::default()).await.unwrap().items.len() == 2).then_some(())
    })
    .await;
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                   "spec": {"containers": [{"name": "c", "image": "web",
                     "resources": {"requests": {"cpu": "1"}}}]}}}
    }))
    .unwrap();
    sets.create(&rs).await.unwrap();
    let placed = eventually_within(
        "4 running pods on both nodes",
        Duration::from_secs(20),
        || async {
            let p = placement(&pods.list(&Default::default()).await.unwrap().items);
            (p.len() == 4 && p.iter().all(|(_, running)| *running)).then_some(p)
        },
    )
    .await;
    assert!(placed.iter().any(|(n, _)| n == "node-b"), "{placed:?}");

    // node-b's agent dies: its heartbeats stop, its pods stay in the store.
    node_b.shutdown().await.unwrap();
    let lost = Instant::now();
    eventually_within("node-b unreachable", GRACE * 2, || async {
        unreachable(&nodes.get("node-b").await.unwrap()).then_some(())
    })
    .await;
    let tainted = lost.elapsed();
    assert!(
        tainted >= GRACE - Duration::from_secs(1) && tainted <= GRACE + Duration::from_secs(2),
        "{tainted:?}"
    );
    let ready = nodes
        .get("node-b")
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions
        .unwrap();
    assert!(
        ready
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "Unknown")
    );
    assert!(!unreachable(&nodes.get("node-a").await.unwrap()));

    eventually_within(
        "all pods running on node-a",
        (GRACE + TOLERATION) * 2,
        || async {
            let p = placement(&pods.list(&Default::default()).await.unwrap().items);
            (p.len() == 4 && p.iter().all(|(n, running)| n == "node-a" && *running)).then_some(())
        },
    )
    .await;
    let moved = lost.elapsed();
    assert!(
        moved >= GRACE + TOLERATION - Duration::from_secs(1),
        "evicted too early: {moved:?}"
    );
    assert!(
        moved <= GRACE + TOLERATION + Duration::from_secs(5),
        "evicted too late: {moved:?}"
    );

    // Heartbeats return: the taint goes.
    let node_b = node(&store, "node-b");
    eventually_within("taint removed", GRACE, || async {
        (!unreachable(&nodes.get("node-b").await.unwrap())).then_some(())
    })
    .await;
    node_b.shutdown().await.unwrap();
    node_a.shutdown().await.unwrap();
    control.shutdown().await.unwrap();
}
