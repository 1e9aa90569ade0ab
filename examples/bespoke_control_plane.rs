//! A bespoke control plane: an orchestrator composed entirely of parts written here — a
//! Store, a Scheduler, a Controller, a Runtime and a Proxy — in kube-core's builder. The loops
//! that drive them come from the crates (`SchedulingLoop`, `ControllerManager`, `NodeAgent`,
//! `ProxyLoop`).
//!
//! `cargo run --example bespoke_control_plane` runs the cluster through its story (a ConfigMap
//! becomes a pod, scheduled by the own scheduler, run by the own runtime, served by the own
//! proxy, then deleted) and checks each part was used; `cargo test --example
//! bespoke_control_plane` runs the same as a test.
// Demo code: a failed step should stop it loudly.
#![allow(clippy::unwrap_used, missing_docs)]

mod own_store {
    //! A Store written here, not taken from kube-store: a map, a revision counter, and a full
    //! change log that watches replay from.

    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use futures::StreamExt;
    use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
    use kube_core::store::{
        ListOptions, ObjectList, Preconditions, Store, StoreError, WatchEvent, WatchOptions,
        WatchStream,
    };
    use tokio::sync::mpsc;

    type Log = Vec<(u64, GroupKind, Option<DynamicObject>, Option<DynamicObject>)>;

    /// A watch: kind, namespace, filter, and where its events go.
    type Watcher = (
        GroupKind,
        Option<String>,
        ListOptions,
        mpsc::UnboundedSender<Result<WatchEvent, StoreError>>,
    );

    #[derive(Default)]
    struct State {
        revision: u64,
        objects: BTreeMap<(GroupKind, ObjectKey), DynamicObject>,
        log: Log,
        watchers: Vec<Watcher>,
    }

    /// The test's own store. Counts calls so the test can show it was used.
    #[derive(Default)]
    pub(crate) struct OwnStore {
        state: Mutex<State>,
        next_name: AtomicU64,
        pub(crate) calls: AtomicU64,
    }

