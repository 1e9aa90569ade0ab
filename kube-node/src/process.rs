//! [`ProcessRuntime`]: a [`Runtime`] whose containers are host processes.
//!
//! Each container's `command` + `args` run as a child process in a process group of its own,
//! so stopping a container signals everything it forked. There is no isolation: the process
//! shares the host's filesystem, network and users. Images are ignored unless the runtime has
//! an image store ([`ProcessRuntimeBuilder::image_store`] or
//! [`registries`](ProcessRuntimeBuilder::registries)): then they are pulled and reported, and
//! a container with neither command nor args runs its image's `Entrypoint` + `Cmd`, the
//! executable taken from the image's unpacked root, with the image's `Env` under its own. A sandbox is a
//! directory (the default working directory of its containers) and the node's IP.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use kube_core::runtime::{
    AuthConfig, ContainerConfig, ContainerFilter, ContainerState, ContainerStatus, ExecResult,
    Image, ImageFsInfo, LogOptions, PodSandboxConfig, PodSandboxStatus, PulledImage, Runtime,
    RuntimeConfig, RuntimeError, SandboxState,
};
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;

use crate::cgroup::Cgroups;
use crate::files::{read_log_file, remove_file_if_exists};
use crate::mounts::{self, VolumeMounts};
use crate::net::{self, PodNetwork};
use crate::persist::{
    self, ContainerRecord, ExitRecord, ExitWatcher, ExitsDir, Lifecycle, SandboxRecord, StateDir,
    Watched,
};
use crate::podnet::Routed;
use crate::pull::local::{self, ImageService};
use crate::pull::{ImageStore, RegistryConfig};

/// How long `start_container` waits for a container's volumes to be mounted.
const MOUNT_WAIT: Duration = Duration::from_secs(10);

/// How long to wait for a process group to die after SIGKILL before reporting failure.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The `PATH` given to containers when the agent's own environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug)]
struct Sandbox {
    config: PodSandboxConfig,
    state: SandboxState,
    created_at: SystemTime,
    dir: PathBuf,
    /// The pod's network namespace name (not with [`PodNetwork::Host`]), until released.
    netns: Option<String>,
    /// The pod's IP: the node's with [`PodNetwork::Host`], else from CNI (or none).
    ip: Option<String>,
}

#[derive(Debug)]
struct Container {
    sandbox_id: String,
    config: ContainerConfig,
    state: ContainerState,
    created_at: SystemTime,
    started_at: Option<SystemTime>,
    finished_at: Option<SystemTime>,
    exit_code: Option<i32>,
    reason: Option<String>,
    message: Option<String>,
    pid: Option<u32>,
    /// The process's start time (`/proc/<pid>/stat`), which tells it from a reused pid.
    pid_start: Option<u64>,
    log_path: PathBuf,
    /// Becomes `true` once the process has exited and been reaped.
    exited: Option<watch::Receiver<bool>>,
}

impl Sandbox {
    fn record(&self) -> SandboxRecord {
        SandboxRecord::new(
            &self.config,
            self.state,
            self.created_at,
            self.netns.clone(),
            self.ip.clone(),
        )
    }
}

impl Container {
    fn record(&self) -> ContainerRecord {
        ContainerRecord::new(
            &self.sandbox_id,
            &self.config,
            Lifecycle {
                state: self.state,
                created_at: self.created_at,
                started_at: self.started_at,
                finished_at: self.finished_at,
                exit_code: self.exit_code,
                reason: self.reason.clone(),
                message: self.message.clone(),
                pid: self.pid,
                pid_start: self.pid_start,
            },
        )
    }

    fn status(&self, id: &str) -> ContainerStatus {
        let mut info = BTreeMap::new();
        if let Some(pid) = self.pid {
            info.insert("pid".to_string(), pid.to_string());
        }
        info.insert(
            "logPath".to_string(),
            self.log_path.to_string_lossy().into_owned(),
        );
        ContainerStatus {
            id: id.to_string(),
            sandbox_id: self.sandbox_id.clone(),
            name: self.config.name.clone(),
            attempt: self.config.attempt,
            image: self.config.image.clone(),
            state: self.state,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            reason: self.reason.clone(),
            message: self.message.clone(),
            labels: self.config.labels.clone(),
            info,
        }
    }

    /// The process group to signal, while the group leader has not been reaped (after that
    /// its ID may be reused by an unrelated process).
    fn live_group(&self) -> Option<Pid> {
        if self.state != ContainerState::Running {
            return None;
        }
        if let (Some(pid), Some(start)) = (self.pid, self.pid_start) {
            // An adopted process is not reaped by this runtime: check it is still the same.
            if !persist::is_alive(pid, start) {
                return None;
            }
        }
        let pid = i32::try_from(self.pid?).ok()?;
        Some(Pid::from_raw(pid))
    }
}

#[derive(Debug, Default)]
struct State {
    sandboxes: HashMap<String, Sandbox>,
    containers: HashMap<String, Container>,
}

struct Inner {
    root: PathBuf,
    ip: String,
    /// Set when containers get cgroup limits.
    cgroups: Option<Cgroups>,
    pids_limit: Option<i64>,
    network: PodNetwork,
    /// The built-in network's state, with [`PodNetwork::Routed`].
    routed: Option<Routed>,
    /// How volume mounts reach processes (resolved: never `Auto`).
    volume_mounts: VolumeMounts,
    /// Pulled images, when the runtime has a store.
    images: Option<ImageService>,
    state: Mutex<State>,
    /// The records on disk (and the lock on the root).
    store: StateDir,
    exits: ExitsDir,
    /// Whether dropping the runtime leaves its containers running for a successor.
    keep_on_drop: bool,
    /// Keeps a temporary root alive (and deletes it when the runtime goes).
    _temp: Option<tempfile::TempDir>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the maps consistent, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record_exit(&self, id: &str, status: std::io::Result<ExitStatus>) {
        let mut state = self.state();
        let Some(c) = state.containers.get_mut(id) else {
            return;
        };
        let oom = |sig: i32| {
            sig == 9
                && c.config.resources.memory_limit_bytes.is_some_and(|l| {
                    self.cgroups
                        .as_ref()
                        .is_some_and(|cg| cg.hit_memory_limit(id, l))
                })
        };
        let exit = describe_exit(status, oom);
        c.state = ContainerState::Exited;
        c.finished_at = Some(exit.finished_at);
        c.exit_code = Some(exit.code);
        c.reason = Some(exit.reason);
        c.message = exit.message;
        self.save_container(&state, id);
    }

