use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node};
use kube_core::orchestrator::Orchestrator;
use kube_core::store::{Preconditions, Store};
use kube_core::typed::Api;
use kube_ctrl::{ControllerManager, NodeIpamConfig, NodeIpamController};
use kube_store::MemStore;
use serde_json::json;

use crate::support::{eventually, start};

fn ipam(cluster_cidrs: &[&str]) -> ControllerManager {
    let config = NodeIpamConfig {
        cluster_cidrs: cluster_cidrs.iter().map(|s| s.to_string()).collect(),
        retry_interval: Duration::from_millis(200),
        ..NodeIpamConfig::default()
    };
    ControllerManager::new().with(NodeIpamController::new(config).expect("valid config"))
}

fn node(name: &str, pod_cidrs: &[&str]) -> Node {
    let mut value = json!({"metadata": {"name": name}});
    if let Some(first) = pod_cidrs.first() {
        value["spec"] = json!({"podCIDR": first, "podCIDRs": pod_cidrs});
    }
    serde_json::from_value(value).expect("a node")
}

/// The node's `spec.podCIDRs` once set, checking `spec.podCIDR` is the first.
async fn cidrs_of(nodes: &Api<Node>, name: &str) -> Vec<String> {
    eventually(&format!("{name} gets pod CIDRs"), || async {
        let node = nodes.get(name).await.expect("node exists");
        let spec = node.spec?;
        let list = spec.pod_cidrs.filter(|l| !l.is_empty())?;
        assert_eq!(spec.pod_cidr.as_deref(), Some(list[0].as_str()));
        Some(list)
    })
    .await
}

async fn not_available_events(store: &Arc<dyn Store>, node: &str) -> i32 {
    let events: Api<Event> = Api::namespaced(store.clone(), "default");
    events
        .list(&Default::default())
        .await
        .expect("events list")
        .items
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some("CIDRNotAvailable")
                && e.involved_object.name.as_deref() == Some(node)
                && e.involved_object.kind.as_deref() == Some("Node")
        })
        .map(|e| e.count.unwrap_or(1))
        .sum()
}

#[tokio::test]
async fn every_node_gets_its_own_subnet_of_the_cluster_cidr() {
    let (store, running) = start(ipam(&["10.244.0.0/16"]));
    let nodes: Api<Node> = Api::all(store.clone());
    for name in ["a", "b", "c"] {
        nodes.create(&node(name, &[])).await.unwrap();
    }
    let mut got = Vec::new();
    for name in ["a", "b", "c"] {
        let cidrs = cidrs_of(&nodes, name).await;
        assert_eq!(cidrs.len(), 1, "{cidrs:?}");
        got.push(cidrs[0].clone());
    }
    got.sort();
    assert_eq!(got, ["10.244.0.0/24", "10.244.1.0/24", "10.244.2.0/24"]);

    // A later change to the node leaves its CIDR alone.
    let before = cidrs_of(&nodes, "a").await;
    nodes
        .patch_merge("a", &json!({"metadata": {"labels": {"x": "y"}}}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(cidrs_of(&nodes, "a").await, before);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restarted_controller_never_hands_out_a_cidr_twice() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let nodes: Api<Node> = Api::all(store.clone());
    // Allocations made by an earlier run, and one set by hand outside the cluster CIDR.
    nodes
        .create(&node("old-0", &["10.244.0.0/24"]))
        .await
        .unwrap();
    nodes
        .create(&node("old-1", &["10.244.1.0/24"]))
        .await
        .unwrap();
    nodes
        .create(&node("manual", &["192.168.7.0/24"]))
        .await
        .unwrap();
    let running = Orchestrator::builder()
        .store(store.clone())
        .controllers(ipam(&["10.244.0.0/16"]))
        .build()
        .unwrap()
        .start();
    nodes.create(&node("new", &[])).await.unwrap();
    assert_eq!(cidrs_of(&nodes, "new").await, ["10.244.2.0/24"]);
    assert_eq!(cidrs_of(&nodes, "old-0").await, ["10.244.0.0/24"]);
    assert_eq!(cidrs_of(&nodes, "manual").await, ["192.168.7.0/24"]);
    running.shutdown().await.unwrap();

    // And once more with the new node's allocation on record too.
    let running = Orchestrator::builder()
        .store(store.clone())
        .controllers(ipam(&["10.244.0.0/16"]))
        .build()
        .unwrap()
        .start();
    nodes.create(&node("newer", &[])).await.unwrap();
    assert_eq!(cidrs_of(&nodes, "newer").await, ["10.244.3.0/24"]);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_full_range_gives_an_event_and_a_deleted_nodes_cidr_is_reused() {
    // Room for two /24s only.
    let (store, running) = start(ipam(&["10.244.0.0/23"]));
    let nodes: Api<Node> = Api::all(store.clone());
    nodes.create(&node("a", &[])).await.unwrap();
    nodes.create(&node("b", &[])).await.unwrap();
    let a = cidrs_of(&nodes, "a").await;
    let b = cidrs_of(&nodes, "b").await;
    assert_ne!(a, b);

    nodes.create(&node("c", &[])).await.unwrap();
    eventually("CIDRNotAvailable event on c", || async {
        (not_available_events(&store, "c").await > 0).then_some(())
    })
    .await;
    let c = nodes.get("c").await.unwrap();
    assert!(
        c.spec.as_ref().is_none_or(|s| s.pod_cidr.is_none()),
        "{c:?}"
    );

    nodes.delete("a", &Preconditions::default()).await.unwrap();
    assert_eq!(cidrs_of(&nodes, "c").await, a);
    assert_eq!(cidrs_of(&nodes, "b").await, b);

    // Full again: a new node waits, with its own event.
    nodes.create(&node("d", &[])).await.unwrap();
    eventually("CIDRNotAvailable event on d", || async {
        (not_available_events(&store, "d").await > 0).then_some(())
    })
    .await;
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn dual_stack_nodes_get_one_cidr_per_family() {
    let (store, running) = start(ipam(&["10.244.0.0/16", "fd00:10:244::/56"]));
    let nodes: Api<Node> = Api::all(store.clone());
    nodes.create(&node("a", &[])).await.unwrap();
    nodes.create(&node("b", &[])).await.unwrap();
    let a = cidrs_of(&nodes, "a").await;
    let b = cidrs_of(&nodes, "b").await;
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(
        both,
        [
            ["10.244.0.0/24", "fd00:10:244::/64"],
            ["10.244.1.0/24", "fd00:10:244:1::/64"]
        ]
    );
    running.shutdown().await.unwrap();
}
