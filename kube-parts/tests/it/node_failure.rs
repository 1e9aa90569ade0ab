use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube_parts::testing::{TestCluster, TestClusterBuilder, conditions};

/// Fast failure detection on real time: 100 ms heartbeats, unreachable after 600 ms.
fn fast() -> TestClusterBuilder {
    TestCluster::builder()
        .heartbeat_interval(Duration::from_millis(100))
        .node_grace_period(Duration::from_millis(600))
        .resync_interval(Duration::from_millis(100))
        .wait_timeout(Duration::from_secs(30))
}

/// The running pods of `app`, by node, once there are `count` of them and none on `avoid`.
async fn running_elsewhere(
    cluster: &TestCluster,
    app: &str,
    count: usize,
    avoid: &str,
) -> Vec<Pod> {
    let selector = kube_parts::core::Selector::parse(&format!("app={app}")).unwrap();
    cluster
        .wait_for::<Pod>(
            Some("default"),
            |pods| {
                let running: Vec<&Pod> = pods
                    .iter()
                    .filter(|p| selector.matches(p.metadata.labels.as_ref().unwrap()))
                    .filter(|p| conditions::is_pod_running(p))
                    .collect();
                running.len() == count
                    && running
                        .iter()
                        .all(|p| conditions::pod_node(p) != Some(avoid))
            },
            cluster.wait_timeout(),
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_moves_its_pods_to_another() {
    let cluster = fast().nodes(2).start().await.unwrap();
    cluster
        .api::<Deployment>("default")
        .create(&crate::deployment("web", 4, Some(1)))
        .await
        .unwrap();
    let pods = cluster
        .wait_until_pods_running("default", "app=web", 4)
        .await
        .unwrap();
    let victim = conditions::pod_node(&pods[0]).unwrap().to_string();
    let survivor = cluster
        .node_names()
        .into_iter()
        .find(|n| *n != victim)
        .unwrap();

    cluster.kill_node(&victim).await.unwrap();
    assert!(!cluster.is_node_running(&victim).unwrap());
    let node = cluster.wait_until_node_not_ready(&victim).await.unwrap();
    let taints: BTreeSet<String> = node
        .spec
        .unwrap()
        .taints
        .unwrap_or_default()
        .into_iter()
        .map(|t| t.key)
        .collect();
    assert!(
        taints.contains("node.kubernetes.io/unreachable"),
        "{taints:?}"
    );

    // After the pods' 1 s toleration they are evicted and recreated on the survivor.
    let moved = running_elsewhere(&cluster, "web", 4, &victim).await;
    assert!(
        moved
            .iter()
            .all(|p| conditions::pod_node(p) == Some(survivor.as_str()))
    );
    // The dead node's runtime still "runs" its containers: nobody told it.
    assert!(cluster.runtime(&victim).unwrap().running_count() > 0);
    let node: Node = cluster.api_all::<Node>().get(&victim).await.unwrap();
    let reasons: Vec<String> = cluster
        .events_for(&node)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.contains(&"NodeNotReady".to_string()), "{reasons:?}");

    // A restarted agent heartbeats again and removes the containers of the evicted pods.
    cluster.restart_node(&victim).unwrap();
    cluster
        .wait_for_object::<Node>(
            None,
            &victim,
            |n| n.is_some_and(conditions::is_node_ready),
            cluster.wait_timeout(),
        )
        .await
        .unwrap();
    let fake = cluster.runtime(&victim).unwrap();
    tokio::time::timeout(cluster.wait_timeout(), async {
        while fake.running_count() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_loses_its_pods_and_heals() {
    let cluster = fast()
        .nodes(2)
        .default_toleration(Duration::ZERO)
        .start()
        .await
        .unwrap();
    cluster
        .api::<Deployment>("default")
        .create(&crate::deployment("db", 2, None))
        .await
        .unwrap();
    let pods = cluster
        .wait_until_pods_running("default", "app=db", 2)
        .await
        .unwrap();
    let cut = conditions::pod_node(&pods[0]).unwrap().to_string();

    cluster.partition_node(&cut).unwrap();
    assert!(cluster.is_node_partitioned(&cut).unwrap());
    cluster.wait_until_node_not_ready(&cut).await.unwrap();
    running_elsewhere(&cluster, "db", 2, &cut).await;
    // The agent still runs behind the partition, and so do its containers.
    assert!(cluster.is_node_running(&cut).unwrap());
    assert!(cluster.runtime(&cut).unwrap().running_count() > 0);

    cluster.heal_node(&cut).unwrap();
    let node = cluster
        .wait_for_object::<Node>(
            None,
            &cut,
            |n| {
                n.is_some_and(|n| {
                    conditions::is_node_ready(n)
                        && n.spec
                            .as_ref()
                            .and_then(|s| s.taints.as_ref())
                            .is_none_or(Vec::is_empty)
                })
            },
            cluster.wait_timeout(),
        )
        .await
        .unwrap();
    assert!(node.is_some());
    // Back in touch, the agent learns its pods were evicted and stops their containers.
    let fake = cluster.runtime(&cut).unwrap();
    tokio::time::timeout(cluster.wait_timeout(), async {
        while fake.running_count() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    cluster.shutdown().await.unwrap();
}
