//! [`DockerRuntime`]: a [`Runtime`] on the Docker Engine API over its unix socket, mapping
//! CRI onto Docker as dockershim and cri-dockerd do.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, HostConfig,
    HostConfigLogConfig, ImageInspect, ImageSummary, Mount as DockerMount, MountType,
    RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, ListImagesOptions,
    LogsOptions, RemoveContainerOptions, RemoveImageOptions, StopContainerOptions,
};
use bytes::Bytes;
use futures::StreamExt;
use kube_core::runtime::{
    AuthConfig, ContainerConfig, ContainerFilter, ContainerState, ContainerStatus, ExecResult,
    Image, ImageFsInfo, LogOptions, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatus,
    PulledImage, Runtime, RuntimeError, SandboxState, trim_log,
};

/// The sandbox image when none is configured: Kubernetes' pause image.
pub const DEFAULT_SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// CPU quota period (µs), as the kubelet uses.
const CPU_PERIOD_US: i64 = 100_000;

/// Per-request timeout of the Docker client. Long, because a stop waits out the grace
/// period inside one request, and a pull of a large image is one request too.
const REQUEST_TIMEOUT_SECS: u64 = 3600;

/// Labels of ours start with this; the rest are the labels the agent gave.
const LABEL_PREFIX: &str = "io.kube-node.";
const TYPE_LABEL: &str = "io.kube-node.type";
const SANDBOX_TYPE: &str = "podsandbox";
const CONTAINER_TYPE: &str = "container";
const POD_NAME_LABEL: &str = "io.kube-node.pod.name";
const POD_NAMESPACE_LABEL: &str = "io.kube-node.pod.namespace";
const POD_UID_LABEL: &str = "io.kube-node.pod.uid";
const POD_ATTEMPT_LABEL: &str = "io.kube-node.pod.attempt";
const SANDBOX_ID_LABEL: &str = "io.kube-node.sandbox.id";
const CONTAINER_NAME_LABEL: &str = "io.kube-node.container.name";
const CONTAINER_ATTEMPT_LABEL: &str = "io.kube-node.container.attempt";

/// Builds a [`DockerRuntime`]; see [`DockerRuntime::builder`].
#[derive(Clone, Debug)]
pub struct DockerRuntimeBuilder {
    socket: PathBuf,
    sandbox_image: String,
    sandbox_command: Vec<String>,
    network: Option<String>,
    cgroup_parent: Option<String>,
}

impl Default for DockerRuntimeBuilder {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/var/run/docker.sock"),
            sandbox_image: DEFAULT_SANDBOX_IMAGE.to_string(),
            sandbox_command: Vec::new(),
            network: None,
            cgroup_parent: None,
        }
    }
}

impl DockerRuntimeBuilder {
    /// The Docker daemon's socket (default `/var/run/docker.sock`).
    pub fn socket(mut self, socket: impl Into<PathBuf>) -> Self {
        self.socket = socket.into();
        self
    }

    /// The image each pod sandbox runs (default [`DEFAULT_SANDBOX_IMAGE`]); pulled when
    /// the daemon does not hold it.
    pub fn sandbox_image(mut self, image: impl Into<String>) -> Self {
        self.sandbox_image = image.into();
        self
    }

    /// The sandbox container's command (its `Entrypoint`), for a sandbox image that is not
    /// a pause image, e.g. `["sleep", "2147483647"]` with busybox. Default: the image's own.
    pub fn sandbox_command<S: Into<String>>(
        mut self,
        command: impl IntoIterator<Item = S>,
    ) -> Self {
        self.sandbox_command = command.into_iter().map(Into::into).collect();
        self
    }

    /// The Docker network mode of sandboxes: `none`, `bridge`, or a network's name. Default:
    /// the daemon's default network, as dockershim left pods without a network plugin.
    pub fn network(mut self, mode: impl Into<String>) -> Self {
        self.network = Some(mode.into());
        self
    }

    /// Puts every container under this cgroup parent (e.g. `/kube-node-docker`); default:
    /// the daemon's (`/docker`).
    pub fn cgroup_parent(mut self, parent: impl Into<String>) -> Self {
        self.cgroup_parent = Some(parent.into());
        self
    }

