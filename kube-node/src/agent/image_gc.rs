//! Garbage collection of unused images by disk usage, as the kubelet's image GC manager
//! (pkg/kubelet/images/image_gc_manager.go): when the image filesystem is fuller than the high
//! threshold, unused images go, least recently used first, until it is below the low one.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use kube_core::runtime::{ContainerFilter, Image, RuntimeError};

use super::{Agent, error_chain};

/// When the node agent removes unused images, as the kubelet's image GC settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// Image filesystem usage (percent) at or above which images are collected (the
    /// kubelet's `imageGCHighThresholdPercent`, default 85; 100 turns collection off).
    pub high_threshold_percent: u8,
    /// Usage (percent) collection frees down to (`imageGCLowThresholdPercent`, default 80).
    pub low_threshold_percent: u8,
    /// Images first seen less than this long ago are kept (`imageMinimumGCAge`, default
    /// 2 min), so an image pulled for a pod about to start is not taken from under it.
    pub min_age: Duration,
    /// How often usage is checked (default 5 min, the kubelet's).
    pub period: Duration,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        Self {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(120),
            period: Duration::from_secs(300),
        }
    }
}

/// What the agent knows of one image between collections.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ImageRecord {
    first_detected: Instant,
    last_used: Instant,
}

/// Which images to remove (IDs, in order) to free `to_free` bytes: unused, unpinned images
/// older than `min_age`, least recently used first.
fn plan(
    images: &[Image],
    in_use: &HashSet<String>,
    records: &HashMap<String, ImageRecord>,
    min_age: Duration,
    to_free: u64,
    now: Instant,
) -> Vec<String> {
    let mut candidates: Vec<(&Image, ImageRecord)> = images
        .iter()
        .filter(|i| !i.pinned && !in_use.contains(&i.id))
        .filter_map(|i| Some((i, *records.get(&i.id)?)))
        .filter(|(_, r)| now.saturating_duration_since(r.first_detected) >= min_age)
        .collect();
    candidates.sort_by_key(|(_, r)| (r.last_used, r.first_detected));
    let mut freed = 0;
    let mut out = Vec::new();
    for (image, _) in candidates {
        if freed >= to_free {
            break;
        }
        freed += image.size_bytes;
        out.push(image.id.clone());
    }
    out
}

/// Normalized names of an image, to match containers' image references against.
fn names(image: &Image) -> impl Iterator<Item = &String> {
    image.repo_tags.iter().chain(&image.repo_digests)
}

impl Agent {
    pub(super) async fn image_gc_loop(self: std::sync::Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.image_gc.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.collect_images().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(removed = n, "unused images collected"),
                Err(e) => tracing::warn!(error = %error_chain(&e), "image GC failed"),
            }
        }
    }

    /// Notes which images exist and which are used by a container (any container the
    /// runtime holds, exited ones too, as the kubelet counts them); returns the images and
    /// the IDs in use.
    async fn detect_images(&self) -> Result<(Vec<Image>, HashSet<String>), RuntimeError> {
        let images = self.runtime.list_images().await?;
        let containers = self
            .runtime
            .list_containers(&ContainerFilter::default())
            .await?;
        let now = Instant::now();
        let used: HashSet<String> = containers
            .iter()
            .map(|c| super::images::normalized(&c.image))
            .collect();
        let mut in_use = HashSet::new();
        let mut records = self.image_records();
        let present: HashSet<&String> = images.iter().map(|i| &i.id).collect();
        records.retain(|id, _| present.contains(id));
        for image in &images {
            let record = records.entry(image.id.clone()).or_insert(ImageRecord {
                first_detected: now,
                last_used: now,
            });
            if used.contains(&image.id) || names(image).any(|n| used.contains(n)) {
                record.last_used = now;
                in_use.insert(image.id.clone());
            }
        }
        Ok((images, in_use))
    }

    /// Collects unused images if the image filesystem is over the high threshold; returns
    /// how many were removed.
    pub(crate) async fn collect_images(&self) -> Result<usize, RuntimeError> {
        let (images, in_use) = self.detect_images().await?;
        let policy = &self.config.image_gc;
        let fs = self.runtime.image_fs_info().await?;
        if fs.capacity_bytes == 0 || policy.high_threshold_percent >= 100 {
            return Ok(0);
        }
        let used = fs.capacity_bytes.saturating_sub(fs.available_bytes);
        let percent = used.saturating_mul(100) / fs.capacity_bytes;
        if percent < u64::from(policy.high_threshold_percent) {
            return Ok(0);
        }
        let target = fs.capacity_bytes / 100 * u64::from(policy.low_threshold_percent);
        let to_free = used.saturating_sub(target);
        let ids = {
            let records = self.image_records();
            plan(
                &images,
                &in_use,
                &records,
                policy.min_age,
                to_free,
                Instant::now(),
            )
        };
        tracing::info!(
            usage_percent = percent,
            to_free,
            candidates = ids.len(),
            "image filesystem over the high threshold"
        );
        let mut removed = 0;
        for id in ids {
            self.runtime.remove_image(&id).await?;
            self.image_records().remove(&id);
            removed += 1;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, size: u64) -> Image {
        let mut i = Image::new(id, vec![format!("docker.io/library/{id}:1")]);
        i.size_bytes = size;
        i
    }

    #[test]
    fn unused_images_go_least_recently_used_first_until_enough_is_free() {
        let now = Instant::now();
        let at = |secs: u64| now - Duration::from_secs(secs);
        let images = [
            image("a", 10),
            image("b", 10),
            image("c", 10),
            image("d", 10),
        ];
        let records: HashMap<String, ImageRecord> = [
            ("a", 500, 100),
            ("b", 500, 400),
            ("c", 500, 300),
            ("d", 60, 60),
        ]
        .into_iter()
        .map(|(id, first, last)| {
            let record = ImageRecord {
                first_detected: at(first),
                last_used: at(last),
            };
            (id.to_string(), record)
        })
        .collect();
        let in_use: HashSet<String> = ["c".to_string()].into();
        // c is in use, d too young: b (used longest ago), then a.
        let plan = |to_free| {
            plan(
                &images,
                &in_use,
                &records,
                Duration::from_secs(120),
                to_free,
                now,
            )
        };
        assert_eq!(plan(15), ["b", "a"]);
        assert_eq!(plan(5), ["b"]);
        assert!(plan(0).is_empty());
        assert_eq!(plan(1000), ["b", "a"]);
    }
}
