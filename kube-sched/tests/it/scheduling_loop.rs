//! `SchedulingLoop` over a `MemStore`, inside an orchestrator.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, Pod, PodCondition};
use kube_core::orchestrator::{Orchestrator, RunningOrchestrator};
use kube_core::resources::pod_requests;
use kube_core::store::Store;
use kube_core::typed::Api;
use kube_core::workqueue::Backoff;
use kube_sched::{DefaultScheduler, SchedulingConfig, SchedulingLoop};
use kube_store::MemStore;
use serde_json::json;

use crate::support::{eventually, node, pod};

const WAIT: Duration = Duration::from_secs(5);

fn start(config: SchedulingConfig) -> (RunningOrchestrator, Api<Pod>, Api<Node>) {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let running = Orchestrator::builder()
        .store(store.clone())
        .scheduler(SchedulingLoop::with_config(
            Arc::new(DefaultScheduler::new()),
            config,
        ))
        .build()
        .unwrap()
        .start();
    (
        running,
        Api::namespaced(store.clone(), "default"),
        Api::all(store),
    )
}

fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.node_name.clone()
}

fn scheduled_condition(p: &Pod) -> Option<PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled")
        .cloned()
}

/// Creates `pod` in the store, with the uid left to the store.
async fn create(pods: &Api<Pod>, mut p: Pod) -> Pod {
    p.metadata.uid = None;
    pods.create(&p).await.unwrap()
}

