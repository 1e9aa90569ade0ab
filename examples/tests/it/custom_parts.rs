//! A cluster built entirely from trait implementations written here: a Store, a Scheduler, a
//! Controller, a Runtime and a Proxy. The loops that drive them come from the crates; each part
//! is shown to be used.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Pod, Service};
use kube_core::Orchestrator;
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{GroupKind, ObjectKey, controller_owner_ref};
use kube_core::proxy::{Proxy, ProxyError, ServiceTable, TableChange};
use kube_core::runtime::{
    ContainerConfig, ContainerFilter, ContainerState, ContainerStatus, LogOptions,
    PodSandboxConfig, PodSandboxStatus, Runtime, RuntimeError, SandboxState,
};
use kube_core::scheduler::{ScheduleError, Scheduler, Snapshot};
use kube_core::store::{Preconditions, Store};
use kube_core::typed::Api;
use kube_ctrl::ControllerManager;
use kube_net::ProxyLoop;
use kube_node::NodeAgent;
use kube_sched::SchedulingLoop;
use serde_json::json;

use crate::own_store::OwnStore;

/// Places each pod on the node with the fewest pods.
#[derive(Debug, Default)]
struct FewestPods {
    calls: AtomicU64,
}

impl Scheduler for FewestPods {
    fn schedule(&self, _pod: &Pod, snapshot: &Snapshot) -> Result<String, ScheduleError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        snapshot
            .nodes
            .iter()
            .min_by_key(|n| n.pods.len())
            .map(|n| n.name().to_string())
            .ok_or_else(|| ScheduleError::Unschedulable {
                reasons: BTreeMap::new(),
            })
    }
}

/// Runs one pod per ConfigMap, with the command in `data.command`.
#[derive(Debug, Default)]
struct PodPerConfigMap {
    reconciles: AtomicU64,
}

#[async_trait::async_trait]
impl Controller for PodPerConfigMap {
    fn name(&self) -> &str {
        "pod-per-configmap"
    }
    fn watches(&self) -> Watches {
        Watches::primary(GroupKind::of::<ConfigMap>()).owns(GroupKind::POD)
    }
    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        self.reconciles.fetch_add(1, Ordering::SeqCst);
        let ns = key.namespace.as_deref().unwrap_or("default");
        let maps: Api<ConfigMap> = Api::namespaced(ctx.store.clone(), ns);
        let pods: Api<Pod> = Api::namespaced(ctx.store.clone(), ns);
        let pod_name = format!("{}-pod", key.name);
        let Some(map) = maps.get_opt(&key.name).await? else {
            match pods.delete(&pod_name, &Preconditions::default()).await {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => return Ok(Action::await_change()),
            }
        };
        if pods.get_opt(&pod_name).await?.is_none() {
            let command = map
                .data
                .as_ref()
                .and_then(|d| d.get("command"))
                .cloned()
                .unwrap_or_default();
            let mut pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": pod_name, "labels": {"app": key.name}},
                "spec": {"containers": [{"name": "main", "image": "none", "command": ["sh", "-c", command]}]}
            }))
            .map_err(|e| ReconcileError::Invalid(e.to_string()))?;
            pod.metadata.owner_references = controller_owner_ref(&map).map(|o| vec![o]);
            pods.create(&pod).await?;
        }
        Ok(Action::await_change())
    }
}

#[derive(Debug, Clone)]
struct Sandbox {
    config: PodSandboxConfig,
    ready: bool,
    ip: String,
}

#[derive(Debug, Default)]
struct TinyRuntimeState {
    next: u64,
    sandboxes: BTreeMap<String, Sandbox>,
    containers: BTreeMap<String, ContainerStatus>,
}

/// A runtime that keeps sandboxes and containers in maps; containers run until stopped.
#[derive(Debug, Default)]
struct TinyRuntime {
    state: Mutex<TinyRuntimeState>,
    started: AtomicU64,
}

fn not_found(what: &'static str, id: &str) -> RuntimeError {
    RuntimeError::NotFound {
        what,
        id: id.to_string(),
    }
}

