//! [`FakeRuntime`]: a simulated, in-memory [`Runtime`] for tests and scale runs.
//!
//! Nothing is executed. A started container "runs" until it is stopped, or until the duration
//! its [`FakeBehavior`] gives has passed. Exits are computed lazily when the container is looked
//! at, so a simulated container costs a map entry and no task: thousands of pods are cheap.
//! Pulls are simulated too ([`FakePull`]): a latency, a size, or a failure per image.

mod images;

pub use images::FakePull;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use kube_core::runtime::{
    AuthConfig, ContainerConfig, ContainerFilter, ContainerState, ContainerStatus, ExecResult,
    Image, ImageFsInfo, LogOptions, PodSandboxConfig, PodSandboxStatus, PulledImage, Runtime,
    RuntimeConfig, RuntimeError, SandboxState, trim_log,
};
use tokio::time::Instant;

/// How a simulated container behaves once started.
///
/// ```
/// use std::time::Duration;
/// use kube_node::FakeBehavior;
/// let crashes = FakeBehavior::exit_after(Duration::from_millis(100), 1).with_output("boom\n");
/// let broken = FakeBehavior::fail_start("exec format error");
/// let stubborn = FakeBehavior::run_forever().ignore_stop_signal();
/// # let _ = (crashes, broken, stubborn);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeBehavior {
    exit: Option<(Duration, i32)>,
    start_error: Option<String>,
    output: Bytes,
    ignore_stop_signal: bool,
    stop_exit_code: i32,
}

impl Default for FakeBehavior {
    fn default() -> Self {
        Self::run_forever()
    }
}

impl FakeBehavior {
    /// Runs until stopped (the default).
    pub fn run_forever() -> Self {
        Self {
            exit: None,
            start_error: None,
            output: Bytes::new(),
            ignore_stop_signal: false,
            // What a process killed by SIGTERM reports (128 + 15).
            stop_exit_code: 143,
        }
    }

    /// Exits with `code` once `after` has passed since it started.
    pub fn exit_after(after: Duration, code: i32) -> Self {
        Self {
            exit: Some((after, code)),
            ..Self::run_forever()
        }
    }

    /// Fails to start: `start_container` returns an error and the container is reported
    /// exited with code 128 and reason `StartError`, as CRI runtimes do.
    pub fn fail_start(message: impl Into<String>) -> Self {
        Self {
            start_error: Some(message.into()),
            ..Self::run_forever()
        }
    }

    /// What `container_logs` returns once the container has started.
    pub fn with_output(mut self, output: impl Into<Bytes>) -> Self {
        self.output = output.into();
        self
    }

    /// Ignores the polite stop signal: `stop_container` waits its whole timeout, then the
    /// container is force-killed (exit code 137).
    pub fn ignore_stop_signal(mut self) -> Self {
        self.ignore_stop_signal = true;
        self
    }

    /// The exit code reported when the container is stopped politely (default 143, as for a
    /// process killed by SIGTERM).
    pub fn with_stop_exit_code(mut self, code: i32) -> Self {
        self.stop_exit_code = code;
        self
    }
}

/// A [`Runtime`] operation, for [`FakeRuntime::count`] and [`FakeRuntime::calls`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FakeOp {
    /// [`Runtime::run_pod_sandbox`].
    RunPodSandbox,
    /// [`Runtime::stop_pod_sandbox`].
    StopPodSandbox,
    /// [`Runtime::remove_pod_sandbox`].
    RemovePodSandbox,
    /// [`Runtime::pod_sandbox_status`].
    PodSandboxStatus,
    /// [`Runtime::list_pod_sandboxes`].
    ListPodSandboxes,
    /// [`Runtime::create_container`].
    CreateContainer,
    /// [`Runtime::start_container`].
    StartContainer,
    /// [`Runtime::stop_container`].
    StopContainer,
    /// [`Runtime::remove_container`].
    RemoveContainer,
    /// [`Runtime::container_status`].
    ContainerStatus,
    /// [`Runtime::list_containers`].
    ListContainers,
    /// [`Runtime::container_logs`].
    ContainerLogs,
    /// [`Runtime::exec_sync`].
    ExecSync,
    /// [`Runtime::pull_image`].
    PullImage,
    /// [`Runtime::image_status`].
    ImageStatus,
    /// [`Runtime::list_images`].
    ListImages,
    /// [`Runtime::remove_image`].
    RemoveImage,
    /// [`Runtime::image_fs_info`].
    ImageFsInfo,
}

