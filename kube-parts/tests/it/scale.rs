use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube_parts::testing::{TestCluster, conditions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_node_cluster_starts() {
    let cluster = TestCluster::builder()
        .nodes(1000)
        .wait_timeout(Duration::from_secs(300))
        .start()
        .await
        .unwrap();
    let nodes = cluster
        .api_all::<Node>()
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    assert_eq!(nodes.len(), 1000);
    assert!(nodes.iter().all(conditions::is_node_ready));
    assert_eq!(cluster.node_names().len(), 1000);
    cluster.shutdown().await.unwrap();
}
