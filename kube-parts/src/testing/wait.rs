//! Waiting for the cluster to get somewhere: conditions checked on every watch event of the
//! control plane's shared informers, not by polling.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube_core::informer::InformerEvent;
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::selector::Selector;
use kube_core::typed::Resource;
use tokio::time::{Instant, timeout_at};

use super::cluster::TestCluster;
use super::conditions::{is_deployment_available, is_node_ready, is_pod_running};
use super::error::{HarnessError, Result};

/// Objects of one kind decoded as `K`, kept up to date from informer events.
struct Typed<K> {
    index: HashMap<ObjectKey, usize>,
    keys: Vec<ObjectKey>,
    items: Vec<K>,
}

impl<K: Resource> Typed<K> {
    fn new() -> Self {
        Self {
            index: HashMap::new(),
            keys: Vec::new(),
            items: Vec::new(),
        }
    }

    fn remove(&mut self, key: &ObjectKey) {
        if let Some(i) = self.index.remove(key) {
            self.keys.swap_remove(i);
            self.items.swap_remove(i);
            if let Some(moved) = self.keys.get(i) {
                self.index.insert(moved.clone(), i);
            }
        }
    }

    /// Applies one event to the objects `keep` selects.
    fn apply(
        &mut self,
        event: InformerEvent,
        keep: &impl Fn(&DynamicObject) -> bool,
    ) -> Result<()> {
        match event {
            InformerEvent::Applied(object) if keep(&object) => {
                let typed: K = object.to_typed().map_err(HarnessError::Decode)?;
                let key = object.key();
                match self.index.get(&key) {
                    Some(&i) => self.items[i] = typed,
                    None => {
                        self.index.insert(key.clone(), self.items.len());
                        self.keys.push(key);
                        self.items.push(typed);
                    }
                }
            }
            InformerEvent::Applied(object) | InformerEvent::Deleted(object) => {
                self.remove(&object.key());
            }
        }
        Ok(())
    }
}

fn in_namespace(namespace: Option<&str>, object: &DynamicObject) -> bool {
    namespace.is_none_or(|ns| object.metadata.namespace.as_deref() == Some(ns))
}

impl TestCluster {
    /// Waits until `done` returns a value for the objects of kind `K` that `keep` selects,
    /// checking on every change the shared informer of `K` sees.
    async fn wait_typed<K: Resource, T>(
        &self,
        what: impl FnOnce() -> String,
        timeout: Duration,
        keep: impl Fn(&DynamicObject) -> bool,
        mut done: impl FnMut(&[K]) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let timed_out = |what: String| HarnessError::Timeout {
            what,
            after: timeout,
        };
        let informer = self.informers().informer(&GroupKind::of::<K>());
        if timeout_at(deadline, informer.wait_until_synced())
            .await
            .is_err()
        {
            return Err(timed_out(what()));
        }
        // The subscription starts with every cached object, then every change, in order.
        let mut events = informer.subscribe();
        let mut objects = Typed::<K>::new();
        loop {
            // Take everything that is already there, then decide once.
            while let Ok(event) = events.try_recv() {
                objects.apply(event, &keep)?;
            }
            if let Some(value) = done(&objects.items) {
                return Ok(value);
            }
            match timeout_at(deadline, events.recv()).await {
                Ok(Some(event)) => objects.apply(event, &keep)?,
                // The informer stopped: the cluster is shutting down.
                Ok(None) | Err(_) => return Err(timed_out(what())),
            }
        }
    }

