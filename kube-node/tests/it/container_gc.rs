//! Dead-container garbage collection by the kubelet's policy, over FakeRuntime.

use std::sync::Arc;
use std::time::Duration;

use kube_core::runtime::{ContainerFilter, ContainerState, Runtime};
use kube_node::{ContainerGcPolicy, FakeBehavior, FakeRuntime};

use crate::common::{Cluster, agent, eventually, pod};

const WAIT: Duration = Duration::from_secs(10);

fn crashing(fake: &FakeRuntime, policy: ContainerGcPolicy) -> Cluster {
    fake.on_image(
        "crasher",
        FakeBehavior::exit_after(Duration::from_millis(20), 1),
    );
    let agent = agent(Arc::new(fake.clone()))
        .crash_backoff(Duration::from_millis(20), Duration::from_millis(40))
        .container_gc(policy)
        .build()
        .expect("agent");
    Cluster::start(agent)
}

/// The attempts of the pod's dead containers, newest first.
async fn dead(fake: &FakeRuntime, pod: &str) -> Vec<u32> {
    let filter = ContainerFilter {
        state: Some(ContainerState::Exited),
        ..Default::default()
    };
    let mut attempts: Vec<u32> = fake
        .list_containers(&filter)
        .await
        .expect("list")
        .into_iter()
        .filter(|c| {
            c.labels
                .get(kube_node::labels::POD_NAME)
                .map(String::as_str)
                == Some(pod)
        })
        .map(|c| c.attempt)
        .collect();
    attempts.sort_unstable_by(|a, b| b.cmp(a));
    attempts
}

async fn restarts(cluster: &Cluster, name: &str) -> i32 {
    let pod = cluster.pods().get(name).await.expect("pod");
    pod.status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.first().map(|c| c.restart_count))
        .unwrap_or(0)
}

#[tokio::test]
async fn each_container_keeps_its_newest_dead_instances() {
    let fake = FakeRuntime::new();
    let cluster = crashing(
        &fake,
        ContainerGcPolicy {
            max_per_pod_container: Some(3),
            ..Default::default()
        },
    );
    let crash = pod(
        "crashy",
        "Always",
        serde_json::json!([{"name": "c", "image": "crasher"}]),
    );
    cluster.pods().create(&crash).await.expect("create");
    eventually(WAIT, "6 restarts", || async {
        (restarts(&cluster, "crashy").await >= 6).then_some(())
    })
    .await;
    // Between an exit and the restart that collects, a fourth dead instance may show.
    for _ in 0..15 {
        let kept = dead(&fake, "crashy").await;
        assert!(kept.len() <= 4, "at most 3 dead instances kept: {kept:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually(WAIT, "the 3 newest dead instances", || async {
        let kept = dead(&fake, "crashy").await;
        (kept.len() == 3 && kept.windows(2).all(|w| w[0] == w[1] + 1)).then_some(())
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_node_limit_is_enforced_by_the_periodic_sweep() {
    let fake = FakeRuntime::new();
    let cluster = crashing(
        &fake,
        ContainerGcPolicy {
            max_per_pod_container: None,
            max_containers: Some(2),
            period: Duration::from_millis(50),
            ..Default::default()
        },
    );
    for name in ["one", "two"] {
        let crash = pod(
            name,
            "Always",
            serde_json::json!([{"name": "c", "image": "crasher"}]),
        );
        cluster.pods().create(&crash).await.expect("create");
    }
    eventually(WAIT, "4 restarts each, at most 2 dead kept", || async {
        let restarted =
            restarts(&cluster, "one").await >= 4 && restarts(&cluster, "two").await >= 4;
        let kept = dead(&fake, "one").await.len() + dead(&fake, "two").await.len();
        (restarted && kept <= 2).then_some(())
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn young_dead_containers_stay() {
    let fake = FakeRuntime::new();
    let cluster = crashing(
        &fake,
        ContainerGcPolicy {
            min_age: Duration::from_secs(3600),
            max_per_pod_container: Some(0),
            period: Duration::from_millis(50),
            ..Default::default()
        },
    );
    let crash = pod(
        "crashy",
        "Always",
        serde_json::json!([{"name": "c", "image": "crasher"}]),
    );
    cluster.pods().create(&crash).await.expect("create");
    eventually(WAIT, "4 restarts", || async {
        (restarts(&cluster, "crashy").await >= 4).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let kept = dead(&fake, "crashy").await;
    assert!(kept.len() >= 4, "none is old enough to go: {kept:?}");
    cluster.shutdown().await;
}