    /// An adopted container's process is gone: its exit, if a runtime of this OS process
    /// recorded it, else unknown. Whatever it left in its group is killed.
    fn record_adopted_exit(&self, id: &str) {
        let exit = self.exits.read(id);
        let mut state = self.state();
        let Some(c) = state.containers.get_mut(id) else {
            return;
        };
        if let Some(group) = c.pid.and_then(|p| i32::try_from(p).ok()) {
            let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
        }
        let mut life = c.record().lifecycle(None);
        life.exited(exit);
        c.state = life.state;
        c.finished_at = life.finished_at;
        c.exit_code = life.exit_code;
        c.reason = life.reason;
        c.message = life.message;
        self.save_container(&state, id);
    }

    /// Writes a container's record (a failure is logged: the container keeps running, and
    /// only a restarted agent would miss it).
    fn save_container(&self, state: &State, id: &str) {
        if let Some(c) = state.containers.get(id) {
            if let Err(e) = self.store.write_container(id, &c.record()) {
                tracing::warn!(container = id, error = %e, "persisting the container failed");
            }
        }
    }

    fn save_sandbox(&self, state: &State, id: &str) {
        if let Some(s) = state.sandboxes.get(id) {
            if let Err(e) = self.store.write_sandbox(id, &s.record()) {
                tracing::warn!(sandbox = id, error = %e, "persisting the sandbox failed");
            }
        }
    }
}

/// How a reaped process ended: exit code (a signal death is 128 + signal, like a shell and
/// the kubelet) and reason.
fn describe_exit(status: std::io::Result<ExitStatus>, oom: impl Fn(i32) -> bool) -> ExitRecord {
    let (code, reason, message) = match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => (code, if code == 0 { "Completed" } else { "Error" }, None),
            // The kernel's OOM killer, within the container's memory cgroup.
            (None, Some(sig)) if oom(sig) => (128 + sig, "OOMKilled", None),
            (None, Some(sig)) => (128 + sig, "Error", None),
            (None, None) => (-1, "Unknown", None),
        },
        Err(e) => (
            -1,
            "Unknown",
            Some(format!("waiting for the process failed: {e}")),
        ),
    };
    ExitRecord {
        code,
        reason: reason.to_string(),
        message,
        finished_at: SystemTime::now(),
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.keep_on_drop {
            // Left running, recorded on disk, for the next runtime over this root.
            return;
        }
        // Nothing may outlive the runtime: kill every process group still running.
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        for (id, c) in &state.containers {
            if let Some(group) = c.live_group() {
                let _ = killpg(group, Signal::SIGKILL);
            }
            if let Some(cgroups) = &self.cgroups {
                cgroups.kill_all(id);
                cgroups.remove(id);
            }
        }
        if let Some(routed) = &self.routed {
            routed.shutdown_blocking();
        }
        for s in state.sandboxes.values() {
            if let Some(netns) = &s.netns {
                net::delete_netns_blocking(netns);
            }
        }
        if let Some(cgroups) = &self.cgroups {
            cgroups.remove_base();
        }
        if let PodNetwork::Cni(cni) = &self.network {
            net::delete_bridge_blocking(&cni.bridge);
        }
        // Nothing is left to adopt.
        self.store.clear();
    }
}

/// Runs containers as host processes. Cheap to clone; clones share state, and dropping the
/// last clone kills every process group it started.
///
/// * `command` + `args` form the argv (with no `command`, `args[0]` is the program; both
///   empty is [`RuntimeError::InvalidArgument`]); the image is ignored.
/// * The environment is `PATH`, `HOSTNAME` and the container's `env`; the working directory is
///   `working_dir`, else the sandbox's directory under the root.
/// * stdout and stderr go to one log file per container under `<root>/logs/`; a container's
///   `info` holds its `pid` and `logPath`.
/// * `stop_container` sends SIGTERM to the process group, then SIGKILL after the timeout.
///   Exit codes follow the shell: a signal death is `128 + signal`.
/// * When the main process exits, whatever it left in its group is killed, as in a container.
/// * By default every sandbox gets the node's IP (no network isolation); with
///   [`ProcessRuntimeBuilder::network`] each pod gets its own network namespace (and with
///   CNI or [`PodNetwork::Routed`] its own IP), which its processes enter with `nsenter`.
///   `hostNetwork` pods always share the node's network and report
///   [`ProcessRuntimeBuilder::ip`].
/// * With [`ProcessRuntimeBuilder::cgroups`], CPU, memory and pids limits are enforced by
///   cgroup controllers (v1, or v2 where the host mounts it), and an OOM kill is reported as
///   `OOMKilled`.
/// * Volume mounts: as root, the process runs in a private mount namespace, chrooted into a
///   view of the host filesystem with each volume bind-mounted at its mount path; without
///   root, each volume is linked at its mount path under the sandbox's directory (the
///   default working directory). See [`VolumeMounts`] and
///   [`ProcessRuntimeBuilder::volume_mounts`].
/// * Sandboxes and containers are recorded under `<root>/state/` (see the crate docs on agent
///   restarts). A runtime built over a root that a dropped (with
///   [`keep_on_drop`](ProcessRuntimeBuilder::keep_on_drop)) or crashed runtime used adopts
///   its containers: running ones by pid and process start time (a reused pid is not taken
///   for them), watched by polling `/proc` since they are not its children; one that exited
///   unseen reports exit code 137 and reason `ContainerStatusUnknown`. Only one live runtime
///   may use a root.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use kube_core::runtime::{ContainerConfig, LogOptions, PodSandboxConfig, Runtime};
/// use kube_node::ProcessRuntime;
///
/// let runtime = ProcessRuntime::temp()?;
/// let sandbox = runtime.run_pod_sandbox(&PodSandboxConfig::default()).await?;
/// let config = ContainerConfig {
///     name: "hello".into(),
///     command: vec!["echo".into(), "hi".into()],
///     ..Default::default()
/// };
/// let id = runtime.create_container(&sandbox, &config).await?;
/// runtime.start_container(&id).await?;
/// runtime.stop_container(&id, std::time::Duration::from_secs(1)).await?;
/// let status = runtime.container_status(&id).await?;
/// assert!(status.exit_code.is_some());
/// runtime.remove_pod_sandbox(&sandbox).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

