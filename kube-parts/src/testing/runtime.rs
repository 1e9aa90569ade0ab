//! [`NodeRuntime`]: a node's [`FakeRuntime`] with pod IPs from the node's own range.
//!
//! Every `FakeRuntime` hands out `10.88.0.1`, `10.88.0.2`, … from the same start, so pods of
//! different nodes would share IPs (and Services would see one backend where there are
//! several). The harness gives node `i` (1-based) the range `10.<64 + i / 256>.<i % 256>.0/24`
//! instead, as a CNI plugin gives each node a pod CIDR: pod IPs are unique across nodes (the
//! first 254 pods of each node; the fake wraps after that).

use std::time::Duration;

use bytes::Bytes;
use kube_core::runtime::{
    AuthConfig, ContainerConfig, ContainerFilter, ContainerStatus, ExecResult, Image, ImageFsInfo,
    LogOptions, PodSandboxConfig, PodSandboxStatus, PulledImage, Runtime, RuntimeError,
};
use kube_node::FakeRuntime;

/// A node's runtime: its [`FakeRuntime`], with sandbox IPs moved into the node's range.
#[derive(Debug, Clone)]
pub(crate) struct NodeRuntime {
    fake: FakeRuntime,
    /// The first two octets after `10.`: the node's /24.
    prefix: (u32, u32),
}

impl NodeRuntime {
    /// The runtime of the `index`-th node (1-based).
    pub(crate) fn new(fake: FakeRuntime, index: usize) -> Self {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        Self {
            fake,
            prefix: ((64 + index / 256).min(255), index % 256),
        }
    }

    /// `10.88.x.y` from the fake, as the `(x * 254 + y - 1)`-th address of the node's range.
    fn remap(&self, status: &mut PodSandboxStatus) {
        let Some(ip) = status.ip.as_deref() else {
            return;
        };
        let octets: Vec<u32> = ip.split('.').filter_map(|o| o.parse().ok()).collect();
        if let [10, 88, x, y] = octets[..] {
            let n = x * 254 + y.saturating_sub(1);
            status.ip = Some(format!(
                "10.{}.{}.{}",
                self.prefix.0,
                self.prefix.1,
                n % 254 + 1
            ));
        }
    }
}

#[async_trait::async_trait]
impl Runtime for NodeRuntime {
    fn version(&self) -> String {
        self.fake.version()
    }

    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String, RuntimeError> {
        self.fake.run_pod_sandbox(config).await
    }

    async fn stop_pod_sandbox(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
        self.fake.stop_pod_sandbox(sandbox_id).await
    }

    async fn remove_pod_sandbox(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
        self.fake.remove_pod_sandbox(sandbox_id).await
    }

    async fn pod_sandbox_status(&self, sandbox_id: &str) -> Result<PodSandboxStatus, RuntimeError> {
        let mut status = self.fake.pod_sandbox_status(sandbox_id).await?;
        self.remap(&mut status);
        Ok(status)
    }

    async fn list_pod_sandboxes(&self) -> Result<Vec<PodSandboxStatus>, RuntimeError> {
        let mut all = self.fake.list_pod_sandboxes().await?;
        for status in &mut all {
            self.remap(status);
        }
        Ok(all)
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
    ) -> Result<String, RuntimeError> {
        self.fake.create_container(sandbox_id, config).await
    }

    async fn start_container(&self, container_id: &str) -> Result<(), RuntimeError> {
        self.fake.start_container(container_id).await
    }

    async fn stop_container(
        &self,
        container_id: &str,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        self.fake.stop_container(container_id, timeout).await
    }

    async fn remove_container(&self, container_id: &str) -> Result<(), RuntimeError> {
        self.fake.remove_container(container_id).await
    }

    async fn container_status(&self, container_id: &str) -> Result<ContainerStatus, RuntimeError> {
        self.fake.container_status(container_id).await
    }

    async fn list_containers(
        &self,
        filter: &ContainerFilter,
    ) -> Result<Vec<ContainerStatus>, RuntimeError> {
        self.fake.list_containers(filter).await
    }

    async fn container_logs(
        &self,
        container_id: &str,
        options: &LogOptions,
    ) -> Result<Bytes, RuntimeError> {
        self.fake.container_logs(container_id, options).await
    }

    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        self.fake.exec_sync(container_id, cmd, timeout).await
    }

    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&AuthConfig>,
        sandbox: Option<&PodSandboxConfig>,
    ) -> Result<PulledImage, RuntimeError> {
        self.fake.pull_image(image, auth, sandbox).await
    }

    async fn image_status(&self, image: &str) -> Result<Option<Image>, RuntimeError> {
        self.fake.image_status(image).await
    }

    async fn list_images(&self) -> Result<Vec<Image>, RuntimeError> {
        self.fake.list_images().await
    }

    async fn remove_image(&self, image: &str) -> Result<(), RuntimeError> {
        self.fake.remove_image(image).await
    }

    async fn image_fs_info(&self) -> Result<ImageFsInfo, RuntimeError> {
        self.fake.image_fs_info().await
    }
}
