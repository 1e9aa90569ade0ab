//! A controller for a kind of your own: `Greeting` (`greetings.example.com/v1`), a dynamic,
//! CustomResource-like kind registered with the API server at run time, and the controller
//! that gives each Greeting a ConfigMap holding its text and writes the Greeting's status.
//!
//! ```yaml
//! apiVersion: example.com/v1
//! kind: Greeting
//! metadata: {name: world}
//! spec: {message: Hello, to: world}
//! # after reconcile:
//! status: {phase: Ready, configMap: greeting-world, observedGeneration: 1}
//! ```
//!
//! Three pieces make it work, each a few lines:
//! - [`registry`]: the builtin kinds plus [`greeting_kind`] (`kube_core::kind::Registry::register`
//!   with a `KindInfo`); the API server serves whatever its registry holds (REST paths,
//!   discovery, OpenAPI, tables), so `kubectl get greetings` works.
//! - [`GreetingController`]: a `kube_core::Controller` run by kube-ctrl's `ControllerManager`.
//!   It watches Greetings and the ConfigMaps they own, so editing or deleting the ConfigMap by
//!   hand is repaired.
//! - a `GarbageCollector` for ConfigMaps owned by Greetings ([`controllers`]): deleting a
//!   Greeting deletes its ConfigMap through its owner reference.
//!
//! [`demo`] is the flow the `greeting_controller` example runs against the API server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube_apiserver::{ApiServer, ApiServerComponent, ApiServerConfig};
use kube_core::Orchestrator;
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::kind::{KindInfo, Registry};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::orchestrator::RunningOrchestrator;
use kube_core::store::{Preconditions, Store};
use kube_core::typed::Api;
use kube_ctrl::{ControllerManager, GarbageCollector};
use kube_store::{MemStore, RemoteStore, StoreConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The API group of the kind.
pub const GROUP: &str = "example.com";
/// Its version.
pub const VERSION: &str = "v1";
/// Its kind.
pub const KIND: &str = "Greeting";

/// `example.com/Greeting`.
pub fn group_kind() -> GroupKind {
    GroupKind::from_static(GROUP, KIND)
}

/// What the API server needs to know about the kind: group, version, plural, short name and
/// scope. No validator: the server stores any JSON object; the controller checks `spec`.
pub fn greeting_kind() -> KindInfo {
    let mut info = KindInfo::new(GROUP, VERSION, KIND, "greetings", true);
    info.short_names = vec!["greet".into()];
    info
}

/// The builtin kinds plus `Greeting`.
pub fn registry() -> anyhow::Result<Registry> {
    let mut registry = Registry::builtin().clone();
    registry
        .register(greeting_kind())
        .context("registering Greeting")?;
    Ok(registry)
}

/// What the user asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GreetingSpec {
    /// The greeting, e.g. `Hello`.
    pub message: String,
    /// Whom to greet (default `world`).
    #[serde(default)]
    pub to: Option<String>,
}

/// What the controller reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GreetingStatus {
    /// `Ready` once the ConfigMap holds the greeting, `Invalid` if `spec` cannot be read.
    pub phase: String,
    /// The ConfigMap holding the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<String>,
    /// Why the spec is invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The ConfigMap name of a Greeting.
pub fn config_map_name(greeting: &str) -> String {
    format!("greeting-{greeting}")
}

/// The text a spec produces: `Hello, world!`.
pub fn render(spec: &GreetingSpec) -> String {
    format!(
        "{}, {}!",
        spec.message,
        spec.to.as_deref().unwrap_or("world")
    )
}

/// Keeps a ConfigMap `greeting-<name>` with `data.greeting` = the rendered greeting for each
/// Greeting, owned by it, and writes the Greeting's `status`.
#[derive(Debug, Default, Clone)]
pub struct GreetingController {
    _private: (),
}

impl GreetingController {
    /// The controller.
    pub fn new() -> Self {
        Self::default()
    }
}

/// A controller owner reference to a Greeting.
fn owner_ref(greeting: &DynamicObject) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: greeting.api_version.clone(),
        kind: greeting.kind.clone(),
        name: greeting.metadata.name.clone()?,
        uid: greeting.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

