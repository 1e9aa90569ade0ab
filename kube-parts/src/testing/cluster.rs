//! [`TestCluster`]: the running cluster and typed access to its store.

use std::sync::Arc;
use std::time::Duration;

use kube_core::informer::InformerFactory;
use kube_core::orchestrator::RunningOrchestrator;
use kube_core::store::Store;
use kube_core::typed::{Api, Resource};
use kube_net::MemoryProxy;
use serde_json::json;

use super::builder::TestClusterBuilder;
use super::error::{HarnessError, Result};
use super::nodes::Nodes;

/// The namespaces every cluster has.
const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the namespaces every cluster has.
pub(crate) async fn ensure_namespaces(store: &Arc<dyn Store>) -> Result<()> {
    for name in SYSTEM_NAMESPACES {
        let namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"},
        }))
        .map_err(HarnessError::Decode)?;
        match store.create(namespace).await {
            Ok(_) => {}
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A whole cluster in one process, for tests: an in-memory store ([`kube_store::MemStore`]),
/// the scheduler ([`kube_sched::SchedulingLoop`] over kube-sched's framework), the controllers
/// (ReplicaSet, Deployment, DaemonSet, Job, garbage collection, Endpoints and EndpointSlices,
/// Service IP allocation, node lifecycle, Namespace), node agents ([`kube_node::NodeAgent`])
/// each on its own simulated [`kube_node::FakeRuntime`], and a service proxy
/// ([`kube_net::MemoryProxy`]).
///
/// Built with [`TestCluster::builder`]. Objects go in through [`api`](Self::api) (or the
/// [`store`](Self::store) itself); the `wait_*` methods wait on watch events for the cluster
/// to get somewhere; the node methods kill, restart, partition and heal nodes; Events are read
/// with [`events_for`](Self::events_for). Call [`shutdown`](Self::shutdown) at the end;
/// dropping the cluster also stops it, without waiting.
#[derive(Debug)]
pub struct TestCluster {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) running: RunningOrchestrator,
    pub(crate) proxy: Arc<MemoryProxy>,
    pub(crate) nodes: Nodes,
    pub(crate) wait_timeout: Duration,
}

impl TestCluster {
    /// Starts configuring a test cluster.
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder::default()
    }

    pub(crate) fn new(
        store: Arc<dyn Store>,
        running: RunningOrchestrator,
        proxy: Arc<MemoryProxy>,
        nodes: Nodes,
        wait_timeout: Duration,
    ) -> Self {
        Self {
            store,
            running,
            proxy,
            nodes,
            wait_timeout,
        }
    }

    /// The cluster's store: every component reads and writes through it.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Typed access to objects of kind `K` in `namespace`.
    ///
    /// ```no_run
    /// # async fn demo(cluster: &kube_parts::testing::TestCluster) -> Result<(), kube_parts::core::StoreError> {
    /// use kube_parts::core::api::Pod;
    /// let pods = cluster.api::<Pod>("default").list(&Default::default()).await?;
    /// # let _ = pods; Ok(()) }
    /// ```
    pub fn api<K: Resource>(&self, namespace: &str) -> Api<K> {
        Api::namespaced(self.store.clone(), namespace)
    }

    /// Typed access to a cluster-scoped kind (Nodes, Namespaces), or to `K` across all
    /// namespaces for listing and watching.
    pub fn api_all<K: Resource>(&self) -> Api<K> {
        Api::all(self.store.clone())
    }

    /// The control plane's shared informer caches (one per kind, started on first use).
    pub fn informers(&self) -> &InformerFactory {
        self.running.informers()
    }

    /// The service proxy's data plane: the service table the proxy loop applied (Services
    /// with their ready endpoints).
    pub fn proxy(&self) -> &Arc<MemoryProxy> {
        &self.proxy
    }

    /// How long the `wait_until_*` helpers wait.
    pub fn wait_timeout(&self) -> Duration {
        self.wait_timeout
    }

    /// Stops the node agents, then the control plane, and waits for them.
    pub async fn shutdown(self) -> Result<()> {
        let Self { running, nodes, .. } = self;
        nodes.shutdown().await;
        running.shutdown().await?;
        Ok(())
    }
}
