//! [`CriRuntime`]: a [`Runtime`] that is a CRI v1 client, for containerd, CRI-O or any other
//! CRI runtime listening on a unix socket.
//!
//! Our types map one to one onto CRI's (they were shaped after it). What CRI leaves to the
//! kubelet is done here: a log directory per sandbox (CRI log format, parsed back by
//! [`container_logs`](Runtime::container_logs)), and a cgroup parent per runtime.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use kube_core::runtime::{
    ContainerConfig, ContainerFilter, ContainerState, ContainerStatus, ExecResult, LogOptions,
    PodSandboxConfig, PodSandboxStatus, Runtime, RuntimeError, SandboxState, trim_log,
};
use tonic::transport::{Channel, Endpoint, Uri};

/// CPU quota period (µs), as the kubelet uses.
const CPU_PERIOD_US: i64 = 100_000;

/// A CRI v1 runtime over a unix socket. Cheap to clone (one shared HTTP/2 channel).
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), kube_core::runtime::RuntimeError> {
/// use kube_node::CriRuntime;
/// let runtime = CriRuntime::connect("/run/containerd/containerd.sock", "/var/log/pods").await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct CriRuntime {
    channel: Channel,
    version: String,
    log_root: PathBuf,
    cgroup_parent: Option<String>,
}

fn status_error(
    operation: &'static str,
    id: &str,
    what: &'static str,
    s: tonic::Status,
) -> RuntimeError {
    if s.code() == tonic::Code::NotFound {
        RuntimeError::NotFound {
            what,
            id: id.to_string(),
        }
    } else {
        RuntimeError::Failed {
            operation,
            message: format!("{}: {}", s.code(), s.message()),
        }
    }
}

fn time_of(nanos: i64) -> Option<SystemTime> {
    let nanos = u64::try_from(nanos).ok().filter(|n| *n > 0)?;
    Some(UNIX_EPOCH + Duration::from_nanos(nanos))
}