impl GreetingController {
    /// Writes `status` unless it is already what the Greeting shows.
    async fn write_status(
        store: &Arc<dyn Store>,
        greeting: &DynamicObject,
        status: GreetingStatus,
    ) -> Result<(), ReconcileError> {
        let status = serde_json::to_value(&status).map_err(|e| ReconcileError::Other(e.into()))?;
        if greeting.data.get("status") == Some(&status) {
            return Ok(());
        }
        let mut updated = greeting.clone();
        updated.data.insert("status".into(), status);
        // A conflict (the Greeting changed meanwhile) fails the reconcile; it is retried with
        // the new version.
        store.update(updated).await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Controller for GreetingController {
    fn name(&self) -> &str {
        "greeting"
    }

    fn watches(&self) -> Watches {
        Watches::primary(group_kind()).owns(GroupKind::of::<ConfigMap>())
    }

    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        let Some(namespace) = key.namespace.as_deref() else {
            return Ok(Action::await_change());
        };
        // Gone: the garbage collector deletes the ConfigMap it owned.
        let Some(greeting) = ctx.informers.informer(&group_kind()).get(key) else {
            return Ok(Action::await_change());
        };
        if greeting.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let generation = greeting.metadata.generation;
        let spec = greeting
            .data
            .get("spec")
            .cloned()
            .ok_or_else(|| "spec is missing".to_string())
            .and_then(|s| {
                serde_json::from_value::<GreetingSpec>(s).map_err(|e| format!("spec: {e}"))
            })
            .and_then(|spec| {
                if spec.message.is_empty() {
                    Err("spec.message is empty".to_string())
                } else {
                    Ok(spec)
                }
            });
        let spec = match spec {
            Ok(spec) => spec,
            Err(message) => {
                // The user's mistake: report it on the object and wait for an edit.
                Self::write_status(
                    &ctx.store,
                    &greeting,
                    GreetingStatus {
                        phase: "Invalid".into(),
                        message: Some(message),
                        observed_generation: generation,
                        ..GreetingStatus::default()
                    },
                )
                .await?;
                return Ok(Action::await_change());
            }
        };

        let name = config_map_name(&key.name);
        let data = BTreeMap::from([("greeting".to_string(), render(&spec))]);
        let config_maps: Api<ConfigMap> = Api::namespaced(ctx.store.clone(), namespace);
        match config_maps.get_opt(&name).await? {
            Some(existing) if existing.data.as_ref() == Some(&data) => {}
            Some(mut existing) => {
                existing.data = Some(data);
                config_maps.replace(&existing).await?;
            }
            None => {
                let fresh = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(namespace.to_string()),
                        labels: Some(BTreeMap::from([(
                            "example.com/greeting".to_string(),
                            key.name.clone(),
                        )])),
                        owner_references: owner_ref(&greeting).map(|o| vec![o]),
                        ..ObjectMeta::default()
                    },
                    data: Some(data),
                    ..ConfigMap::default()
                };
                config_maps.create(&fresh).await?;
            }
        }
        Self::write_status(
            &ctx.store,
            &greeting,
            GreetingStatus {
                phase: "Ready".into(),
                config_map: Some(name),
                observed_generation: generation,
                ..GreetingStatus::default()
            },
        )
        .await?;
        Ok(Action::await_change())
    }
}

/// The controllers the example runs: [`GreetingController`] and a garbage collector deleting
/// ConfigMaps whose Greeting is gone.
pub fn controllers() -> ControllerManager {
    ControllerManager::new()
        .with(GreetingController::new())
        .with(GarbageCollector::new(GroupKind::of::<ConfigMap>()).owner(group_kind()))
}

/// An API server serving the builtin kinds plus `Greeting` over an in-memory store (plain
/// HTTP, no authentication: every request acts as an administrator), with the Greeting
/// controllers running behind it.
#[derive(Debug)]
pub struct GreetingServer {
    /// `http://ADDR:PORT`.
    pub url: String,
    /// The registry the store and server use; a `RemoteStore` client needs it too.
    pub registry: Registry,
    running: RunningOrchestrator,
}

impl GreetingServer {
    /// Starts the store, the API server on `listen` (port 0 picks one) and the controllers.
    pub async fn start(listen: SocketAddr) -> anyhow::Result<Self> {
        // The store, the API server and clients each resolve kinds with a registry: all three
        // get the one holding Greeting.
        let registry = registry()?;
        let store: Arc<dyn Store> = Arc::new(MemStore::with_config(
            StoreConfig::default().registry(registry.clone()),
        ));
        store
            .create(serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"},
            }))?)
            .await?;
        let server =
            ApiServer::with_config(store.clone(), registry.clone(), ApiServerConfig::default());
        let (api, addr) = ApiServerComponent::bind(server, listen)
            .with_context(|| format!("binding the API server to {listen}"))?;
        let running = Orchestrator::builder()
            .store(store)
            .component(api)
            .controllers(controllers())
            .shutdown_timeout(Duration::from_secs(10))
            .build()?
            .start();
        Ok(Self {
            url: format!("http://{addr}"),
            registry,
            running,
        })
    }

    /// A client of the server that knows the Greeting kind.
    pub fn client(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(Arc::new(RemoteStore::with_registry(
            &self.url,
            self.registry.clone(),
        )?))
    }

    /// Stops the server and the controllers.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.running.shutdown().await?;
        Ok(())
    }
}

