//! `SchedulingLoop` over a `MemStore`, inside an orchestrator.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, Pod, PodCondition};
use kube_core::object::ObjectKey;
use kube_core::orchestrator::{Orchestrator, RunningOrchestrator};
use kube_core::resources::pod_requests;
use kube_core::store::{Store, StoreError};
use kube_core::typed::Api;
use kube_core::workqueue::Backoff;
use kube_sched::binding::{BindOutcome, Binder, BindingSubresource, StoreBinder};
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
    // The pod is parked after failing; only the node event brings it back (the periodic
    // retry of parked pods comes after 5 minutes), once its short backoff has passed.
    let (running, pods, nodes) = start(SchedulingConfig {
        backoff: Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(100),
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

#[tokio::test]
async fn higher_priority_pods_are_scheduled_first() {
    // Both pods are pending before the loop starts; the node fits one of them. The queue
    // pops the higher priority first although it was created last.
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let nodes: Api<Node> = Api::all(store.clone());
    nodes
        .create(&node("n1", "1", "8Gi", "110", json!({})))
        .await
        .unwrap();
    create(
        &pods,
        pod("low", json!({"cpu": "800m"}), json!({"priority": 1})),
    )
    .await;
    create(
        &pods,
        pod("high", json!({"cpu": "800m"}), json!({"priority": 100})),
    )
    .await;
    let running = Orchestrator::builder()
        .store(store.clone())
        .scheduler(SchedulingLoop::with_config(
            Arc::new(DefaultScheduler::new()),
            SchedulingConfig {
                workers: 1,
                ..SchedulingConfig::default()
            },
        ))
        .build()
        .unwrap()
        .start();
    let high = eventually("high bound", WAIT, || async {
        node_of(&pods.get("high").await.unwrap())
    })
    .await;
    assert_eq!(high, "n1");
    let condition = eventually("low marked unschedulable", WAIT, || async {
        scheduled_condition(&pods.get("low").await.unwrap()).filter(|c| c.status == "False")
    })
    .await;
    assert_eq!(condition.reason.as_deref(), Some("Unschedulable"));
    assert!(node_of(&pods.get("low").await.unwrap()).is_none());
    running.shutdown().await.unwrap();
}

/// A binder that records the bindings it was asked for and defers to `pods/binding`.
#[derive(Debug, Default)]
struct Recording(std::sync::Mutex<Vec<(String, String)>>);

#[async_trait::async_trait]
impl Binder for Recording {
    async fn bind(
        &self,
        store: &Arc<dyn Store>,
        key: &ObjectKey,
        uid: Option<&str>,
        node: &str,
    ) -> Result<BindOutcome, StoreError> {
        self.0
            .lock()
            .unwrap()
            .push((key.name.clone(), node.to_string()));
        BindingSubresource.bind(store, key, uid, node).await
    }
}

#[tokio::test]
async fn the_loop_binds_through_a_pluggable_binder() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let binder = Arc::new(Recording::default());
    let running = Orchestrator::builder()
        .store(store.clone())
        .scheduler(
            SchedulingLoop::new(Arc::new(DefaultScheduler::new())).with_binder(binder.clone()),
        )
        .build()
        .unwrap()
        .start();
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let nodes: Api<Node> = Api::all(store);
    nodes
        .create(&node("n1", "4", "8Gi", "110", json!({})))
        .await
        .unwrap();
    create(&pods, pod("web", json!({}), json!({}))).await;
    let p = eventually("web bound", WAIT, || async {
        let p = pods.get("web").await.unwrap();
        node_of(&p).is_some().then_some(p)
    })
    .await;
    assert_eq!(node_of(&p).as_deref(), Some("n1"));
    assert_eq!(scheduled_condition(&p).unwrap().status, "True");
    assert_eq!(
        *binder.0.lock().unwrap(),
        [("web".to_string(), "n1".to_string())]
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn pods_binding_semantics_conflict_when_already_bound() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let created = create(&pods, pod("web", json!({}), json!({}))).await;
    let uid = created.metadata.uid.clone();
    let key = ObjectKey::namespaced("default", "web");

    // First binding: sets spec.nodeName and PodScheduled=True, no resourceVersion needed.
    let out = BindingSubresource
        .bind(&store, &key, uid.as_deref(), "n1")
        .await
        .unwrap();
    assert_eq!(out, BindOutcome::Bound);
    let p = pods.get("web").await.unwrap();
    assert_eq!(node_of(&p).as_deref(), Some("n1"));
    assert_eq!(scheduled_condition(&p).unwrap().status, "True");

    // Binding a bound pod is a Conflict, to another node and to the same one alike.
    for node in ["n2", "n1"] {
        let err = BindingSubresource
            .bind(&store, &key, uid.as_deref(), node)
            .await
            .unwrap_err();
        assert!(err.is_conflict(), "{err}");
        assert!(
            err.to_string()
                .contains("pod web is already assigned to node \"n1\""),
            "{err}"
        );
    }
    assert_eq!(
        node_of(&pods.get("web").await.unwrap()).as_deref(),
        Some("n1")
    );

    // Another uid (the pod was replaced) is a Conflict too; a missing pod is NotFound.
    create(&pods, pod("other", json!({}), json!({}))).await;
    let other = ObjectKey::namespaced("default", "other");
    let err = BindingSubresource
        .bind(&store, &other, Some("not-its-uid"), "n1")
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    let missing = ObjectKey::namespaced("default", "missing");
    let err = BindingSubresource
        .bind(&store, &missing, None, "n1")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");

    // The default binder instead reports a pod bound to the same node as already bound, and
    // one bound elsewhere as gone.
    assert_eq!(
        StoreBinder
            .bind(&store, &key, uid.as_deref(), "n1")
            .await
            .unwrap(),
        BindOutcome::AlreadyBound
    );
    assert_eq!(
        StoreBinder
            .bind(&store, &key, uid.as_deref(), "n2")
            .await
            .unwrap(),
        BindOutcome::Gone
    );
}

#[tokio::test]
async fn concurrent_pods_binding_writes_bind_once() {
    // Two schedulers racing to bind the same pod: exactly one wins, the other gets Conflict.
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    create(&pods, pod("web", json!({}), json!({}))).await;
    let key = ObjectKey::namespaced("default", "web");
    let (a, b) = tokio::join!(
        BindingSubresource.bind(&store, &key, None, "n1"),
        BindingSubresource.bind(&store, &key, None, "n2"),
    );
    let results = [a, b];
    let bound: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(bound.len(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .any(|r| r.as_ref().is_err_and(|e| e.is_conflict())),
        "{results:?}"
    );
}
