use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube_core::typed::Api;
use kube_ctrl::{ControllerManager, DaemonSetController};
use serde_json::json;

use crate::support::{eventually, fake_kubelet, start};

fn node(name: &str, taints: serde_json::Value) -> Node {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"taints": taints}})).unwrap()
}

/// Image of the daemon pod on each node.
async fn placement(pods: &Api<Pod>) -> BTreeMap<String, Vec<String>> {
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in pods.list(&Default::default()).await.unwrap().items {
        let spec = p.spec.unwrap();
        by_node
            .entry(spec.node_name.unwrap_or_default())
            .or_default()
            .push(spec.containers[0].image.clone().unwrap_or_default());
    }
    by_node
}

fn images(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(n, i)| (n.to_string(), vec![i.to_string()]))
        .collect()
}

#[tokio::test]
async fn one_pod_per_eligible_node_and_rolling_update() {
    let (store, running) = start(ControllerManager::new().with(DaemonSetController::new()));
    let kubelet = fake_kubelet(store.clone());
    let nodes: Api<Node> = Api::all(store.clone());
    nodes.create(&node("n1", json!([]))).await.unwrap();
    // Daemons tolerate unhealthy nodes...
    nodes
        .create(&node(
            "n2",
            json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]),
        ))
        .await
        .unwrap();
    // ...but not a taint they do not tolerate.
    nodes
        .create(&node(
            "n3",
            json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
        ))
        .await
        .unwrap();
    let sets: Api<DaemonSet> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent"}},
                              "spec": {"containers": [{"name": "c", "image": "agent:1"}]}}}
    }))
    .unwrap();
    sets.create(&ds).await.unwrap();
    eventually("pods on n1 and n2", || async {
        (placement(&pods).await == images(&[("n1", "agent:1"), ("n2", "agent:1")])).then_some(())
    })
    .await;
    let pod = &pods.list(&Default::default()).await.unwrap().items[0];
    let tolerations = pod.spec.as_ref().unwrap().tolerations.clone().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/not-ready"))
    );

    // A new node gets a daemon; an untainted one too.
    nodes.create(&node("n4", json!([]))).await.unwrap();
    nodes
        .patch_merge("n3", &json!({"spec": {"taints": null}}))
        .await
        .unwrap();
    eventually("pods on all four", || async {
        (placement(&pods).await.len() == 4).then_some(())
    })
    .await;
    eventually("status", || async {
        let s = sets.get("agent").await.unwrap().status?;
        (s.desired_number_scheduled == 4 && s.number_ready == 4).then_some(())
    })
    .await;

    // Rolling update: every node ends on the new image, one pod each.
    sets.patch_merge(
        "agent",
        &json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "agent:2"}]}}}}),
    )
    .await
    .unwrap();
    eventually("all updated", || async {
        let want = images(&[
            ("n1", "agent:2"),
            ("n2", "agent:2"),
            ("n3", "agent:2"),
            ("n4", "agent:2"),
        ]);
        (placement(&pods).await == want).then_some(())
    })
    .await;
    eventually("updated status", || async {
        let s = sets.get("agent").await.unwrap().status?;
        (s.updated_number_scheduled == Some(4) && s.number_ready == 4).then_some(())
    })
    .await;
    kubelet.abort();
    running.shutdown().await.unwrap();
}