impl FakeOp {
    const ALL: usize = 18;

    fn index(self) -> usize {
        self as usize
    }

    /// The operation's name, as used in [`RuntimeError::Failed`].
    pub fn name(self) -> &'static str {
        match self {
            Self::RunPodSandbox => "run_pod_sandbox",
            Self::StopPodSandbox => "stop_pod_sandbox",
            Self::RemovePodSandbox => "remove_pod_sandbox",
            Self::PodSandboxStatus => "pod_sandbox_status",
            Self::ListPodSandboxes => "list_pod_sandboxes",
            Self::CreateContainer => "create_container",
            Self::StartContainer => "start_container",
            Self::StopContainer => "stop_container",
            Self::RemoveContainer => "remove_container",
            Self::ContainerStatus => "container_status",
            Self::ListContainers => "list_containers",
            Self::ContainerLogs => "container_logs",
            Self::ExecSync => "exec_sync",
            Self::PullImage => "pull_image",
            Self::ImageStatus => "image_status",
            Self::ListImages => "list_images",
            Self::RemoveImage => "remove_image",
            Self::ImageFsInfo => "image_fs_info",
        }
    }

    /// Whether the operation changes state (only those are kept in the call log).
    pub fn is_mutation(self) -> bool {
        matches!(
            self,
            Self::RunPodSandbox
                | Self::StopPodSandbox
                | Self::RemovePodSandbox
                | Self::CreateContainer
                | Self::StartContainer
                | Self::StopContainer
                | Self::RemoveContainer
                | Self::PullImage
                | Self::RemoveImage
        )
    }
}

/// One recorded state-changing call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeCall {
    /// The operation.
    pub op: FakeOp,
    /// What it was about: the pod name for `RunPodSandbox`, the container name for
    /// `CreateContainer`, otherwise the sandbox or container ID.
    pub target: String,
}

#[derive(Debug)]
struct Sandbox {
    config: PodSandboxConfig,
    state: SandboxState,
    created_at: SystemTime,
    ip: String,
    containers: Vec<String>,
}

#[derive(Debug)]
struct Container {
    sandbox_id: String,
    config: ContainerConfig,
    behavior: FakeBehavior,
    state: ContainerState,
    created_at: SystemTime,
    started: Option<(SystemTime, Instant)>,
    finished_at: Option<SystemTime>,
    exit_code: Option<i32>,
    reason: Option<String>,
    message: Option<String>,
}

impl Container {
    /// Applies a scheduled exit whose time has come.
    fn refresh(&mut self, now: Instant) {
        if self.state != ContainerState::Running {
            return;
        }
        if let (Some((after, code)), Some((started_at, started))) =
            (self.behavior.exit, self.started)
            && now.saturating_duration_since(started) >= after
        {
            self.exit(started_at + after, code);
        }
    }

    fn exit(&mut self, at: SystemTime, code: i32) {
        self.state = ContainerState::Exited;
        self.finished_at = Some(at);
        self.exit_code = Some(code);
        self.reason = Some(if code == 0 { "Completed" } else { "Error" }.to_string());
    }

