//! What [`ProcessRuntime`](crate::ProcessRuntime) and [`OciRuntime`](crate::OciRuntime) keep on
//! disk, so that a new runtime over the same root directory — in a restarted agent process —
//! adopts the sandboxes and containers of the last one.
//!
//! Layout under `<root>/state/`: `lock` (an exclusive `flock` held by the live runtime),
//! `runtime.json` (the runtime's id, which names its cgroups), `sandboxes/<id>.json`,
//! `containers/<id>.json` and `exits/<id>.json`. Each file is small JSON written atomically
//! (a temporary file renamed over the old one). There is no fsync: the records only have to
//! survive the agent's process, and a machine crash ends the containers too.
//!
//! A running container is identified by a process — the container's own for ProcessRuntime,
//! the foreground `runc run` for OciRuntime — as its pid *and* its start time (field 22 of
//! `/proc/<pid>/stat`), so a pid reused by an unrelated process is not mistaken for it. An
//! adopted process is not a child of the new runtime, so its exit status cannot be waited
//! for: [`ExitWatcher`] polls `/proc` and the exit is recorded from `exits/<id>.json` if a
//! runtime of this OS process wrote it there, else as unknown ([`UNKNOWN_EXIT_CODE`],
//! reason [`UNKNOWN_EXIT_REASON`]), as the kubelet reports a container it lost track of.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kube_core::runtime::{
    ContainerConfig, ContainerResources, ContainerState, Mount, PodSandboxConfig,
    PodSandboxMetadata, SandboxState,
};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The exit code reported for an adopted container that exited while no runtime of the
/// same OS process was there to see how: the kubelet's code for a container it lost.
pub(crate) const UNKNOWN_EXIT_CODE: i32 = 137;
/// The reason reported with [`UNKNOWN_EXIT_CODE`] (the kubelet's).
pub(crate) const UNKNOWN_EXIT_REASON: &str = "ContainerStatusUnknown";
/// The message reported with [`UNKNOWN_EXIT_CODE`].
pub(crate) const UNKNOWN_EXIT_MESSAGE: &str = "the container exited while no runtime watched it (after an agent restart); its exit code is unknown";

/// How often adopted processes are checked.
const POLL: Duration = Duration::from_millis(50);

/// A sandbox as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SandboxRecord {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) uid: String,
    pub(crate) attempt: u32,
    pub(crate) hostname: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeMap<String, String>,
    pub(crate) ready: bool,
    pub(crate) created_at: SystemTime,
    pub(crate) netns: Option<String>,
    pub(crate) ip: Option<String>,
}

impl SandboxRecord {
    pub(crate) fn new(
        config: &PodSandboxConfig,
        state: SandboxState,
        created_at: SystemTime,
        netns: Option<String>,
        ip: Option<String>,
    ) -> Self {
        let m = &config.metadata;
        Self {
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            uid: m.uid.clone(),
            attempt: m.attempt,
            hostname: config.hostname.clone(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            ready: state == SandboxState::Ready,
            created_at,
            netns,
            ip,
        }
    }

    pub(crate) fn config(&self) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: PodSandboxMetadata {
                name: self.name.clone(),
                namespace: self.namespace.clone(),
                uid: self.uid.clone(),
                attempt: self.attempt,
            },
            hostname: self.hostname.clone(),
            labels: self.labels.clone(),
            annotations: self.annotations.clone(),
            // Not recorded: an adopted sandbox keeps the network it was made with.
            ..PodSandboxConfig::default()
        }
    }

    pub(crate) fn state(&self) -> SandboxState {
        if self.ready {
            SandboxState::Ready
        } else {
            SandboxState::NotReady
        }
    }
}

/// A volume mount as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MountRecord {
    host_path: PathBuf,
    container_path: String,
    read_only: bool,
}

/// A container as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ContainerRecord {
    pub(crate) sandbox_id: String,
    pub(crate) name: String,
    pub(crate) attempt: u32,
    pub(crate) image: String,
    pub(crate) command: Vec<String>,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) working_dir: Option<String>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) cpu_limit_milli: Option<i64>,
    pub(crate) memory_limit_bytes: Option<i64>,
    #[serde(default)]
    pub(crate) run_as_user: Option<i64>,
    #[serde(default)]
    pub(crate) run_as_group: Option<i64>,
    pub(crate) mounts: Vec<MountRecord>,
    /// `created`, `running`, `exited` or `unknown`.
    pub(crate) state: String,
    pub(crate) created_at: SystemTime,
    pub(crate) started_at: Option<SystemTime>,
    pub(crate) finished_at: Option<SystemTime>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) reason: Option<String>,
    pub(crate) message: Option<String>,
    /// The process that stands for the container while it runs, and its start time.
    pub(crate) pid: Option<u32>,
    pub(crate) pid_start: Option<u64>,
}

