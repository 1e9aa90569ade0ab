//! [`TestClusterBuilder`]: what the test cluster is made of, and how fast its clocks run.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use kube_core::controller::Controller;
use kube_core::orchestrator::{Component, Orchestrator, OrchestratorBuilder};
use kube_core::store::Store;
use kube_ctrl::{ControllerManager, NodeLifecycleConfig};
use kube_net::{MemoryProxy, ProxyLoop};
use kube_node::{FakeBehavior, NodeAgentBuilder};
use kube_sched::framework::Framework;
use kube_sched::{DEFAULT_SCHEDULER_NAME, SchedulingConfig, SchedulingLoop};
use kube_store::MemStore;

use super::cluster::{TestCluster, ensure_namespaces};
use super::error::Result;
use super::nodes::{NodeSettings, Nodes};

/// Adjusts one node agent's builder before it is built: `(node name, builder) -> builder`.
pub type ConfigureNode = Arc<dyn Fn(&str, NodeAgentBuilder) -> NodeAgentBuilder + Send + Sync>;

/// Configures a [`TestCluster`]. Start with [`TestCluster::builder`], finish with
/// [`start`](Self::start).
///
/// The defaults are chosen for tests: 3 nodes of 4 CPUs, 8Gi and 110 pods; heartbeats every
/// 5 s and a node declared unreachable after 20 s without one; containers that run until
/// stopped; waits that give up after 30 s. Pods are evicted from an unreachable node after
/// Kubernetes' default 300 s unless they tolerate less (or
/// [`default_toleration`](Self::default_toleration) is shorter) — on paused time all of that
/// passes instantly.
pub struct TestClusterBuilder {
    pub(crate) nodes: usize,
    pub(crate) settings: NodeSettings,
    pub(crate) lifecycle: NodeLifecycleConfig,
    pub(crate) wait_timeout: Duration,
    pub(crate) wait_ready: bool,
    pub(crate) controller_workers: usize,
    pub(crate) controllers: Vec<Arc<dyn Controller>>,
    pub(crate) custom_scheduler: bool,
    pub(crate) orchestrator: OrchestratorBuilder,
}

impl fmt::Debug for TestClusterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestClusterBuilder")
            .field("nodes", &self.nodes)
            .field("settings", &self.settings)
            .field("lifecycle", &self.lifecycle)
            .field("wait_timeout", &self.wait_timeout)
            .field("wait_ready", &self.wait_ready)
            .field("controller_workers", &self.controller_workers)
            .field("controllers", &self.controllers.len())
            .field("custom_scheduler", &self.custom_scheduler)
            .finish_non_exhaustive()
    }
}

impl Default for TestClusterBuilder {
    fn default() -> Self {
        Self {
            nodes: 3,
            settings: NodeSettings::default(),
            lifecycle: NodeLifecycleConfig {
                grace_period: Duration::from_secs(20),
                default_toleration: Duration::from_secs(300),
            },
            wait_timeout: Duration::from_secs(30),
            wait_ready: true,
            controller_workers: 2,
            controllers: Vec::new(),
            custom_scheduler: false,
            orchestrator: Orchestrator::builder(),
        }
    }
}

impl TestClusterBuilder {
    /// How many nodes the cluster starts with (default 3), named `node-1` … `node-<n>`.
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// Every node's `cpu` and `memory` capacity, as quantities (`"4"`, `"500m"`, `"8Gi"`).
    pub fn node_capacity(self, cpu: impl Into<String>, memory: impl Into<String>) -> Self {
        self.node_resource("cpu", cpu)
            .node_resource("memory", memory)
    }

    /// Every node's capacity of one resource: `("pods", "250")`, `("example.com/gpu", "2")`.
    pub fn node_resource(
        mut self,
        resource: impl Into<String>,
        quantity: impl Into<String>,
    ) -> Self {
        self.settings
            .capacity
            .insert(resource.into(), quantity.into());
        self
    }

