//! kube-core's shared machinery (informers, the orchestrator builder) over MemStore.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube_core::informer::{Informer, InformerEvent};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::orchestrator::{
    BoxError, Component, ComponentContext, Orchestrator, OrchestratorError,
};
use kube_core::store::{
    ListOptions, ObjectList, Preconditions, Store, StoreError, WatchOptions, WatchStream,
};
use kube_store::MemStore;
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn config_map(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"}, "data": {"k": name}
    }))
    .unwrap()
}

const CM: GroupKind = GroupKind::from_static("", "ConfigMap");

async fn recv(rx: &mut tokio::sync::mpsc::UnboundedReceiver<InformerEvent>) -> InformerEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("event in 5s")
        .expect("open")
}

/// A store whose first watch fails with "too old" after writes happen behind the informer's back.
#[derive(Debug)]
struct ForgetfulStore {
    inner: MemStore,
    failed_once: AtomicBool,
}

#[async_trait::async_trait]
impl Store for ForgetfulStore {
    async fn get(&self, kind: &GroupKind, key: &ObjectKey) -> Result<DynamicObject, StoreError> {
        self.inner.get(kind, key).await
    }
    async fn list(
        &self,
        kind: &GroupKind,
        ns: Option<&str>,
        o: &ListOptions,
    ) -> Result<ObjectList, StoreError> {
        self.inner.list(kind, ns, o).await
    }
    async fn create(&self, object: DynamicObject) -> Result<DynamicObject, StoreError> {
        self.inner.create(object).await
    }
    async fn update(&self, object: DynamicObject) -> Result<DynamicObject, StoreError> {
        self.inner.update(object).await
    }
    async fn delete(
        &self,
        kind: &GroupKind,
        key: &ObjectKey,
        p: &Preconditions,
    ) -> Result<DynamicObject, StoreError> {
        self.inner.delete(kind, key, p).await
    }
    async fn watch(
        &self,
        kind: &GroupKind,
        ns: Option<&str>,
        o: &WatchOptions,
    ) -> Result<WatchStream, StoreError> {
        if !self.failed_once.swap(true, Ordering::SeqCst) {
            // Changes land between the informer's list and its watch, and the store has
            // already forgotten them.
            self.inner
                .delete(
                    kind,
                    &ObjectKey::namespaced("default", "a"),
                    &Preconditions::default(),
                )
                .await?;
            self.inner.create(config_map("c")).await?;
            return Err(StoreError::TooOld {
                requested: o.resource_version.unwrap_or(0),
                oldest: 99,
            });
        }
        self.inner.watch(kind, ns, o).await
    }
    async fn current_revision(&self) -> Result<u64, StoreError> {
        self.inner.current_revision().await
    }
}

#[tokio::test]
async fn informer_caches_lists_and_streams_changes() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    store.create(config_map("a")).await.unwrap();
    let informer = Informer::new(store.clone(), CM);
    let shutdown = CancellationToken::new();
    informer.start(shutdown.clone());
    informer.wait_until_synced().await;
    assert!(informer.is_synced());
    assert_eq!(informer.list().len(), 1);

    // A subscriber first gets the current state, then every change in order.
    let mut rx = informer.subscribe();
    assert!(matches!(recv(&mut rx).await, InformerEvent::Applied(o) if o.key().name == "a"));
    store.create(config_map("b")).await.unwrap();
    store
        .delete(
            &CM,
            &ObjectKey::namespaced("default", "a"),
            &Preconditions::default(),
        )
        .await
        .unwrap();
    assert!(matches!(recv(&mut rx).await, InformerEvent::Applied(o) if o.key().name == "b"));
    assert!(matches!(recv(&mut rx).await, InformerEvent::Deleted(o) if o.key().name == "a"));
    assert!(
        informer
            .get(&ObjectKey::namespaced("default", "a"))
            .is_none()
    );
    assert_eq!(informer.revision(), 3);
    let typed: k8s_openapi::api::core::v1::ConfigMap = informer
        .get_typed(&ObjectKey::namespaced("default", "b"))
        .unwrap();
    assert_eq!(typed.data.unwrap()["k"], "b");
    shutdown.cancel();
}

#[tokio::test]
async fn informer_relists_when_its_revision_is_too_old() {
    let inner = MemStore::new();
    inner.create(config_map("a")).await.unwrap();
    inner.create(config_map("b")).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(ForgetfulStore {
        inner,
        failed_once: AtomicBool::new(false),
    });
    let informer = Informer::new(store.clone(), CM);
    let mut rx = informer.subscribe();
    let shutdown = CancellationToken::new();
    informer.start(shutdown.clone());

    let mut seen = Vec::new();
    while seen.len() < 4 {
        seen.push(match recv(&mut rx).await {
            InformerEvent::Applied(o) => format!("+{}", o.key().name),
            InformerEvent::Deleted(o) => format!("-{}", o.key().name),
        });
    }
    // First list: a, b. Re-list after "too old": a is gone, c is new; nothing is lost.
    assert_eq!(seen, ["+a", "+b", "-a", "+c"]);
    let names: Vec<String> = informer
        .list()
        .iter()
        .map(|o| o.key().name.clone())
        .collect();
    assert_eq!(names, ["b", "c"]);
    // And it watches from the re-list's revision onwards.
    store.create(config_map("d")).await.unwrap();
    assert!(matches!(recv(&mut rx).await, InformerEvent::Applied(o) if o.key().name == "d"));
    shutdown.cancel();
}

#[derive(Debug)]
struct UntilShutdown(Arc<AtomicBool>);

#[async_trait::async_trait]
impl Component for UntilShutdown {
    fn name(&self) -> String {
        "until-shutdown".into()
    }
    async fn run(self: Box<Self>, ctx: ComponentContext) -> Result<(), BoxError> {
        ctx.store.create(config_map("from-component")).await?;
        ctx.shutdown.cancelled().await;
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Debug)]
struct Failing;

#[async_trait::async_trait]
impl Component for Failing {
    fn name(&self) -> String {
        "failing".into()
    }
    async fn run(self: Box<Self>, _ctx: ComponentContext) -> Result<(), BoxError> {
        Err("cannot start".into())
    }
}

#[tokio::test]
async fn orchestrator_starts_components_and_shuts_them_down() {
    assert!(matches!(
        Orchestrator::builder().build(),
        Err(OrchestratorError::MissingStore)
    ));

    let stopped = Arc::new(AtomicBool::new(false));
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let running = Orchestrator::builder()
        .store(store.clone())
        .component(UntilShutdown(stopped.clone()))
        .build()
        .unwrap()
        .start();
    assert_eq!(running.component_names(), ["until-shutdown"]);
    let key = ObjectKey::namespaced("default", "from-component");
    while store.get(&CM, &key).await.is_err() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    running.shutdown().await.unwrap();
    assert!(
        stopped.load(Ordering::SeqCst),
        "component saw the shutdown signal"
    );

    // A failing component stops the orchestrator with an error naming it.
    let orchestrator = Orchestrator::builder()
        .store(store)
        .component(Failing)
        .build()
        .unwrap();
    let err = orchestrator
        .run_until(std::future::pending())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OrchestratorError::Component { name, .. } if name == "failing"),
        "{err}"
    );
}
