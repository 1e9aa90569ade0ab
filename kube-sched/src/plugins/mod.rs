//! The default plugins, with Kubernetes' semantics and wording.
//!
//! | plugin | extension points | default weight |
//! |---|---|---|
//! | [`NodeUnschedulable`] | Filter | |
//! | [`NodeName`] | Filter | |
//! | [`TaintToleration`] | Filter, PreScore, Score | 3 |
//! | [`NodeAffinity`] | PreFilter, Filter, PreScore, Score | 2 |
//! | [`NodePorts`] | PreFilter, Filter | |
//! | [`NodeResourcesFit`] | Filter, Score (LeastAllocated, MostAllocated, RequestedToCapacityRatio) | 1 |
//! | [`PodTopologySpread`] | PreFilter, Filter, PreScore, Score | 2 |
//! | [`InterPodAffinity`] | PreFilter, Filter, PreScore, Score | 2 |
//! | [`DefaultPreemption`] | PostFilter | |
//! | [`NodeResourcesBalancedAllocation`] | PreScore, Score | 1 |
//! | [`ImageLocality`] | Score | 1 |
//! | [`VolumeRestrictions`] | PreFilter | |
//! | [`VolumeBinding`] | PreFilter, Filter (the loop writes its [`volume_binding::plan`] before binding) | |

pub mod balanced_allocation;
pub mod default_preemption;
pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod taint_toleration;
pub mod topology_spread;
pub mod volume_binding;
pub mod volume_restrictions;

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

pub use balanced_allocation::{BalancedAllocationArgs, NodeResourcesBalancedAllocation};
pub use default_preemption::DefaultPreemption;
pub use image_locality::ImageLocality;
pub use inter_pod_affinity::{InterPodAffinity, InterPodAffinityArgs};
pub use node_affinity::{NodeAffinity, NodeSelectorMatcher};
pub use node_name::NodeName;
pub use node_ports::NodePorts;
pub use node_resources_fit::{
    NodeResourcesFit, NodeResourcesFitArgs, ResourceWeight, ScoringStrategy, ShapePoint,
};
pub use node_unschedulable::NodeUnschedulable;
pub use taint_toleration::{TaintToleration, tolerates};
pub use topology_spread::{PodTopologySpread, PodTopologySpreadArgs};
pub use volume_binding::{VolumeAction, VolumeBinding};
pub use volume_restrictions::VolumeRestrictions;

use crate::error::SchedError;
use crate::framework::{Plugin, PluginConfig, Profile, Registry};

/// Parses plugin arguments; `null` gives the defaults.
pub(crate) fn parse_args<T: DeserializeOwned + Default>(
    plugin: &str,
    args: &Value,
) -> Result<T, SchedError> {
    if args.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(args.clone()).map_err(|e| SchedError::InvalidArgs {
        plugin: plugin.to_string(),
        message: e.to_string(),
    })
}

