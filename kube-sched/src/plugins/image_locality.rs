//! ImageLocality: prefer nodes that already have the pod's images, weighted by how widely
//! each image is spread (an image on every node says little about any one of them).

use crate::framework::{
    Cluster, CycleState, MAX_NODE_SCORE, NodeInfo, Plugin, PodInfo, PreScorePlugin, ScorePlugin,
    Status,
};

const MB: i64 = 1024 * 1024;
/// Below this total the score is 0 (Kubernetes' `minThreshold`).
const MIN_THRESHOLD: i64 = 23 * MB;
/// Per container, above this the score is 100 (Kubernetes' `maxContainerThreshold`).
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// The ImageLocality plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct ImageLocality;

impl ImageLocality {
    /// Registered name.
    pub const NAME: &'static str = "ImageLocality";
}

/// Per-cycle: the pod's images with the share of nodes holding each.
struct Spread {
    images: Vec<(String, i64, i64)>,
    containers: i64,
}

const KEY: &str = ImageLocality::NAME;

impl Plugin for ImageLocality {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreScorePlugin for ImageLocality {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        cluster: &Cluster,
        _: &[&NodeInfo],
    ) -> Status {
        let spec = pod.spec();
        let total = cluster.len() as i64;
        let images: Vec<(String, i64, i64)> = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .filter_map(|c| c.image.as_deref())
            .map(crate::framework::normalize_image)
            .map(|name| {
                let n = cluster.nodes_with_image(&name) as i64;
                (name, n, total)
            })
            .filter(|(_, n, _)| *n > 0)
            .collect();
        if images.is_empty() {
            return Status::skip();
        }
        state.write(
            KEY,
            Spread {
                images,
                containers: (spec.containers.len()
                    + spec.init_containers.as_ref().map_or(0, Vec::len))
                    as i64,
            },
        );
        Status::success()
    }
}

impl ScorePlugin for ImageLocality {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(spread) = state.read::<Spread>(KEY) else {
            return Ok(0);
        };
        let mut sum = 0i64;
        for (name, with, total) in &spread.images {
            if let Some(size) = node.image_size(name) {
                sum += (size as f64 * (*with as f64 / (*total).max(1) as f64)) as i64;
            }
        }
        let max = MAX_CONTAINER_THRESHOLD * spread.containers.max(1);
        let sum = sum.clamp(MIN_THRESHOLD, max);
        Ok(MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD))
    }
}
