//! The scheduling framework: extension points, plugins, profiles, the cluster cache, and
//! [`Framework`], which runs whole scheduling cycles.
//!
//! Embedding needs no runtime, store or network:
//!
//! ```
//! use kube_sched::framework::{Cluster, Framework};
//!
//! let node = serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "n1"},
//!     "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}
//! })).unwrap();
//! let pod = serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "p", "namespace": "default"},
//!     "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "500m"}}}]}
//! })).unwrap();
//! let mut cluster = Cluster::from_objects([node], []).unwrap();
//! let framework = Framework::new();
//! let placed = framework.place(&mut cluster, pod).unwrap();
//! assert_eq!(placed.node, "n1");
//! assert_eq!(cluster.node("n1").unwrap().requested.milli_cpu, 500);
//! ```

mod cluster;
mod cycle_state;
mod explain;
pub(crate) mod fast_hash;
mod fit_error;
mod index;
mod node_info;
mod plugin;
mod pod_info;
mod profile;
mod registry;
mod status;
mod topology;
mod volumes;
mod waiting;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube_core::object::ObjectKey;

pub use cluster::{Cluster, DisruptionBudget};
pub use cycle_state::CycleState;
pub use explain::{Explanation, NodeExplanation};
pub use fit_error::FitError;
pub use index::{NodeMatcher, PodMatcher};
pub use node_info::{NodeInfo, normalize_image};
pub use plugin::{
    BindPlugin, FilterPlugin, MAX_NODE_SCORE, NodeStatuses, PermitDecision, PermitPlugin, Plugin,
    PostBindPlugin, PostFilterPlugin, PostFilterResult, PreBindPlugin, PreFilterPlugin,
    PreFilterResult, PreScorePlugin, ReservePlugin, ScorePlugin,
};
pub use pod_info::{AffinityTerm, HostPort, PodInfo, SpreadConstraint, WeightedTerm};
pub use profile::{
    MIN_FEASIBLE_NODES_PERCENTAGE, MIN_FEASIBLE_NODES_TO_FIND, PermitOutcome, PluginConfig,
    PluginScores, Profile, ProfileConfig, ScheduleResult, num_feasible_nodes_to_find,
};
pub use registry::{PluginFactory, Registry};
pub use status::{Code, Status};
pub(crate) use topology::TopologyIndex;
pub use volumes::Volumes;
pub use waiting::WaitingPods;

use crate::error::SchedError;

/// Profiles by scheduler name, and the pods Permit holds.
pub struct Framework {
    profiles: HashMap<String, Profile>,
    waiting: WaitingPods,
}

impl fmt::Debug for Framework {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framework")
            .field("profiles", &self.profiles)
            .finish_non_exhaustive()
    }
}

impl Default for Framework {
    fn default() -> Self {
        Self::new()
    }
}

/// Where [`Framework::place`] put a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The node.
    pub node: String,
    /// Pods preempted (removed from the cluster) to make room.
    pub victims: Vec<ObjectKey>,
}

