//! [`OciRuntime`]: a [`Runtime`] running real containers with `runc`.
//!
//! A container is an OCI bundle (`<root>/bundles/<id>/config.json`, see [`bundle`]) whose root
//! is an overlay over its pulled image's unpacked layers, or a registered image's directory
//! shared read-only (with a private tmpfs `/tmp`). Each container
//! runs under a foreground `runc run`, whose exit status is the container's: that is how exit
//! codes are known without a shim. A pod's sandbox is a network namespace its containers join
//! (see [`crate::net`]); limits go through cgroups (see [`crate::cgroup`]).

mod bundle;

use std::collections::HashMap;
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
use tokio::process::Command;
use tokio::sync::watch;

use crate::cgroup::Cgroups;
use crate::files::{read_log_file, remove_file_if_exists};
use crate::net::{self, CniConfig, PodNetwork};
use crate::persist::{
    self, ContainerRecord, ExitRecord, ExitWatcher, ExitsDir, Lifecycle, SandboxRecord, StateDir,
    Watched,
};
use crate::podnet::{Routed, RoutedConfig};
use crate::pull::local::{self, ImageService, Resolved};
use crate::pull::{ImageStore, RegistryConfig};
use bundle::BundleFacts;

/// How long to wait for a container to die after SIGKILL before reporting failure.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long `start_container` waits for runc to have created the container.
const CREATE_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Sandbox {
    config: PodSandboxConfig,
    state: SandboxState,
    created_at: SystemTime,
    /// The pod's network namespace name, until the network is released.
    netns: Option<String>,
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
    bundle: PathBuf,
    log_path: PathBuf,
    /// The foreground `runc run` and its start time, which stand for the container on disk.
    runc_pid: Option<u32>,
    runc_start: Option<u64>,
    /// Becomes `true` once `runc run` has exited (the container is gone).
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
                pid: self.runc_pid,
                pid_start: self.runc_start,
            },
        )
    }

    fn status(&self, id: &str) -> ContainerStatus {
        let info = [
            ("logPath", self.log_path.to_string_lossy().into_owned()),
            ("bundle", self.bundle.to_string_lossy().into_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
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
}

#[derive(Debug, Default)]
struct State {
    sandboxes: HashMap<String, Sandbox>,
    containers: HashMap<String, Container>,
}

struct Inner {
    root: PathBuf,
    runc: PathBuf,
    images: ImageService,
    network: PodNetwork,
    /// The built-in network's state, with [`PodNetwork::Routed`].
    routed: Option<Routed>,
    host_ip: String,
    cgroups: Cgroups,
    state: Mutex<State>,
    /// The records on disk (and the lock on the root).
    store: StateDir,
    exits: ExitsDir,
    /// Whether dropping the runtime leaves its containers running for a successor.
    keep_on_drop: bool,
    _temp: Option<tempfile::TempDir>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the maps consistent, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn runc_root(&self) -> PathBuf {
        self.root.join("runc")
    }

    fn ipam_dir(&self) -> PathBuf {
        self.root.join("cni")
    }

    fn record_exit(&self, id: &str, status: std::io::Result<ExitStatus>) {
        let limit = self
            .state()
            .containers
            .get(id)
            .and_then(|c| c.config.resources.memory_limit_bytes);
        let oom = limit.is_some_and(|l| self.cgroups.hit_memory_limit(id, l));
        let exit = describe_exit(status, oom);
        let mut state = self.state();
        let Some(c) = state.containers.get_mut(id) else {
            return;
        };
        c.state = ContainerState::Exited;
        c.finished_at = Some(exit.finished_at);
        c.exit_code = Some(exit.code);
        c.reason = Some(exit.reason);
        c.message = exit.message;
        self.save_container(&state, id);
    }

    /// An adopted container's `runc run` is gone: its exit, if a runtime of this OS process
    /// recorded it, else unknown.
    fn record_adopted_exit(&self, id: &str) {
        let exit = self.exits.read(id);
        let mut state = self.state();
        let Some(c) = state.containers.get_mut(id) else {
            return;
        };
        let mut life = c.record().lifecycle(None);
        life.exited(exit);
        c.state = life.state;
        c.finished_at = life.finished_at;
        c.exit_code = life.exit_code;
        c.reason = life.reason;
        c.message = life.message;
        self.save_container(&state, id);
    }

    /// Writes a container's record (a failure is logged: only a restarted agent would miss
    /// it).
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

/// How `runc run` ended: runc reports a signal death of the container as 128 + signal.
fn describe_exit(status: std::io::Result<ExitStatus>, oom: bool) -> ExitRecord {
    let (code, message) = match status {
        Ok(s) => (
            s.code().or(s.signal().map(|sig| 128 + sig)).unwrap_or(-1),
            None,
        ),
        Err(e) => (-1, Some(format!("waiting for runc failed: {e}"))),
    };
    let reason = match code {
        0 => "Completed",
        137 if oom => "OOMKilled",
        _ => "Error",
    };
    ExitRecord {
        code,
        reason: reason.to_string(),
        message,
        finished_at: SystemTime::now(),
    }
}

/// The sandboxes and containers an earlier runtime recorded under `root`, running ones
/// re-attached through their `runc run` (pid and start time), with the processes to watch.
fn adopt(store: &StateDir) -> (State, Vec<Watched>) {
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
            bundle: store_root(store).join("bundles").join(&id),
            log_path: store_root(store).join("logs").join(format!("{id}.log")),
            runc_pid: life.pid,
            runc_start: life.pid_start,
            exited,
        };
        if c.record().state != r.state {
            if let Err(e) = store.write_container(&id, &c.record()) {
                tracing::warn!(container = %id, error = %e, "persisting the container failed");
            }
        }
        state.containers.insert(id, c);
    }
    (state, watched)
}

/// The runtime root a state directory lives in.
fn store_root(store: &StateDir) -> PathBuf {
    store.root().to_path_buf()
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.keep_on_drop {
            // Left running, recorded on disk, for the next runtime over this root.
            return;
        }
        // Nothing may outlive the runtime: containers, cgroups, network namespaces.
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        for (id, c) in &state.containers {
            if c.state == ContainerState::Running {
                let _ = std::process::Command::new(&self.runc)
                    .arg("--root")
                    .arg(self.root.join("runc"))
                    .args(["delete", "--force", id])
                    .output();
            }
            self.cgroups.kill_all(id);
            self.cgroups.remove(id);
            bundle::unmount_overlay(&c.bundle);
        }
        if let Some(routed) = &self.routed {
            routed.shutdown_blocking();
        }
        for s in state.sandboxes.values() {
            if let Some(netns) = &s.netns {
                net::delete_netns_blocking(netns);
            }
        }
        self.cgroups.remove_base();
        if let PodNetwork::Cni(cni) = &self.network {
            net::delete_bridge_blocking(&cni.bridge);
        }
        // Nothing is left to adopt.
        self.store.clear();
    }
}

