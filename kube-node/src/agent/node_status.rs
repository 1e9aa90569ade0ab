//! Registers the agent's Node and keeps it Ready with heartbeats.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};

use super::{Agent, error_chain};
use crate::error::{Error, Result};
use kube_core::object::now;

/// The kubelet version the Node reports.
const KUBELET_VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"), "-kube-node");

/// How many times a conflicting Node write is retried at once before waiting for the next try.
const CONFLICT_RETRIES: usize = 5;

/// The kubelet's `nodeStatusMaxImages`.
const MAX_NODE_STATUS_IMAGES: usize = 50;

/// The conditions the agent owns: type, status, reason, message.
const CONDITIONS: [(&str, &str, &str, &str); 4] = [
    (
        "MemoryPressure",
        "False",
        "KubeletHasSufficientMemory",
        "kubelet has sufficient memory available",
    ),
    (
        "DiskPressure",
        "False",
        "KubeletHasNoDiskPressure",
        "kubelet has no disk pressure",
    ),
    (
        "PIDPressure",
        "False",
        "KubeletHasSufficientPID",
        "kubelet has sufficient PID available",
    ),
    (
        "Ready",
        "True",
        "KubeletReady",
        "kubelet is posting ready status",
    ),
];

/// Kubernetes' name for the architecture we run on.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn quantities(list: &BTreeMap<String, String>) -> BTreeMap<String, Quantity> {
    list.iter()
        .map(|(k, v)| (k.clone(), Quantity(v.clone())))
        .collect()
}

