//! VolumeRestrictions: a claim with the `ReadWriteOncePod` access mode is used by one pod at
//! a time (Kubernetes' pkg/scheduler/framework/plugins/volumerestrictions).

use crate::framework::{
    Cluster, CycleState, Plugin, PodInfo, PreFilterPlugin, PreFilterResult, Status,
};

/// Reason when another pod already uses one of the pod's ReadWriteOncePod claims.
pub const REASON_RWOP_CONFLICT: &str =
    "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode";

/// The VolumeRestrictions plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct VolumeRestrictions;

impl VolumeRestrictions {
    /// Registered name.
    pub const NAME: &'static str = "VolumeRestrictions";
}

impl Plugin for VolumeRestrictions {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
}

/// The claim names a pod mounts.
fn claims(pod: &PodInfo) -> impl Iterator<Item = &str> {
    pod.spec().volumes.iter().flatten().filter_map(|v| {
        v.persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.as_str())
    })
}

impl PreFilterPlugin for VolumeRestrictions {
    fn pre_filter(&self, _: &mut CycleState, pod: &PodInfo, cluster: &Cluster) -> PreFilterResult {
        let namespace = pod.namespace();
        let exclusive: Vec<&str> = claims(pod)
            .filter(|name| {
                cluster.volumes().claim(namespace, name).is_some_and(|c| {
                    c.spec
                        .as_ref()
                        .and_then(|s| s.access_modes.as_ref())
                        .is_some_and(|m| m.iter().any(|m| m == "ReadWriteOncePod"))
                })
            })
            .collect();
        if exclusive.is_empty() {
            return PreFilterResult::skip();
        }
        // Pods counted on nodes (bound or assumed) other than this one.
        let conflict = cluster.nodes().iter().flat_map(|n| n.pods()).any(|other| {
            other.key != pod.key
                && other.namespace() == namespace
                && claims(other).any(|c| exclusive.contains(&c))
        });
        if conflict {
            Status::unschedulable(REASON_RWOP_CONFLICT).into()
        } else {
            PreFilterResult::success()
        }
    }
}
