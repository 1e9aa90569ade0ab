//! The image service of [`FakeRuntime`](super::FakeRuntime): simulated pulls with a
//! configurable latency, size and failure per image, and the images they leave behind.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kube_core::runtime::{Image, ImageFsInfo, PulledImage};

/// How a simulated pull of an image goes.
///
/// ```
/// use std::time::Duration;
/// use kube_node::FakePull;
/// let slow = FakePull::default().latency(Duration::from_millis(300)).size(80 << 20);
/// let private = FakePull::fail("unauthorized: authentication required");
/// # let _ = (slow, private);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakePull {
    pub(super) latency: Duration,
    pub(super) size_bytes: u64,
    pub(super) error: Option<String>,
}

impl Default for FakePull {
    /// Succeeds at once with a 5 MiB image.
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            size_bytes: 5 << 20,
            error: None,
        }
    }
}

impl FakePull {
    /// Fails with `message`, as a registry refusing the image would.
    pub fn fail(message: impl Into<String>) -> Self {
        Self {
            error: Some(message.into()),
            ..Self::default()
        }
    }

    /// Takes `latency` (on Tokio's clock, so paused-time tests pass it instantly).
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Leaves an image of `bytes` on the node.
    pub fn size(mut self, bytes: u64) -> Self {
        self.size_bytes = bytes;
        self
    }
}

/// An image the fake holds.
#[derive(Clone, Debug)]
pub(super) struct FakeImage {
    pub(super) id: String,
    pub(super) size_bytes: u64,
    pub(super) pinned: bool,
}

/// The fake's images and how pulls go.
#[derive(Debug, Default)]
pub(super) struct Images {
    /// By normalized reference.
    pub(super) present: BTreeMap<String, FakeImage>,
    pub(super) default_pull: FakePull,
    /// By normalized reference.
    pub(super) pulls: HashMap<String, FakePull>,
    /// Size of the simulated image filesystem; 0: unknown.
    pub(super) capacity_bytes: u64,
}

/// The reference as containerd keys images (`nginx` → `docker.io/library/nginx:latest`); a
/// reference that does not parse stays as it is.
pub(super) fn normalize(image: &str) -> String {
    crate::pull::reference::normalize(image).map_or_else(|_| image.to_string(), |n| n.to_string())
}

/// A stable fake digest of `name`.
fn fake_digest(name: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(name.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl Images {
    /// How a pull of `name` (normalized) goes.
    pub(super) fn pull_of(&self, name: &str) -> FakePull {
        self.pulls
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.default_pull.clone())
    }

    /// Records `name` as present; returns what a pull reports.
    pub(super) fn add(&mut self, name: &str, size_bytes: u64, pinned: bool) -> PulledImage {
        let id = fake_digest(name);
        self.present.insert(
            name.to_string(),
            FakeImage {
                id: id.clone(),
                size_bytes,
                pinned,
            },
        );
        let repo = name.rsplit_once(':').map_or(
            name,
            |(repo, tag)| {
                if tag.contains('/') { name } else { repo }
            },
        );
        PulledImage::new(format!("{repo}@{id}"), id, size_bytes)
    }

    /// The image `image` names: a reference or an ID.
    pub(super) fn find(&self, image: &str) -> Option<(&String, &FakeImage)> {
        let name = normalize(image);
        self.present
            .get_key_value(&name)
            .or_else(|| self.present.iter().find(|(_, i)| i.id == image))
    }

    pub(super) fn status(name: &str, image: &FakeImage) -> Image {
        let mut status = Image::new(image.id.clone(), vec![name.to_string()]);
        status.size_bytes = image.size_bytes;
        status.pinned = image.pinned;
        status
    }

    pub(super) fn fs_info(&self) -> ImageFsInfo {
        let used: u64 = self.present.values().map(|i| i.size_bytes).sum();
        let mut info = ImageFsInfo::default();
        info.mountpoint = "/var/lib/fake/images".into();
        info.used_bytes = used;
        info.capacity_bytes = self.capacity_bytes;
        info.available_bytes = self.capacity_bytes.saturating_sub(used);
        info
    }
}
