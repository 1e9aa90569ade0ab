use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube_parts::node::FakeOp;
use kube_parts::testing::{FakeBehavior, TestCluster, conditions};
use serde_json::json;

#[tokio::test]
async fn a_deployment_becomes_available_behind_its_service() {
    let cluster = TestCluster::builder()
        .nodes(3)
        .node_capacity("2", "4Gi")
        .start()
        .await
        .unwrap();
    assert_eq!(cluster.node_names(), ["node-1", "node-2", "node-3"]);

    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
    }))
    .unwrap();
    cluster
        .api::<Service>("default")
        .create(&service)
        .await
        .unwrap();
    cluster
        .api::<Deployment>("default")
        .create(&crate::deployment("web", 3, None))
        .await
        .unwrap();

    let deployment = cluster
        .wait_until_deployment_available("default", "web")
        .await
        .unwrap();
    assert!(conditions::is_deployment_available(&deployment));
    let pods = cluster
        .wait_until_pods_running("default", "app=web", 3)
        .await
        .unwrap();
    assert_eq!(pods.len(), 3);
    let nodes: BTreeSet<&str> = pods.iter().filter_map(conditions::pod_node).collect();
    assert_eq!(nodes.len(), 3, "spread over the three nodes: {nodes:?}");
    let running: usize = cluster
        .node_names()
        .iter()
        .map(|n| cluster.runtime(n).unwrap().running_count())
        .sum();
    assert_eq!(running, 3, "one simulated container per pod");

    // The proxy gets the Service with its three ready backends.
    let table = tokio::time::timeout(
        cluster.wait_timeout(),
        cluster.proxy().wait_for(|t| {
            t.services
                .values()
                .any(|s| s.ports.iter().any(|p| p.endpoints.len() == 3))
        }),
    )
    .await
    .unwrap();
    assert_eq!(table.services.len(), 1);
    cluster.shutdown().await.unwrap();
}

#[tokio::test]
async fn scripted_containers_fail_as_told() {
    let cluster = TestCluster::builder()
        .nodes(1)
        .fake_image("broken:1", FakeBehavior::fail_start("exec format error"))
        .start()
        .await
        .unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "broken"},
        "spec": {"containers": [{"name": "main", "image": "broken:1"}]}
    }))
    .unwrap();
    cluster.api::<Pod>("default").create(&pod).await.unwrap();
    // The agent reports the failed start in the container's status.
    let pod = cluster
        .wait_for_object::<Pod>(
            Some("default"),
            "broken",
            |p| {
                p.and_then(|p| p.status.as_ref())
                    .and_then(|s| s.container_statuses.as_ref())
                    .is_some_and(|cs| !cs.is_empty())
            },
            cluster.wait_timeout(),
        )
        .await
        .unwrap()
        .unwrap();
    let fake = cluster.runtime("node-1").unwrap();
    assert!(fake.count(FakeOp::StartContainer) >= 1);
    assert_eq!(fake.running_count(), 0);
    assert!(!conditions::is_pod_ready(&pod));
    cluster.shutdown().await.unwrap();
}

#[tokio::test]
async fn nodes_can_be_added_and_deployments_deleted() {
    let cluster = TestCluster::builder().nodes(1).start().await.unwrap();
    cluster.add_node("extra").unwrap();
    assert!(matches!(
        cluster.add_node("extra"),
        Err(kube_parts::testing::HarnessError::NodeExists(_))
    ));
    let ready = cluster.wait_until_nodes_ready(2).await.unwrap();
    assert_eq!(ready.len(), 2);
    assert_eq!(cluster.node_names(), ["node-1", "extra"]);

    cluster
        .api::<Deployment>("default")
        .create(&crate::deployment("gone", 2, None))
        .await
        .unwrap();
    cluster
        .wait_until_pods_running("default", "app=gone", 2)
        .await
        .unwrap();
    cluster
        .api::<Deployment>("default")
        .delete("gone", &Default::default())
        .await
        .unwrap();
    cluster
        .wait_until_deleted::<Deployment>(Some("default"), "gone")
        .await
        .unwrap();
    // Garbage collection takes the ReplicaSet and its pods.
    cluster
        .wait_for::<Pod>(Some("default"), <[Pod]>::is_empty, cluster.wait_timeout())
        .await
        .unwrap();
    cluster.shutdown().await.unwrap();
}