impl fmt::Debug for ProcessRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessRuntime")
            .field("root", &self.inner.root)
            .field("ip", &self.inner.ip)
            .finish_non_exhaustive()
    }
}

/// Configures a [`ProcessRuntime`]. See [`ProcessRuntime::builder`].
#[derive(Debug, Clone)]
pub struct ProcessRuntimeBuilder {
    root: Option<PathBuf>,
    ip: String,
    cgroups: bool,
    pids_limit: Option<i64>,
    network: PodNetwork,
    keep_on_drop: bool,
    volume_mounts: VolumeMounts,
    image_store: Option<ImageStore>,
    registries: Option<RegistryConfig>,
}

impl ProcessRuntimeBuilder {
    /// Pulls and reports images with `store` (default: images are ignored; pulls succeed
    /// without doing anything).
    pub fn image_store(mut self, store: ImageStore) -> Self {
        self.image_store = Some(store);
        self
    }

    /// Pulls images through `registries` into a store under the runtime's root
    /// (`images/store`), unless an [`image_store`](Self::image_store) is given.
    pub fn registries(mut self, registries: RegistryConfig) -> Self {
        self.registries = Some(registries);
        self
    }

    /// How containers' volume mounts reach their processes (default [`VolumeMounts::Auto`]:
    /// a private mount namespace as root, symlinks otherwise).
    pub fn volume_mounts(mut self, mode: VolumeMounts) -> Self {
        self.volume_mounts = mode;
        self
    }

    /// Whether dropping the runtime leaves its containers running (default false: they are
    /// killed). Needs a [`root_dir`](Self::root_dir): a runtime built later over the same
    /// root — in a restarted agent process, say — adopts the sandboxes and containers recorded
    /// there, still running or not (see [`ProcessRuntime`]).
    pub fn keep_on_drop(mut self, keep: bool) -> Self {
        self.keep_on_drop = keep;
        self
    }

    /// Where logs and sandbox directories go (created if missing). Default: a temporary
    /// directory deleted when the runtime is dropped.
    pub fn root_dir(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = Some(root.into());
        self
    }

    /// The IP every sandbox reports (default `127.0.0.1`). Give the node agent the same IP
    /// (`NodeAgentBuilder::node_ip`): pods share the node's network.
    pub fn ip(mut self, ip: impl Into<String>) -> Self {
        self.ip = ip.into();
        self
    }

    /// Enforces containers' CPU and memory limits (and [`pids_limit`](Self::pids_limit))
    /// with cgroup controllers (v1, or v2 where the host has it), and reports OOM kills as `OOMKilled` (default off; needs
    /// root).
    pub fn cgroups(mut self, enabled: bool) -> Self {
        self.cgroups = enabled;
        self
    }

    /// The most processes each container may have (with [`cgroups`](Self::cgroups)).
    pub fn pids_limit(mut self, max: i64) -> Self {
        self.pids_limit = Some(max);
        self
    }

    /// How pods are networked (default [`PodNetwork::Host`]: the node's network and IP).
    /// With a network namespace per pod (needs root), each container process enters it;
    /// `hostNetwork` pods never get one.
    pub fn network(mut self, network: PodNetwork) -> Self {
        self.network = network;
        self
    }

