//! The [`Runtime`] trait: a node's container runtime, shaped like the Kubernetes CRI
//! (pod sandboxes holding containers).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// Errors from a [`Runtime`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// No sandbox or container has this ID.
    #[error("{what} {id} not found")]
    NotFound {
        /// `"sandbox"`, `"container"` or `"image"`.
        what: &'static str,
        /// The ID asked for.
        id: String,
    },
    /// The request cannot be carried out as given (e.g. a container with no command).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The runtime tried and failed (e.g. the executable could not be started).
    #[error("{operation} failed: {message}")]
    Failed {
        /// The operation, e.g. `start_container`.
        operation: &'static str,
        /// What went wrong.
        message: String,
    },
    /// An I/O error.
    #[error("runtime I/O error")]
    Io(#[from] std::io::Error),
    /// Any other backend error.
    #[error("runtime backend error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Identity of the pod a sandbox belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSandboxMetadata {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID.
    pub uid: String,
    /// Incremented each time the sandbox is recreated.
    pub attempt: u32,
}

/// What [`Runtime::run_pod_sandbox`] creates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSandboxConfig {
    /// Identity of the pod.
    pub metadata: PodSandboxMetadata,
    /// Hostname for the pod.
    pub hostname: String,
    /// Labels (the node agent puts the pod's identity here).
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Whether the pod shares the node's network namespace (`spec.hostNetwork`): no sandbox
    /// network is made and the pod reports the node's IP.
    pub host_network: bool,
    /// Container ports published on the node (`hostPort`), CRI's `port_mappings`.
    pub port_mappings: Vec<PortMapping>,
}

/// A container port the runtime publishes on the node (`containers[].ports[].hostPort`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapping {
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The port in the pod.
    pub container_port: u16,
    /// The port on the node.
    pub host_port: u16,
    /// The node address to publish on; empty for all of them.
    pub host_ip: String,
}

/// The node's network facts a runtime is told as they change (CRI's `UpdateRuntimeConfig`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeConfig {
    /// The node's pod CIDR (`spec.podCIDR`), from which pod addresses are given, once the
    /// node IPAM controller has allocated one.
    pub pod_cidr: Option<String>,
}

impl RuntimeConfig {
    /// A config with the node's pod CIDR.
    pub fn with_pod_cidr(pod_cidr: impl Into<String>) -> Self {
        Self {
            pod_cidr: Some(pod_cidr.into()),
        }
    }
}

/// Whether a sandbox is usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxState {
    /// Running; containers can be started in it.
    Ready,
    /// Stopped.
    NotReady,
}

/// What the runtime reports about a sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSandboxStatus {
    /// Sandbox ID.
    pub id: String,
    /// Identity of the pod.
    pub metadata: PodSandboxMetadata,
    /// Ready or not.
    pub state: SandboxState,
    /// When it was created.
    pub created_at: SystemTime,
    /// The pod's IP address, if it has one.
    pub ip: Option<String>,
    /// Labels given at creation.
    pub labels: BTreeMap<String, String>,
}

/// Resource limits a runtime may enforce.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerResources {
    /// CPU limit in millicores.
    pub cpu_limit_milli: Option<i64>,
    /// Memory limit in bytes.
    pub memory_limit_bytes: Option<i64>,
}

/// A host path made visible inside a container (how pod volumes reach containers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mount {
    /// The file or directory on the node.
    pub host_path: std::path::PathBuf,
    /// Where it appears in the container.
    pub container_path: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// What [`Runtime::create_container`] creates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerConfig {
    /// Container name within the pod.
    pub name: String,
    /// Incremented on each restart.
    pub attempt: u32,
    /// Image reference.
    pub image: String,
    /// Entrypoint (`command` in the pod spec).
    pub command: Vec<String>,
    /// Arguments (`args` in the pod spec).
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Labels (the node agent puts the container's identity here).
    pub labels: BTreeMap<String, String>,
    /// Limits.
    pub resources: ContainerResources,
    /// Volumes to mount. Runtimes without filesystem isolation may ignore them.
    pub mounts: Vec<Mount>,
    /// The user to run as (`securityContext.runAsUser`, the container's over the pod's);
    /// `None`: the image's `User`, else root.
    pub run_as_user: Option<i64>,
    /// The primary group to run as (`securityContext.runAsGroup`); `None`: the image user's
    /// group, else the user's ID.
    pub run_as_group: Option<i64>,
}