/// Runs containers with `runc` (OCI). Cheap to clone; clones share state, and dropping the
/// last clone kills every container it started and removes their cgroups and namespaces.
///
/// * Images are pulled from registries into an [`ImageStore`] (unpacked once each; a
///   container's root is an overlay over it with a writable upper layer of its own), or are
///   local root filesystems registered with [`OciRuntimeBuilder::image`] (e.g. one made by
///   [`crate::image::busybox_rootfs`]), always present and never pulled. References are
///   normalized as Docker does (`busybox` is `docker.io/library/busybox:latest`).
/// * The argv follows the kubelet's four cases (`command` + `args`, `command`, image
///   `Entrypoint` + `args`, `Entrypoint` + `Cmd`); the image's `Env` goes under the
///   container's, its `WorkingDir` applies unless the container sets one, and its `User`
///   unless `run_as_user` / `run_as_group` say otherwise (names resolved in the image's
///   `/etc/passwd` and `/etc/group`). Registered images have no config: `command` or `args`
///   must be set.
/// * Every container of a pod joins the pod's network namespace ([`PodNetwork`], default
///   [`PodNetwork::Isolated`]); with [`PodNetwork::Cni`] the pod gets an IP on a bridge,
///   with [`PodNetwork::Routed`] one from the node's pod CIDR on a routed veth. A
///   `hostNetwork` pod shares the node's network and reports [`OciRuntimeBuilder::host_ip`].
/// * CPU limits become a CFS quota; memory limits are enforced on a cgroup the runtime owns,
///   and a container the kernel OOM-kills exits with 137 and reason `OOMKilled`.
/// * stdout and stderr go to one log file per container; `stop_container` sends SIGTERM, then
///   SIGKILL after the timeout. Needs root and `runc` (1.1) on `PATH`.
/// * Sandboxes and containers are recorded under `<root>/state/`; a runtime built over the
///   root of a dropped ([`keep_on_drop`](OciRuntimeBuilder::keep_on_drop)) or crashed one
///   adopts its containers, following each through its `runc run` process (pid and start
///   time) and its cgroups (the runtime id is kept). A container whose `runc run` ended
///   unseen reports exit code 137 and reason `ContainerStatusUnknown`.
#[derive(Clone)]
pub struct OciRuntime {
    inner: Arc<Inner>,
}