    /// Creates the directories, adopts what an earlier runtime over the same root recorded,
    /// and returns the runtime. A root in use by a live runtime is refused.
    pub fn build(self) -> Result<ProcessRuntime, RuntimeError> {
        if self.keep_on_drop && self.root.is_none() {
            return Err(RuntimeError::InvalidArgument(
                "keep_on_drop needs a root_dir: a temporary root goes with the runtime".into(),
            ));
        }
        let (root, temp) = match self.root {
            Some(root) => (root, None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("kube-node-process-")
                    .tempdir()?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        std::fs::create_dir_all(root.join("logs"))?;
        std::fs::create_dir_all(root.join("sandboxes"))?;
        std::fs::create_dir_all(root.join("cni"))?;
        let store = StateDir::open(&root)?;
        let cgroups = self.cgroups.then(|| Cgroups::new(store.id()));
        let exits = store.exits();
        let (state, watched) = adopt(&root, &store);
        let routed = match &self.network {
            PodNetwork::Routed(config) => Some(Routed::open(config, &root, |id| {
                state.sandboxes.get(id).is_some_and(|s| s.netns.is_some())
            })?),
            _ => None,
        };
        let image_store = match (self.image_store, self.registries) {
            (Some(store), _) => Some(store),
            (None, Some(registries)) => Some(
                ImageStore::open(root.join("images").join("store"), registries).map_err(|e| {
                    RuntimeError::Failed {
                        operation: "new",
                        message: e.to_string(),
                    }
                })?,
            ),
            (None, None) => None,
        };
        let images = image_store.map(|s| ImageService::new(&HashMap::new(), s));
        let inner = Arc::new(Inner {
            root,
            images,
            ip: self.ip,
            cgroups,
            pids_limit: self.pids_limit,
            network: self.network,
            routed,
            volume_mounts: self.volume_mounts.resolve(),
            state: Mutex::new(state),
            store,
            exits,
            keep_on_drop: self.keep_on_drop,
            _temp: temp,
        });
        let weak = Arc::downgrade(&inner);
        ExitWatcher::spawn(watched, move |id| match weak.upgrade() {
            Some(inner) => {
                inner.record_adopted_exit(id);
                true
            }
            None => false,
        })?;
        Ok(ProcessRuntime { inner })
    }
}

/// The sandboxes and containers an earlier runtime recorded under `root`, with running
/// containers re-attached by pid and start time (and the processes to watch), and those
/// that exited meanwhile reported so.
fn adopt(root: &Path, store: &StateDir) -> (State, Vec<Watched>) {
    let loaded = store.load();
    let mut state = State::default();
    let mut watched = Vec::new();
    for (id, r) in loaded.sandboxes {
        // A sandbox whose network namespace is gone (a reboot) cannot run containers.
        let netns_gone = r
            .netns
            .as_deref()
            .is_some_and(|n| !net::netns_path(n).exists());
        let sandbox = Sandbox {
            config: r.config(),
            state: if netns_gone {
                SandboxState::NotReady
            } else {
                r.state()
            },
            created_at: r.created_at,
            dir: root.join("sandboxes").join(&id),
            netns: r.netns,
            ip: r.ip,
        };
        state.sandboxes.insert(id, sandbox);
    }
    let exits = store.exits();
    for (id, r) in loaded.containers {
        let life = r.lifecycle(exits.read(&id));
        let mut exited = None;
        if let (ContainerState::Running, Some(pid), Some(start)) =
            (life.state, life.pid, life.pid_start)
        {
            let (tx, rx) = watch::channel(false);
            watched.push(Watched {
                id: id.clone(),
                pid,
                start,
                exited: tx,
            });
            exited = Some(rx);
        }
        let c = Container {
            sandbox_id: r.sandbox_id.clone(),
            config: r.config(),
            state: life.state,
            created_at: life.created_at,
            started_at: life.started_at,
            finished_at: life.finished_at,
            exit_code: life.exit_code,
            reason: life.reason,
            message: life.message,
            pid: life.pid,
            pid_start: life.pid_start,
            log_path: root.join("logs").join(format!("{id}.log")),
            exited,
        };
        if c.record().state != r.state {
            if let Err(e) = store.write_container(&id, &c.record()) {
                tracing::warn!(container = %id, error = %e, "persisting the container failed");
            }
        }
        state.containers.insert(id, c);
    }
    if !state.sandboxes.is_empty() || !state.containers.is_empty() {
        tracing::info!(
            sandboxes = state.sandboxes.len(),
            containers = state.containers.len(),
            running = watched.len(),
            "adopted what the previous runtime left"
        );
    }
    (state, watched)
}

impl ProcessRuntime {
    /// Starts configuring a runtime.
    pub fn builder() -> ProcessRuntimeBuilder {
        ProcessRuntimeBuilder {
            root: None,
            ip: "127.0.0.1".to_string(),
            cgroups: false,
            pids_limit: None,
            network: PodNetwork::Host,
            keep_on_drop: false,
            volume_mounts: VolumeMounts::Auto,
            image_store: None,
            registries: None,
        }
    }

    /// A runtime keeping its logs and sandbox directories under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, RuntimeError> {
        Self::builder().root_dir(root).build()
    }

    /// A runtime under a fresh temporary directory, deleted when the runtime is dropped.
    pub fn temp() -> Result<Self, RuntimeError> {
        Self::builder().build()
    }

    /// The directory holding logs and sandbox directories.
    pub fn root_dir(&self) -> &Path {
        &self.inner.root
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state()
    }

    /// The (empty, on the host) directory a container's private filesystem view is mounted on.
    fn view_dir(&self, container_id: &str) -> PathBuf {
        self.inner.root.join("mnt").join(container_id)
    }

    /// Sends `signal` to a container's process group; `Ok(false)` if it was not running.
    fn signal(&self, container_id: &str, signal: Signal) -> Result<bool, RuntimeError> {
        let state = self.state();
        let c = state
            .containers
            .get(container_id)
            .ok_or_else(|| not_found("container", container_id))?;
        let Some(group) = c.live_group() else {
            return Ok(false);
        };
        match killpg(group, signal) {
            Ok(()) | Err(Errno::ESRCH) => Ok(true),
            Err(e) => Err(RuntimeError::Failed {
                operation: "stop_container",
                message: format!("signalling process group {group}: {e}"),
            }),
        }
    }

    fn exit_receiver(&self, container_id: &str) -> Option<watch::Receiver<bool>> {
        self.state()
            .containers
            .get(container_id)
            .and_then(|c| c.exited.clone())
    }

    fn spawn(
        &self,
        container_id: &str,
        state: &mut State,
    ) -> Result<(tokio::process::Child, u32), String> {
        let c = state
            .containers
            .get(container_id)
            .ok_or_else(|| format!("container {container_id} vanished"))?;
        let sandbox_dir = state
            .sandboxes
            .get(&c.sandbox_id)
            .map(|s| s.dir.clone())
            .unwrap_or_else(|| self.inner.root.clone());
        let hostname = state
            .sandboxes
            .get(&c.sandbox_id)
            .map(|s| s.config.hostname.clone())
            .unwrap_or_default();
        let netns = state
            .sandboxes
            .get(&c.sandbox_id)
            .and_then(|s| s.netns.as_deref())
            .map(net::netns_path);
        let mut words: Vec<String> = c
            .config
            .command
            .iter()
            .chain(&c.config.args)
            .cloned()
            .collect();
        if words.is_empty() {
            return Err("no command".into());
        }
        if !c.config.mounts.is_empty() {
            let cwd = c
                .config
                .working_dir
                .as_deref()
                .map_or_else(|| sandbox_dir.clone(), PathBuf::from);
            match self.inner.volume_mounts {
                VolumeMounts::Namespace => {
                    let view = self.view_dir(container_id);
                    let ready = ready_file(&view);
                    let prefix = std::fs::create_dir_all(&view)
                        .and_then(|()| remove_if_exists(&ready))
                        .and_then(|()| {
                            mounts::namespace_prefix(&c.config.mounts, &view, &cwd, &ready)
                        })
                        .map_err(|e| format!("preparing volume mounts: {e}"))?;
                    words.splice(0..0, prefix);
                }
                VolumeMounts::Symlinks => mounts::link(&c.config.mounts, &sandbox_dir)
                    .map_err(|e| format!("linking volumes: {e}"))?,
                _ => {}
            }
        }
        if let Some(cgroups) = &self.inner.cgroups {
            let r = &c.config.resources;
            let procs = cgroups
                .prepare_process(
                    container_id,
                    r.memory_limit_bytes,
                    r.cpu_limit_milli,
                    self.inner.pids_limit,
                )
                .map_err(|e| format!("creating cgroups: {e}"))?;
            // The process joins its cgroups itself, before exec: nothing it runs escapes them.
            let joins: Vec<String> = procs
                .iter()
                .map(|p| format!("echo $$ > '{}'", p.display()))
                .collect();
            let script = format!("{} && exec \"$@\"", joins.join(" && "));
            words.splice(0..0, ["sh".into(), "-c".into(), script, "sh".into()]);
        }
        if let Some(netns) = netns {
            words.splice(
                0..0,
                [
                    "nsenter".into(),
                    format!("--net={}", netns.display()),
                    "--".into(),
                ],
            );
        }
        let mut argv = words.iter();
        let program = argv.next().ok_or("no command")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&c.log_path)
            .map_err(|e| format!("opening log {}: {e}", c.log_path.display()))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("opening log {}: {e}", c.log_path.display()))?;
        let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string());
        let mut command = tokio::process::Command::new(program);
        command
            .args(argv)
            .env_clear()
            .env("PATH", path)
            .env("HOSTNAME", hostname)
            .envs(c.config.env.iter().map(|(k, v)| (k, v)))
            .current_dir(
                c.config
                    .working_dir
                    .as_deref()
                    .map_or(sandbox_dir, PathBuf::from),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            // Its own group, so stop reaches everything the container forks.
            .process_group(0);
        let child = command
            .spawn()
            .map_err(|e| format!("starting {program:?}: {e}"))?;
        let pid = child
            .id()
            .ok_or("the process exited before its pid was read")?;
        Ok((child, pid))
    }

    /// Start's locked part: checks, spawns and records the process.
    #[allow(clippy::type_complexity)]
    fn spawn_locked(
        &self,
        container_id: &str,
    ) -> Result<
        (
            tokio::process::Child,
            u32,
            watch::Sender<bool>,
            watch::Receiver<bool>,
            Option<PathBuf>,
        ),
        RuntimeError,
    > {
        let mut state = self.state();

        let c = state
            .containers
            .get(container_id)
            .ok_or_else(|| not_found("container", container_id))?;
        if c.state != ContainerState::Created {
            return Err(RuntimeError::Failed {
                operation: "start_container",
                message: format!("container {container_id} is {:?}, not created", c.state),
            });
        }
        if state
            .sandboxes
            .get(&c.sandbox_id)
            .is_none_or(|s| s.state != SandboxState::Ready)
        {
            return Err(RuntimeError::Failed {
                operation: "start_container",
                message: format!("sandbox {} is not ready", c.sandbox_id),
            });
        }
        // Spawning under the lock keeps start atomic with respect to stop and remove.
        let spawned = self.spawn(container_id, &mut state);
        let Some(c) = state.containers.get_mut(container_id) else {
            return Err(not_found("container", container_id));
        };
        let (child, pid) = match spawned {
            Ok(spawned) => spawned,
            Err(message) => {
                let now = SystemTime::now();
                c.state = ContainerState::Exited;
                c.started_at = Some(now);
                c.finished_at = Some(now);
                c.exit_code = Some(128);
                c.reason = Some("StartError".into());
                c.message = Some(message.clone());
                self.inner.save_container(&state, container_id);
                return Err(RuntimeError::Failed {
                    operation: "start_container",
                    message,
                });
            }
        };
        let (tx, rx) = watch::channel(false);
        let rx_ready = rx.clone();
        let setup = (self.inner.volume_mounts == VolumeMounts::Namespace
            && !c.config.mounts.is_empty())
        .then(|| ready_file(&self.view_dir(container_id)));
        c.state = ContainerState::Running;
        c.started_at = Some(SystemTime::now());
        c.pid = Some(pid);
        c.pid_start = persist::start_time(pid);
        c.exited = Some(rx);
        self.inner.save_container(&state, container_id);
        Ok((child, pid, tx, rx_ready, setup))
    }

    /// Waits until the container's process has been reaped, or `timeout` passes.
    async fn wait_exit(rx: Option<watch::Receiver<bool>>, timeout: Duration) -> bool {
        let Some(mut rx) = rx else { return true };
        tokio::time::timeout(timeout, rx.wait_for(|exited| *exited))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Releases a sandbox's network (CNI lease, namespace); the namespace stays recorded
    /// until it is gone, so a failed or cancelled call leaves it to a retry or to `Drop`.
    async fn release_network(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
        let netns = self
            .state()
            .sandboxes
            .get(sandbox_id)
            .and_then(|s| s.netns.clone());
        let Some(netns) = netns else { return Ok(()) };
        if let PodNetwork::Cni(cni) = &self.inner.network {
            let path = net::netns_path(&netns);
            let ipam = self.inner.root.join("cni");
            if let Err(e) = net::cni_del(cni, &ipam, sandbox_id, &path).await {
                tracing::warn!(sandbox = sandbox_id, error = %e, "CNI DEL failed");
            }
        }
        if let Some(routed) = &self.inner.routed {
            routed.detach(sandbox_id).await?;
        }
        net::delete_netns(&netns).await?;
        let mut state = self.state();
        if let Some(s) = state.sandboxes.get_mut(sandbox_id) {
            s.netns = None;
        }
        self.inner.save_sandbox(&state, sandbox_id);
        Ok(())
    }

    async fn force_stop_sandbox(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
        let ids: Vec<String> = {
            let mut state = self.state();
            let sandbox = state
                .sandboxes
                .get_mut(sandbox_id)
                .ok_or_else(|| not_found("sandbox", sandbox_id))?;
            sandbox.state = SandboxState::NotReady;
            self.inner.save_sandbox(&state, sandbox_id);
            state
                .containers
                .iter()
                .filter(|(_, c)| c.sandbox_id == sandbox_id)
                .map(|(id, _)| id.clone())
                .collect()
        };
        let stops = ids.iter().map(|id| self.stop_container(id, Duration::ZERO));
        for result in futures::future::join_all(stops).await {
            match result {
                Ok(()) | Err(RuntimeError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Created by a container's mount setup once its volumes are mounted.
fn ready_file(view: &Path) -> PathBuf {
    let mut name = view.as_os_str().to_owned();
    name.push(".ready");
    PathBuf::from(name)
}

fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn not_found(what: &'static str, id: &str) -> RuntimeError {
    RuntimeError::NotFound {
        what,
        id: id.to_string(),
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    /// With an image store, pulls into it; without one, does nothing (images are ignored).
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&AuthConfig>,
        _sandbox: Option<&PodSandboxConfig>,
    ) -> Result<PulledImage, RuntimeError> {
        match &self.inner.images {
            Some(images) => images.pull(image, auth).await,
            None => Ok(PulledImage::new(image, image, 0)),
        }
    }

    async fn image_status(&self, image: &str) -> Result<Option<Image>, RuntimeError> {
        Ok(self.inner.images.as_ref().and_then(|i| i.status(image)))
    }

    async fn list_images(&self) -> Result<Vec<Image>, RuntimeError> {
        Ok(self
            .inner
            .images
            .as_ref()
            .map(ImageService::list)
            .unwrap_or_default())
    }

    async fn remove_image(&self, image: &str) -> Result<(), RuntimeError> {
        match &self.inner.images {
            Some(images) => images.remove(image),
            None => Ok(()),
        }
    }

    async fn image_fs_info(&self) -> Result<ImageFsInfo, RuntimeError> {
        Ok(self
            .inner
            .images
            .as_ref()
            .map(ImageService::fs_info)
            .unwrap_or_default())
    }

    fn version(&self) -> String {
        format!("process://{}", env!("CARGO_PKG_VERSION"))
    }

    /// With [`PodNetwork::Routed`], new pods get addresses from the node's pod CIDR.
    async fn update_runtime_config(&self, config: &RuntimeConfig) -> Result<(), RuntimeError> {
        match &self.inner.routed {
            Some(routed) => routed.set_pod_cidr(config.pod_cidr.as_deref()).await,
            None => Ok(()),
        }
    }

    /// A directory, and per the runtime's [`PodNetwork`] a network namespace (with a CNI or
    /// routed IP); a `hostNetwork` pod gets none and reports the node's IP. With
    /// [`PodNetwork::Routed`] and no pod CIDR yet, fails with "network not ready".
    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String, RuntimeError> {
        let id = new_id();
        let host_network = config.host_network || self.inner.network == PodNetwork::Host;
        if let (false, Some(routed)) = (host_network, &self.inner.routed) {
            routed.ready()?;
        }
        let dir = self.inner.root.join("sandboxes").join(&id);
        tokio::fs::create_dir_all(&dir).await?;
        let netns = (!host_network).then(|| format!("kp-{}", &id[..16]));
        // Recorded (in memory and on disk) before the namespace exists, so a cancelled call
        // leaves it findable.
        let sandbox = Sandbox {
            config: config.clone(),
            state: SandboxState::NotReady,
            created_at: SystemTime::now(),
            dir,
            netns: netns.clone(),
            ip: None,
        };
        self.inner.store.write_sandbox(&id, &sandbox.record())?;
        self.state().sandboxes.insert(id.clone(), sandbox);
        let ip = match (&netns, &self.inner.routed) {
            (None, _) => Ok(Some(self.inner.ip.clone())),
            (Some(name), Some(routed)) => match net::add_netns(name).await {
                Err(e) => Err(e),
                Ok(path) => routed
                    .attach(&id, &path, &config.port_mappings)
                    .await
                    .map(|ip| Some(ip.to_string())),
            },
            (Some(name), None) => match net::create_netns(name).await {
                Err(e) => Err(e),
                Ok(path) => match &self.inner.network {
                    PodNetwork::Cni(cni) => {
                        net::cni_add(cni, &self.inner.root.join("cni"), &id, &path)
                            .await
                            .map(Some)
                    }
                    _ => Ok(None),
                },
            },
        };
        match ip {
            Ok(ip) => {
                let mut state = self.state();
                if let Some(s) = state.sandboxes.get_mut(&id) {
                    s.state = SandboxState::Ready;
                    s.ip = ip;
                }
                self.inner.save_sandbox(&state, &id);
                Ok(id)
            }
            Err(e) => {
                let _ = self.release_network(&id).await;
                self.state().sandboxes.remove(&id);
                let _ = self.inner.store.remove_sandbox(&id);
                Err(e)
            }
        }
    }

    /// Kills every container of the sandbox (SIGKILL) and waits for them. Unknown IDs are
    /// [`RuntimeError::NotFound`].
    async fn stop_pod_sandbox(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
        self.force_stop_sandbox(sandbox_id).await?;
        self.release_network(sandbox_id).await
    }

    /// Kills and removes the sandbox, its containers, their logs and its directory. Unknown
    /// IDs are fine (CRI removal is idempotent).
    async fn remove_pod_sandbox(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
        match self.stop_pod_sandbox(sandbox_id).await {
            Ok(()) => {}
            Err(RuntimeError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        if let Some(cgroups) = &self.inner.cgroups {
            let ids: Vec<String> = self
                .state()
                .containers
                .iter()
                .filter(|(_, c)| c.sandbox_id == sandbox_id)
                .map(|(id, _)| id.clone())
                .collect();
            for id in ids {
                cgroups.remove(&id);
            }
        }
        let (dir, logs) = {
            let mut state = self.state();
            let dir = state.sandboxes.remove(sandbox_id).map(|s| s.dir);
            let mut logs = Vec::new();
            let store = &self.inner.store;
            state.containers.retain(|id, c| {
                let keep = c.sandbox_id != sandbox_id;
                if !keep {
                    logs.push(c.log_path.clone());
                    if let Err(e) = store.remove_container(id) {
                        tracing::warn!(container = %id, error = %e, "removing the record failed");
                    }
                }
                keep
            });
            store.remove_sandbox(sandbox_id)?;
            (dir, logs)
        };
        for log in logs {
            remove_file_if_exists(&log).await?;
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
        let state = self.state();
        let s = state
            .sandboxes
            .get(sandbox_id)
            .ok_or_else(|| not_found("sandbox", sandbox_id))?;
        Ok(PodSandboxStatus {
            id: sandbox_id.to_string(),
            metadata: s.config.metadata.clone(),
            state: s.state,
            created_at: s.created_at,
            ip: s.ip.clone(),
            labels: s.config.labels.clone(),
        })
    }

    async fn list_pod_sandboxes(&self) -> Result<Vec<PodSandboxStatus>, RuntimeError> {
        let state = self.state();
        Ok(state
            .sandboxes
            .iter()
            .map(|(id, s)| PodSandboxStatus {
                id: id.clone(),
                metadata: s.config.metadata.clone(),
                state: s.state,
                created_at: s.created_at,
                ip: s.ip.clone(),
                labels: s.config.labels.clone(),
            })
            .collect())
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
    ) -> Result<String, RuntimeError> {
        let mut config = config.clone();
        // A pulled image supplies what the container leaves out (its executable from the
        // image's root: the process still runs on the host).
        let pulled = self
            .inner
            .images
            .as_ref()
            .and_then(|images| images.store().status(&config.image));
        if let Some(image) = &pulled {
            if config.command.is_empty() {
                let mut argv = local::argv(&config, Some(&image.config))?;
                if argv[0].starts_with('/') {
                    let inside = image.rootfs.join(argv[0].trim_start_matches('/'));
                    if inside.exists() {
                        argv[0] = inside.display().to_string();
                    }
                }
                config.command = argv;
                config.args = Vec::new();
            }
            config.env = local::env(&config, Some(&image.config));
        }
        let config = &config;
        if config.command.is_empty() && config.args.is_empty() {
            return Err(RuntimeError::InvalidArgument(format!(
                "container {:?} has neither command nor args, and images are not run",
                config.name
            )));
        }
        let mut state = self.state();
        match state.sandboxes.get(sandbox_id) {
            None => return Err(not_found("sandbox", sandbox_id)),
            Some(s) if s.state != SandboxState::Ready => {
                return Err(RuntimeError::Failed {
                    operation: "create_container",
                    message: format!("sandbox {sandbox_id} is not ready"),
                });
            }
            Some(_) => {}
        }
        let id = new_id();
        let log_path = self.inner.root.join("logs").join(format!("{id}.log"));
        let container = Container {
            sandbox_id: sandbox_id.to_string(),
            config: config.clone(),
            state: ContainerState::Created,
            created_at: SystemTime::now(),
            started_at: None,
            finished_at: None,
            exit_code: None,
            reason: None,
            message: None,
            pid: None,
            pid_start: None,
            log_path,
            exited: None,
        };
        self.inner.store.write_container(&id, &container.record())?;
        state.containers.insert(id.clone(), container);
        Ok(id)
    }

    /// Spawns the process. If it cannot be spawned, the container is reported exited with code
    /// 128 and reason `StartError` (as containerd does), and an error is returned.
    async fn start_container(&self, container_id: &str) -> Result<(), RuntimeError> {
        let (mut child, pid, tx, rx_ready, setup) = self.spawn_locked(container_id)?;

        let inner: Weak<Inner> = Arc::downgrade(&self.inner);
        let exits = self.inner.exits.clone();
        let id = container_id.to_string();
        tokio::spawn(async move {
            let status = child.wait().await;
            // Like a container whose init exits: whatever it left in its group dies too.
            if let Ok(group) = i32::try_from(pid) {
                let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
            }
            match inner.upgrade() {
                Some(inner) => inner.record_exit(&id, status),
                // The runtime was dropped leaving its containers to a successor (in this
                // process): the exit goes where the successor looks.
                None => exits.write(&id, &describe_exit(status, |_| false)),
            }
            let _ = tx.send(true);
        });
        if let Some(ready) = setup {
            // Like a runtime's create-then-start: the command runs once its volumes are
            // mounted (so an exec probe sees them), or the setup failed and it exited.
            let deadline = tokio::time::Instant::now() + MOUNT_WAIT;
            while tokio::time::Instant::now() < deadline {
                let exited = *rx_ready.borrow();
                if exited || tokio::fs::try_exists(&ready).await.unwrap_or(false) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let _ = tokio::fs::remove_file(&ready).await;
        }
        Ok(())
    }

    /// SIGTERM to the process group, SIGKILL after `timeout` (at once if it is zero).
    /// Stopping a container that is not running does nothing. Unknown IDs are
    /// [`RuntimeError::NotFound`].
    async fn stop_container(
        &self,
        container_id: &str,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        let rx = self.exit_receiver(container_id);
        if !timeout.is_zero() {
            if !self.signal(container_id, Signal::SIGTERM)? {
                return Ok(());
            }
            if Self::wait_exit(rx.clone(), timeout).await {
                return Ok(());
            }
        }
        if !self.signal(container_id, Signal::SIGKILL)? {
            return Ok(());
        }
        if Self::wait_exit(rx, KILL_WAIT).await {
            Ok(())
        } else {
            Err(RuntimeError::Failed {
                operation: "stop_container",
                message: format!("container {container_id} did not die within {KILL_WAIT:?}"),
            })
        }
    }

    /// Force-removes (a running container is killed first) and deletes its log. Unknown IDs
    /// are fine (CRI removal is idempotent).
    async fn remove_container(&self, container_id: &str) -> Result<(), RuntimeError> {
        match self.stop_container(container_id, Duration::ZERO).await {
            Ok(()) => {}
            Err(RuntimeError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        let removed = self.state().containers.remove(container_id);
        self.inner.store.remove_container(container_id)?;
        // Empty on the host: the view was mounted in the container's own namespace.
        let _ = tokio::fs::remove_dir(self.view_dir(container_id)).await;
        if let Some(cgroups) = &self.inner.cgroups {
            cgroups.remove(container_id);
        }
        if let Some(c) = removed {
            remove_file_if_exists(&c.log_path).await?;
        }
        Ok(())
    }

    async fn container_status(&self, container_id: &str) -> Result<ContainerStatus, RuntimeError> {
        let state = self.state();
        let c = state
            .containers
            .get(container_id)
            .ok_or_else(|| not_found("container", container_id))?;
        Ok(c.status(container_id))
    }

    async fn list_containers(
        &self,
        filter: &ContainerFilter,
    ) -> Result<Vec<ContainerStatus>, RuntimeError> {
        let state = self.state();
        Ok(state
            .containers
            .iter()
            .filter(|(_, c)| {
                filter
                    .sandbox_id
                    .as_ref()
                    .is_none_or(|s| *s == c.sandbox_id)
                    && filter.state.is_none_or(|s| s == c.state)
            })
            .map(|(id, c)| c.status(id))
            .collect())
    }

    async fn container_logs(
        &self,
        container_id: &str,
        options: &LogOptions,
    ) -> Result<Bytes, RuntimeError> {
        let path = {
            let state = self.state();
            state
                .containers
                .get(container_id)
                .ok_or_else(|| not_found("container", container_id))?
                .log_path
                .clone()
        };
        read_log_file(&path, options).await
    }

    /// Runs `cmd` as a host process with the container's environment and working directory,
    /// in a process group of its own that is killed at the timeout.
    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        let (env, cwd, hostname, netns, view_of) = {
            let state = self.state();
            let c = state
                .containers
                .get(container_id)
                .ok_or_else(|| not_found("container", container_id))?;
            if c.state != ContainerState::Running {
                return Err(RuntimeError::Failed {
                    operation: "exec_sync",
                    message: format!("container {container_id} is not running"),
                });
            }
            let sandbox = state.sandboxes.get(&c.sandbox_id);
            let cwd = c.config.working_dir.as_deref().map_or_else(
                || sandbox.map_or_else(|| self.inner.root.clone(), |s| s.dir.clone()),
                PathBuf::from,
            );
            let hostname = sandbox
                .map(|s| s.config.hostname.clone())
                .unwrap_or_default();
            let netns = sandbox
                .and_then(|s| s.netns.as_deref())
                .map(net::netns_path);
            // A container in a mount namespace of its own: the exec joins it and its root.
            let view_of = (self.inner.volume_mounts == VolumeMounts::Namespace
                && !c.config.mounts.is_empty())
            .then_some(c.pid)
            .flatten();
            (c.config.env.clone(), cwd, hostname, netns, view_of)
        };
        let mut words = cmd.to_vec();
        if let Some(pid) = view_of {
            words.splice(
                0..0,
                [
                    "nsenter".into(),
                    format!("--target={pid}"),
                    "--mount".into(),
                    "--root".into(),
                    "--wd".into(),
                    "--".into(),
                ],
            );
        }
        if let Some(netns) = netns {
            // Into the pod's network, like the container itself.
            words.splice(
                0..0,
                [
                    "nsenter".into(),
                    format!("--net={}", netns.display()),
                    "--".into(),
                ],
            );
        }
        let (program, args) = words
            .split_first()
            .ok_or_else(|| RuntimeError::InvalidArgument("empty exec command".into()))?;
        let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string());
        let child = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", path)
            .env("HOSTNAME", hostname)
            .envs(env)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        // Its whole process group goes if it runs too long or writes too much.
        crate::exec_output::collect(
            child,
            timeout,
            crate::exec_output::EXEC_OUTPUT_LIMIT,
            |child| {
                if let Some(group) = child.id().and_then(|p| i32::try_from(p).ok()) {
                    let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
                }
            },
        )
        .await
    }
}