/// A container's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited (see the exit code).
    Exited,
    /// The runtime lost track of it.
    Unknown,
}

/// What the runtime reports about a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerStatus {
    /// Container ID.
    pub id: String,
    /// Sandbox the container belongs to.
    pub sandbox_id: String,
    /// Container name within the pod.
    pub name: String,
    /// Restart attempt.
    pub attempt: u32,
    /// Image reference.
    pub image: String,
    /// Lifecycle state.
    pub state: ContainerState,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it started.
    pub started_at: Option<SystemTime>,
    /// When it exited.
    pub finished_at: Option<SystemTime>,
    /// Exit code, once exited.
    pub exit_code: Option<i32>,
    /// Short machine-readable reason, e.g. `Completed`, `Error`, `OOMKilled`.
    pub reason: Option<String>,
    /// Human-readable detail.
    pub message: Option<String>,
    /// Labels given at creation.
    pub labels: BTreeMap<String, String>,
    /// Runtime-specific facts (e.g. `pid`).
    pub info: BTreeMap<String, String>,
}

/// Which containers [`Runtime::list_containers`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerFilter {
    /// Only containers in this sandbox.
    pub sandbox_id: Option<String>,
    /// Only containers in this state.
    pub state: Option<ContainerState>,
}

/// Which part of a log [`Runtime::container_logs`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// At most this many bytes (from the end).
    pub limit_bytes: Option<usize>,
}

/// What [`Runtime::exec_sync`] reports about a finished command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecResult {
    /// The command's exit code.
    pub exit_code: i32,
    /// Its stdout followed by its stderr.
    pub output: Bytes,
    /// How many leading bytes of `output` are stdout (the rest is stderr), when the runtime
    /// kept them apart; `None` when it did not (then `output` is all one stream).
    pub stdout_len: Option<usize>,
}

/// Credentials for a registry, as CRI's `AuthConfig`: what the node agent found for the
/// image's registry in the pod's `imagePullSecrets` (and its ServiceAccount's) or the node's
/// credentials file.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthConfig {
    /// User name, for basic authentication.
    pub username: String,
    /// Password, for basic authentication.
    pub password: String,
    /// `base64(username:password)`, as Docker config files carry it (used when `username`
    /// is empty).
    pub auth: String,
    /// The registry host these credentials are for (`docker.io`, `127.0.0.1:5000`).
    pub server_address: String,
    /// An identity token (OAuth2 refresh token) to exchange for a registry token.
    pub identity_token: String,
    /// A bearer token sent to the registry as it is.
    pub registry_token: String,
}

impl AuthConfig {
    /// Basic authentication with `username` and `password` for `server_address`.
    pub fn basic(
        server_address: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        Self {
            server_address: server_address.into(),
            username: username.into(),
            password: password.into(),
            ..Self::default()
        }
    }
}

// Credentials stay out of logs and `Debug` output.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("server_address", &self.server_address)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// An image the runtime holds, as CRI's `Image`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Image {
    /// The image's ID: the digest of its config (`sha256:…`).
    pub id: String,
    /// Tagged references that name it (`docker.io/library/nginx:1.27`).
    pub repo_tags: Vec<String>,
    /// Digested references it was pulled by (`docker.io/library/nginx@sha256:…`).
    pub repo_digests: Vec<String>,
    /// Size on disk (the compressed layers), in bytes.
    pub size_bytes: u64,
    /// The user its config names (`User`), if any: `runAsNonRoot` is checked against it.
    pub user: Option<String>,
    /// Pinned images are never garbage-collected (e.g. the sandbox image).
    pub pinned: bool,
}