#[tokio::test]
async fn pending_pods_get_bound_and_spread() {
    let (running, pods, nodes) = start(SchedulingConfig::default());
    nodes
        .create(&node("n1", "4", "8Gi", "110", json!({})))
        .await
        .unwrap();
    nodes
        .create(&node("n2", "4", "8Gi", "110", json!({})))
        .await
        .unwrap();
    for i in 0..4 {
        create(&pods, pod(&format!("p{i}"), json!({}), json!({}))).await;
    }
    // A pod for another scheduler is left alone.
    create(
        &pods,
        pod("other", json!({}), json!({"schedulerName": "other"})),
    )
    .await;

    let bound = eventually("4 pods bound", WAIT, || async {
        let list = pods.list(&Default::default()).await.unwrap().items;
        let bound: Vec<Pod> = list.into_iter().filter(|p| node_of(p).is_some()).collect();
        (bound.len() == 4).then_some(bound)
    })
    .await;
    let on_n1 = bound
        .iter()
        .filter(|p| node_of(p).as_deref() == Some("n1"))
        .count();
    assert_eq!(on_n1, 2, "request-less pods spread evenly");
    for p in &bound {
        let condition = scheduled_condition(p).expect("PodScheduled condition");
        assert_eq!(condition.status, "True");
    }
    assert_eq!(node_of(&pods.get("other").await.unwrap()), None);

    let events: Api<Event> = Api::namespaced(pods.store().clone(), "default");
    let p0 = pods.get("p0").await.unwrap();
    let expected = format!(
        "Successfully assigned default/p0 to {}",
        node_of(&p0).unwrap()
    );
    let events = events.list(&Default::default()).await.unwrap().items;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("Scheduled")
                && e.message.as_deref() == Some(expected.as_str())),
        "no Scheduled event for p0 in {events:?}"
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn many_pods_at_once_never_overcommit_a_node() {
    let (running, pods, nodes) = start(SchedulingConfig {
        workers: 4,
        ..SchedulingConfig::default()
    });
    for n in ["n1", "n2", "n3"] {
        nodes
            .create(&node(n, "1", "8Gi", "110", json!({})))
            .await
            .unwrap();
    }
    // 20 pods of 300m; 3 fit per 1-CPU node, so 9 are bound and 11 wait.
    for i in 0..20 {
        create(
            &pods,
            pod(&format!("p{i:02}"), json!({"cpu": "300m"}), json!({})),
        )
        .await;
    }
    let settled = || async {
        let list = pods.list(&Default::default()).await.unwrap().items;
        let bound = list.iter().filter(|p| node_of(p).is_some()).count();
        let waiting = list
            .iter()
            .filter(|p| {
                scheduled_condition(p).is_some_and(|c| c.reason.as_deref() == Some("Unschedulable"))
            })
            .count();
        (bound == 9 && waiting == 11).then_some(list)
    };
    eventually("9 bound and 11 unschedulable", WAIT, settled).await;
    // Give a runaway scheduler a chance to overcommit before checking.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let list = pods.list(&Default::default()).await.unwrap().items;
    for n in ["n1", "n2", "n3"] {
        let cpu: i64 = list
            .iter()
            .filter(|p| node_of(p).as_deref() == Some(n))
            .map(|p| pod_requests(p.spec.as_ref().unwrap()).unwrap().milli_cpu)
            .sum();
        assert_eq!(cpu, 900, "node {n} holds {cpu}m of 1000m");
    }
    let waiting = list.iter().find(|p| node_of(p).is_none()).unwrap();
    let condition = scheduled_condition(waiting).unwrap();
    assert_eq!(condition.status, "False");
    assert_eq!(
        condition.message.as_deref(),
        Some("0/3 nodes are available: 3 Insufficient cpu.")
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn unschedulable_pod_is_bound_once_a_fitting_node_appears() {
    // A long backoff proves the retry comes from the node event, not the timer.
    let (running, pods, nodes) = start(SchedulingConfig {
        backoff: Backoff {
            base: Duration::from_secs(60),
            max: Duration::from_secs(60),
        },
        ..SchedulingConfig::default()
    });
    nodes
        .create(&node("hdd", "4", "8Gi", "110", json!({"disk": "hdd"})))
        .await
        .unwrap();
    create(
        &pods,
        pod("db", json!({}), json!({"nodeSelector": {"disk": "ssd"}})),
    )
    .await;

    let condition = eventually("PodScheduled=False", WAIT, || async {
        let p = pods.get("db").await.unwrap();
        scheduled_condition(&p).filter(|c| c.status == "False")
    })
    .await;
    assert_eq!(condition.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(
        condition.message.as_deref(),
        Some("0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.")
    );

    nodes
        .create(&node("ssd", "4", "8Gi", "110", json!({"disk": "ssd"})))
        .await
        .unwrap();
    let p = eventually("db bound to ssd", WAIT, || async {
        let p = pods.get("db").await.unwrap();
        node_of(&p).is_some().then_some(p)
    })
    .await;
    assert_eq!(node_of(&p).as_deref(), Some("ssd"));
    assert_eq!(scheduled_condition(&p).unwrap().status, "True");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn framework_loop_preempts_and_binds_the_higher_priority_pod() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let framework = Arc::new(kube_sched::framework::Framework::new());
    let running = Orchestrator::builder()
        .store(store.clone())
        .scheduler(SchedulingLoop::with_framework(
            framework,
            "default-scheduler",
            SchedulingConfig {
                backoff: Backoff {
                    base: Duration::from_millis(50),
                    max: Duration::from_millis(200),
                },
                ..SchedulingConfig::default()
            },
        ))
        .build()
        .unwrap()
        .start();
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let nodes: Api<Node> = Api::all(store);
    nodes
        .create(&node("n1", "1", "8Gi", "110", json!({})))
        .await
        .unwrap();
    create(
        &pods,
        pod("low", json!({"cpu": "800m"}), json!({"priority": 1})),
    )
    .await;
    eventually("low bound", WAIT, || async {
        node_of(&pods.get("low").await.unwrap())
    })
    .await;
    create(
        &pods,
        pod("high", json!({"cpu": "800m"}), json!({"priority": 100})),
    )
    .await;
    let high = eventually("high bound", WAIT, || async {
        let p = pods.get("high").await.unwrap();
        node_of(&p).is_some().then_some(p)
    })
    .await;
    assert_eq!(node_of(&high).as_deref(), Some("n1"));
    assert!(pods.get("low").await.is_err(), "the victim was deleted");
    assert_eq!(
        high.status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref()),
        Some("n1")
    );
    running.shutdown().await.unwrap();
}