    impl std::fmt::Debug for OwnStore {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("OwnStore")
        }
    }

    fn event_for(
        ns: &Option<String>,
        filter: &ListOptions,
        revision: u64,
        before: &Option<DynamicObject>,
        after: &Option<DynamicObject>,
    ) -> Option<WatchEvent> {
        let selects = |o: &&DynamicObject| {
            ns.as_ref()
                .is_none_or(|n| o.metadata.namespace.as_ref() == Some(n))
                && filter.matches(o)
        };
        match (
            before.as_ref().filter(selects),
            after.as_ref().filter(selects),
        ) {
            (None, Some(a)) => Some(WatchEvent::Added(Arc::new(a.clone()))),
            (Some(_), Some(a)) => Some(WatchEvent::Modified(Arc::new(a.clone()))),
            (Some(b), None) => {
                let mut b = b.clone();
                b.metadata.resource_version = Some(revision.to_string());
                Some(WatchEvent::Deleted(Arc::new(b)))
            }
            (None, None) => None,
        }
    }

    impl OwnStore {
        fn write(
            &self,
            kind: GroupKind,
            key: ObjectKey,
            after: Option<DynamicObject>,
            check: impl FnOnce(Option<&DynamicObject>) -> Result<(), StoreError>,
        ) -> Result<u64, StoreError> {
            let mut s = self.state.lock().unwrap();
            let before = s.objects.get(&(kind.clone(), key.clone())).cloned();
            check(before.as_ref())?;
            s.revision += 1;
            let revision = s.revision;
            let mut after = after;
            if let Some(a) = after.as_mut() {
                a.metadata.resource_version = Some(revision.to_string());
                s.objects.insert((kind.clone(), key), a.clone());
            } else {
                s.objects.remove(&(kind.clone(), key));
            }
            s.watchers.retain(|(k, ns, filter, tx)| {
                *k != kind
                    || event_for(ns, filter, revision, &before, &after)
                        .is_none_or(|e| tx.send(Ok(e)).is_ok())
            });
            s.log.push((revision, kind, before, after));
            Ok(revision)
        }
    }

    #[async_trait::async_trait]
    impl Store for OwnStore {
        async fn get(
            &self,
            kind: &GroupKind,
            key: &ObjectKey,
        ) -> Result<DynamicObject, StoreError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let s = self.state.lock().unwrap();
            s.objects
                .get(&(kind.clone(), key.clone()))
                .cloned()
                .ok_or_else(|| StoreError::NotFound {
                    kind: kind.clone(),
                    key: key.clone(),
                })
        }

        async fn list(
            &self,
            kind: &GroupKind,
            namespace: Option<&str>,
            options: &ListOptions,
        ) -> Result<ObjectList, StoreError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let s = self.state.lock().unwrap();
            let items = s
                .objects
                .iter()
                .filter(|((k, key), o)| {
                    k == kind
                        && namespace.is_none_or(|n| key.namespace.as_deref() == Some(n))
                        && options.matches(o)
                })
                .map(|(_, o)| o.clone())
                .collect();
            Ok(ObjectList::new(items, s.revision))
        }

        async fn create(&self, mut object: DynamicObject) -> Result<DynamicObject, StoreError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if object.metadata.name.as_deref().unwrap_or("").is_empty() {
                let prefix = object.metadata.generate_name.clone().unwrap_or_default();
                object.metadata.name = Some(format!(
                    "{prefix}{}",
                    self.next_name.fetch_add(1, Ordering::Relaxed)
                ));
            }
            object.metadata.uid = Some(format!(
                "uid-{}",
                self.next_name.fetch_add(1, Ordering::Relaxed)
            ));
            object.metadata.generation = Some(1);
            let (kind, key) = (object.group_kind(), object.key());
            let stored = object.clone();
            let revision =
                self.write(
                    kind.clone(),
                    key.clone(),
                    Some(stored),
                    |before| match before {
                        Some(_) => Err(StoreError::AlreadyExists { kind, key }),
                        None => Ok(()),
                    },
                )?;
            object.metadata.resource_version = Some(revision.to_string());
            Ok(object)
        }

        async fn update(&self, mut object: DynamicObject) -> Result<DynamicObject, StoreError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let (kind, key) = (object.group_kind(), object.key());
            let current = self.get(&kind, &key).await?;
            if object.metadata.resource_version.is_some()
                && object.metadata.resource_version != current.metadata.resource_version
            {
                return Err(StoreError::Conflict {
                    kind,
                    key,
                    message: "stale".into(),
                });
            }
            object.metadata.uid = current.metadata.uid.clone();
            let expected = current.metadata.resource_version.clone();
            let revision =
                self.write(kind.clone(), key.clone(), Some(object.clone()), |before| {
                    if before.and_then(|b| b.metadata.resource_version.clone()) == expected {
                        Ok(())
                    } else {
                        Err(StoreError::Conflict {
                            kind,
                            key,
                            message: "raced".into(),
                        })
                    }
                })?;
            object.metadata.resource_version = Some(revision.to_string());
            Ok(object)
        }

        async fn delete(
            &self,
            kind: &GroupKind,
            key: &ObjectKey,
            pre: &Preconditions,
        ) -> Result<DynamicObject, StoreError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let mut last = None;
            let revision = self.write(kind.clone(), key.clone(), None, |before| match before {
                None => Err(StoreError::NotFound {
                    kind: kind.clone(),
                    key: key.clone(),
                }),
                Some(b) if pre.uid.is_some() && b.metadata.uid != pre.uid => {
                    Err(StoreError::Conflict {
                        kind: kind.clone(),
                        key: key.clone(),
                        message: "uid".into(),
                    })
                }
                Some(b) => {
                    last = Some(b.clone());
                    Ok(())
                }
            })?;
            let mut last = last.unwrap();
            last.metadata.resource_version = Some(revision.to_string());
            Ok(last)
        }

        async fn watch(
            &self,
            kind: &GroupKind,
            namespace: Option<&str>,
            options: &WatchOptions,
        ) -> Result<WatchStream, StoreError> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            let mut s = self.state.lock().unwrap();
            let from = options.resource_version.unwrap_or(s.revision);
            let (tx, rx) = mpsc::unbounded_channel();
            let ns = namespace.map(str::to_string);
            for (revision, k, before, after) in &s.log {
                if *revision > from
                    && k == kind
                    && let Some(e) = event_for(&ns, &options.filter, *revision, before, after)
                {
                    let _ = tx.send(Ok(e));
                }
            }
            s.watchers
                .push((kind.clone(), ns, options.filter.clone(), tx));
            Ok(tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed())
        }

        async fn current_revision(&self) -> Result<u64, StoreError> {
            Ok(self.state.lock().unwrap().revision)
        }
    }
}

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

use own_store::OwnStore;

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

/// Builds the cluster from the parts above, drives it, and checks each part did its work.
async fn run() {
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

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
    println!("bespoke control plane: store, scheduler, controller, runtime and proxy all used: ok");
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn builder_runs_a_cluster_made_of_the_users_own_parts() {
        super::run().await;
    }
}
