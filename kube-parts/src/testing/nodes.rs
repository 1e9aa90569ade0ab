//! The cluster's node agents: one [`NodeAgent`] per node on its own [`FakeRuntime`], each run
//! as a task the harness can stop (kill), restart, or cut off from the store (partition).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kube_core::informer::InformerFactory;
use kube_core::orchestrator::{Component, ComponentContext};
use kube_core::runtime::Runtime;
use kube_core::store::Store;
use kube_node::{FakeBehavior, FakeRuntime, NodeAgent, NodeAgentBuilder};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::builder::{ConfigureNode, default_capacity};
use super::cluster::TestCluster;
use super::error::{HarnessError, Result};
use super::partition::{Link, LinkedStore};
use super::runtime::NodeRuntime;

/// How every node agent is configured (see [`TestClusterBuilder`](super::TestClusterBuilder)).
#[derive(Clone)]
pub(crate) struct NodeSettings {
    pub(crate) capacity: BTreeMap<String, String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) heartbeat: Duration,
    pub(crate) resync: Duration,
    pub(crate) workers: usize,
    pub(crate) pod_grace: Duration,
    pub(crate) behavior: FakeBehavior,
    pub(crate) images: Vec<(String, FakeBehavior)>,
    pub(crate) configure: Option<ConfigureNode>,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            capacity: default_capacity(),
            labels: BTreeMap::new(),
            heartbeat: Duration::from_secs(5),
            resync: Duration::from_secs(1),
            workers: 2,
            pod_grace: Duration::from_secs(2),
            behavior: FakeBehavior::run_forever(),
            images: Vec::new(),
            configure: None,
        }
    }
}

impl fmt::Debug for NodeSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeSettings")
            .field("capacity", &self.capacity)
            .field("labels", &self.labels)
            .field("heartbeat", &self.heartbeat)
            .field("resync", &self.resync)
            .field("workers", &self.workers)
            .field("pod_grace", &self.pod_grace)
            .field("behavior", &self.behavior)
            .field("images", &self.images)
            .field("configure", &self.configure.is_some())
            .finish()
    }
}

impl NodeSettings {
    /// A fresh runtime scripted with the cluster-wide behaviour.
    fn runtime(&self) -> FakeRuntime {
        let fake = FakeRuntime::new();
        fake.set_default_behavior(self.behavior.clone());
        for (image, behavior) in &self.images {
            fake.on_image(image.clone(), behavior.clone());
        }
        fake
    }

    fn agent(&self, name: &str, runtime: &NodeRuntime, dir: &std::path::Path) -> Result<NodeAgent> {
        let runtime: Arc<dyn Runtime> = Arc::new(runtime.clone());
        let mut builder: NodeAgentBuilder = NodeAgent::builder(name, runtime)
            .heartbeat_interval(self.heartbeat)
            .resync_interval(self.resync)
            .workers(self.workers)
            .default_grace_period(self.pod_grace)
            // One directory per node under the cluster's, instead of a temporary directory
            // created per agent: volumes of pods live there.
            .root_dir(dir.join(name));
        for (resource, quantity) in &self.capacity {
            builder = builder.capacity(resource.clone(), quantity.clone());
        }
        for (key, value) in &self.labels {
            builder = builder.label(key.clone(), value.clone());
        }
        if let Some(configure) = &self.configure {
            builder = configure(name, builder);
        }
        Ok(builder.build()?)
    }
}

/// A running agent: its stop signal and task.
#[derive(Debug)]
struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// One node of the cluster.
#[derive(Debug)]
struct Slot {
    runtime: NodeRuntime,
    fake: FakeRuntime,
    link: Link,
    running: Option<Running>,
}

/// Every node of the cluster, by name, in the order they were added.
#[derive(Debug)]
pub(crate) struct Nodes {
    store: Arc<dyn Store>,
    settings: NodeSettings,
    slots: Mutex<BTreeMap<String, Slot>>,
    order: Mutex<Vec<String>>,
    /// Parent of every agent's stop signal: cancelled on shutdown, or when the cluster is
    /// dropped without one.
    all: CancellationToken,
    _cancel_on_drop: DropGuard,
    /// Holds the agents' root directories.
    dir: tempfile::TempDir,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain maps replaced in single statements: a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Nodes {
    /// The nodes of a cluster over `store`. Their pod watches (`spec.nodeName=<node>`) go to
    /// the store, which routes each pod change to its node's watch only.
    pub(crate) async fn new(store: Arc<dyn Store>, settings: NodeSettings) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("kube-parts-test-")
            .tempdir()?;
        let all = CancellationToken::new();
        Ok(Self {
            store,
            settings,
            slots: Mutex::default(),
            order: Mutex::default(),
            _cancel_on_drop: all.clone().drop_guard(),
            all,
            dir,
        })
    }

    /// Adds a node with a fresh runtime and starts its agent.
    pub(crate) fn add(&self, name: String) -> Result<()> {
        let mut slots = lock(&self.slots);
        if slots.contains_key(&name) {
            return Err(HarnessError::NodeExists(name));
        }
        let fake = self.settings.runtime();
        let runtime = NodeRuntime::new(fake.clone(), slots.len() + 1);
        let link = Link::new();
        let running = self.spawn(&name, &runtime, &link)?;
        slots.insert(
            name.clone(),
            Slot {
                runtime,
                fake,
                link,
                running: Some(running),
            },
        );
        lock(&self.order).push(name);
        Ok(())
    }