#[async_trait::async_trait]
impl Runtime for TinyRuntime {
    fn version(&self) -> String {
        "tiny/0.1".into()
    }
    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String, RuntimeError> {
        let mut s = self.state.lock().unwrap();
        s.next += 1;
        let id = format!("sb{}", s.next);
        let ip = format!("192.0.2.{}", s.next);
        s.sandboxes.insert(
            id.clone(),
            Sandbox {
                config: config.clone(),
                ready: true,
                ip,
            },
        );
        Ok(id)
    }
    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.state.lock().unwrap();
        s.sandboxes
            .get_mut(id)
            .ok_or_else(|| not_found("sandbox", id))?
            .ready = false;
        for c in s
            .containers
            .values_mut()
            .filter(|c| c.sandbox_id == id && c.state == ContainerState::Running)
        {
            c.state = ContainerState::Exited;
            c.exit_code = Some(137);
            c.finished_at = Some(SystemTime::now());
        }
        Ok(())
    }
    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.state.lock().unwrap();
        s.sandboxes.remove(id);
        s.containers.retain(|_, c| c.sandbox_id != id);
        Ok(())
    }
    async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus, RuntimeError> {
        let s = self.state.lock().unwrap();
        let sb = s
            .sandboxes
            .get(id)
            .ok_or_else(|| not_found("sandbox", id))?;
        Ok(PodSandboxStatus {
            id: id.to_string(),
            metadata: sb.config.metadata.clone(),
            state: if sb.ready {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            },
            created_at: SystemTime::UNIX_EPOCH,
            ip: Some(sb.ip.clone()),
            labels: sb.config.labels.clone(),
        })
    }
    async fn list_pod_sandboxes(&self) -> Result<Vec<PodSandboxStatus>, RuntimeError> {
        let ids: Vec<String> = self
            .state
            .lock()
            .unwrap()
            .sandboxes
            .keys()
            .cloned()
            .collect();
        let mut out = Vec::new();
        for id in ids {
            out.push(self.pod_sandbox_status(&id).await?);
        }
        Ok(out)
    }
    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
    ) -> Result<String, RuntimeError> {
        let mut s = self.state.lock().unwrap();
        if !s.sandboxes.contains_key(sandbox_id) {
            return Err(not_found("sandbox", sandbox_id));
        }
        s.next += 1;
        let id = format!("c{}", s.next);
        s.containers.insert(
            id.clone(),
            ContainerStatus {
                id: id.clone(),
                sandbox_id: sandbox_id.to_string(),
                name: config.name.clone(),
                attempt: config.attempt,
                image: config.image.clone(),
                state: ContainerState::Created,
                created_at: SystemTime::now(),
                started_at: None,
                finished_at: None,
                exit_code: None,
                reason: None,
                message: None,
                labels: config.labels.clone(),
                info: BTreeMap::new(),
            },
        );
        Ok(id)
    }
    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        let mut s = self.state.lock().unwrap();
        let c = s
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("container", id))?;
        c.state = ContainerState::Running;
        c.started_at = Some(SystemTime::now());
        self.started.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn stop_container(&self, id: &str, _timeout: Duration) -> Result<(), RuntimeError> {
        let mut s = self.state.lock().unwrap();
        let c = s
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("container", id))?;
        if c.state == ContainerState::Running {
            c.state = ContainerState::Exited;
            c.exit_code = Some(143);
            c.finished_at = Some(SystemTime::now());
        }
        Ok(())
    }
    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.state.lock().unwrap().containers.remove(id);
        Ok(())
    }
    async fn container_status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let s = self.state.lock().unwrap();
        s.containers
            .get(id)
            .cloned()
            .ok_or_else(|| not_found("container", id))
    }
    async fn list_containers(
        &self,
        filter: &ContainerFilter,
    ) -> Result<Vec<ContainerStatus>, RuntimeError> {
        let s = self.state.lock().unwrap();
        Ok(s.containers
            .values()
            .filter(|c| {
                filter
                    .sandbox_id
                    .as_ref()
                    .is_none_or(|id| *id == c.sandbox_id)
            })
            .filter(|c| filter.state.is_none_or(|st| st == c.state))
            .cloned()
            .collect())
    }
    async fn container_logs(
        &self,
        _id: &str,
        _options: &LogOptions,
    ) -> Result<Bytes, RuntimeError> {
        Ok(Bytes::new())
    }
}