    fn status(&self, id: &str) -> ContainerStatus {
        ContainerStatus {
            id: id.to_string(),
            sandbox_id: self.sandbox_id.clone(),
            name: self.config.name.clone(),
            attempt: self.config.attempt,
            image: self.config.image.clone(),
            state: self.state,
            created_at: self.created_at,
            started_at: self.started.map(|(at, _)| at),
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            reason: self.reason.clone(),
            message: self.message.clone(),
            labels: self.config.labels.clone(),
            info: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Rules {
    default: FakeBehavior,
    by_image: HashMap<String, FakeBehavior>,
    by_command: HashMap<String, FakeBehavior>,
    /// Exit codes of exec'd commands by program (default 0).
    exec: HashMap<String, i32>,
}

impl Rules {
    /// Command rules win over image rules, which win over the default.
    fn resolve(&self, config: &ContainerConfig) -> FakeBehavior {
        let program = config.command.first().or(config.args.first());
        program
            .and_then(|p| self.by_command.get(p))
            .or_else(|| self.by_image.get(&config.image))
            .unwrap_or(&self.default)
            .clone()
    }
}

#[derive(Debug, Default)]
struct State {
    sandboxes: HashMap<String, Sandbox>,
    containers: HashMap<String, Container>,
    rules: Rules,
    injected: HashMap<FakeOp, VecDeque<String>>,
    calls: Vec<FakeCall>,
    images: images::Images,
    next_id: u64,
    next_ip: u64,
    /// The node's pod CIDR once told ([`Runtime::update_runtime_config`]): network and
    /// prefix length.
    pod_cidr: Option<(std::net::Ipv4Addr, u8)>,
}

impl State {
    fn new_id(&mut self, prefix: char) -> String {
        self.next_id += 1;
        format!("{prefix}{:015x}", self.next_id)
    }

    /// Hands out addresses from the pod CIDR once one is known (skipping its network,
    /// gateway and broadcast addresses, wrapping), else 10.88.0.1, 10.88.0.2, … 10.88.0.254,
    /// 10.88.1.1, … (wrapping after 65 024).
    fn new_ip(&mut self) -> String {
        if let Some((network, prefix)) = self.pod_cidr {
            let size = 1u64 << (32 - u32::from(prefix.min(30)));
            let n = self.next_ip % (size - 3);
            self.next_ip += 1;
            // Offset 1 is the gateway, as a real pod network keeps it.
            let offset = u32::try_from(n + 2).unwrap_or(2);
            return std::net::Ipv4Addr::from(u32::from(network).wrapping_add(offset)).to_string();
        }
        let n = self.next_ip % (254 * 256);
        self.next_ip += 1;
        format!("10.88.{}.{}", n / 254, n % 254 + 1)
    }
}

struct Inner {
    state: Mutex<State>,
    counts: [AtomicU64; FakeOp::ALL],
    latency_nanos: AtomicU64,
    record: AtomicBool,
}

/// A simulated container runtime. Cheap to clone; clones share state.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use kube_core::runtime::{ContainerConfig, PodSandboxConfig, Runtime};
/// use kube_node::{FakeBehavior, FakeOp, FakeRuntime};
///
/// let fake = FakeRuntime::new();
/// fake.on_image("crasher", FakeBehavior::exit_after(Duration::ZERO, 2));
/// let sandbox = fake.run_pod_sandbox(&PodSandboxConfig::default()).await.unwrap();
/// let config = ContainerConfig { name: "c".into(), image: "crasher".into(), ..Default::default() };
/// let id = fake.create_container(&sandbox, &config).await.unwrap();
/// fake.start_container(&id).await.unwrap();
/// assert_eq!(fake.container_status(&id).await.unwrap().exit_code, Some(2));
/// assert_eq!(fake.count(FakeOp::StartContainer), 1);
/// # }
/// ```
#[derive(Clone)]
pub struct FakeRuntime {
    inner: Arc<Inner>,
}

impl fmt::Debug for FakeRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `try_lock`: formatting must not deadlock if the caller holds the state.
        match self.inner.state.try_lock() {
            Ok(state) => f
                .debug_struct("FakeRuntime")
                .field("sandboxes", &state.sandboxes.len())
                .field("containers", &state.containers.len())
                .finish_non_exhaustive(),
            Err(_) => f.debug_struct("FakeRuntime").finish_non_exhaustive(),
        }
    }
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

fn not_found(what: &'static str, id: &str) -> RuntimeError {
    RuntimeError::NotFound {
        what,
        id: id.to_string(),
    }
}

impl FakeRuntime {
    /// An empty runtime: containers run forever, calls take no time, calls are recorded.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                counts: Default::default(),
                latency_nanos: AtomicU64::new(0),
                record: AtomicBool::new(true),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements, so a poisoned lock is still usable.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How containers behave unless a rule below matches.
    pub fn set_default_behavior(&self, behavior: FakeBehavior) {
        self.state().rules.default = behavior;
    }

    /// How containers with exactly this image behave (applies to containers created later).
    pub fn on_image(&self, image: impl Into<String>, behavior: FakeBehavior) {
        self.state().rules.by_image.insert(image.into(), behavior);
    }

    /// How containers whose program (first word of `command`, else of `args`) is `program`
    /// behave. Wins over image rules.
    pub fn on_command(&self, program: impl Into<String>, behavior: FakeBehavior) {
        self.state()
            .rules
            .by_command
            .insert(program.into(), behavior);
    }

    /// The exit code `exec_sync` reports for commands whose program is `program` (default
    /// 0): how tests script exec probes, e.g. flip readiness by changing it.
    pub fn set_exec_result(&self, program: impl Into<String>, exit_code: i32) {
        self.state().rules.exec.insert(program.into(), exit_code);
    }

    /// Makes every call wait this long first (default none).
    pub fn set_latency(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.inner.latency_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Whether state-changing calls are kept for [`FakeRuntime::calls`] (default true; turn
    /// off for long scale runs). Counts are always kept.
    pub fn set_recording(&self, record: bool) {
        self.inner.record.store(record, Ordering::Relaxed);
    }

    /// Makes the next call of `op` fail with [`RuntimeError::Failed`] carrying `message`.
    pub fn fail_next(&self, op: FakeOp, message: impl Into<String>) {
        self.state()
            .injected
            .entry(op)
            .or_default()
            .push_back(message.into());
    }

    /// How many times `op` was called (including failed calls).
    pub fn count(&self, op: FakeOp) -> u64 {
        self.inner.counts[op.index()].load(Ordering::Relaxed)
    }

    /// The state-changing calls so far, in order.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.state().calls.clone()
    }

    /// How pulls go unless [`FakeRuntime::on_pull`] names the image (default: at once, 5 MiB).
    pub fn set_default_pull(&self, pull: FakePull) {
        self.state().images.default_pull = pull;
    }

    /// How pulls of `image` go (matched as containerd normalizes references: `nginx` is
    /// `docker.io/library/nginx:latest`).
    pub fn on_pull(&self, image: &str, pull: FakePull) {
        self.state()
            .images
            .pulls
            .insert(images::normalize(image), pull);
    }

    /// Makes `image` present without a pull, as an image loaded onto the node beforehand.
    pub fn preload_image(&self, image: &str, size_bytes: u64) {
        self.state()
            .images
            .add(&images::normalize(image), size_bytes, false);
    }

    /// The images present (normalized references), in order.
    pub fn images(&self) -> Vec<String> {
        self.state().images.present.keys().cloned().collect()
    }

    /// The size of the simulated image filesystem, for image garbage collection (default 0:
    /// unknown, and nothing is collected).
    pub fn set_image_fs_capacity(&self, bytes: u64) {
        self.state().images.capacity_bytes = bytes;
    }

    /// Forgets the recorded calls (counts are kept).
    pub fn clear_calls(&self) {
        self.state().calls.clear();
    }

    /// How many sandboxes exist (ready or not).
    pub fn sandbox_count(&self) -> usize {
        self.state().sandboxes.len()
    }

    /// How many containers exist (in any state).
    pub fn container_count(&self) -> usize {
        self.state().containers.len()
    }

    /// How many containers are running now.
    pub fn running_count(&self) -> usize {
        let now = Instant::now();
        let mut state = self.state();
        let mut running = 0;
        for c in state.containers.values_mut() {
            c.refresh(now);
            if c.state == ContainerState::Running {
                running += 1;
            }
        }
        running
    }

    /// Simulates a running container dying on its own with `exit_code` (e.g. a crash or an
    /// OOM kill). Returns whether it was running.
    pub fn kill_container(&self, container_id: &str, exit_code: i32) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        let Some(c) = state.containers.get_mut(container_id) else {
            return false;
        };
        c.refresh(now);
        if c.state != ContainerState::Running {
            return false;
        }
        c.exit(SystemTime::now(), exit_code);
        true
    }

    /// Counts the call, records it, waits the configured latency, and applies an injected
    /// failure.
    async fn enter(&self, op: FakeOp, target: &str) -> Result<(), RuntimeError> {
        self.inner.counts[op.index()].fetch_add(1, Ordering::Relaxed);
        let latency = self.inner.latency_nanos.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_nanos(latency)).await;
        }
        let mut state = self.state();
        if op.is_mutation() && self.inner.record.load(Ordering::Relaxed) {
            state.calls.push(FakeCall {
                op,
                target: target.to_string(),
            });
        }
        if let Some(message) = state.injected.get_mut(&op).and_then(VecDeque::pop_front) {
            return Err(RuntimeError::Failed {
                operation: op.name(),
                message,
            });
        }
        Ok(())
    }