/// The parts of a container's status a record carries.
#[derive(Debug, Clone)]
pub(crate) struct Lifecycle {
    pub(crate) state: ContainerState,
    pub(crate) created_at: SystemTime,
    pub(crate) started_at: Option<SystemTime>,
    pub(crate) finished_at: Option<SystemTime>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) reason: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) pid: Option<u32>,
    pub(crate) pid_start: Option<u64>,
}

impl ContainerRecord {
    pub(crate) fn new(sandbox_id: &str, config: &ContainerConfig, life: Lifecycle) -> Self {
        Self {
            sandbox_id: sandbox_id.to_string(),
            name: config.name.clone(),
            attempt: config.attempt,
            image: config.image.clone(),
            command: config.command.clone(),
            args: config.args.clone(),
            env: config.env.clone(),
            working_dir: config.working_dir.clone(),
            labels: config.labels.clone(),
            cpu_limit_milli: config.resources.cpu_limit_milli,
            memory_limit_bytes: config.resources.memory_limit_bytes,
            run_as_user: config.run_as_user,
            run_as_group: config.run_as_group,
            mounts: config
                .mounts
                .iter()
                .map(|m| MountRecord {
                    host_path: m.host_path.clone(),
                    container_path: m.container_path.clone(),
                    read_only: m.read_only,
                })
                .collect(),
            state: match life.state {
                ContainerState::Created => "created",
                ContainerState::Running => "running",
                ContainerState::Exited => "exited",
                ContainerState::Unknown => "unknown",
            }
            .to_string(),
            created_at: life.created_at,
            started_at: life.started_at,
            finished_at: life.finished_at,
            exit_code: life.exit_code,
            reason: life.reason,
            message: life.message,
            pid: life.pid,
            pid_start: life.pid_start,
        }
    }

    pub(crate) fn config(&self) -> ContainerConfig {
        ContainerConfig {
            name: self.name.clone(),
            attempt: self.attempt,
            image: self.image.clone(),
            command: self.command.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            working_dir: self.working_dir.clone(),
            labels: self.labels.clone(),
            resources: ContainerResources {
                cpu_limit_milli: self.cpu_limit_milli,
                memory_limit_bytes: self.memory_limit_bytes,
            },
            mounts: self
                .mounts
                .iter()
                .map(|m| Mount {
                    host_path: m.host_path.clone(),
                    container_path: m.container_path.clone(),
                    read_only: m.read_only,
                })
                .collect(),
            run_as_user: self.run_as_user,
            run_as_group: self.run_as_group,
        }
    }

    /// The container's lifecycle as recorded, brought up to date: a running container whose
    /// process is gone has exited (with what `exit` says, else unknown).
    pub(crate) fn lifecycle(&self, exit: Option<ExitRecord>) -> Lifecycle {
        let mut life = Lifecycle {
            state: match self.state.as_str() {
                "created" => ContainerState::Created,
                "running" => ContainerState::Running,
                "exited" => ContainerState::Exited,
                _ => ContainerState::Unknown,
            },
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            reason: self.reason.clone(),
            message: self.message.clone(),
            pid: self.pid,
            pid_start: self.pid_start,
        };
        if life.state == ContainerState::Running {
            let alive = match (self.pid, self.pid_start) {
                (Some(pid), Some(start)) => is_alive(pid, start),
                _ => false,
            };
            if !alive {
                life.exited(exit);
            }
        }
        life
    }
}

impl Lifecycle {
    /// Marks the container exited with `exit`, or with an unknown exit.
    pub(crate) fn exited(&mut self, exit: Option<ExitRecord>) {
        let exit = exit.unwrap_or_else(ExitRecord::unknown);
        self.state = ContainerState::Exited;
        self.finished_at = Some(exit.finished_at);
        self.exit_code = Some(exit.code);
        self.reason = Some(exit.reason);
        self.message = exit.message;
    }
}

/// How a container ended, written by a runtime that saw it but could no longer record it
/// itself (it had been dropped, leaving its containers to a successor).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ExitRecord {
    pub(crate) code: i32,
    pub(crate) reason: String,
    pub(crate) message: Option<String>,
    pub(crate) finished_at: SystemTime,
}

impl ExitRecord {
    fn unknown() -> Self {
        Self {
            code: UNKNOWN_EXIT_CODE,
            reason: UNKNOWN_EXIT_REASON.into(),
            message: Some(UNKNOWN_EXIT_MESSAGE.into()),
            finished_at: SystemTime::now(),
        }
    }
}

/// What the runtime itself stores.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RuntimeRecord {
    id: String,
}