/// A proxy that records what it is handed.
#[derive(Debug, Default)]
struct RecordingProxy {
    table: Mutex<ServiceTable>,
    calls: AtomicU64,
}

#[async_trait::async_trait]
impl Proxy for RecordingProxy {
    async fn sync(&self, table: &ServiceTable) -> Result<(), ProxyError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        *self.table.lock().unwrap() = table.clone();
        Ok(())
    }
    async fn apply(&self, changes: &[TableChange]) -> Result<(), ProxyError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.table.lock().unwrap().apply(changes);
        Ok(())
    }
    async fn applied(&self) -> Result<ServiceTable, ProxyError> {
        Ok(self.table.lock().unwrap().clone())
    }
}

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_runs_a_cluster_made_of_the_users_own_parts() {
    let store = Arc::new(OwnStore::default());
    let scheduler = Arc::new(FewestPods::default());
    let controller = Arc::new(PodPerConfigMap::default());
    let runtime = Arc::new(TinyRuntime::default());
    let proxy = Arc::new(RecordingProxy::default());

    let agent = NodeAgent::builder("own-node", runtime.clone())
        .resync_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let running = Orchestrator::builder()
        .store(store.clone())
        .scheduler(SchedulingLoop::new(scheduler.clone()))
        .controllers(ControllerManager::new().with_arc(controller.clone()))
        .node(agent)
        .proxy(ProxyLoop::new(proxy.clone()))
        .build()
        .unwrap()
        .start();

    let dyn_store: Arc<dyn Store> = store.clone();
    let maps: Api<ConfigMap> = Api::namespaced(dyn_store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(dyn_store.clone(), "default");
    let map: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "job"}, "data": {"command": "sleep 60"}}),
    )
    .unwrap();
    maps.create(&map).await.unwrap();

    let pod = eventually(
        "the controller's pod, scheduled and Running on the own runtime",
        async || {
            let pod = pods.get_opt("job-pod").await.unwrap()?;
            let status = pod.status.clone()?;
            (status.phase.as_deref() == Some("Running")).then_some(pod)
        },
    )
    .await;
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some("own-node")
    );
    let pod_ip = pod.status.unwrap().pod_ip.unwrap();
    assert!(
        pod_ip.starts_with("192.0.2."),
        "pod IP comes from the own runtime: {pod_ip}"
    );

    // Hand the proxy a service with this pod as its backend.
    let services: Api<Service> = Api::namespaced(dyn_store.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(dyn_store.clone(), "default");
    services
        .create(
            &serde_json::from_value(json!({"metadata": {"name": "job"},
            "spec": {"clusterIP": "10.96.0.20", "ports": [{"port": 80}]}}))
            .unwrap(),
        )
        .await
        .unwrap();
    endpoints
        .create(
            &serde_json::from_value(json!({"metadata": {"name": "job"},
            "subsets": [{"addresses": [{"ip": pod_ip}], "ports": [{"port": 8080}]}]}))
            .unwrap(),
        )
        .await
        .unwrap();
    let key = ObjectKey::namespaced("default", "job");
    eventually("the proxy to apply the service", async || {
        let table = proxy.applied().await.unwrap();
        let entry = table.services.get(&key)?;
        (entry.ports.first()?.endpoints.first()?.ip.to_string() == pod_ip).then_some(())
    })
    .await;

    // Deleting the ConfigMap removes the pod, and the node agent tears it down in the runtime.
    maps.delete("job", &Preconditions::default()).await.unwrap();
    eventually("pod gone and runtime empty", async || {
        let gone = pods.get_opt("job-pod").await.unwrap().is_none();
        let s = runtime.state.lock().unwrap();
        (gone && s.sandboxes.is_empty() && s.containers.is_empty()).then_some(())
    })
    .await;
    running.shutdown().await.unwrap();

    assert!(store.calls.load(Ordering::SeqCst) > 0, "own store used");
    assert!(
        scheduler.calls.load(Ordering::SeqCst) >= 1,
        "own scheduler used"
    );
    assert!(
        controller.reconciles.load(Ordering::SeqCst) >= 2,
        "own controller used"
    );
    assert!(
        runtime.started.load(Ordering::SeqCst) >= 1,
        "own runtime used"
    );
    assert!(proxy.calls.load(Ordering::SeqCst) >= 1, "own proxy used");
}