    /// Connects to the daemon, settles on an API version both sides speak, and asks the
    /// daemon's version.
    pub async fn build(self) -> Result<DockerRuntime, RuntimeError> {
        let failed = |message: String| RuntimeError::Failed {
            operation: "connect",
            message,
        };
        let socket = self.socket.to_string_lossy().into_owned();
        let docker =
            Docker::connect_with_unix(&socket, REQUEST_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
                .map_err(|e| failed(format!("{socket}: {e}")))?
                // bollard speaks a newer API than many daemons (Docker 20.10 has 1.41).
                .negotiate_version()
                .await
                .map_err(|e| failed(format!("{socket}: {e}")))?;
        let v = docker
            .version()
            .await
            .map_err(|e| failed(format!("{socket}: version: {e}")))?;
        let version = format!("docker://{}", v.version.unwrap_or_default());
        Ok(DockerRuntime {
            docker,
            version,
            sandbox_image: self.sandbox_image,
            sandbox_command: self.sandbox_command,
            network: self.network,
            cgroup_parent: self.cgroup_parent,
        })
    }
}

/// A [`Runtime`] on the Docker Engine API over its unix socket, mapping CRI onto Docker as
/// dockershim and cri-dockerd do. Cheap to clone: one client, shared.
///
/// - A pod sandbox is a container of its own running a pause-like image: it holds the pod's
///   network, IPC and UTS namespaces (its hostname is the pod's). The pod's containers join
///   it with `network_mode` and `ipc_mode` `container:<sandbox id>`; each keeps its own PID
///   namespace, as Kubernetes' default is.
/// - Identity lives in Docker labels (`io.kube-node.*`, hidden from the labels reported
///   back), so a new runtime over the same daemon (after an agent restart) finds every
///   sandbox and container again: nothing is kept on our side.
/// - `command` is Docker's `Entrypoint` and `args` its `Cmd`, leaving unset what the pod
///   leaves unset, so that the image's own `Entrypoint`/`Cmd` apply as in Kubernetes.
/// - Logs are Docker's `json-file` logs, read back through the logs API.
/// - Images are pulled by Docker (credentials sent as `X-Registry-Auth`), so the daemon's
///   `registry-mirrors` and `insecure-registries` apply.
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), kube_core::runtime::RuntimeError> {
/// use kube_node::DockerRuntime;
/// let runtime = DockerRuntime::builder()
///     .socket("/var/run/docker.sock")
///     .sandbox_image("registry.k8s.io/pause:3.10")
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct DockerRuntime {
    docker: Docker,
    version: String,
    sandbox_image: String,
    sandbox_command: Vec<String>,
    network: Option<String>,
    cgroup_parent: Option<String>,
}

/// Maps a Docker error: 404 is `NotFound` (of `what` `id`), other answers of the daemon are
/// `Failed` with its message, transport errors keep their source.
fn docker_error(
    operation: &'static str,
    what: &'static str,
    id: &str,
    e: DockerError,
) -> RuntimeError {
    match e {
        DockerError::DockerResponseServerError {
            status_code: 404, ..
        } => RuntimeError::NotFound {
            what,
            id: id.to_string(),
        },
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => RuntimeError::Failed {
            operation,
            message: format!("{message} (HTTP {status_code})"),
        },
        DockerError::DockerStreamError { error } => RuntimeError::Failed {
            operation,
            message: error,
        },
        other => RuntimeError::Backend(Box::new(other)),
    }
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Seconds for Docker's stop timeout: whole seconds, a sub-second grace rounded up.
fn whole_seconds(timeout: Duration) -> i32 {
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses Docker's RFC 3339 times (`2026-12-07T23:03:23.134483355Z`, or with an offset).
/// Docker's zero time (`0001-01-01T00:00:00Z`, "never") and anything unparsable are `None`.
fn parse_time(s: &str) -> Option<SystemTime> {
    let (date, clock) = s.split_once('T')?;
    let mut ymd = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, mo, d) = (ymd.next()?.ok()?, ymd.next()?.ok()?, ymd.next()?.ok()?);
    if y < 1970 {
        return None;
    }
    let (clock, offset) = if let Some(c) = clock.strip_suffix('Z') {
        (c, 0)
    } else {
        let at = clock.rfind(['+', '-'])?;
        let (c, off) = clock.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (h, m) = off.get(1..)?.split_once(':')?;
        (
            c,
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60),
        )
    };
    let (whole, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut hms = whole.splitn(3, ':').map(str::parse::<i64>);
    let (h, mi, sec) = (hms.next()?.ok()?, hms.next()?.ok()?, hms.next()?.ok()?);
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        let scale = 10u32.pow(9 - u32::try_from(digits.len()).ok()?);
        digits.parse::<u32>().ok()? * scale
    };
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// A reference as Docker familiarly shows it (`busybox:1.36`, `busybox@sha256:…`) in full
/// (`docker.io/library/busybox:1.36`), as CRI runtimes report images.
fn full_reference(reference: &str) -> String {
    match reference.split_once('/') {
        Some((host, _)) if host.contains(['.', ':']) || host == "localhost" => {
            reference.to_string()
        }
        Some(_) => format!("docker.io/{reference}"),
        None => format!("docker.io/library/{reference}"),
    }
}

/// `reference` with `:latest` added when it names neither a tag nor a digest: Docker pulls
/// every tag of a bare repository name.
fn with_tag(reference: &str) -> String {
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if reference.contains('@') || last.contains(':') {
        reference.to_string()
    } else {
        format!("{reference}:latest")
    }
}

/// The repository of a reference: without its tag or digest.
fn repository(reference: &str) -> &str {
    if let Some((repo, _)) = reference.split_once('@') {
        return repo;
    }
    match reference.rfind(':') {
        // A colon after the last slash starts the tag; before it, it is the registry's port.
        Some(at) if !reference[at..].contains('/') => &reference[..at],
        _ => reference,
    }
}

/// The labels the agent gave, without ours.
fn user_labels(labels: &HashMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| !k.starts_with(LABEL_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn label_filter(pairs: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    let labels = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    HashMap::from([("label".to_string(), labels)])
}

/// A Docker container name: `k8s_<container>_<pod>_<namespace>_<uid>_<attempt>` as
/// dockershim names them (`POD` for the sandbox), only characters Docker accepts.
fn docker_name(container: &str, m: &PodSandboxMetadata, attempt: u32) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    format!(
        "k8s_{}_{}_{}_{}_{attempt}",
        clean(container),
        clean(&m.name),
        clean(&m.namespace),
        clean(&m.uid)
    )
}

fn credentials(auth: &AuthConfig) -> DockerCredentials {
    let some = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    DockerCredentials {
        username: some(&auth.username),
        password: some(&auth.password),
        auth: some(&auth.auth),
        email: None,
        serveraddress: some(&auth.server_address),
        identitytoken: some(&auth.identity_token),
        registrytoken: some(&auth.registry_token),
    }
}

fn to_u64(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

fn sandbox_status_of(c: ContainerInspectResponse) -> Result<PodSandboxStatus, RuntimeError> {
    let id = c.id.unwrap_or_default();
    let labels = c.config.and_then(|cfg| cfg.labels).unwrap_or_default();
    if labels.get(TYPE_LABEL).map(String::as_str) != Some(SANDBOX_TYPE) {
        return Err(RuntimeError::NotFound {
            what: "sandbox",
            id,
        });
    }
    let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
    let running = c.state.as_ref().and_then(|s| s.running).unwrap_or(false);
    let net = c.network_settings.unwrap_or_default();
    let ip = net
        .networks
        .into_iter()
        .flatten()
        .filter_map(|(_, e)| e.ip_address)
        .find(|ip| !ip.is_empty());
    Ok(PodSandboxStatus {
        id,
        metadata: PodSandboxMetadata {
            name: label(POD_NAME_LABEL),
            namespace: label(POD_NAMESPACE_LABEL),
            uid: label(POD_UID_LABEL),
            attempt: label(POD_ATTEMPT_LABEL).parse().unwrap_or(0),
        },
        state: if running {
            SandboxState::Ready
        } else {
            SandboxState::NotReady
        },
        created_at: c
            .created
            .as_deref()
            .and_then(parse_time)
            .unwrap_or(UNIX_EPOCH),
        ip,
        labels: user_labels(&labels),
    })
}

fn container_status_of(c: ContainerInspectResponse) -> Result<ContainerStatus, RuntimeError> {
    let id = c.id.unwrap_or_default();
    let config = c.config.unwrap_or_default();
    let labels = config.labels.unwrap_or_default();
    if labels.get(TYPE_LABEL).map(String::as_str) != Some(CONTAINER_TYPE) {
        return Err(RuntimeError::NotFound {
            what: "container",
            id,
        });
    }
    let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
    let s = c.state.unwrap_or_default();
    let state = match s.status {
        Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
        Some(
            ContainerStateStatusEnum::RUNNING
            | ContainerStateStatusEnum::PAUSED
            | ContainerStateStatusEnum::RESTARTING
            | ContainerStateStatusEnum::STOPPING,
        ) => ContainerState::Running,
        Some(
            ContainerStateStatusEnum::EXITED
            | ContainerStateStatusEnum::DEAD
            | ContainerStateStatusEnum::REMOVING,
        ) => ContainerState::Exited,
        _ => ContainerState::Unknown,
    };
    let exited = state == ContainerState::Exited;
    let exit_code = s
        .exit_code
        .map(|c| i32::try_from(c).unwrap_or(i32::MAX))
        .filter(|_| exited);
    let error = s.error.filter(|e| !e.is_empty());
    // The kubelet's reasons, as cri-dockerd gives them.
    let reason = if !exited {
        None
    } else if s.oom_killed == Some(true) {
        Some("OOMKilled")
    } else if error.is_some() {
        Some("ContainerCannotRun")
    } else if exit_code == Some(0) {
        Some("Completed")
    } else {
        Some("Error")
    };
    let mut info = BTreeMap::new();
    if let Some(pid) = s.pid.filter(|p| *p > 0) {
        info.insert("pid".to_string(), pid.to_string());
    }
    if let Some(image_id) = c.image {
        info.insert("imageID".to_string(), image_id);
    }
    if let Some(log) = c.log_path.filter(|l| !l.is_empty()) {
        info.insert("logPath".to_string(), log);
    }
    Ok(ContainerStatus {
        id,
        sandbox_id: label(SANDBOX_ID_LABEL),
        name: label(CONTAINER_NAME_LABEL),
        attempt: label(CONTAINER_ATTEMPT_LABEL).parse().unwrap_or(0),
        image: config.image.unwrap_or_default(),
        state,
        created_at: c
            .created
            .as_deref()
            .and_then(parse_time)
            .unwrap_or(UNIX_EPOCH),
        started_at: s.started_at.as_deref().and_then(parse_time),
        finished_at: s
            .finished_at
            .as_deref()
            .and_then(parse_time)
            .filter(|_| exited),
        exit_code,
        reason: reason.map(str::to_string),
        message: error,
        labels: user_labels(&labels),
        info,
    })
}

impl DockerRuntime {
    /// A builder: socket, sandbox image and command, network, cgroup parent.
    pub fn builder() -> DockerRuntimeBuilder {
        DockerRuntimeBuilder::default()
    }

    /// The Docker client, for what the [`Runtime`] trait does not cover (e.g. loading
    /// images in tests).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    async fn inspect(
        &self,
        operation: &'static str,
        what: &'static str,
        id: &str,
    ) -> Result<ContainerInspectResponse, RuntimeError> {
        self.docker
            .inspect_container(id, None)
            .await
            .map_err(|e| docker_error(operation, what, id, e))
    }

    /// IDs of the containers (all states) with these labels.
    async fn ids_labelled(
        &self,
        operation: &'static str,
        pairs: &[(&str, &str)],
    ) -> Result<Vec<String>, RuntimeError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(label_filter(pairs)),
            ..Default::default()
        };
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| docker_error(operation, "container", "", e))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Creates a container, adding a random suffix to its name if a container of that name
    /// is still there (a crash between create and start, or a removal still pending).
    async fn create_named(
        &self,
        name: String,
        body: ContainerCreateBody,
    ) -> Result<String, DockerError> {
        let options = |name: String| CreateContainerOptions {
            name: Some(name),
            ..Default::default()
        };
        match self
            .docker
            .create_container(Some(options(name.clone())), body.clone())
            .await
        {
            Ok(r) => Ok(r.id),
            Err(DockerError::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
                let r = self
                    .docker
                    .create_container(Some(options(format!("{name}_{suffix}"))), body)
                    .await?;
                Ok(r.id)
            }
            Err(e) => Err(e),
        }
    }

    /// Pulls the sandbox image unless the daemon has it.
    async fn ensure_sandbox_image(&self) -> Result<(), RuntimeError> {
        match self.docker.inspect_image(&self.sandbox_image).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => {
                let image = self.sandbox_image.clone();
                self.pull_image(&image, None, None).await.map(|_| ())
            }
            Err(e) => Err(docker_error(
                "run_pod_sandbox",
                "image",
                &self.sandbox_image,
                e,
            )),
        }
    }

    /// The `User` of a container: `runAsUser[:runAsGroup]`; with a group alone, the image's
    /// user with that group.
    async fn user_of(&self, config: &ContainerConfig) -> Result<Option<String>, RuntimeError> {
        Ok(match (config.run_as_user, config.run_as_group) {
            (Some(u), Some(g)) => Some(format!("{u}:{g}")),
            (Some(u), None) => Some(u.to_string()),
            (None, Some(g)) => {
                let image = self
                    .docker
                    .inspect_image(&config.image)
                    .await
                    .map_err(|e| docker_error("create_container", "image", &config.image, e))?;
                let user = image
                    .config
                    .and_then(|c| c.user)
                    .filter(|u| !u.is_empty())
                    .unwrap_or_else(|| "0".to_string());
                let user = user.split(':').next().unwrap_or("0").to_string();
                Some(format!("{user}:{g}"))
            }
            (None, None) => None,
        })
    }

    fn image_of(&self, i: ImageInspect) -> Image {
        let repo_tags: Vec<String> = i
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| full_reference(t))
            .collect();
        let pinned = repo_tags.contains(&full_reference(&self.sandbox_image));
        let mut image = Image::new(i.id.unwrap_or_default(), repo_tags);
        image.repo_digests = i
            .repo_digests
            .unwrap_or_default()
            .iter()
            .map(|d| full_reference(d))
            .collect();
        image.size_bytes = to_u64(i.size);
        image.user = i.config.and_then(|c| c.user).filter(|u| !u.is_empty());
        image.pinned = pinned;
        image
    }

    fn summary_image(&self, i: ImageSummary) -> Image {
        let repo_tags: Vec<String> = i
            .repo_tags
            .iter()
            // Docker's placeholder for an untagged image.
            .filter(|t| t.as_str() != "<none>:<none>")
            .map(|t| full_reference(t))
            .collect();
        let pinned = repo_tags.contains(&full_reference(&self.sandbox_image));
        let mut image = Image::new(i.id, repo_tags);
        image.repo_digests = i
            .repo_digests
            .iter()
            .filter(|d| d.as_str() != "<none>@<none>")
            .map(|d| full_reference(d))
            .collect();
        image.size_bytes = to_u64(Some(i.size));
        image.pinned = pinned;
        image
    }
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    fn version(&self) -> String {
        self.version.clone()
    }

    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String, RuntimeError> {
        self.ensure_sandbox_image().await?;
        let m = &config.metadata;
        let mut labels: HashMap<String, String> = config
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.extend([
            (TYPE_LABEL.to_string(), SANDBOX_TYPE.to_string()),
            (POD_NAME_LABEL.to_string(), m.name.clone()),
            (POD_NAMESPACE_LABEL.to_string(), m.namespace.clone()),
            (POD_UID_LABEL.to_string(), m.uid.clone()),
            (POD_ATTEMPT_LABEL.to_string(), m.attempt.to_string()),
        ]);
        let body = ContainerCreateBody {
            image: Some(self.sandbox_image.clone()),
            entrypoint: Some(self.sandbox_command.clone()).filter(|c| !c.is_empty()),
            hostname: Some(config.hostname.clone()).filter(|h| !h.is_empty()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: self.network.clone(),
                // The pod's containers join its IPC namespace.
                ipc_mode: Some("shareable".into()),
                cgroup_parent: self.cgroup_parent.clone(),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .create_named(docker_name("POD", m, m.attempt), body)
            .await
            .map_err(|e| docker_error("run_pod_sandbox", "image", &self.sandbox_image, e))?;
        if let Err(e) = self.docker.start_container(&id, None).await {
            let _ = self
                .docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
            return Err(docker_error("run_pod_sandbox", "sandbox", &id, e));
        }
        Ok(id)
    }

    /// Stops the sandbox's containers and then the sandbox container, at once (SIGKILL
    /// after no grace: the agent has already stopped the containers with theirs).
    async fn stop_pod_sandbox(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
        sandbox_status_of(
            self.inspect("stop_pod_sandbox", "sandbox", sandbox_id)
                .await?,
        )?;
        let ids = self
            .ids_labelled("stop_pod_sandbox", &[(SANDBOX_ID_LABEL, sandbox_id)])
            .await?;
        let now = || {
            Some(StopContainerOptions {
                t: Some(0),
                ..Default::default()
            })
        };
        let stops = ids.iter().map(|id| self.docker.stop_container(id, now()));
        for (id, r) in ids.iter().zip(futures::future::join_all(stops).await) {
            match r {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(docker_error("stop_pod_sandbox", "container", id, e)),
            }
        }
        match self.docker.stop_container(sandbox_id, now()).await {
            Ok(()) => Ok(()),
            Err(e) => Err(docker_error("stop_pod_sandbox", "sandbox", sandbox_id, e)),
        }
    }

    async fn remove_pod_sandbox(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
        let ids = self
            .ids_labelled("remove_pod_sandbox", &[(SANDBOX_ID_LABEL, sandbox_id)])
            .await?;
        let force = || {
            Some(RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            })
        };
        for id in ids.iter().map(String::as_str).chain([sandbox_id]) {
            match self.docker.remove_container(id, force()).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(docker_error("remove_pod_sandbox", "container", id, e)),
            }
        }
        Ok(())
    }

    async fn pod_sandbox_status(&self, sandbox_id: &str) -> Result<PodSandboxStatus, RuntimeError> {
        sandbox_status_of(
            self.inspect("pod_sandbox_status", "sandbox", sandbox_id)
                .await?,
        )
    }

    async fn list_pod_sandboxes(&self) -> Result<Vec<PodSandboxStatus>, RuntimeError> {
        let ids = self
            .ids_labelled("list_pod_sandboxes", &[(TYPE_LABEL, SANDBOX_TYPE)])
            .await?;
        let inspects = ids
            .iter()
            .map(|id| self.inspect("list_pod_sandboxes", "sandbox", id));
        let mut out = Vec::with_capacity(ids.len());
        for r in futures::future::join_all(inspects).await {
            match r.and_then(sandbox_status_of) {
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
        let sandbox = sandbox_status_of(
            self.inspect("create_container", "sandbox", sandbox_id)
                .await?,
        )?;
        let mut labels: HashMap<String, String> = config
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.extend([
            (TYPE_LABEL.to_string(), CONTAINER_TYPE.to_string()),
            (SANDBOX_ID_LABEL.to_string(), sandbox_id.to_string()),
            (CONTAINER_NAME_LABEL.to_string(), config.name.clone()),
            (
                CONTAINER_ATTEMPT_LABEL.to_string(),
                config.attempt.to_string(),
            ),
        ]);
        let r = &config.resources;
        let join = format!("container:{sandbox_id}");
        let host_config = HostConfig {
            network_mode: Some(join.clone()),
            ipc_mode: Some(join),
            cgroup_parent: self.cgroup_parent.clone(),
            memory: r.memory_limit_bytes,
            // No swap beyond the limit, as the kubelet sets it.
            memory_swap: r.memory_limit_bytes,
            cpu_period: r.cpu_limit_milli.map(|_| CPU_PERIOD_US),
            cpu_quota: r
                .cpu_limit_milli
                .map(|m| (m * CPU_PERIOD_US / 1000).max(1000)),
            mounts: Some(
                config
                    .mounts
                    .iter()
                    .map(|m| DockerMount {
                        target: Some(m.container_path.clone()),
                        source: Some(m.host_path.to_string_lossy().into_owned()),
                        typ: Some(MountType::BIND),
                        read_only: Some(m.read_only),
                        ..Default::default()
                    })
                    .collect(),
            ),
            // Whatever the daemon's default driver, logs must be readable back.
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: None,
            }),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(config.image.clone()),
            // Unset, not empty, where the pod sets nothing: then Docker takes the image's.
            entrypoint: Some(config.command.clone()).filter(|c| !c.is_empty()),
            cmd: Some(config.args.clone()).filter(|a| !a.is_empty()),
            env: Some(config.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: config.working_dir.clone().filter(|w| !w.is_empty()),
            user: self.user_of(config).await?,
            labels: Some(labels),
            host_config: Some(host_config),
            ..Default::default()
        };
        let name = docker_name(&config.name, &sandbox.metadata, config.attempt);
        self.create_named(name, body).await.map_err(|e| match e {
            // The sandbox was inspected just now: a 404 is about the image.
            DockerError::DockerResponseServerError {
                status_code: 404,
                message,
            } => RuntimeError::Failed {
                operation: "create_container",
                message,
            },
            e => docker_error("create_container", "container", &config.name, e),
        })
    }

    async fn start_container(&self, container_id: &str) -> Result<(), RuntimeError> {
        self.docker
            .start_container(container_id, None)
            .await
            .map_err(|e| docker_error("start_container", "container", container_id, e))
    }

    /// Docker's stop: SIGTERM (or the image's `StopSignal`), SIGKILL after `timeout` in
    /// whole seconds (a sub-second grace period is rounded up).
    async fn stop_container(
        &self,
        container_id: &str,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        let options = StopContainerOptions {
            t: Some(whole_seconds(timeout)),
            ..Default::default()
        };
        self.docker
            .stop_container(container_id, Some(options))
            .await
            .map_err(|e| docker_error("stop_container", "container", container_id, e))
    }

    /// Removes the container with its log and anonymous volumes (forcibly, if running).
    async fn remove_container(&self, container_id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self
            .docker
            .remove_container(container_id, Some(options))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(docker_error(
                "remove_container",
                "container",
                container_id,
                e,
            )),
        }
    }

    async fn container_status(&self, container_id: &str) -> Result<ContainerStatus, RuntimeError> {
        container_status_of(
            self.inspect("container_status", "container", container_id)
                .await?,
        )
    }

    async fn list_containers(
        &self,
        filter: &ContainerFilter,
    ) -> Result<Vec<ContainerStatus>, RuntimeError> {
        let mut labels = vec![(TYPE_LABEL, CONTAINER_TYPE)];
        if let Some(sandbox) = &filter.sandbox_id {
            labels.push((SANDBOX_ID_LABEL, sandbox));
        }
        let ids = self.ids_labelled("list_containers", &labels).await?;
        let inspects = ids
            .iter()
            .map(|id| self.inspect("list_containers", "container", id));
        let mut out = Vec::with_capacity(ids.len());
        for r in futures::future::join_all(inspects).await {
            match r.and_then(container_status_of) {
                Ok(s) if filter.state.is_none_or(|state| state == s.state) => out.push(s),
                Ok(_) | Err(RuntimeError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Docker's logs of the container (its `json-file` log), stdout and stderr in the order
    /// they were written.
    async fn container_logs(
        &self,
        container_id: &str,
        options: &LogOptions,
    ) -> Result<Bytes, RuntimeError> {
        let query = LogsOptions {
            stdout: true,
            stderr: true,
            tail: options
                .tail_lines
                .map_or_else(|| "all".to_string(), |n| n.to_string()),
            ..Default::default()
        };
        let mut stream = self.docker.logs(container_id, Some(query));
        let mut log = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk.map_err(|e| docker_error("container_logs", "container", container_id, e))? {
                LogOutput::StdOut { message }
                | LogOutput::StdErr { message }
                | LogOutput::Console { message } => log.extend_from_slice(&message),
                LogOutput::StdIn { .. } => {}
            }
        }
        Ok(trim_log(&log, options))
    }

    /// Docker's exec (create, start attached, inspect for the exit code). A command still
    /// running at `timeout` is an error; Docker has no way to kill an exec, so it is left
    /// to end by itself, as with cri-dockerd.
    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let err = |e| docker_error("exec_sync", "container", container_id, e);
        let exec = self
            .docker
            .create_exec(
                container_id,
                CreateExecOptions {
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd.to_vec()),
                    ..Default::default()
                },
            )
            .await
            .map_err(err)?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let run = async {
            if let StartExecResults::Attached { mut output, .. } =
                self.docker.start_exec(&exec.id, None).await?
            {
                while let Some(chunk) = output.next().await {
                    match chunk? {
                        LogOutput::StdErr { message } => stderr.extend_from_slice(&message),
                        LogOutput::StdOut { message } | LogOutput::Console { message } => {
                            stdout.extend_from_slice(&message);
                        }
                        LogOutput::StdIn { .. } => {}
                    }
                }
            }
            // The output ends when the process closes it, which can be a moment before
            // Docker records the exit.
            loop {
                let inspect = self.docker.inspect_exec(&exec.id).await?;
                if inspect.running != Some(true) {
                    return Ok::<_, DockerError>(inspect.exit_code);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let exit_code = match tokio::time::timeout_at(deadline, run).await {
            Ok(r) => r.map_err(err)?,
            Err(_) => {
                return Err(RuntimeError::Failed {
                    operation: "exec_sync",
                    message: format!("command {cmd:?} timed out after {timeout:?}"),
                });
            }
        };
        let stdout_len = stdout.len();
        stdout.extend_from_slice(&stderr);
        Ok(ExecResult {
            exit_code: exit_code.map_or(-1, |c| i32::try_from(c).unwrap_or(i32::MAX)),
            output: Bytes::from(stdout),
            stdout_len: Some(stdout_len),
        })
    }

    /// Docker's pull (`POST /images/create`), with `auth` as `X-Registry-Auth`; the daemon's
    /// mirrors apply. A failed pull's message is Docker's, which carries the registry's
    /// reason (e.g. `unauthorized: authentication required`).
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&AuthConfig>,
        sandbox: Option<&PodSandboxConfig>,
    ) -> Result<PulledImage, RuntimeError> {
        let _ = sandbox;
        let reference = with_tag(image);
        let options = CreateImageOptions {
            from_image: Some(reference.clone()),
            ..Default::default()
        };
        let mut progress = self
            .docker
            .create_image(Some(options), None, auth.map(credentials));
        while let Some(step) = progress.next().await {
            step.map_err(|e| match e {
                DockerError::DockerResponseServerError { message, .. } => RuntimeError::Failed {
                    operation: "pull_image",
                    message,
                },
                e => docker_error("pull_image", "image", image, e),
            })?;
        }
        let inspect = self
            .docker
            .inspect_image(&reference)
            .await
            .map_err(|e| docker_error("pull_image", "image", image, e))?;
        let pulled = self.image_of(inspect);
        // The digest of the repository pulled from, as the pod's `imageID` shows it.
        let full = full_reference(&reference);
        let repo = repository(&full);
        let image_ref = pulled
            .repo_digests
            .iter()
            .find(|d| d.split_once('@').is_some_and(|(r, _)| r == repo))
            .or(pulled.repo_digests.first())
            .cloned()
            .unwrap_or_else(|| pulled.id.clone());
        Ok(PulledImage::new(image_ref, pulled.id, pulled.size_bytes))
    }

    async fn image_status(&self, image: &str) -> Result<Option<Image>, RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(i) => Ok(Some(self.image_of(i))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(docker_error("image_status", "image", image, e)),
        }
    }

    async fn list_images(&self) -> Result<Vec<Image>, RuntimeError> {
        let images = self
            .docker
            .list_images(Some(ListImagesOptions {
                digests: true,
                ..Default::default()
            }))
            .await
            .map_err(|e| docker_error("list_images", "image", "", e))?;
        Ok(images.into_iter().map(|i| self.summary_image(i)).collect())
    }

    /// Removes the image, every tag of it (as dockershim did: removing one of several tags
    /// only untags in Docker). An image a container still uses is not removed (an error).
    async fn remove_image(&self, image: &str) -> Result<(), RuntimeError> {
        let inspect = match self.docker.inspect_image(image).await {
            Ok(i) => i,
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(docker_error("remove_image", "image", image, e)),
        };
        let tags = inspect.repo_tags.unwrap_or_default();
        let targets = if tags.len() > 1 {
            tags
        } else {
            vec![inspect.id.unwrap_or_else(|| image.to_string())]
        };
        for target in targets {
            match self
                .docker
                .remove_image(&target, None::<RemoveImageOptions>, None)
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(docker_error("remove_image", "image", &target, e)),
            }
        }
        Ok(())
    }

    /// The daemon's root directory's filesystem; used bytes are the images' sizes added up
    /// (layers shared by images are counted once per image).
    async fn image_fs_info(&self) -> Result<ImageFsInfo, RuntimeError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|e| docker_error("image_fs_info", "image", "", e))?;
        let mut fs = ImageFsInfo::default();
        fs.mountpoint = info.docker_root_dir.unwrap_or_default();
        fs.used_bytes = self.list_images().await?.iter().map(|i| i.size_bytes).sum();
        if let Ok(st) = nix::sys::statvfs::statvfs(fs.mountpoint.as_str()) {
            let block = st.fragment_size();
            fs.capacity_bytes = st.blocks().saturating_mul(block);
            fs.available_bytes = st.blocks_available().saturating_mul(block);
        }
        Ok(fs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_times_parse_and_the_zero_time_is_none() {
        let t = parse_time("2026-12-07T23:03:23.134483355Z").expect("parses");
        let since = t.duration_since(UNIX_EPOCH).expect("after the epoch");
        assert_eq!(since.as_secs(), 1_796_684_603);
        assert_eq!(since.subsec_nanos(), 134_483_355);
        let offset = parse_time("2026-12-08T00:03:23.5+01:00").expect("parses");
        assert_eq!(
            offset
                .duration_since(UNIX_EPOCH)
                .expect("after")
                .as_millis(),
            1_796_684_603_500
        );
        assert_eq!(parse_time("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_time("garbage"), None);
    }

    #[test]
    fn references_are_completed_as_docker_resolves_them() {
        assert_eq!(
            full_reference("busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(
            full_reference("me/app@sha256:ab"),
            "docker.io/me/app@sha256:ab"
        );
        assert_eq!(
            full_reference("127.0.0.1:5000/a/b:1"),
            "127.0.0.1:5000/a/b:1"
        );
        assert_eq!(with_tag("busybox"), "busybox:latest");
        assert_eq!(
            with_tag("127.0.0.1:5000/busybox"),
            "127.0.0.1:5000/busybox:latest"
        );
        assert_eq!(with_tag("busybox:1"), "busybox:1");
        assert_eq!(with_tag("busybox@sha256:ab"), "busybox@sha256:ab");
        assert_eq!(repository("127.0.0.1:5000/a:1"), "127.0.0.1:5000/a");
        assert_eq!(repository("127.0.0.1:5000/a"), "127.0.0.1:5000/a");
        assert_eq!(repository("docker.io/a/b@sha256:ab"), "docker.io/a/b");
    }

    #[test]
    fn container_names_are_dockershims() {
        let m = PodSandboxMetadata {
            name: "web".into(),
            namespace: "default".into(),
            uid: "u-1".into(),
            attempt: 0,
        };
        assert_eq!(docker_name("POD", &m, 0), "k8s_POD_web_default_u-1_0");
        assert_eq!(docker_name("a b", &m, 2), "k8s_a-b_web_default_u-1_2");
    }

    #[test]
    fn sub_second_grace_rounds_up() {
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(2)), 2);
        assert_eq!(whole_seconds(Duration::ZERO), 0);
    }
}