/// Everything loaded from a state directory.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) sandboxes: Vec<(String, SandboxRecord)>,
    pub(crate) containers: Vec<(String, ContainerRecord)>,
}

/// A runtime's state directory, locked while the runtime lives.
#[derive(Debug)]
pub(crate) struct StateDir {
    dir: PathBuf,
    /// The runtime's id (names its cgroups), kept across restarts.
    id: String,
    _lock: Flock<std::fs::File>,
}

impl StateDir {
    /// Opens (creating) `<root>/state`, taking its lock: a second live runtime over the same
    /// root is refused.
    pub(crate) fn open(root: &Path) -> io::Result<Self> {
        let dir = root.join("state");
        for sub in ["sandboxes", "containers", "exits"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is in use by another runtime ({errno})", root.display()),
            )
        })?;
        let runtime_file = dir.join("runtime.json");
        let id = match std::fs::read(&runtime_file) {
            Ok(bytes) => {
                serde_json::from_slice::<RuntimeRecord>(&bytes)
                    .map_err(|e| invalid(&runtime_file, e))?
                    .id
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
                write_atomic(&runtime_file, &RuntimeRecord { id: id.clone() })?;
                id
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            dir,
            id,
            _lock: lock,
        })
    }

    /// The runtime root this state directory is in.
    pub(crate) fn root(&self) -> &Path {
        self.dir.parent().unwrap_or(&self.dir)
    }

    /// The runtime's id, the same after a restart.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    fn path(&self, kind: &str, id: &str) -> PathBuf {
        self.dir.join(kind).join(format!("{id}.json"))
    }

    pub(crate) fn write_sandbox(&self, id: &str, record: &SandboxRecord) -> io::Result<()> {
        write_atomic(&self.path("sandboxes", id), record)
    }

    pub(crate) fn write_container(&self, id: &str, record: &ContainerRecord) -> io::Result<()> {
        write_atomic(&self.path("containers", id), record)
    }

    pub(crate) fn remove_sandbox(&self, id: &str) -> io::Result<()> {
        remove(&self.path("sandboxes", id))
    }

    pub(crate) fn remove_container(&self, id: &str) -> io::Result<()> {
        remove(&self.path("containers", id))?;
        remove(&self.path("exits", id))
    }

    /// Forgets every sandbox and container (the runtime tore them all down).
    pub(crate) fn clear(&self) {
        for sub in ["sandboxes", "containers", "exits"] {
            let dir = self.dir.join(sub);
            for (id, _) in read_all(&dir) {
                if let Err(e) = remove(&dir.join(format!("{id}.json"))) {
                    tracing::warn!(record = %id, error = %e, "removing a record failed");
                }
            }
        }
    }

    /// Where a dropped runtime's wait task leaves a container's exit for the next runtime.
    pub(crate) fn exits(&self) -> ExitsDir {
        ExitsDir(Arc::new(self.dir.join("exits")))
    }

    /// Reads every record. Unreadable files are skipped with a warning (a partial write
    /// cannot leave one: writes are renames).
    pub(crate) fn load(&self) -> Loaded {
        let mut loaded = Loaded::default();
        for (id, bytes) in read_all(&self.dir.join("sandboxes")) {
            match serde_json::from_slice(&bytes) {
                Ok(r) => loaded.sandboxes.push((id, r)),
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "skipping an unreadable sandbox record")
                }
            }
        }
        for (id, bytes) in read_all(&self.dir.join("containers")) {
            match serde_json::from_slice(&bytes) {
                Ok(r) => loaded.containers.push((id, r)),
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "skipping an unreadable container record")
                }
            }
        }
        loaded
    }
}

/// `<root>/state/exits`, usable after the runtime is gone.
#[derive(Debug, Clone)]
pub(crate) struct ExitsDir(Arc<PathBuf>);

impl ExitsDir {
    pub(crate) fn write(&self, id: &str, exit: &ExitRecord) {
        if let Err(e) = write_atomic(&self.0.join(format!("{id}.json")), exit) {
            tracing::warn!(container = id, error = %e, "recording an exit failed");
        }
    }

    pub(crate) fn read(&self, id: &str) -> Option<ExitRecord> {
        let bytes = std::fs::read(self.0.join(format!("{id}.json"))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

fn invalid(path: &Path, e: serde_json::Error) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {e}", path.display()),
    )
}

fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes `value` as JSON to a temporary file beside `path`, then renames it over `path`.
pub(crate) fn write_atomic<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// `(id, contents)` of every `*.json` file in `dir`.
fn read_all(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_suffix(".json")?.to_string();
            Some((id, std::fs::read(e.path()).ok()?))
        })
        .collect()
}