    fn sandbox_status(id: &str, s: &Sandbox) -> PodSandboxStatus {
        PodSandboxStatus {
            id: id.to_string(),
            metadata: s.config.metadata.clone(),
            state: s.state,
            created_at: s.created_at,
            ip: Some(s.ip.clone()),
            labels: s.config.labels.clone(),
        }
    }

    /// Stops every running container of a sandbox at once (a forced kill) and marks it
    /// not ready.
    fn stop_sandbox_locked(state: &mut State, sandbox_id: &str) -> Result<(), RuntimeError> {
        let now = Instant::now();
        let State {
            sandboxes,
            containers,
            ..
        } = state;
        let sandbox = sandboxes
            .get_mut(sandbox_id)
            .ok_or_else(|| not_found("sandbox", sandbox_id))?;
        for id in &sandbox.containers {
            if let Some(c) = containers.get_mut(id) {
                c.refresh(now);
                if c.state == ContainerState::Running {
                    c.exit(SystemTime::now(), 137);
                }
            }
        }
        sandbox.state = SandboxState::NotReady;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Runtime for FakeRuntime {
    fn version(&self) -> String {
        format!("fake://{}", env!("CARGO_PKG_VERSION"))
    }

    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String, RuntimeError> {
        self.enter(FakeOp::RunPodSandbox, &config.metadata.name)
            .await?;
        let mut state = self.state();
        let id = state.new_id('s');
        let ip = state.new_ip();
        state.sandboxes.insert(
            id.clone(),
            Sandbox {
                config: config.clone(),
                state: SandboxState::Ready,
                created_at: SystemTime::now(),
                ip,
                containers: Vec::new(),
            },
        );
        Ok(id)
    }

    /// Force-kills the sandbox's running containers. Unknown IDs are [`RuntimeError::NotFound`].
    async fn stop_pod_sandbox(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
        self.enter(FakeOp::StopPodSandbox, sandbox_id).await?;
        Self::stop_sandbox_locked(&mut self.state(), sandbox_id)
    }

    /// Force-stops and removes the sandbox and its containers. Unknown IDs are fine (CRI
    /// removal is idempotent).
    async fn remove_pod_sandbox(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
        self.enter(FakeOp::RemovePodSandbox, sandbox_id).await?;
        let mut state = self.state();
        if Self::stop_sandbox_locked(&mut state, sandbox_id).is_err() {
            return Ok(());
        }
        if let Some(sandbox) = state.sandboxes.remove(sandbox_id) {
            for id in sandbox.containers {
                state.containers.remove(&id);
            }
        }
        Ok(())
    }

    async fn pod_sandbox_status(&self, sandbox_id: &str) -> Result<PodSandboxStatus, RuntimeError> {
        self.enter(FakeOp::PodSandboxStatus, sandbox_id).await?;
        let state = self.state();
        let s = state
            .sandboxes
            .get(sandbox_id)
            .ok_or_else(|| not_found("sandbox", sandbox_id))?;
        Ok(Self::sandbox_status(sandbox_id, s))
    }

    async fn list_pod_sandboxes(&self) -> Result<Vec<PodSandboxStatus>, RuntimeError> {
        self.enter(FakeOp::ListPodSandboxes, "").await?;
        let state = self.state();
        Ok(state
            .sandboxes
            .iter()
            .map(|(id, s)| Self::sandbox_status(id, s))
            .collect())
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
    ) -> Result<String, RuntimeError> {
        self.enter(FakeOp::CreateContainer, &config.name).await?;
        let mut state = self.state();
        match state.sandboxes.get(sandbox_id) {
            None => return Err(not_found("sandbox", sandbox_id)),
            Some(s) if s.state != SandboxState::Ready => {
                return Err(RuntimeError::Failed {
                    operation: FakeOp::CreateContainer.name(),
                    message: format!("sandbox {sandbox_id} is not ready"),
                });
            }
            Some(_) => {}
        }
        let id = state.new_id('c');
        let behavior = state.rules.resolve(config);
        state.containers.insert(
            id.clone(),
            Container {
                sandbox_id: sandbox_id.to_string(),
                config: config.clone(),
                behavior,
                state: ContainerState::Created,
                created_at: SystemTime::now(),
                started: None,
                finished_at: None,
                exit_code: None,
                reason: None,
                message: None,
            },
        );
        if let Some(s) = state.sandboxes.get_mut(sandbox_id) {
            s.containers.push(id.clone());
        }
        Ok(id)
    }

    async fn start_container(&self, container_id: &str) -> Result<(), RuntimeError> {
        self.enter(FakeOp::StartContainer, container_id).await?;
        let mut state = self.state();
        let c = state
            .containers
            .get_mut(container_id)
            .ok_or_else(|| not_found("container", container_id))?;
        if c.state != ContainerState::Created {
            return Err(RuntimeError::Failed {
                operation: FakeOp::StartContainer.name(),
                message: format!("container {container_id} is {:?}, not created", c.state),
            });
        }
        if let Some(message) = c.behavior.start_error.clone() {
            // Like containerd: a container whose process cannot start is exited with 128.
            c.exit(SystemTime::now(), 128);
            c.reason = Some("StartError".into());
            c.message = Some(message.clone());
            return Err(RuntimeError::Failed {
                operation: FakeOp::StartContainer.name(),
                message,
            });
        }
        c.state = ContainerState::Running;
        c.started = Some((SystemTime::now(), Instant::now()));
        c.refresh(Instant::now());
        Ok(())
    }

    /// Stopping an exited or created container does nothing. Unknown IDs are
    /// [`RuntimeError::NotFound`].
    async fn stop_container(
        &self,
        container_id: &str,
        timeout: Duration,
    ) -> Result<(), RuntimeError> {
        self.enter(FakeOp::StopContainer, container_id).await?;
        {
            let mut state = self.state();
            let c = state
                .containers
                .get_mut(container_id)
                .ok_or_else(|| not_found("container", container_id))?;
            c.refresh(Instant::now());
            if c.state != ContainerState::Running {
                return Ok(());
            }
            if !c.behavior.ignore_stop_signal || timeout.is_zero() {
                let code = if timeout.is_zero() {
                    137
                } else {
                    c.behavior.stop_exit_code
                };
                c.exit(SystemTime::now(), code);
                return Ok(());
            }
        }
        // The simulated process ignores the polite signal: wait the grace period out.
        tokio::time::sleep(timeout).await;
        let mut state = self.state();
        if let Some(c) = state.containers.get_mut(container_id) {
            c.refresh(Instant::now());
            if c.state == ContainerState::Running {
                c.exit(SystemTime::now(), 137);
            }
        }
        Ok(())
    }

    /// Force-removes (a running container is killed first, as CRI runtimes do). Unknown IDs
    /// are fine (CRI removal is idempotent).
    async fn remove_container(&self, container_id: &str) -> Result<(), RuntimeError> {
        self.enter(FakeOp::RemoveContainer, container_id).await?;
        let mut state = self.state();
        if let Some(c) = state.containers.remove(container_id)
            && let Some(s) = state.sandboxes.get_mut(&c.sandbox_id)
        {
            s.containers.retain(|id| id != container_id);
        }
        Ok(())
    }

    async fn container_status(&self, container_id: &str) -> Result<ContainerStatus, RuntimeError> {
        self.enter(FakeOp::ContainerStatus, container_id).await?;
        let mut state = self.state();
        let c = state
            .containers
            .get_mut(container_id)
            .ok_or_else(|| not_found("container", container_id))?;
        c.refresh(Instant::now());
        Ok(c.status(container_id))
    }

    async fn list_containers(
        &self,
        filter: &ContainerFilter,
    ) -> Result<Vec<ContainerStatus>, RuntimeError> {
        self.enter(FakeOp::ListContainers, "").await?;
        let now = Instant::now();
        let mut state = self.state();
        let State {
            sandboxes,
            containers,
            ..
        } = &mut *state;
        // Sandboxes index their containers, so a per-pod listing does not scan every container.
        let ids: Vec<String> = match &filter.sandbox_id {
            Some(sid) => match sandboxes.get(sid) {
                Some(s) => s.containers.clone(),
                None => return Ok(Vec::new()),
            },
            None => containers.keys().cloned().collect(),
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(c) = containers.get_mut(&id) {
                c.refresh(now);
                if filter.state.is_none_or(|s| s == c.state) {
                    out.push(c.status(&id));
                }
            }
        }
        Ok(out)
    }

    async fn container_logs(
        &self,
        container_id: &str,
        options: &LogOptions,
    ) -> Result<Bytes, RuntimeError> {
        self.enter(FakeOp::ContainerLogs, container_id).await?;
        let state = self.state();
        let c = state
            .containers
            .get(container_id)
            .ok_or_else(|| not_found("container", container_id))?;
        if c.started.is_none() {
            return Ok(Bytes::new());
        }
        Ok(trim_log(&c.behavior.output, options))
    }

    /// Reports the exit code set with [`FakeRuntime::set_exec_result`] for the program
    /// (default 0) and no output; the container must be running.
    async fn exec_sync(
        &self,
        container_id: &str,
        cmd: &[String],
        _timeout: Duration,
    ) -> Result<ExecResult, RuntimeError> {
        self.enter(FakeOp::ExecSync, container_id).await?;
        let now = Instant::now();
        let mut state = self.state();
        let c = state
            .containers
            .get_mut(container_id)
            .ok_or_else(|| not_found("container", container_id))?;
        c.refresh(now);
        if c.state != ContainerState::Running {
            return Err(RuntimeError::Failed {
                operation: "exec_sync",
                message: format!("container {container_id} is not running"),
            });
        }
        let program = cmd.first().map(String::as_str).unwrap_or_default();
        let exit_code = state.rules.exec.get(program).copied().unwrap_or(0);
        Ok(ExecResult {
            exit_code,
            output: Bytes::new(),
            stdout_len: Some(0),
        })
    }

    /// Waits the image's [`FakePull`] latency, then fails as it says or leaves the image
    /// present.
    async fn pull_image(
        &self,
        image: &str,
        _auth: Option<&AuthConfig>,
        _sandbox: Option<&PodSandboxConfig>,
    ) -> Result<PulledImage, RuntimeError> {
        self.enter(FakeOp::PullImage, image).await?;
        let name = images::normalize(image);
        let pull = self.state().images.pull_of(&name);
        if !pull.latency.is_zero() {
            tokio::time::sleep(pull.latency).await;
        }
        if let Some(message) = pull.error {
            return Err(RuntimeError::Failed {
                operation: FakeOp::PullImage.name(),
                message: format!("failed to pull and unpack image {name:?}: {message}"),
            });
        }
        Ok(self.state().images.add(&name, pull.size_bytes, false))
    }

    async fn image_status(&self, image: &str) -> Result<Option<Image>, RuntimeError> {
        self.enter(FakeOp::ImageStatus, image).await?;
        let state = self.state();
        Ok(state
            .images
            .find(image)
            .map(|(name, i)| images::Images::status(name, i)))
    }

    async fn list_images(&self) -> Result<Vec<Image>, RuntimeError> {
        self.enter(FakeOp::ListImages, "").await?;
        let state = self.state();
        Ok(state
            .images
            .present
            .iter()
            .map(|(name, i)| images::Images::status(name, i))
            .collect())
    }

    async fn remove_image(&self, image: &str) -> Result<(), RuntimeError> {
        self.enter(FakeOp::RemoveImage, image).await?;
        let mut state = self.state();
        if let Some(name) = state.images.find(image).map(|(name, _)| name.clone()) {
            state.images.present.remove(&name);
        }
        Ok(())
    }

    async fn image_fs_info(&self) -> Result<ImageFsInfo, RuntimeError> {
        self.enter(FakeOp::ImageFsInfo, "").await?;
        Ok(self.state().images.fs_info())
    }

    /// An IPv4 pod CIDR makes later sandboxes take their addresses from it (as a real pod
    /// network does); IPv6 CIDRs are ignored.
    async fn update_runtime_config(&self, config: &RuntimeConfig) -> Result<(), RuntimeError> {
        let Some(cidr) = &config.pod_cidr else {
            return Ok(());
        };
        let invalid = || RuntimeError::Failed {
            operation: "update_runtime_config",
            message: format!("invalid pod CIDR {cidr:?}"),
        };
        let (address, prefix) = cidr.split_once('/').ok_or_else(invalid)?;
        let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
        let address: std::net::IpAddr = address.parse().map_err(|_| invalid())?;
        let std::net::IpAddr::V4(address) = address else {
            return Ok(());
        };
        if prefix > 32 {
            return Err(invalid());
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        let network = std::net::Ipv4Addr::from(u32::from(address) & mask);
        let mut state = self.state();
        if state.pod_cidr != Some((network, prefix)) {
            state.pod_cidr = Some((network, prefix));
            state.next_ip = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_are_distinct_and_valid() {
        let mut state = State::default();
        let ips: Vec<String> = (0..300).map(|_| state.new_ip()).collect();
        assert_eq!(ips[0], "10.88.0.1");
        assert_eq!(ips[253], "10.88.0.254");
        assert_eq!(ips[254], "10.88.1.1");
        let unique: std::collections::HashSet<_> = ips.iter().collect();
        assert_eq!(unique.len(), ips.len());
    }

    #[tokio::test]
    async fn sandboxes_take_addresses_from_the_pod_cidr() {
        let fake = FakeRuntime::new();
        fake.update_runtime_config(&RuntimeConfig::with_pod_cidr("10.244.3.0/30"))
            .await
            .unwrap();
        let mut ips = Vec::new();
        for _ in 0..2 {
            let id = fake
                .run_pod_sandbox(&PodSandboxConfig::default())
                .await
                .unwrap();
            ips.push(fake.pod_sandbox_status(&id).await.unwrap().ip.unwrap());
        }
        // .1 is the gateway; a /30 has one pod address, reused when wrapping.
        assert_eq!(ips, ["10.244.3.2", "10.244.3.2"]);
        let bad = fake
            .update_runtime_config(&RuntimeConfig::with_pod_cidr("10.244.3.0"))
            .await;
        assert!(bad.is_err());
    }

    #[test]
    fn command_rules_win_over_image_rules() {
        let mut rules = Rules::default();
        rules
            .by_image
            .insert("img".into(), FakeBehavior::exit_after(Duration::ZERO, 1));
        rules
            .by_command
            .insert("ok".into(), FakeBehavior::exit_after(Duration::ZERO, 0));
        let config = |command: &[&str]| ContainerConfig {
            image: "img".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(
            rules.resolve(&config(&["ok"])).exit,
            Some((Duration::ZERO, 0))
        );
        assert_eq!(
            rules.resolve(&config(&["x"])).exit,
            Some((Duration::ZERO, 1))
        );
        let other = ContainerConfig::default();
        assert_eq!(rules.resolve(&other), FakeBehavior::run_forever());
    }
}