    /// Waits until `condition` holds for the objects of kind `K` in `namespace` (or all
    /// namespaces, and cluster-scoped kinds, with `None`), and returns them. The condition is
    /// checked now and after every change, as the control plane's informer sees it.
    ///
    /// ```no_run
    /// # async fn demo(cluster: &kube_parts::testing::TestCluster) -> Result<(), kube_parts::testing::HarnessError> {
    /// use std::time::Duration;
    /// use kube_parts::core::api::Pod;
    /// // Until no pod of the namespace is left.
    /// cluster.wait_for::<Pod>(Some("default"), |pods| pods.is_empty(), Duration::from_secs(10)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_for<K: Resource>(
        &self,
        namespace: Option<&str>,
        mut condition: impl FnMut(&[K]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<K>> {
        self.wait_typed(
            || format!("a condition on {} objects", K::KIND),
            timeout,
            |o| in_namespace(namespace, o),
            |objects: &[K]| condition(objects).then(|| objects.to_vec()),
        )
        .await
    }

    /// Waits until `condition` holds for one object (`None` while it does not exist) and
    /// returns it. `namespace` is `None` for cluster-scoped kinds.
    pub async fn wait_for_object<K: Resource>(
        &self,
        namespace: Option<&str>,
        name: &str,
        mut condition: impl FnMut(Option<&K>) -> bool,
        timeout: Duration,
    ) -> Result<Option<K>> {
        let key = ObjectKey {
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        };
        self.wait_typed(
            || format!("a condition on {} {key}", K::KIND),
            timeout,
            |o| o.key() == key,
            |objects: &[K]| condition(objects.first()).then(|| objects.first().cloned()),
        )
        .await
    }

    /// Waits until the object is gone.
    pub async fn wait_until_deleted<K: Resource>(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<()> {
        self.wait_for_object::<K>(namespace, name, |o| o.is_none(), self.wait_timeout)
            .await
            .map(|_| ())
    }

    /// Waits until at least `count` pods in `namespace` matching the label `selector`
    /// (`"app=web"`, `"tier in (a,b)"`, `""` for all) are Running, and returns the running
    /// ones.
    pub async fn wait_until_pods_running(
        &self,
        namespace: &str,
        selector: &str,
        count: usize,
    ) -> Result<Vec<Pod>> {
        let parsed = Selector::parse(selector).map_err(HarnessError::Selector)?;
        self.wait_typed(
            || format!("{count} running pods matching {selector:?} in {namespace}"),
            self.wait_timeout,
            |o| {
                o.metadata.namespace.as_deref() == Some(namespace)
                    && parsed.matches(o.metadata.labels.as_ref().unwrap_or(&Default::default()))
            },
            |pods: &[Pod]| {
                let running = pods.iter().filter(|p| is_pod_running(p)).count();
                (running >= count)
                    .then(|| pods.iter().filter(|p| is_pod_running(p)).cloned().collect())
            },
        )
        .await
    }

    /// Waits until at least `count` Nodes are registered and Ready, and returns the Ready ones.
    pub async fn wait_until_nodes_ready(&self, count: usize) -> Result<Vec<Node>> {
        self.wait_typed(
            || format!("{count} ready nodes"),
            self.wait_timeout,
            |_| true,
            |nodes: &[Node]| {
                let ready = nodes.iter().filter(|n| is_node_ready(n)).count();
                (ready >= count)
                    .then(|| nodes.iter().filter(|n| is_node_ready(n)).cloned().collect())
            },
        )
        .await
    }

    /// Waits until the node's `Ready` condition is no longer `True` (the node lifecycle
    /// controller marks a silent node `Unknown` after the node grace period).
    pub async fn wait_until_node_not_ready(&self, node: &str) -> Result<Node> {
        let found = self
            .wait_for_object::<Node>(
                None,
                node,
                |n| n.is_some_and(|n| !is_node_ready(n)),
                self.wait_timeout,
            )
            .await?;
        found.ok_or_else(|| HarnessError::UnknownNode(node.to_string()))
    }

    /// Waits until the Deployment's rollout is complete and all its replicas are available
    /// (see [`is_deployment_available`]).
    pub async fn wait_until_deployment_available(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Deployment> {
        let found = self
            .wait_for_object::<Deployment>(
                Some(namespace),
                name,
                |d| d.is_some_and(is_deployment_available),
                self.wait_timeout,
            )
            .await?;
        found.ok_or_else(|| HarnessError::Timeout {
            what: format!("deployment {namespace}/{name}"),
            after: self.wait_timeout,
        })
    }
}