impl Image {
    /// An image with `id`, named by `repo_tags`.
    pub fn new(id: impl Into<String>, repo_tags: Vec<String>) -> Self {
        Self {
            id: id.into(),
            repo_tags,
            ..Self::default()
        }
    }
}

/// What [`Runtime::pull_image`] reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PulledImage {
    /// The reference the image now resolves by, digest included where known
    /// (`docker.io/library/nginx@sha256:…`): the container status' `imageID`.
    pub image_ref: String,
    /// The image's ID (its config digest).
    pub id: String,
    /// Size on disk, in bytes (the kubelet's `Pulled` event reports it).
    pub size_bytes: u64,
}

impl PulledImage {
    /// A pulled image resolving as `image_ref`, with ID `id`, of `size_bytes`.
    pub fn new(image_ref: impl Into<String>, id: impl Into<String>, size_bytes: u64) -> Self {
        Self {
            image_ref: image_ref.into(),
            id: id.into(),
            size_bytes,
        }
    }
}

/// How full the filesystem holding images is, as CRI's `ImageFsInfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageFsInfo {
    /// Where images are kept.
    pub mountpoint: String,
    /// Bytes the images take.
    pub used_bytes: u64,
    /// Bytes of the filesystem in all (0 when unknown).
    pub capacity_bytes: u64,
    /// Bytes still free on it.
    pub available_bytes: u64,
}

