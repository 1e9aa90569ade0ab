//! A control plane split the way Kubernetes splits it: a secure API server, and the scheduler,
//! the controller manager and a node agent each as a client of it under its own identity. Each
//! can do its job, and no more.

use crate::secure::{SecureServer, object};
use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use kube_parts::apiserver::authz::{CONTROLLER_MANAGER_USER, PROXY_USER, SCHEDULER_USER};
use kube_parts::core::orchestrator::{Orchestrator, RunningOrchestrator};
use kube_parts::core::store::{Store, StoreError};
use kube_parts::core::{GroupKind, ObjectKey};
use kube_parts::ctrl::{
    ControllerManager, DeploymentController, EndpointSliceController, EndpointsController,
    GarbageCollector, NamespaceController, NodeLifecycleController, ReplicaSetController,
    ServiceAllocator,
};
use kube_parts::node::{FakeRuntime, NodeAgent};
use kube_parts::remote::ApiBinder;
use kube_parts::sched::framework::Framework;
use kube_parts::sched::{DEFAULT_SCHEDULER_NAME, SchedulingConfig, SchedulingLoop};
use kube_parts::store::{RemoteError, RemoteStore};
use serde_json::json;

fn is_forbidden(error: &StoreError) -> bool {
    let mut source = error.source();
    while let Some(e) = source {
        if let Some(remote) = e.downcast_ref::<RemoteError>() {
            return remote.code == 403;
        }
        source = e.source();
    }
    false
}