/// A registry holding every default plugin.
pub fn default_registry() -> Registry {
    let mut r = Registry::new();
    let entries: Vec<(&str, crate::framework::PluginFactory)> = vec![
        (
            NodeUnschedulable::NAME,
            Arc::new(|_: &Value| Ok(Arc::new(NodeUnschedulable) as Arc<dyn Plugin>)),
        ),
        (
            NodeName::NAME,
            Arc::new(|_: &Value| Ok(Arc::new(NodeName) as Arc<dyn Plugin>)),
        ),
        (
            TaintToleration::NAME,
            Arc::new(|_: &Value| Ok(Arc::new(TaintToleration) as Arc<dyn Plugin>)),
        ),
        (
            NodeAffinity::NAME,
            Arc::new(|_: &Value| Ok(Arc::new(NodeAffinity) as Arc<dyn Plugin>)),
        ),
        (
            NodePorts::NAME,
            Arc::new(|_: &Value| Ok(Arc::new(NodePorts) as Arc<dyn Plugin>)),
        ),
        (
            NodeResourcesFit::NAME,
            Arc::new(|a: &Value| {
                Ok(Arc::new(NodeResourcesFit::new(parse_args(
                    NodeResourcesFit::NAME,
                    a,
                )?)?) as Arc<dyn Plugin>)
            }),
        ),
        (
            PodTopologySpread::NAME,
            Arc::new(|a: &Value| {
                Ok(Arc::new(PodTopologySpread::new(parse_args(
                    PodTopologySpread::NAME,
                    a,
                )?)) as Arc<dyn Plugin>)
            }),
        ),
        (
            InterPodAffinity::NAME,
            Arc::new(|a: &Value| {
                Ok(Arc::new(InterPodAffinity::new(parse_args(
                    InterPodAffinity::NAME,
                    a,
                )?)) as Arc<dyn Plugin>)
            }),
        ),
        (
            DefaultPreemption::NAME,
            Arc::new(|_: &Value| Ok(Arc::new(DefaultPreemption) as Arc<dyn Plugin>)),
        ),
        (
            NodeResourcesBalancedAllocation::NAME,
            Arc::new(|a: &Value| {
                Ok(Arc::new(NodeResourcesBalancedAllocation::new(parse_args(
                    NodeResourcesBalancedAllocation::NAME,
                    a,
                )?)) as Arc<dyn Plugin>)
            }),
        ),
        (
            ImageLocality::NAME,
            Arc::new(|_: &Value| Ok(Arc::new(ImageLocality) as Arc<dyn Plugin>)),
        ),
        (
            VolumeRestrictions::NAME,
            Arc::new(|_: &Value| Ok(Arc::new(VolumeRestrictions) as Arc<dyn Plugin>)),
        ),
        (
            VolumeBinding::NAME,
            Arc::new(|_: &Value| Ok(Arc::new(VolumeBinding) as Arc<dyn Plugin>)),
        ),
    ];
    for (name, factory) in entries {
        // The names above are distinct, so registration cannot fail; ignore rather than panic.
        let _ = r.register(name, move |a: &Value| factory(a));
    }
    r
}

/// Kubernetes' default plugin set, order and score weights.
pub fn default_plugin_configs() -> Vec<PluginConfig> {
    default_plugins()
        .into_iter()
        .map(|(p, w)| PluginConfig::new(p.name()).weight(w))
        .collect()
}

/// The default plugins, built with default arguments (infallible), and their weights.
pub fn default_plugins() -> Vec<(Arc<dyn Plugin>, i64)> {
    vec![
        (Arc::new(NodeUnschedulable), 1),
        (Arc::new(NodeName), 1),
        (Arc::new(TaintToleration), 3),
        (Arc::new(NodeAffinity), 2),
        (Arc::new(NodePorts), 1),
        (Arc::new(NodeResourcesFit::least_allocated()), 1),
        (
            Arc::new(PodTopologySpread::new(PodTopologySpreadArgs::default())),
            2,
        ),
        (
            Arc::new(InterPodAffinity::new(InterPodAffinityArgs::default())),
            2,
        ),
        (Arc::new(DefaultPreemption), 1),
        (
            Arc::new(NodeResourcesBalancedAllocation::new(
                BalancedAllocationArgs::default(),
            )),
            1,
        ),
        (Arc::new(ImageLocality), 1),
        (Arc::new(VolumeRestrictions), 1),
        (Arc::new(VolumeBinding), 1),
    ]
}

/// The default profile under `scheduler_name`.
pub fn default_profile(scheduler_name: &str) -> Profile {
    Profile::from_plugins(scheduler_name, default_plugins(), None)
}

/// `DefaultNormalizeScore`: scales scores to `0..=100` by the maximum; `reverse` turns
/// "more is worse" counts into scores.
pub(crate) fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores
                .iter_mut()
                .for_each(|s| *s = crate::framework::MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = crate::framework::MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = crate::framework::MAX_NODE_SCORE - *s;
        }
    }
}