impl fmt::Debug for OciRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OciRuntime")
            .field("root", &self.inner.root)
            .field("network", &self.inner.network)
            .field("images", &self.inner.images)
            .finish_non_exhaustive()
    }
}

/// Configures an [`OciRuntime`]. See [`OciRuntime::builder`].
#[derive(Debug, Clone)]
pub struct OciRuntimeBuilder {
    root: Option<PathBuf>,
    runc: PathBuf,
    images: HashMap<String, PathBuf>,
    archives: Vec<(String, PathBuf)>,
    image_store: Option<ImageStore>,
    registries: RegistryConfig,
    network: PodNetwork,
    host_ip: String,
    keep_on_drop: bool,
}

impl OciRuntimeBuilder {
    /// Whether dropping the runtime leaves its containers running (default false: they are
    /// killed). Needs a [`root_dir`](Self::root_dir): a runtime built later over the same
    /// root — in a restarted agent process, say — adopts the sandboxes and containers recorded
    /// there, still running or not (see [`OciRuntime`]).
    pub fn keep_on_drop(mut self, keep: bool) -> Self {
        self.keep_on_drop = keep;
        self
    }

    /// Where bundles, logs and runc's state go (created if missing). Default: a temporary
    /// directory deleted when the runtime is dropped.
    pub fn root_dir(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = Some(root.into());
        self
    }

    /// The runc executable (default `runc`, looked up on `PATH`).
    pub fn runc(mut self, path: impl Into<PathBuf>) -> Self {
        self.runc = path.into();
        self
    }

    /// Registers an image: `reference` (e.g. `busybox`) runs with `rootfs` as its root.
    pub fn image(mut self, reference: impl Into<String>, rootfs: impl Into<PathBuf>) -> Self {
        self.images.insert(reference.into(), rootfs.into());
        self
    }

    /// Registers an image from an OCI image-layout tar: `reference` is unpacked (see
    /// [`crate::image::unpack_oci_archive`]) under the runtime's root when it is built.
    pub fn image_archive(
        mut self,
        reference: impl Into<String>,
        archive: impl Into<PathBuf>,
    ) -> Self {
        self.archives.push((reference.into(), archive.into()));
        self
    }

    /// Pulls images into `store` (default: a store under the runtime's root, `images/store`).
    /// Clones of one store may be shared by runtimes.
    pub fn image_store(mut self, store: ImageStore) -> Self {
        self.image_store = Some(store);
        self
    }

    /// Where the default image store pulls from: mirrors, plain-HTTP and TLS settings per
    /// registry host (ignored with [`image_store`](Self::image_store)).
    pub fn registries(mut self, registries: RegistryConfig) -> Self {
        self.registries = registries;
        self
    }

    /// How pods are networked (default [`PodNetwork::Isolated`]).
    pub fn network(mut self, network: PodNetwork) -> Self {
        self.network = network;
        self
    }

    /// Shorthand for [`PodNetwork::Cni`].
    pub fn cni(self, config: CniConfig) -> Self {
        self.network(PodNetwork::Cni(config))
    }

    /// Shorthand for [`PodNetwork::Routed`].
    pub fn routed(self, config: RoutedConfig) -> Self {
        self.network(PodNetwork::Routed(config))
    }