/// A node's container runtime, shaped like CRI.
///
/// The node agent (`kube_node::NodeAgent`) drives it: one sandbox per pod, one container per
/// pod container and restart attempt. Implementations: `kube_node::FakeRuntime` (simulated),
/// `kube_node::ProcessRuntime` (host processes), and the user's own.
///
/// ```
/// use std::sync::Arc;
/// use kube_core::runtime::Runtime;
/// fn object_safe(_: Arc<dyn Runtime>) {}
/// ```
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + std::fmt::Debug {
    /// Runtime name and version, reported in the Node's `containerRuntimeVersion`.
    fn version(&self) -> String;

    /// Creates and starts a pod sandbox; returns its ID.
    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String, RuntimeError>;
    /// Stops a sandbox and every container in it (force-killing what is still running).
    async fn stop_pod_sandbox(&self, sandbox_id: &str) -> Result<(), RuntimeError>;
    /// Removes a stopped sandbox and its containers.
    async fn remove_pod_sandbox(&self, sandbox_id: &str) -> Result<(), RuntimeError>;
    /// Reports one sandbox.
    async fn pod_sandbox_status(&self, sandbox_id: &str) -> Result<PodSandboxStatus, RuntimeError>;
    /// Reports every sandbox.
    async fn list_pod_sandboxes(&self) -> Result<Vec<PodSandboxStatus>, RuntimeError>;

    /// Creates a container in a sandbox; returns its ID.
    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
    ) -> Result<String, RuntimeError>;
    /// Starts a created container.
    async fn start_container(&self, container_id: &str) -> Result<(), RuntimeError>;
    /// Stops a container: a polite signal, then a forced kill after `timeout`.
    async fn stop_container(
        &self,
        container_id: &str,
        timeout: Duration,
    ) -> Result<(), RuntimeError>;
    /// Removes a stopped container and its log.
    async fn remove_container(&self, container_id: &str) -> Result<(), RuntimeError>;
    /// Reports one container.
    async fn container_status(&self, container_id: &str) -> Result<ContainerStatus, RuntimeError>;
    /// Reports the containers that pass `filter`.
    async fn list_containers(
        &self,
        filter: &ContainerFilter,
    ) -> Result<Vec<ContainerStatus>, RuntimeError>;
    /// Returns a container's log (stdout and stderr, interleaved as written).
    async fn container_logs(
        &self,
        container_id: &str,
        options: &LogOptions,
    ) -> Result<Bytes, RuntimeError>;

    /// Runs `cmd` in a running container and waits for it, at most `timeout` (exec probes
    /// and lifecycle hooks). A command still running at the timeout is an error. The default
    /// implementation reports that the runtime cannot exec.
    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        let _ = (cmd, timeout);
        Err(RuntimeError::Failed {
            operation: "exec_sync",
            message: format!("{} cannot exec in container {container_id}", self.version()),
        })
    }

    /// Pulls `image` (as the pod names it) with `auth` for its registry, for the pod of
    /// `sandbox` when known (CRI's `PullImage`). A runtime that resolves images itself when a
    /// container is created keeps this default, which reports the image as present.
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&AuthConfig>,
        sandbox: Option<&PodSandboxConfig>,
    ) -> Result<PulledImage, RuntimeError> {
        let _ = (auth, sandbox);
        Ok(PulledImage::new(image, image, 0))
    }

    /// Reports the image `image` names, or `None` if the runtime does not hold it (CRI's
    /// `ImageStatus`). The default, for runtimes that resolve images themselves when a
    /// container is created, reports every image as present.
    async fn image_status(&self, image: &str) -> Result<Option<Image>, RuntimeError> {
        Ok(Some(Image::new(image, vec![image.to_string()])))
    }

    /// Reports every image the runtime holds (CRI's `ListImages`; the Node's
    /// `status.images`).
    async fn list_images(&self) -> Result<Vec<Image>, RuntimeError> {
        Ok(Vec::new())
    }

    /// Removes the image `image` names (a reference or an ID; CRI's `RemoveImage`).
    /// Removing an image the runtime does not hold succeeds, as in CRI.
    async fn remove_image(&self, image: &str) -> Result<(), RuntimeError> {
        let _ = image;
        Ok(())
    }

    /// How full the image filesystem is (CRI's `ImageFsInfo`), for image garbage
    /// collection. The default reports nothing known.
    async fn image_fs_info(&self) -> Result<ImageFsInfo, RuntimeError> {
        Ok(ImageFsInfo::default())
    }

    /// Tells the runtime the node's network facts, such as the pod CIDR the node IPAM
    /// controller allocated (CRI's `UpdateRuntimeConfig`); the node agent calls it when its
    /// Node's `spec.podCIDR` is first seen or changes. The default ignores it, for runtimes
    /// that address pods on their own.
    async fn update_runtime_config(&self, config: &RuntimeConfig) -> Result<(), RuntimeError> {
        let _ = config;
        Ok(())
    }
}

/// Applies `tail_lines` and `limit_bytes` to a whole log, for runtimes that keep logs as bytes.
pub fn trim_log(log: &[u8], options: &LogOptions) -> Bytes {
    let mut start = 0;
    if let Some(n) = options.tail_lines {
        let body = log.strip_suffix(b"\n").unwrap_or(log);
        let mut seen = 0;
        start = 0;
        for (i, b) in body.iter().enumerate().rev() {
            if *b == b'\n' {
                seen += 1;
                if seen == n {
                    start = i + 1;
                    break;
                }
            }
        }
        if n == 0 {
            start = log.len();
        }
    }
    if let Some(limit) = options.limit_bytes {
        start = start.max(log.len().saturating_sub(limit));
    }
    Bytes::copy_from_slice(&log[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_log_takes_tail_lines() {
        let log = b"a\nb\nc\n";
        let tail = |n| {
            trim_log(
                log,
                &LogOptions {
                    tail_lines: Some(n),
                    limit_bytes: None,
                },
            )
        };
        assert_eq!(&tail(2)[..], b"b\nc\n");
        assert_eq!(&tail(5)[..], b"a\nb\nc\n");
        assert_eq!(&tail(0)[..], b"");
        assert_eq!(
            &trim_log(
                log,
                &LogOptions {
                    tail_lines: None,
                    limit_bytes: Some(2)
                }
            )[..],
            b"c\n"
        );
    }
}