    /// A label on every node.
    pub fn node_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.labels.insert(key.into(), value.into());
        self
    }

    /// Adjusts each node agent's builder (labels per node, capacity per node, container GC, …),
    /// after the cluster-wide settings are applied. Also used by
    /// [`TestCluster::add_node`] and [`TestCluster::restart_node`].
    ///
    /// ```
    /// use kube_parts::testing::TestCluster;
    /// let builder = TestCluster::builder().nodes(4).configure_node(|name, agent| {
    ///     let zone = if name.ends_with(['1', '2']) { "a" } else { "b" };
    ///     agent.label("topology.kubernetes.io/zone", zone)
    /// });
    /// # let _ = builder;
    /// ```
    pub fn configure_node(
        mut self,
        configure: impl Fn(&str, NodeAgentBuilder) -> NodeAgentBuilder + Send + Sync + 'static,
    ) -> Self {
        self.settings.configure = Some(Arc::new(configure));
        self
    }

    /// How containers behave unless an image rule matches (default: run until stopped).
    pub fn fake_behavior(mut self, behavior: FakeBehavior) -> Self {
        self.settings.behavior = behavior;
        self
    }

    /// How containers of exactly this image behave, on every node.
    pub fn fake_image(mut self, image: impl Into<String>, behavior: FakeBehavior) -> Self {
        self.settings.images.push((image.into(), behavior));
        self
    }

    /// How often node agents renew their Lease and Node status (default 5 s).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.settings.heartbeat = interval;
        self
    }

    /// How often node agents re-sync every pod, which is how container exits are noticed
    /// (default 1 s).
    pub fn resync_interval(mut self, interval: Duration) -> Self {
        self.settings.resync = interval;
        self
    }

    /// How many pods each node agent syncs concurrently (default 2).
    pub fn node_workers(mut self, workers: usize) -> Self {
        self.settings.workers = workers;
        self
    }

    /// Grace period for stopping containers of pods that do not set one (default 2 s).
    pub fn pod_grace_period(mut self, grace: Duration) -> Self {
        self.settings.pod_grace = grace;
        self
    }

    /// How long a node may go without a heartbeat before the node lifecycle controller marks
    /// it `Unknown` and taints it unreachable (default 20 s). Keep it a few heartbeats long.
    pub fn node_grace_period(mut self, grace: Duration) -> Self {
        self.lifecycle.grace_period = grace;
        self
    }

    /// How long pods without their own toleration stay on an unreachable or not-ready node
    /// before eviction (default 300 s, as Kubernetes).
    pub fn default_toleration(mut self, toleration: Duration) -> Self {
        self.lifecycle.default_toleration = toleration;
        self
    }

    /// How long the `wait_until_*` helpers wait before failing (default 30 s).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// Whether [`start`](Self::start) waits until every node is registered and Ready
    /// (default true).
    pub fn wait_until_ready(mut self, wait: bool) -> Self {
        self.wait_ready = wait;
        self
    }

    /// Concurrent reconciles per controller (default 2).
    pub fn controller_workers(mut self, workers: usize) -> Self {
        self.controller_workers = workers;
        self
    }

    /// Adds a controller of yours to the controller manager, next to the built-in ones.
    pub fn controller(mut self, controller: impl Controller + 'static) -> Self {
        self.controllers.push(Arc::new(controller));
        self
    }

    /// Replaces the default scheduling loop (kube-sched's framework with the default
    /// profile) with another component, e.g. `SchedulingLoop::new(Arc::new(MyScheduler))`.
    pub fn scheduler(mut self, scheduler: impl Component + 'static) -> Self {
        self.orchestrator = self.orchestrator.scheduler(scheduler);
        self.custom_scheduler = true;
        self
    }

    /// Adds a component of yours (a controller manager, a loop) to the cluster.
    pub fn component(mut self, component: impl Component + 'static) -> Self {
        self.orchestrator = self.orchestrator.component(component);
        self
    }

    /// The built-in controllers, as `examples/src/cluster.rs` composes them, plus the user's.
    fn controller_manager(&self) -> ControllerManager {
        let mut manager = ControllerManager::new()
            .workers(self.controller_workers)
            .with_default_controllers(self.lifecycle.clone());
        for controller in &self.controllers {
            manager = manager.with_arc(controller.clone());
        }
        manager
    }

    /// Starts the cluster on the current Tokio runtime and, unless
    /// [`wait_until_ready(false)`](Self::wait_until_ready) was asked for, waits until every
    /// node is registered and Ready.
    ///
    /// On paused time (`#[tokio::test(start_paused = true)]`) this needs the current-thread
    /// runtime, which is what `#[tokio::test]` gives.
    pub async fn start(self) -> Result<TestCluster> {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        ensure_namespaces(&store).await?;
        let proxy = Arc::new(MemoryProxy::new());
        let controllers = self.controller_manager();
        let mut orchestrator = self
            .orchestrator
            .store(store.clone())
            .controllers(controllers)
            .proxy(ProxyLoop::new(proxy.clone()))
            .shutdown_timeout(Duration::from_secs(10));
        if !self.custom_scheduler {
            orchestrator = orchestrator.scheduler(SchedulingLoop::with_framework(
                Arc::new(Framework::new()),
                DEFAULT_SCHEDULER_NAME,
                SchedulingConfig::default(),
            ));
        }
        let running = orchestrator.build()?.start();
        let nodes = Nodes::new(store.clone(), self.settings).await?;
        for i in 1..=self.nodes {
            nodes.add(format!("node-{i}"))?;
        }
        let cluster = TestCluster::new(store, running, proxy, nodes, self.wait_timeout);
        if self.wait_ready {
            cluster.wait_until_nodes_ready(self.nodes).await?;
        }
        Ok(cluster)
    }
}

/// The capacity every node gets unless told otherwise.
pub(crate) fn default_capacity() -> BTreeMap<String, String> {
    [("cpu", "4"), ("memory", "8Gi"), ("pods", "110")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