/// Why [`Framework::place`] did not place a pod.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlaceError {
    /// The pod or the configuration is invalid.
    #[error(transparent)]
    Invalid(#[from] SchedError),
    /// No node fits.
    #[error(transparent)]
    Unschedulable(#[from] Box<FitError>),
    /// Reserve, Permit or a binder said no.
    #[error("rejected on {node}: {status}")]
    Rejected {
        /// The node that had been chosen.
        node: String,
        /// Why.
        status: Status,
    },
}

impl Framework {
    /// Kubernetes' default profile under `default-scheduler`.
    pub fn new() -> Self {
        Self::from_profiles([crate::plugins::default_profile(
            crate::DEFAULT_SCHEDULER_NAME,
        )])
    }

    /// Builds profiles from configuration; scheduler names must be unique.
    pub fn build(
        registry: &Registry,
        profiles: impl IntoIterator<Item = ProfileConfig>,
    ) -> Result<Self, SchedError> {
        let mut built = Vec::new();
        for config in profiles {
            built.push(Profile::build(&config, registry)?);
        }
        if built.is_empty() {
            return Err(SchedError::InvalidProfiles("no profile".into()));
        }
        let n = built.len();
        let fw = Self::from_profiles(built);
        if fw.profiles.len() != n {
            return Err(SchedError::InvalidProfiles(
                "two profiles have the same scheduler name".into(),
            ));
        }
        Ok(fw)
    }

    /// A framework of built profiles (a later profile with the same name replaces an earlier one).
    pub fn from_profiles(profiles: impl IntoIterator<Item = Profile>) -> Self {
        Self {
            profiles: profiles
                .into_iter()
                .map(|p| (p.name().to_string(), p))
                .collect(),
            waiting: WaitingPods::default(),
        }
    }

    /// Filters and scores on one thread (for deterministic tests or busy machines).
    pub fn sequential(mut self) -> Self {
        for p in self.profiles.values_mut() {
            p.set_parallel(false);
        }
        self
    }

    /// Filters and scores across rayon's pool even when it has fewer than 4 threads (by
    /// default such small pools filter on one thread, which measured faster on 2 cores for
    /// cheap cycles; cycles that filter many nodes, such as hard topology spreading on a busy
    /// cluster, may still gain from it).
    pub fn parallel(mut self) -> Self {
        for p in self.profiles.values_mut() {
            p.set_parallel(true);
        }
        self
    }

    /// The profile serving `scheduler_name`.
    pub fn profile(&self, scheduler_name: &str) -> Option<&Profile> {
        self.profiles.get(scheduler_name)
    }

    /// The profile for a pod's `spec.schedulerName` (unset or empty: `default-scheduler`).
    pub fn profile_for(&self, pod: &PodInfo) -> Result<&Profile, SchedError> {
        let name = pod
            .spec()
            .scheduler_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(crate::DEFAULT_SCHEDULER_NAME);
        self.profile(name)
            .ok_or_else(|| SchedError::UnknownProfile(name.to_string()))
    }

    /// The scheduler names served.
    pub fn scheduler_names(&self) -> impl Iterator<Item = &str> {
        self.profiles.keys().map(String::as_str)
    }

    /// Pods held by Permit.
    pub fn waiting_pods(&self) -> &WaitingPods {
        &self.waiting
    }

    /// Explains the decision for `pod`: every node's filter verdicts and per-plugin scores.
    pub fn explain(&self, cluster: &Cluster, pod: Pod) -> Result<Explanation, SchedError> {
        let pod = PodInfo::from_pod(pod)?;
        let profile = self.profile_for(&pod)?;
        Ok(explain::explain(profile, cluster, &pod))
    }

    /// Runs a whole cycle in place, for embedding: schedule (preempting if needed: victims are
    /// removed from `cluster`), Reserve, Permit (blocking while a plugin makes the pod wait),
    /// PreBind, Bind, PostBind; the pod ends up counted on its node in `cluster`.
    pub fn place(&self, cluster: &mut Cluster, pod: Pod) -> Result<Placement, PlaceError> {
        let pod = Arc::new(PodInfo::from_pod(pod)?);
        let profile = self.profile_for(&pod)?;
        let mut state = CycleState::new();
        let mut victims = Vec::new();
        let result = match profile.schedule_with_state(&mut state, cluster, &pod) {
            Ok(r) => r,
            Err(e) => {
                let Some(pf) = e.post_filter.as_ref().filter(|pf| pf.status.is_success()) else {
                    return Err(e.into());
                };
                for v in &pf.victims {
                    cluster.remove_pod(&v.key);
                    victims.push(v.key.clone());
                }
                state = CycleState::new();
                profile.schedule_with_state(&mut state, cluster, &pod)?
            }
        };
        let node = result.node;
        cluster.assume(pod.clone(), &node);
        let reject = |cluster: &mut Cluster, state: &mut CycleState, status: Status| {
            profile.run_unreserve(state, &pod, &node);
            cluster.forget(&pod.key);
            PlaceError::Rejected {
                node: node.clone(),
                status,
            }
        };
        let status = profile.run_reserve(&mut state, &pod, &node);
        if !status.is_success() {
            cluster.forget(&pod.key);
            return Err(PlaceError::Rejected { node, status });
        }
        match profile.run_permit(&state, &pod, &node) {
            PermitOutcome::Allow => {}
            PermitOutcome::Reject(status) => return Err(reject(cluster, &mut state, status)),
            PermitOutcome::Wait { timeout, plugins } => {
                self.waiting.add(pod.key.clone(), plugins);
                let status = self.waiting.wait(&pod.key, timeout);
                if !status.is_success() {
                    return Err(reject(cluster, &mut state, status));
                }
            }
        }
        let status = profile.run_pre_bind(&state, &pod, &node);
        if !status.is_success() {
            return Err(reject(cluster, &mut state, status));
        }
        let status = profile.run_bind(&state, &pod, &node);
        if !status.is_success() && !status.is_skip() {
            return Err(reject(cluster, &mut state, status));
        }
        cluster.confirm(&pod.key);
        profile.run_post_bind(&state, &pod, &node);
        Ok(Placement { node, victims })
    }
}
