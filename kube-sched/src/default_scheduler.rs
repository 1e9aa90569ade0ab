//! [`DefaultScheduler`]: the [`Scheduler`] trait implemented by the framework's default profile.

use std::fmt;

use k8s_openapi::api::core::v1::Pod;
use kube_core::scheduler::{ScheduleError, Scheduler, Snapshot};

use crate::framework::{Cluster, PodInfo, Profile};
use crate::plugins;

/// The scheduler name pods get when `spec.schedulerName` is unset.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// Kubernetes' default profile (see [`crate::plugins`]) behind the [`Scheduler`] trait.
///
/// Each call builds a [`Cluster`] from the [`Snapshot`]; for repeated decisions keep a
/// [`Cluster`] and use [`Framework`](crate::framework::Framework) directly, which updates
/// incrementally.
///
/// ```
/// use std::sync::Arc;
/// use k8s_openapi::api::core::v1::{Node, Pod};
/// use kube_core::scheduler::{Scheduler, Snapshot};
/// use kube_sched::DefaultScheduler;
///
/// let node: Node = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "n1"},
///     "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}
/// })).unwrap();
/// let pod: Pod = serde_json::from_value(serde_json::json!({
///     "metadata": {"name": "p", "namespace": "default"},
///     "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "500m"}}}]}
/// })).unwrap();
/// let snapshot = Snapshot::new([Arc::new(node)], []);
/// assert_eq!(DefaultScheduler::new().schedule(&pod, &snapshot).unwrap(), "n1");
/// ```
pub struct DefaultScheduler {
    profile: Profile,
}

impl fmt::Debug for DefaultScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultScheduler")
            .field("name", &self.profile.name())
            .finish_non_exhaustive()
    }
}

impl Default for DefaultScheduler {
    fn default() -> Self {
        Self::new()
    }
}

impl DefaultScheduler {
    /// The scheduler for pods that name no scheduler (`default-scheduler`).
    pub fn new() -> Self {
        Self::named(DEFAULT_SCHEDULER_NAME)
    }

    /// The same policy under another name: it serves only pods whose `spec.schedulerName` is
    /// `name`.
    pub fn named(name: impl Into<String>) -> Self {
        Self::with_profile(plugins::default_profile(&name.into()))
    }

    /// Any profile behind the trait.
    pub fn with_profile(profile: Profile) -> Self {
        Self { profile }
    }

    /// The profile.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }
}

/// The framework's cache built from a trait snapshot.
pub(crate) fn cluster_from_snapshot(snapshot: &Snapshot) -> Cluster {
    let mut cluster = Cluster::new();
    for node in &snapshot.nodes {
        cluster.set_node((*node.node).clone());
        for pod in &node.pods {
            if let Ok(info) = PodInfo::new(pod.clone()) {
                cluster.assume(std::sync::Arc::new(info), node.name());
            }
        }
    }
    cluster
}

impl Scheduler for DefaultScheduler {
    fn name(&self) -> &str {
        self.profile.name()
    }

    fn schedule(&self, pod: &Pod, snapshot: &Snapshot) -> Result<String, ScheduleError> {
        let info = PodInfo::from_pod(pod.clone()).map_err(|e| match e {
            crate::SchedError::InvalidPod(m) => ScheduleError::InvalidPod(m),
            other => ScheduleError::Internal(Box::new(other)),
        })?;
        let cluster = cluster_from_snapshot(snapshot);
        self.profile
            .schedule(&cluster, &info)
            .map(|r| r.node)
            .map_err(|e| ScheduleError::from(*e))
    }
}