impl Agent {
    /// The labels the Node must carry.
    pub(super) fn node_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.config.labels.clone();
        labels.insert(
            "kubernetes.io/hostname".into(),
            self.config.node_name.clone(),
        );
        labels.insert("kubernetes.io/os".into(), "linux".into());
        labels.insert("kubernetes.io/arch".into(), arch().into());
        labels
    }

    /// The Node status the agent reports, merged onto `old`: fields the agent does not own
    /// (images, volumes, other conditions) are kept, and a condition keeps its
    /// `lastTransitionTime` while its status does not change.
    /// The Node's `status.images` as the kubelet reports them: the 50 largest images, each
    /// named by its digests, then its tags. `None` keeps what the Node has (the runtime could
    /// not list them).
    async fn node_images(&self) -> Option<Vec<ContainerImage>> {
        let mut images = match self.runtime.list_images().await {
            Ok(images) => images,
            Err(e) => {
                tracing::debug!(error = %e, "could not list images for the node status");
                return None;
            }
        };
        images.sort_by_key(|i| std::cmp::Reverse(i.size_bytes));
        Some(
            images
                .into_iter()
                .take(MAX_NODE_STATUS_IMAGES)
                .map(|i| ContainerImage {
                    names: Some(i.repo_digests.into_iter().chain(i.repo_tags).collect()),
                    size_bytes: i64::try_from(i.size_bytes).ok(),
                })
                .collect(),
        )
    }

    fn node_status(
        &self,
        old: Option<NodeStatus>,
        now: &Time,
        images: Option<Vec<ContainerImage>>,
    ) -> NodeStatus {
        let mut status = old.unwrap_or_default();
        if let Some(images) = images {
            status.images = Some(images);
        }
        let capacity = quantities(&self.config.capacity);
        let mut allocatable = capacity.clone();
        allocatable.extend(quantities(&self.config.allocatable));
        status.capacity = Some(capacity);
        status.allocatable = Some(allocatable);
        status.addresses = Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: self.config.node_ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: self.config.node_name.clone(),
            },
        ]);
        if let Some(port) = self.kubelet_port {
            // Where the API server reaches the kubelet server (`pods/log`).
            status.daemon_endpoints = Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: i32::from(port),
                }),
            });
        }
        status.node_info = Some(NodeSystemInfo {
            architecture: arch().into(),
            boot_id: self.boot_id.clone(),
            container_runtime_version: self.runtime.version(),
            kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: String::new(),
            operating_system: "linux".into(),
            os_image: "kube-node".into(),
            swap: None,
            system_uuid: String::new(),
        });
        let mut conditions = status.conditions.take().unwrap_or_default();
        let pressure = if self.config.host_pressure {
            super::pressure::measure(&self.pods_dir)
        } else {
            super::pressure::Pressure::default()
        };
        let current = CONDITIONS.map(|(type_, cond_status, reason, message)| {
            let short = match type_ {
                "MemoryPressure" => pressure.memory,
                "DiskPressure" => pressure.disk,
                "PIDPressure" => pressure.pid,
                _ => false,
            };
            match (short, type_) {
                (true, "MemoryPressure") => (
                    type_,
                    "True",
                    "KubeletHasInsufficientMemory",
                    "kubelet has insufficient memory available",
                ),
                (true, "DiskPressure") => (
                    type_,
                    "True",
                    "KubeletHasDiskPressure",
                    "kubelet has disk pressure",
                ),
                (true, _) => (
                    type_,
                    "True",
                    "KubeletHasInsufficientPID",
                    "kubelet has insufficient PID available",
                ),
                (false, _) => (type_, cond_status, reason, message),
            }
        });
        for (type_, cond_status, reason, message) in current {
            let transition = conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == cond_status)
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            let fresh = NodeCondition {
                type_: type_.into(),
                status: cond_status.into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(transition),
            };
            match conditions.iter_mut().find(|c| c.type_ == type_) {
                Some(c) => *c = fresh,
                None => conditions.push(fresh),
            }
        }
        status.conditions = Some(conditions);
        status
    }

    /// Creates the Node, or renews its status (a heartbeat) if it exists.
    pub(super) async fn sync_node(&self) -> Result<()> {
        let key = ObjectKey::cluster(self.config.node_name.clone());
        let images = self.node_images().await;
        for _ in 0..CONFLICT_RETRIES {
            let now = now();
            let current = match self.store.get(&GroupKind::NODE, &key).await {
                Ok(current) => current,
                Err(e) if e.is_not_found() => {
                    let node = Node {
                        metadata: ObjectMeta {
                            name: Some(self.config.node_name.clone()),
                            labels: Some(self.node_labels()),
                            ..Default::default()
                        },
                        spec: None,
                        status: Some(self.node_status(None, &now, images.clone())),
                    };
                    let object =
                        DynamicObject::from_typed(&node).map_err(|source| Error::Decode {
                            what: format!("node {}", self.config.node_name),
                            source,
                        })?;
                    match self.store.create(object).await {
                        Ok(_) => {
                            tracing::info!(node = %self.config.node_name, "registered node");
                            return Ok(());
                        }
                        // Someone created it meanwhile: update it instead.
                        Err(e) if e.is_already_exists() => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            };
            let node: Node = current.to_typed().map_err(|source| Error::Decode {
                what: format!("node {}", self.config.node_name),
                source,
            })?;
            let mut updated = current;
            let mut labels = updated.metadata.labels.take().unwrap_or_default();
            labels.extend(self.node_labels());
            updated.metadata.labels = Some(labels);
            let status = self.node_status(node.status, &now, images.clone());
            let status = serde_json::to_value(&status).map_err(|source| Error::Decode {
                what: format!("node {} status", self.config.node_name),
                source,
            })?;
            updated.data.insert("status".into(), status);
            // `updated` carries the resourceVersion read: a concurrent write is a conflict.
            match self.store.update(updated).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() || e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Store(kube_core::store::StoreError::Conflict {
            kind: GroupKind::NODE,
            key,
            message: format!("node status still conflicting after {CONFLICT_RETRIES} tries"),
        }))
    }

    /// Registers the Node, retrying until it works.
    pub(super) async fn register_until_ok(&self) {
        let mut delay = Duration::from_millis(100);
        while let Err(e) = self.sync_node().await {
            tracing::warn!(node = %self.config.node_name, error = %error_chain(&e), "registering node failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.config.heartbeat_interval);
        }
    }

    /// Renews the Node's heartbeat every interval.
    pub(super) async fn heartbeat_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate and registration just happened.
        tick.tick().await;
        if let Err(e) = self.renew_lease().await {
            tracing::warn!(node = %self.config.node_name, error = %error_chain(&e), "node lease renewal failed");
        }
        loop {
            tick.tick().await;
            if let Err(e) = self.renew_lease().await {
                tracing::warn!(node = %self.config.node_name, error = %error_chain(&e), "node lease renewal failed");
            }
            if let Err(e) = self.sync_node().await {
                tracing::warn!(node = %self.config.node_name, error = %error_chain(&e), "node heartbeat failed");
            }
        }
    }
}
