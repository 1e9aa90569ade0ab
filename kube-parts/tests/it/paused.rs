use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube_parts::testing::{TestCluster, conditions};

/// Kubernetes-like timing (5 s heartbeats, 20 s grace, 300 s default toleration) on paused
/// time: five minutes of cluster time pass without the test waiting for them.
#[tokio::test(start_paused = true)]
async fn on_paused_time_a_dead_nodes_pods_move_after_the_default_toleration() {
    let wall = std::time::Instant::now();
    let cluster = TestCluster::builder()
        .nodes(3)
        .wait_timeout(Duration::from_secs(900))
        .start()
        .await
        .unwrap();
    cluster
        .api::<Deployment>("default")
        .create(&crate::deployment("web", 3, None))
        .await
        .unwrap();
    let pods = cluster
        .wait_until_pods_running("default", "app=web", 3)
        .await
        .unwrap();
    let victim = conditions::pod_node(&pods[0]).unwrap().to_string();

    let killed_at = tokio::time::Instant::now();
    cluster.kill_node(&victim).await.unwrap();
    cluster.wait_until_node_not_ready(&victim).await.unwrap();
    let noticed = killed_at.elapsed();
    assert!(
        noticed >= Duration::from_secs(20),
        "unreachable only after the grace period, not {noticed:?}"
    );
    cluster
        .wait_for::<Pod>(
            Some("default"),
            |pods| {
                let running: Vec<&Pod> = pods
                    .iter()
                    .filter(|p| conditions::is_pod_running(p))
                    .collect();
                running.len() == 3
                    && running
                        .iter()
                        .all(|p| conditions::pod_node(p) != Some(victim.as_str()))
            },
            Duration::from_secs(900),
        )
        .await
        .unwrap();
    let moved = killed_at.elapsed();
    assert!(
        moved >= Duration::from_secs(300),
        "evicted after the 300 s default toleration, not {moved:?}"
    );
    assert!(
        wall.elapsed() < Duration::from_secs(60),
        "paused time: {:?} of wall time",
        wall.elapsed()
    );
    cluster.shutdown().await.unwrap();
}