fn btree(map: HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

fn hash(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl CriRuntime {
    /// Connects to the CRI runtime at `socket` and asks its version. Container logs go under
    /// `log_root` (one directory per sandbox), which the runtime's process must be able to
    /// write.
    pub async fn connect(
        socket: impl AsRef<Path>,
        log_root: impl Into<PathBuf>,
    ) -> Result<Self, RuntimeError> {
        let socket = socket.as_ref().to_path_buf();
        let failed = |message: String| RuntimeError::Failed {
            operation: "connect",
            message,
        };
        // The URI is a placeholder: the connector below always dials the socket.
        let endpoint = Endpoint::try_from("http://[::1]:0")
            .map_err(|e| failed(e.to_string()))?
            .connect_timeout(Duration::from_secs(5));
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
            .map_err(|e| failed(format!("connecting: {e}")))?;
        let log_root = log_root.into();
        std::fs::create_dir_all(&log_root)?;
        let v = RuntimeServiceClient::new(channel.clone())
            .version(cri::VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(|s| failed(format!("Version: {}: {}", s.code(), s.message())))?
            .into_inner();
        Ok(Self {
            channel,
            version: format!("{}://{}", v.runtime_name, v.runtime_version),
            log_root,
            cgroup_parent: None,
        })
    }

    /// Puts every sandbox under this cgroup parent (e.g. `/kube-node-cri`); default: the
    /// runtime's own choice.
    pub fn with_cgroup_parent(mut self, parent: impl Into<String>) -> Self {
        self.cgroup_parent = Some(parent.into());
        self
    }

    fn client(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    async fn sandbox_status_of(&self, id: &str) -> Result<PodSandboxStatus, RuntimeError> {
        let s = self
            .client()
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            })
            .await
            .map_err(|s| status_error("pod_sandbox_status", id, "sandbox", s))?
            .into_inner()
            .status
            .ok_or_else(|| RuntimeError::NotFound {
                what: "sandbox",
                id: id.to_string(),
            })?;
        let m = s.metadata.unwrap_or_default();
        Ok(PodSandboxStatus {
            id: s.id,
            metadata: kube_core::runtime::PodSandboxMetadata {
                name: m.name,
                namespace: m.namespace,
                uid: m.uid,
                attempt: m.attempt,
            },
            state: if s.state == cri::PodSandboxState::SandboxReady as i32 {
                SandboxState::Ready
            } else {
                SandboxState::NotReady
            },
            created_at: time_of(s.created_at).unwrap_or(UNIX_EPOCH),
            ip: s.network.map(|n| n.ip).filter(|ip| !ip.is_empty()),
            labels: btree(s.labels),
        })
    }

    async fn status_of(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let mut status = self.query_status(id).await?;
        // containerd may handle a container's OOM event after its exit: a container the kernel
        // killed for memory then reads exit 137, reason "Error", for a moment before
        // "OOMKilled". Such an exit seen within its first 3 s is asked about again briefly,
        // so a pod that will not restart does not keep the wrong reason for good.
        for _ in 0..OOM_REASON_RETRIES {
            let just_killed = status.exit_code == Some(137)
                && status.reason.as_deref() == Some("Error")
                && status
                    .finished_at
                    .and_then(|at| at.elapsed().ok())
                    .is_some_and(|age| age < Duration::from_secs(3));
            if !just_killed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            status = self.query_status(id).await?;
        }
        Ok(status)
    }

    async fn query_status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        let r = self
            .client()
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .map_err(|s| status_error("container_status", id, "container", s))?
            .into_inner();
        let s = r.status.ok_or_else(|| RuntimeError::NotFound {
            what: "container",
            id: id.to_string(),
        })?;
        let m = s.metadata.unwrap_or_default();
        let labels = btree(s.labels);
        let sandbox_id = labels.get(SANDBOX_LABEL).cloned().unwrap_or_default();
        let state = match cri::ContainerState::try_from(s.state) {
            Ok(cri::ContainerState::ContainerCreated) => ContainerState::Created,
            Ok(cri::ContainerState::ContainerRunning) => ContainerState::Running,
            Ok(cri::ContainerState::ContainerExited) => ContainerState::Exited,
            _ => ContainerState::Unknown,
        };
        let exited = state == ContainerState::Exited;
        let mut info = BTreeMap::new();
        info.insert("logPath".to_string(), s.log_path.clone());
        Ok(ContainerStatus {
            id: s.id,
            sandbox_id,
            name: m.name,
            attempt: m.attempt,
            image: s.image.map(|i| i.image).unwrap_or_default(),
            state,
            created_at: time_of(s.created_at).unwrap_or(UNIX_EPOCH),
            started_at: time_of(s.started_at),
            finished_at: time_of(s.finished_at),
            exit_code: exited.then_some(s.exit_code),
            reason: Some(s.reason).filter(|r| !r.is_empty()),
            message: Some(s.message).filter(|m| !m.is_empty()),
            labels,
            info,
        })
    }
}

/// How many more times (50 ms apart) a fresh exit 137 with reason "Error" is looked at, for
/// containerd's late OOM event.
const OOM_REASON_RETRIES: usize = 8;

/// A label we add to containers: CRI's ContainerStatus does not name the sandbox.
const SANDBOX_LABEL: &str = "kube-node/sandbox";

/// Turns a CRI log file (`<time> <stream> <P|F> <text>` per line, `P` for a partial line)
/// back into the bytes the container wrote.
fn parse_cri_log(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for line in raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let mut fields = line.splitn(4, |b| *b == b' ');
        let (_, _, tag) = (fields.next(), fields.next(), fields.next());
        let text = fields.next().unwrap_or_default();
        out.extend_from_slice(text);
        if tag != Some(b"P") {
            out.push(b'\n');
        }
    }
    out
}

