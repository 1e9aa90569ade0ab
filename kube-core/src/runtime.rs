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
        /// `"sandbox"` or `"container"`.
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