    /// Starts an agent for `name` on `runtime`, reaching the store through `link`.
    fn spawn(&self, name: &str, runtime: &NodeRuntime, link: &Link) -> Result<Running> {
        let agent = self.settings.agent(name, runtime, self.dir.path())?;
        let stop = self.all.child_token();
        let store: Arc<dyn Store> = Arc::new(LinkedStore::new(self.store.clone(), link.clone()));
        let ctx = ComponentContext {
            informers: InformerFactory::new(store.clone(), stop.clone()),
            store,
            shutdown: stop.clone(),
        };
        let node = name.to_string();
        let task = tokio::spawn(async move {
            if let Err(e) = Box::new(agent).run(ctx).await {
                tracing::warn!(%node, error = %e, "node agent failed");
            }
        });
        Ok(Running { stop, task })
    }

    pub(crate) fn names(&self) -> Vec<String> {
        lock(&self.order).clone()
    }

    pub(crate) fn runtime(&self, name: &str) -> Result<FakeRuntime> {
        lock(&self.slots)
            .get(name)
            .map(|s| s.fake.clone())
            .ok_or_else(|| HarnessError::UnknownNode(name.to_string()))
    }

    pub(crate) fn is_running(&self, name: &str) -> Result<bool> {
        lock(&self.slots)
            .get(name)
            .map(|s| s.running.is_some())
            .ok_or_else(|| HarnessError::UnknownNode(name.to_string()))
    }

    pub(crate) fn link(&self, name: &str) -> Result<Link> {
        lock(&self.slots)
            .get(name)
            .map(|s| s.link.clone())
            .ok_or_else(|| HarnessError::UnknownNode(name.to_string()))
    }

    /// Stops a node's agent (if running) and waits for its task to end.
    pub(crate) async fn kill(&self, name: &str) -> Result<()> {
        let running = lock(&self.slots)
            .get_mut(name)
            .ok_or_else(|| HarnessError::UnknownNode(name.to_string()))?
            .running
            .take();
        if let Some(running) = running {
            running.stop.cancel();
            let _ = running.task.await;
        }
        Ok(())
    }

    /// Starts a new agent for a node whose agent was killed, on the same runtime (so it adopts
    /// the containers still there). Does nothing if the agent runs.
    pub(crate) fn restart(&self, name: &str) -> Result<()> {
        let mut slots = lock(&self.slots);
        let slot = slots
            .get_mut(name)
            .ok_or_else(|| HarnessError::UnknownNode(name.to_string()))?;
        if slot.running.is_none() {
            slot.running = Some(self.spawn(name, &slot.runtime, &slot.link)?);
        }
        Ok(())
    }

    /// Stops every agent and waits for them.
    pub(crate) async fn shutdown(&self) {
        self.all.cancel();
        let tasks: Vec<JoinHandle<()>> = lock(&self.slots)
            .values_mut()
            .filter_map(|s| s.running.take())
            .map(|r| r.task)
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// Node operations: kill, restart, partition, heal, add.
impl TestCluster {
    /// The nodes' names, in the order they were added (`node-1`, `node-2`, …).
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.names()
    }

    /// The simulated runtime of a node: script its containers
    /// ([`FakeRuntime::on_image`], [`FakeRuntime::kill_container`], …) or inspect them
    /// ([`FakeRuntime::running_count`], [`FakeRuntime::calls`]).
    pub fn runtime(&self, node: &str) -> Result<FakeRuntime> {
        self.nodes.runtime(node)
    }

    /// Whether the node's agent runs (it does unless [`kill_node`](Self::kill_node) stopped
    /// it).
    pub fn is_node_running(&self, node: &str) -> Result<bool> {
        self.nodes.is_running(node)
    }

    /// Adds a node (with the cluster's node settings and a fresh runtime) and starts its
    /// agent; it registers shortly after (wait with
    /// [`wait_until_nodes_ready`](Self::wait_until_nodes_ready)).
    pub fn add_node(&self, name: impl Into<String>) -> Result<()> {
        self.nodes.add(name.into())
    }

    /// Stops the node's agent, as if its machine died: heartbeats stop, its containers are
    /// left as they were in its runtime, its pods stay bound to it in the store. After the
    /// node grace period the node lifecycle controller marks it `Unknown` and taints it
    /// unreachable; its pods are evicted once their toleration runs out, and their controllers
    /// recreate them on other nodes. Returns once the agent has stopped.
    pub async fn kill_node(&self, node: &str) -> Result<()> {
        self.nodes.kill(node).await
    }

    /// Starts a new agent for a killed node, on the same runtime: it heartbeats again and
    /// adopts or removes the containers it finds, as a kubelet after a reboot of itself.
    pub fn restart_node(&self, node: &str) -> Result<()> {
        self.nodes.restart(node)
    }

    /// Cuts the node off from the store, as a network partition would: the agent keeps
    /// running, and so do its containers, but every call it makes fails and its watches end.
    /// The control plane sees the node go silent, as with [`kill_node`](Self::kill_node).
    pub fn partition_node(&self, node: &str) -> Result<()> {
        self.nodes.link(node)?.set_cut(true);
        Ok(())
    }

    /// Restores a partitioned node's connection: it heartbeats again (the node becomes Ready
    /// and its taints go), re-lists its pods and stops containers of pods evicted meanwhile.
    pub fn heal_node(&self, node: &str) -> Result<()> {
        self.nodes.link(node)?.set_cut(false);
        Ok(())
    }

    /// Whether the node is partitioned now.
    pub fn is_node_partitioned(&self, node: &str) -> Result<bool> {
        Ok(self.nodes.link(node)?.is_cut())
    }
}