/// The start time of process `pid` (clock ticks since boot, field 22 of `/proc/<pid>/stat`),
/// or `None` if it is gone or a zombie (exited, not yet reaped).
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

fn parse_stat(stat: &str) -> Option<u64> {
    // The command name is parenthesised and may hold spaces and parentheses: the fields
    // that matter follow the last `)`. There, field 3 (state) is first and 22 the 20th.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if matches!(state, "Z" | "X" | "x") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Whether the process `pid` that started at `start` still runs.
pub(crate) fn is_alive(pid: u32, start: u64) -> bool {
    start_time(pid) == Some(start)
}

/// One adopted process to watch.
#[derive(Debug)]
pub(crate) struct Watched {
    pub(crate) id: String,
    pub(crate) pid: u32,
    pub(crate) start: u64,
    pub(crate) exited: watch::Sender<bool>,
}

/// Polls adopted processes (not children of this runtime, so not waitable) on a thread of
/// its own, and reports each exit to `on_exit`, which returns `false` once the runtime is
/// gone (the thread then ends).
#[derive(Debug)]
pub(crate) struct ExitWatcher;

impl ExitWatcher {
    pub(crate) fn spawn(
        mut watched: Vec<Watched>,
        on_exit: impl Fn(&str) -> bool + Send + 'static,
    ) -> io::Result<()> {
        if watched.is_empty() {
            return Ok(());
        }
        std::thread::Builder::new()
            .name("kube-node-adopted".into())
            .spawn(move || {
                // A process must be seen gone twice, so an exit a wait task of this OS
                // process is recording has time to reach the exits directory.
                let mut gone_once = std::collections::HashSet::new();
                while !watched.is_empty() {
                    std::thread::sleep(POLL);
                    let mut runtime_gone = false;
                    watched.retain(|w| {
                        if runtime_gone || is_alive(w.pid, w.start) {
                            return true;
                        }
                        if gone_once.insert(w.id.clone()) {
                            return true;
                        }
                        runtime_gone = !on_exit(&w.id);
                        let _ = w.exited.send(true);
                        false
                    });
                    if runtime_gone || watched.iter().all(|w| w.exited.is_closed()) {
                        return;
                    }
                }
            })
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_start_time_after_odd_command_names() {
        let stat = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(parse_stat(stat), Some(123_456));
        let zombie = "42 (x) Z 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
        assert_eq!(parse_stat(zombie), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let pid = std::process::id();
        let start = start_time(pid).expect("our own start time");
        assert!(is_alive(pid, start));
        assert!(!is_alive(pid, start + 1), "a reused pid is another process");
    }

    #[test]
    fn records_round_trip_and_the_directory_is_locked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(dir.path()).expect("open");
        let id = state.id().to_string();
        assert!(
            StateDir::open(dir.path()).is_err(),
            "a second runtime is refused"
        );
        let sandbox = SandboxRecord::new(
            &PodSandboxConfig::default(),
            SandboxState::Ready,
            SystemTime::now(),
            None,
            Some("10.0.0.1".into()),
        );
        state.write_sandbox("s1", &sandbox).expect("write");
        let config = ContainerConfig {
            name: "c".into(),
            command: vec!["sleep".into()],
            ..Default::default()
        };
        let life = Lifecycle {
            state: ContainerState::Running,
            created_at: SystemTime::now(),
            started_at: Some(SystemTime::now()),
            finished_at: None,
            exit_code: None,
            reason: None,
            message: None,
            // A pid that is not running with this start time: exited, how is unknown.
            pid: Some(std::process::id()),
            pid_start: Some(0),
        };
        state
            .write_container("c1", &ContainerRecord::new("s1", &config, life))
            .expect("write");
        drop(state);

        let state = StateDir::open(dir.path()).expect("reopen");
        assert_eq!(state.id(), id, "the id survives");
        let loaded = state.load();
        assert_eq!(loaded.sandboxes.len(), 1);
        assert_eq!(loaded.sandboxes[0].1.ip.as_deref(), Some("10.0.0.1"));
        let (cid, record) = &loaded.containers[0];
        assert_eq!(cid, "c1");
        assert_eq!(record.config(), config);
        let life = record.lifecycle(None);
        assert_eq!(life.state, ContainerState::Exited);
        assert_eq!(life.exit_code, Some(UNKNOWN_EXIT_CODE));
        let known = ExitRecord {
            code: 3,
            reason: "Error".into(),
            message: None,
            finished_at: SystemTime::now(),
        };
        state.exits().write("c1", &known);
        let life = record.lifecycle(state.exits().read("c1"));
        assert_eq!(life.exit_code, Some(3));
        state.remove_container("c1").expect("remove");
        assert!(state.load().containers.is_empty());
        assert!(state.exits().read("c1").is_none());
    }
}