/// A Greeting object.
pub fn greeting(name: &str, message: &str, to: &str) -> anyhow::Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": KIND,
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"message": message, "to": to},
    }))?)
}

/// Polls `check` every 50 ms until it returns `Some`, for up to 30 s.
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ConfigMap's greeting text, if the ConfigMap exists.
async fn greeting_text(store: &Arc<dyn Store>, name: &str) -> anyhow::Result<Option<String>> {
    let config_maps: Api<ConfigMap> = Api::namespaced(store.clone(), "default");
    Ok(config_maps
        .get_opt(&config_map_name(name))
        .await?
        .map(|cm| {
            cm.data
                .and_then(|d| d.get("greeting").cloned())
                .unwrap_or_default()
        }))
}

/// The Greeting's `status.phase`.
async fn phase(store: &Arc<dyn Store>, name: &str) -> anyhow::Result<Option<String>> {
    let object = store
        .get(&group_kind(), &ObjectKey::namespaced("default", name))
        .await?;
    Ok(object
        .data
        .get("status")
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str)
        .map(str::to_string))
}

/// What a user sees, through `store` (a `RemoteStore` on the API server in the example):
/// creating a Greeting makes its ConfigMap and a `Ready` status; editing it updates the
/// ConfigMap; a Greeting without a message gets an `Invalid` status; deleting the Greeting
/// deletes the ConfigMap. Prints each step.
pub async fn demo(store: Arc<dyn Store>) -> anyhow::Result<()> {
    store.create(greeting("world", "Hello", "world")?).await?;
    let text = wait_for("the ConfigMap", || async {
        greeting_text(&store, "world").await
    })
    .await?;
    anyhow::ensure!(text == "Hello, world!", "unexpected greeting {text:?}");
    wait_for("status Ready", || async {
        Ok(phase(&store, "world").await?.filter(|p| p == "Ready"))
    })
    .await?;
    println!("created greeting/world -> configmap/greeting-world: {text:?}, status Ready");

    // Edit the spec; the ConfigMap follows.
    let key = ObjectKey::namespaced("default", "world");
    let mut current = store.get(&group_kind(), &key).await?;
    current
        .data
        .insert("spec".into(), json!({"message": "Goodbye", "to": "world"}));
    store.update(current).await?;
    let text = wait_for("the edited greeting", || async {
        Ok(greeting_text(&store, "world")
            .await?
            .filter(|t| t == "Goodbye, world!"))
    })
    .await?;
    println!("edited greeting/world -> {text:?}");

    // A ConfigMap edited by hand is put back.
    let config_maps: Api<ConfigMap> = Api::namespaced(store.clone(), "default");
    let mut cm = config_maps.get(&config_map_name("world")).await?;
    cm.data = Some(BTreeMap::from([("greeting".into(), "tampered".into())]));
    config_maps.replace(&cm).await?;
    wait_for("the ConfigMap repaired", || async {
        Ok(greeting_text(&store, "world")
            .await?
            .filter(|t| t == "Goodbye, world!"))
    })
    .await?;
    println!("tampered with configmap/greeting-world -> repaired");

    // A spec the controller cannot use is reported in the status.
    let mut bad = greeting("broken", "x", "y")?;
    bad.data.insert("spec".into(), json!({"to": "nobody"}));
    store.create(bad).await?;
    wait_for("status Invalid", || async {
        Ok(phase(&store, "broken").await?.filter(|p| p == "Invalid"))
    })
    .await?;
    println!("created greeting/broken without a message -> status Invalid");

    store
        .delete(&group_kind(), &key, &Preconditions::default())
        .await?;
    store
        .delete(
            &group_kind(),
            &ObjectKey::namespaced("default", "broken"),
            &Preconditions::default(),
        )
        .await?;
    wait_for("the ConfigMap deleted", || async {
        Ok(greeting_text(&store, "world")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    println!("deleted greeting/world -> configmap/greeting-world deleted");
    Ok(())
}