async fn expect_forbidden(what: &str, result: Result<impl std::fmt::Debug, StoreError>) {
    match result {
        Err(e) if is_forbidden(&e) => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

fn start(
    store: Arc<RemoteStore>,
    f: impl FnOnce(
        kube_parts::core::orchestrator::OrchestratorBuilder,
    ) -> kube_parts::core::orchestrator::OrchestratorBuilder,
) -> RunningOrchestrator {
    f(Orchestrator::builder()
        .store(store)
        .shutdown_timeout(Duration::from_secs(10)))
    .build()
    .unwrap()
    .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_and_controller_manager_run_remotely_with_least_privilege() {
    let server = SecureServer::start(false).await;
    let node_dir = tempfile::tempdir().unwrap();
    let identity = |file: &str, user: &str, groups: &[&str]| server.identity(file, user, groups);
    let admin = identity("admin", "kubernetes-admin", &["system:masters"]);
    let scheduler_store = identity("scheduler", SCHEDULER_USER, &[]);
    let manager_store = identity("controller-manager", CONTROLLER_MANAGER_USER, &[]);
    let node_store = identity("node-n1", "system:node:n1", &["system:nodes"]);

    let scheduler = start(scheduler_store.clone(), |b| {
        b.scheduler(
            SchedulingLoop::with_framework(
                Arc::new(Framework::new()),
                DEFAULT_SCHEDULER_NAME,
                SchedulingConfig::default(),
            )
            .with_binder(Arc::new(ApiBinder::new(scheduler_store.clone()))),
        )
    });
    let manager = start(manager_store.clone(), |b| {
        b.controllers(
            ControllerManager::new()
                .with(ReplicaSetController::new())
                .with(DeploymentController::new())
                .with(EndpointsController::new())
                .with(EndpointSliceController::new())
                .with(ServiceAllocator::new())
                .with(NamespaceController::new())
                .with(NodeLifecycleController::new())
                .with(GarbageCollector::new(GroupKind::POD).owner(GroupKind::REPLICA_SET))
                .with(
                    GarbageCollector::new(GroupKind::REPLICA_SET)
                        .owner(GroupKind::new("apps", "Deployment")),
                ),
        )
    });
    let agent = NodeAgent::builder("n1", Arc::new(FakeRuntime::new()))
        .root_dir(node_dir.path().join("n1"))
        .heartbeat_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let node = start(node_store.clone(), |b| b.node(agent));

    // The admin deploys; the controller manager makes pods, the scheduler binds them, the
    // node runs them: each through the API server, as itself.
    admin
        .create(object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}
        })))
        .await
        .unwrap();
    admin
        .create(object(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}
        })))
        .await
        .unwrap();
    let deployment = GroupKind::new("apps", "Deployment");
    let key = ObjectKey::namespaced("default", "web");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let d = admin.get(&deployment, &key).await.unwrap();
        let available = d
            .field("status.availableReplicas")
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        if available == 2 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let pods = admin
                .list(&GroupKind::POD, Some("default"), &Default::default())
                .await
                .unwrap();
            let pods: Vec<_> = pods
                .items
                .iter()
                .map(|p| (p.field("spec.nodeName"), p.field("status")))
                .collect();
            panic!(
                "the Deployment never became available: {:?}; pods: {pods:?}",
                d.data.get("status")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pods = admin
        .list(&GroupKind::POD, Some("default"), &Default::default())
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 2);
    for pod in &pods.items {
        assert_eq!(pod.field("spec.nodeName"), Some(json!("n1")));
    }
    let service = admin
        .get(
            &GroupKind::SERVICE,
            &ObjectKey::namespaced("default", "web"),
        )
        .await
        .unwrap();
    assert!(
        service
            .field("spec.clusterIP")
            .is_some_and(|ip| ip.is_string()),
        "the controller manager allocated the Service's IP"
    );

    // And no more than their jobs.
    let secret = || {
        object(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "default"}, "stringData": {"k": "v"}}))
    };
    let pod = || {
        object(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "extra", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}))
    };
    let escalation = || {
        object(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "me-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "anyone"}]}),
        )
    };
    expect_forbidden(
        "scheduler creates a pod",
        scheduler_store.create(pod()).await,
    )
    .await;
    expect_forbidden(
        "scheduler creates a secret",
        scheduler_store.create(secret()).await,
    )
    .await;
    expect_forbidden(
        "scheduler reads a secret",
        scheduler_store
            .get(
                &GroupKind::new("", "Secret"),
                &ObjectKey::namespaced("default", "s"),
            )
            .await,
    )
    .await;
    let mut d = admin.get(&deployment, &key).await.unwrap();
    d.data["spec"]["replicas"] = json!(5);
    expect_forbidden(
        "scheduler scales a Deployment",
        scheduler_store.update(d).await,
    )
    .await;
    expect_forbidden(
        "scheduler deletes a node",
        scheduler_store
            .delete(
                &GroupKind::NODE,
                &ObjectKey::cluster("n1"),
                &Default::default(),
            )
            .await,
    )
    .await;
    expect_forbidden(
        "scheduler escalates",
        scheduler_store.create(escalation()).await,
    )
    .await;
    expect_forbidden(
        "controller manager creates a secret",
        manager_store.create(secret()).await,
    )
    .await;
    expect_forbidden(
        "controller manager escalates",
        manager_store.create(escalation()).await,
    )
    .await;
    let mut role = admin
        .get(
            &GroupKind::new("rbac.authorization.k8s.io", "ClusterRole"),
            &ObjectKey::cluster(CONTROLLER_MANAGER_USER),
        )
        .await
        .unwrap();
    role.data["rules"] = json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]);
    expect_forbidden(
        "controller manager widens its own role",
        manager_store.update(role).await,
    )
    .await;
    expect_forbidden("a node creates pods", node_store.create(pod()).await).await;

    // A service proxy reads Services and their endpoints, nothing else.
    let proxy_store = identity("proxy", PROXY_USER, &[]);
    let services = proxy_store
        .list(&GroupKind::SERVICE, None, &Default::default())
        .await
        .unwrap();
    assert!(
        services
            .items
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some("web")),
        "the proxy sees the Services"
    );
    proxy_store
        .list(
            &GroupKind::new("discovery.k8s.io", "EndpointSlice"),
            None,
            &Default::default(),
        )
        .await
        .unwrap();
    expect_forbidden(
        "the proxy lists pods",
        proxy_store
            .list(&GroupKind::POD, None, &Default::default())
            .await,
    )
    .await;
    expect_forbidden(
        "the proxy creates a secret",
        proxy_store.create(secret()).await,
    )
    .await;

    for running in [node, manager, scheduler] {
        running.shutdown().await.unwrap();
    }
}