    /// The IP reported for pods with [`PodNetwork::Host`] and `hostNetwork` pods: the node's
    /// (default `127.0.0.1`).
    pub fn host_ip(mut self, ip: impl Into<String>) -> Self {
        self.host_ip = ip.into();
        self
    }

    /// Checks that runc runs, creates the directories and returns the runtime.
    pub fn build(self) -> Result<OciRuntime, RuntimeError> {
        let version = std::process::Command::new(&self.runc)
            .arg("--version")
            .output()
            .map_err(|e| RuntimeError::Failed {
                operation: "new",
                message: format!("running {}: {e}", self.runc.display()),
            })?;
        if !version.status.success() {
            return Err(RuntimeError::Failed {
                operation: "new",
                message: format!("{} --version failed", self.runc.display()),
            });
        }
        if self.keep_on_drop && self.root.is_none() {
            return Err(RuntimeError::InvalidArgument(
                "keep_on_drop needs a root_dir: a temporary root goes with the runtime".into(),
            ));
        }
        let (root, temp) = match self.root {
            Some(root) => (root, None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("kube-node-oci-")
                    .tempdir()?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        for dir in ["logs", "bundles", "runc", "cni", "images"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        let mut images = self.images;
        for (i, (reference, archive)) in self.archives.iter().enumerate() {
            let dest = root.join("images").join(i.to_string());
            crate::image::unpack_oci_archive(archive, reference, &dest).map_err(|e| {
                RuntimeError::Failed {
                    operation: "new",
                    message: format!("unpacking {reference} from {}: {e}", archive.display()),
                }
            })?;
            images.insert(reference.clone(), dest);
        }
        let image_store = match self.image_store {
            Some(store) => store,
            None => ImageStore::open(root.join("images").join("store"), self.registries)
                .map_err(|e| failed("new", e.to_string()))?,
        };
        let images = ImageService::new(&images, image_store);
        let store = StateDir::open(&root)?;
        let (state, watched) = adopt(&store);
        let routed = match &self.network {
            PodNetwork::Routed(config) => Some(Routed::open(config, &root, |id| {
                state.sandboxes.get(id).is_some_and(|s| s.netns.is_some())
            })?),
            _ => None,
        };
        let inner = Arc::new(Inner {
            root,
            runc: self.runc,
            images,
            routed,
            network: self.network,
            host_ip: self.host_ip,
            cgroups: Cgroups::new(store.id()),
            state: Mutex::new(state),
            exits: store.exits(),
            store,
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
        Ok(OciRuntime { inner })
    }
}

impl OciRuntime {
    /// Starts configuring a runtime.
    pub fn builder() -> OciRuntimeBuilder {
        OciRuntimeBuilder {
            root: None,
            runc: PathBuf::from("runc"),
            images: HashMap::new(),
            archives: Vec::new(),
            image_store: None,
            registries: RegistryConfig::default(),
            network: PodNetwork::default(),
            host_ip: "127.0.0.1".into(),
            keep_on_drop: false,
        }
    }

    /// The directory holding bundles, logs and runc's state.
    pub fn root_dir(&self) -> &Path {
        &self.inner.root
    }

    /// The cgroup (relative to each v1 hierarchy's root, or to the v2 root) holding this runtime's containers;
    /// removed when the runtime is dropped.
    pub fn cgroup_parent(&self) -> &str {
        self.inner.cgroups.base()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state()
    }

    /// The image store pulls go to.
    pub fn image_store(&self) -> &ImageStore {
        self.inner.images.store()
    }

    fn runc(&self) -> Command {
        let mut c = Command::new(&self.inner.runc);
        c.arg("--root").arg(self.inner.runc_root());
        c
    }

    /// `runc kill <id> <signal>`; `Ok(false)` if the container is not running.
    async fn kill(&self, id: &str, signal: &str) -> Result<bool, RuntimeError> {
        let running = self
            .state()
            .containers
            .get(id)
            .ok_or_else(|| not_found("container", id))?
            .state
            == ContainerState::Running;
        if !running {
            return Ok(false);
        }
        let out = self.runc().args(["kill", id, signal]).output().await?;
        if !out.status.success() {
            // Most likely it died meanwhile; the caller waits for the exit either way.
            tracing::debug!(container = id, signal, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "runc kill failed");
        }
        Ok(true)
    }

    fn exit_receiver(&self, id: &str) -> Option<watch::Receiver<bool>> {
        self.state()
            .containers
            .get(id)
            .and_then(|c| c.exited.clone())
    }

    async fn wait_exit(rx: Option<watch::Receiver<bool>>, timeout: Duration) -> bool {
        let Some(mut rx) = rx else { return true };
        tokio::time::timeout(timeout, rx.wait_for(|exited| *exited))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    async fn kill_all(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
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

    /// Releases a sandbox's network (CNI lease, namespace), once. The namespace stays
    /// recorded until it is gone, so a cancelled or failed call leaves it to a retry or to
    /// dropping the runtime.
    async fn release_network(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
        let netns = self
            .state()
            .sandboxes
            .get(sandbox_id)
            .and_then(|s| s.netns.clone());
        let Some(netns) = netns else { return Ok(()) };
        if let PodNetwork::Cni(cni) = &self.inner.network {
            let path = net::netns_path(&netns);
            if let Err(e) = net::cni_del(cni, &self.inner.ipam_dir(), sandbox_id, &path).await {
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

    /// Spawns runc for a created container under the lock, so start is atomic with respect
    /// to stop and remove.
    #[allow(clippy::type_complexity)]
    fn spawn_locked(
        &self,
        container_id: &str,
    ) -> Result<
        (
            tokio::process::Child,
            watch::Sender<bool>,
            watch::Receiver<bool>,
        ),
        RuntimeError,
    > {
        let mut state = self.state();
        let c = state
            .containers
            .get(container_id)
            .ok_or_else(|| not_found("container", container_id))?;
        if c.state != ContainerState::Created {
            return Err(failed(
                "start_container",
                format!("container {container_id} is {:?}, not created", c.state),
            ));
        }
        if state
            .sandboxes
            .get(&c.sandbox_id)
            .is_none_or(|s| s.state != SandboxState::Ready)
        {
            return Err(failed(
                "start_container",
                format!("sandbox {} is not ready", c.sandbox_id),
            ));
        }
        let spawned = spawn_runc(self.runc(), &c.bundle, &c.log_path, container_id);
        let Some(c) = state.containers.get_mut(container_id) else {
            return Err(not_found("container", container_id));
        };
        let child = match spawned {
            Ok(child) => child,
            Err(message) => {
                let now = SystemTime::now();
                c.state = ContainerState::Exited;
                c.started_at = Some(now);
                c.finished_at = Some(now);
                c.exit_code = Some(128);
                c.reason = Some("StartError".into());
                c.message = Some(message.clone());
                self.inner.save_container(&state, container_id);
                return Err(failed("start_container", message));
            }
        };
        let (tx, rx) = watch::channel(false);
        c.state = ContainerState::Running;
        c.started_at = Some(SystemTime::now());
        c.runc_pid = child.id();
        c.runc_start = c.runc_pid.and_then(persist::start_time);
        c.exited = Some(rx.clone());
        self.inner.save_container(&state, container_id);
        Ok((child, tx, rx))
    }

    /// Creates the sandbox's network namespace and (with CNI or the routed network) its
    /// interface; returns its IP.
    async fn setup_network(
        &self,
        id: &str,
        netns: Option<&str>,
        config: &PodSandboxConfig,
    ) -> Result<Option<String>, RuntimeError> {
        let Some(name) = netns else {
            return Ok(Some(self.inner.host_ip.clone()));
        };
        if let Some(routed) = &self.inner.routed {
            let path = net::add_netns(name).await?;
            let ip = routed.attach(id, &path, &config.port_mappings).await?;
            return Ok(Some(ip.to_string()));
        }
        let path = net::create_netns(name).await?;
        match &self.inner.network {
            PodNetwork::Cni(cni) => net::cni_add(cni, &self.inner.ipam_dir(), id, &path)
                .await
                .map(Some),
            _ => Ok(None),
        }
    }

    /// Waits until runc has created the container (its state file exists) or runc exited.
    async fn wait_created(&self, id: &str, rx: watch::Receiver<bool>) {
        let state_file = self.inner.runc_root().join(id).join("state.json");
        let deadline = tokio::time::Instant::now() + CREATE_WAIT;
        while tokio::time::Instant::now() < deadline {
            if *rx.borrow() || tokio::fs::try_exists(&state_file).await.unwrap_or(false) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

fn not_found(what: &'static str, id: &str) -> RuntimeError {
    RuntimeError::NotFound {
        what,
        id: id.to_string(),
    }
}

fn failed(operation: &'static str, message: String) -> RuntimeError {
    RuntimeError::Failed { operation, message }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[async_trait::async_trait]
impl Runtime for OciRuntime {
    /// Registered images are present and never pulled; others are pulled into the image
    /// store (see [`ImageStore`]).
    async fn pull_image(
        &self,
        image: &str,
        auth: Option<&AuthConfig>,
        _sandbox: Option<&PodSandboxConfig>,
    ) -> Result<PulledImage, RuntimeError> {
        self.inner.images.pull(image, auth).await
    }

    async fn image_status(&self, image: &str) -> Result<Option<Image>, RuntimeError> {
        Ok(self.inner.images.status(image))
    }

    async fn list_images(&self) -> Result<Vec<Image>, RuntimeError> {
        Ok(self.inner.images.list())
    }

    async fn remove_image(&self, image: &str) -> Result<(), RuntimeError> {
        self.inner.images.remove(image)
    }

    async fn image_fs_info(&self) -> Result<ImageFsInfo, RuntimeError> {
        Ok(self.inner.images.fs_info())
    }

    fn version(&self) -> String {
        "runc://1.1".to_string()
    }

    /// With [`PodNetwork::Routed`], new pods get addresses from the node's pod CIDR.
    async fn update_runtime_config(&self, config: &RuntimeConfig) -> Result<(), RuntimeError> {
        match &self.inner.routed {
            Some(routed) => routed.set_pod_cidr(config.pod_cidr.as_deref()).await,
            None => Ok(()),
        }
    }

    /// Creates the pod's network namespace (and CNI or routed IP), per the runtime's
    /// [`PodNetwork`]; a `hostNetwork` pod gets none and reports the node's IP. With
    /// [`PodNetwork::Routed`] and no pod CIDR yet, fails with "network not ready".
    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String, RuntimeError> {
        let id = new_id();
        let host_network = config.host_network || self.inner.network == PodNetwork::Host;
        if let (false, Some(routed)) = (host_network, &self.inner.routed) {
            routed.ready()?;
        }
        let netns = (!host_network).then(|| format!("kn-{}", &id[..16]));
        // Recorded (in memory and on disk) before the namespace exists, so that a cancelled
        // call still leaves it where removal (or dropping the runtime) finds it.
        let sandbox = Sandbox {
            config: config.clone(),
            state: SandboxState::NotReady,
            created_at: SystemTime::now(),
            netns: netns.clone(),
            ip: None,
        };
        self.inner.store.write_sandbox(&id, &sandbox.record())?;
        self.state().sandboxes.insert(id.clone(), sandbox);
        let ip = match self.setup_network(&id, netns.as_deref(), config).await {
            Ok(ip) => ip,
            Err(e) => {
                let _ = self.release_network(&id).await;
                self.state().sandboxes.remove(&id);
                let _ = self.inner.store.remove_sandbox(&id);
                return Err(e);
            }
        };
        let mut state = self.state();
        if let Some(s) = state.sandboxes.get_mut(&id) {
            s.state = SandboxState::Ready;
            s.ip = ip;
        }
        self.inner.save_sandbox(&state, &id);
        Ok(id)
    }

    /// Kills every container of the sandbox and releases its network.
    async fn stop_pod_sandbox(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
        self.kill_all(sandbox_id).await?;
        self.release_network(sandbox_id).await
    }

    /// Kills and removes the sandbox and its containers. Unknown IDs are fine.
    async fn remove_pod_sandbox(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
        match self.stop_pod_sandbox(sandbox_id).await {
            Ok(()) => {}
            Err(RuntimeError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        let ids: Vec<String> = self
            .state()
            .containers
            .iter()
            .filter(|(_, c)| c.sandbox_id == sandbox_id)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.remove_container(&id).await?;
        }
        self.state().sandboxes.remove(sandbox_id);
        self.inner.store.remove_sandbox(sandbox_id)?;
        Ok(())
    }

    async fn pod_sandbox_status(&self, sandbox_id: &str) -> Result<PodSandboxStatus, RuntimeError> {
        let state = self.state();
        let s = state
            .sandboxes
            .get(sandbox_id)
            .ok_or_else(|| not_found("sandbox", sandbox_id))?;
        Ok(sandbox_status(sandbox_id, s))
    }

    async fn list_pod_sandboxes(&self) -> Result<Vec<PodSandboxStatus>, RuntimeError> {
        let state = self.state();
        Ok(state
            .sandboxes
            .iter()
            .map(|(id, s)| sandbox_status(id, s))
            .collect())
    }

    /// Writes the container's bundle. For a pulled image the root is an overlay (the image's
    /// unpacked layers below, a writable upper directory per container in the bundle) and the
    /// argv, environment, working directory and user follow the image config as the kubelet
    /// derives them. Unknown images and empty argvs are [`RuntimeError::InvalidArgument`].
    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
    ) -> Result<String, RuntimeError> {
        let image = self.inner.images.resolve(&config.image).ok_or_else(|| {
            RuntimeError::InvalidArgument(format!(
                "image {:?} is not present (pull it first)",
                config.image
            ))
        })?;
        let image_config = image.config();
        let mut resolved = config.clone();
        resolved.command = local::argv(config, image_config)?;
        resolved.args = Vec::new();
        resolved.env = local::env(config, image_config);
        resolved.working_dir = local::working_dir(config, image_config);
        let user = local::user(
            image.rootfs(),
            image_config.and_then(|c| c.user.as_deref()),
            config.run_as_user,
            config.run_as_group,
        )?;
        let (netns, hostname) = {
            let state = self.state();
            let s = state
                .sandboxes
                .get(sandbox_id)
                .ok_or_else(|| not_found("sandbox", sandbox_id))?;
            if s.state != SandboxState::Ready {
                return Err(failed(
                    "create_container",
                    format!("sandbox {sandbox_id} is not ready"),
                ));
            }
            (
                s.netns.as_deref().map(net::netns_path),
                s.config.hostname.clone(),
            )
        };
        let id = new_id();
        let cgroups_path = self
            .inner
            .cgroups
            .prepare(&id, config.resources.memory_limit_bytes)
            .map_err(|e| failed("create_container", format!("creating cgroup: {e}")))?;
        let bundle = self.inner.root.join("bundles").join(&id);
        let (rootfs, readonly_root) = match &image {
            Resolved::Registered(dir) => (dir.clone(), true),
            Resolved::Stored(_) => (bundle.join("rootfs"), false),
        };
        let facts = BundleFacts {
            rootfs: &rootfs,
            readonly_root,
            user: &user,
            netns: netns.as_deref(),
            hostname: &hostname,
            cgroups_path: &cgroups_path,
        };
        let json = bundle::config_json(&resolved, &facts);
        // Written synchronously (one small file, one mount): no await point between creating
        // the cgroup and recording the container, so a cancelled call cannot leak the cgroup.
        let written = std::fs::create_dir_all(&bundle).and_then(|()| {
            if let Resolved::Stored(stored) = &image {
                bundle::mount_overlay(&stored.rootfs, &bundle)?;
            }
            std::fs::write(bundle.join("config.json"), json.to_string())
        });
        if let Err(e) = written {
            bundle::unmount_overlay(&bundle);
            let _ = std::fs::remove_dir_all(&bundle);
            self.inner.cgroups.remove(&id);
            return Err(failed(
                "create_container",
                format!("writing the bundle: {e}"),
            ));
        }
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
            bundle,
            log_path,
            runc_pid: None,
            runc_start: None,
            exited: None,
        };
        if let Err(e) = self.inner.store.write_container(&id, &container.record()) {
            bundle::unmount_overlay(&container.bundle);
            self.inner.cgroups.remove(&id);
            return Err(e.into());
        }
        self.state().containers.insert(id.clone(), container);
        Ok(id)
    }

    /// Runs `runc run` for the container and returns once runc has created it. If runc cannot
    /// be spawned, the container is reported exited with code 128 and reason `StartError`.
    async fn start_container(&self, container_id: &str) -> Result<(), RuntimeError> {
        let (mut child, tx, rx) = self.spawn_locked(container_id)?;
        let inner: Weak<Inner> = Arc::downgrade(&self.inner);
        let exits = self.inner.exits.clone();
        let id = container_id.to_string();
        tokio::spawn(async move {
            let status = child.wait().await;
            match inner.upgrade() {
                Some(inner) => inner.record_exit(&id, status),
                // Dropped, leaving its containers to a successor in this process.
                None => exits.write(&id, &describe_exit(status, false)),
            }
            let _ = tx.send(true);
        });
        self.wait_created(container_id, rx).await;
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `timeout` (at once if it is zero). Stopping a container
    /// that is not running does nothing. Unknown IDs are [`RuntimeError::NotFound`].
    async fn stop_container(
        &self,
        container_id: &str,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        let rx = self.exit_receiver(container_id);
        if !timeout.is_zero() {
            if !self.kill(container_id, "TERM").await? {
                return Ok(());
            }
            if Self::wait_exit(rx.clone(), timeout).await {
                return Ok(());
            }
        }
        if !self.kill(container_id, "KILL").await? {
            return Ok(());
        }
        if Self::wait_exit(rx, KILL_WAIT).await {
            Ok(())
        } else {
            Err(failed(
                "stop_container",
                format!("container {container_id} did not die within {KILL_WAIT:?}"),
            ))
        }
    }

    /// Force-removes the container, its bundle, log and cgroups. Unknown IDs are fine.
    async fn remove_container(&self, container_id: &str) -> Result<(), RuntimeError> {
        match self.stop_container(container_id, Duration::ZERO).await {
            Ok(()) => {}
            Err(RuntimeError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        // runc run deletes the container when it exits; this covers a runc that was killed.
        let _ = self
            .runc()
            .args(["delete", "--force", container_id])
            .stderr(Stdio::null())
            .output()
            .await;
        let removed = self.state().containers.remove(container_id);
        self.inner.store.remove_container(container_id)?;
        self.inner.cgroups.remove(container_id);
        if let Some(c) = removed {
            remove_file_if_exists(&c.log_path).await?;
            bundle::unmount_overlay(&c.bundle);
            match tokio::fs::remove_dir_all(&c.bundle).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
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

    /// `runc exec`: the command runs in the container's namespaces and cgroups with its
    /// environment and working directory.
    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        let running = self
            .state()
            .containers
            .get(container_id)
            .ok_or_else(|| not_found("container", container_id))?
            .state
            == ContainerState::Running;
        if !running {
            return Err(failed(
                "exec_sync",
                format!("container {container_id} is not running"),
            ));
        }
        if cmd.is_empty() {
            return Err(RuntimeError::InvalidArgument("empty exec command".into()));
        }
        let child = self
            .runc()
            .arg("exec")
            .arg(container_id)
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A timed-out exec must not linger.
            .kill_on_drop(true)
            .spawn()?;
        crate::exec_output::collect(
            child,
            timeout,
            crate::exec_output::EXEC_OUTPUT_LIMIT,
            |_| {},
        )
        .await
    }
}

fn sandbox_status(id: &str, s: &Sandbox) -> PodSandboxStatus {
    PodSandboxStatus {
        id: id.to_string(),
        metadata: s.config.metadata.clone(),
        state: s.state,
        created_at: s.created_at,
        ip: s.ip.clone(),
        labels: s.config.labels.clone(),
    }
}

/// Spawns `runc run` in the foreground: its stdio is the container's, its exit status the
/// container's.
fn spawn_runc(
    mut runc: Command,
    bundle: &Path,
    log_path: &Path,
    id: &str,
) -> Result<tokio::process::Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| format!("opening log {}: {e}", log_path.display()))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("opening log {}: {e}", log_path.display()))?;
    runc.arg("run")
        .arg("--bundle")
        .arg(bundle)
        .arg("--no-new-keyring")
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        // Not in the agent's process group: a ^C to the agent must not reach containers.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting runc: {e}"))
}