#[async_trait::async_trait]
impl Runtime for CriRuntime {
    fn version(&self) -> String {
        self.version.clone()
    }

    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String, RuntimeError> {
        let m = &config.metadata;
        let log_directory = self
            .log_root
            .join(format!("{}_{}_{}", m.namespace, m.name, m.uid));
        tokio::fs::create_dir_all(&log_directory).await?;
        let request = cri::RunPodSandboxRequest {
            config: Some(cri::PodSandboxConfig {
                metadata: Some(cri::PodSandboxMetadata {
                    name: m.name.clone(),
                    uid: m.uid.clone(),
                    namespace: m.namespace.clone(),
                    attempt: m.attempt,
                }),
                hostname: config.hostname.clone(),
                log_directory: log_directory.to_string_lossy().into_owned(),
                labels: hash(&config.labels),
                annotations: hash(&config.annotations),
                linux: Some(cri::LinuxPodSandboxConfig {
                    cgroup_parent: self.cgroup_parent.clone().unwrap_or_default(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            runtime_handler: String::new(),
        };
        let r = self
            .client()
            .run_pod_sandbox(request)
            .await
            .map_err(|s| status_error("run_pod_sandbox", &m.name, "sandbox", s))?;
        Ok(r.into_inner().pod_sandbox_id)
    }

    async fn stop_pod_sandbox(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
        self.client()
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: sandbox_id.into(),
            })
            .await
            .map_err(|s| status_error("stop_pod_sandbox", sandbox_id, "sandbox", s))?;
        Ok(())
    }

    async fn remove_pod_sandbox(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
        // The log directory goes with the sandbox, as the kubelet's does with the pod.
        let dir = self.sandbox_status_of(sandbox_id).await.ok().map(|s| {
            let m = s.metadata;
            self.log_root
                .join(format!("{}_{}_{}", m.namespace, m.name, m.uid))
        });
        match self
            .client()
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: sandbox_id.into(),
            })
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(status_error("remove_pod_sandbox", sandbox_id, "sandbox", s)),
        }
        if let Some(dir) = dir {
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn pod_sandbox_status(&self, sandbox_id: &str) -> Result<PodSandboxStatus, RuntimeError> {
        self.sandbox_status_of(sandbox_id).await
    }

    async fn list_pod_sandboxes(&self) -> Result<Vec<PodSandboxStatus>, RuntimeError> {
        let items = self
            .client()
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await
            .map_err(|s| status_error("list_pod_sandboxes", "", "sandbox", s))?
            .into_inner()
            .items;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match self.sandbox_status_of(&item.id).await {
                Ok(s) => out.push(s),
                // Removed meanwhile.
                Err(RuntimeError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
    ) -> Result<String, RuntimeError> {
        let sandbox = self.sandbox_status_of(sandbox_id).await?;
        let mut labels = hash(&config.labels);
        labels.insert(SANDBOX_LABEL.into(), sandbox_id.into());
        let r = &config.resources;
        let resources = cri::LinuxContainerResources {
            cpu_period: if r.cpu_limit_milli.is_some() {
                CPU_PERIOD_US
            } else {
                0
            },
            cpu_quota: r
                .cpu_limit_milli
                .map_or(0, |m| (m * CPU_PERIOD_US / 1000).max(1000)),
            memory_limit_in_bytes: r.memory_limit_bytes.unwrap_or(0),
            ..Default::default()
        };
        let m = &sandbox.metadata;
        let request = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.into(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: config.name.clone(),
                    attempt: config.attempt,
                }),
                image: Some(cri::ImageSpec {
                    image: config.image.clone(),
                    ..Default::default()
                }),
                command: config.command.clone(),
                args: config.args.clone(),
                working_dir: config.working_dir.clone().unwrap_or_default(),
                envs: config
                    .env
                    .iter()
                    .map(|(k, v)| cri::KeyValue {
                        key: k.clone(),
                        value: v.clone(),
                    })
                    .collect(),
                labels,
                mounts: config
                    .mounts
                    .iter()
                    .map(|m| cri::Mount {
                        container_path: m.container_path.clone(),
                        host_path: m.host_path.to_string_lossy().into_owned(),
                        readonly: m.read_only,
                        ..Default::default()
                    })
                    .collect(),
                log_path: format!("{}_{}.log", config.name, config.attempt),
                linux: Some(cri::LinuxContainerConfig {
                    resources: Some(resources),
                    security_context: None,
                }),
                ..Default::default()
            }),
            sandbox_config: Some(cri::PodSandboxConfig {
                metadata: Some(cri::PodSandboxMetadata {
                    name: m.name.clone(),
                    uid: m.uid.clone(),
                    namespace: m.namespace.clone(),
                    attempt: m.attempt,
                }),
                log_directory: self
                    .log_root
                    .join(format!("{}_{}_{}", m.namespace, m.name, m.uid))
                    .to_string_lossy()
                    .into_owned(),
                labels: hash(&sandbox.labels),
                linux: Some(cri::LinuxPodSandboxConfig {
                    cgroup_parent: self.cgroup_parent.clone().unwrap_or_default(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let r = self
            .client()
            .create_container(request)
            .await
            .map_err(|s| status_error("create_container", sandbox_id, "sandbox", s))?;
        Ok(r.into_inner().container_id)
    }

    async fn start_container(&self, container_id: &str) -> Result<(), RuntimeError> {
        self.client()
            .start_container(cri::StartContainerRequest {
                container_id: container_id.into(),
            })
            .await
            .map_err(|s| status_error("start_container", container_id, "container", s))?;
        Ok(())
    }

    /// CRI's timeout has whole seconds: a sub-second grace period is rounded up.
    async fn stop_container(
        &self,
        container_id: &str,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        self.client()
            .stop_container(cri::StopContainerRequest {
                container_id: container_id.into(),
                timeout: i64::try_from(secs).unwrap_or(i64::MAX),
            })
            .await
            .map_err(|s| status_error("stop_container", container_id, "container", s))?;
        Ok(())
    }

    async fn remove_container(&self, container_id: &str) -> Result<(), RuntimeError> {
        let log = self
            .status_of(container_id)
            .await
            .ok()
            .and_then(|s| s.info.get("logPath").cloned());
        match self
            .client()
            .remove_container(cri::RemoveContainerRequest {
                container_id: container_id.into(),
            })
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => {
                return Err(status_error(
                    "remove_container",
                    container_id,
                    "container",
                    s,
                ));
            }
        }
        if let Some(log) = log.filter(|l| !l.is_empty()) {
            match tokio::fs::remove_file(&log).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn container_status(&self, container_id: &str) -> Result<ContainerStatus, RuntimeError> {
        self.status_of(container_id).await
    }

    async fn list_containers(
        &self,
        filter: &ContainerFilter,
    ) -> Result<Vec<ContainerStatus>, RuntimeError> {
        let state = filter.state.map(|s| cri::ContainerStateValue {
            state: match s {
                ContainerState::Created => cri::ContainerState::ContainerCreated,
                ContainerState::Running => cri::ContainerState::ContainerRunning,
                ContainerState::Exited => cri::ContainerState::ContainerExited,
                ContainerState::Unknown => cri::ContainerState::ContainerUnknown,
            } as i32,
        });
        let items = self
            .client()
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    pod_sandbox_id: filter.sandbox_id.clone().unwrap_or_default(),
                    state,
                    ..Default::default()
                }),
            })
            .await
            .map_err(|s| status_error("list_containers", "", "container", s))?
            .into_inner()
            .containers;
        let statuses = items.iter().map(|c| self.status_of(&c.id));
        let mut out = Vec::with_capacity(items.len());
        for result in futures::future::join_all(statuses).await {
            match result {
                Ok(s) => out.push(s),
                Err(RuntimeError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn container_logs(
        &self,
        container_id: &str,
        options: &LogOptions,
    ) -> Result<Bytes, RuntimeError> {
        let status = self.status_of(container_id).await?;
        let Some(path) = status.info.get("logPath").filter(|p| !p.is_empty()) else {
            return Ok(Bytes::new());
        };
        match tokio::fs::read(path).await {
            Ok(raw) => Ok(trim_log(&parse_cri_log(&raw), options)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Bytes::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// CRI's ExecSync; its timeout has whole seconds (rounded up).
    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let r = self
            .client()
            .exec_sync(cri::ExecSyncRequest {
                container_id: container_id.into(),
                cmd: cmd.to_vec(),
                timeout: i64::try_from(secs.max(1)).unwrap_or(i64::MAX),
            })
            .await
            .map_err(|s| status_error("exec_sync", container_id, "container", s))?
            .into_inner();
        let stdout_len = r.stdout.len();
        let mut output = r.stdout;
        output.extend_from_slice(&r.stderr);
        Ok(ExecResult {
            exit_code: r.exit_code,
            output: Bytes::from(output),
            stdout_len: Some(stdout_len),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_log_lines_become_the_original_output() {
        let raw = b"2026-01-01T00:00:00.1Z stdout F hello\n\
                    2026-01-01T00:00:00.2Z stderr P par\n\
                    2026-01-01T00:00:00.3Z stderr F tial\n\
                    2026-01-01T00:00:00.4Z stdout F \n";
        assert_eq!(parse_cri_log(raw), b"hello\npartial\n\n");
    }
}
