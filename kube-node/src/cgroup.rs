//! cgroup v1 bookkeeping for containers run by runc (and host processes, which the
//! ProcessRuntime puts in the same layout itself).
//!
//! Each container gets `kube-node/<runtime>/<container>` in the memory hierarchy, owned by the
//! runtime and holding the memory limit, and runc puts the container one level below it
//! (`…/<container>/ctr`, in every hierarchy). runc removes its own leaf when the container
//! dies; the parent survives, so its `memory.failcnt` still tells an OOM kill from any other
//! SIGKILL, and the runtime removes the parents (in every hierarchy runc created them in).

use std::io;
use std::path::{Path, PathBuf};

/// Where cgroup v1 hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroups of one runtime instance.
#[derive(Debug, Clone)]
pub(crate) struct Cgroups {
    /// Relative to each hierarchy's root, e.g. `kube-node/<runtime id>`.
    base: String,
}

impl Cgroups {
    pub(crate) fn new(runtime_id: &str) -> Self {
        Self {
            base: format!("kube-node/{runtime_id}"),
        }
    }

    /// The runtime's cgroup, relative to each hierarchy's root.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    fn memory_dir(&self, container_id: &str) -> PathBuf {
        Path::new(CGROUP_ROOT)
            .join("memory")
            .join(&self.base)
            .join(container_id)
    }

    /// Creates the container's parent cgroup with its memory limit; returns the
    /// `linux.cgroupsPath` for runc.
    pub(crate) fn prepare(
        &self,
        container_id: &str,
        memory_limit: Option<i64>,
    ) -> io::Result<String> {
        let dir = self.memory_dir(container_id);
        std::fs::create_dir_all(&dir)?;
        if let Some(limit) = memory_limit.filter(|l| *l > 0) {
            // Only the memory limit: with an equal memory+swap limit the kernel stops
            // counting `memory.failcnt`, the evidence of an OOM kill read below.
            std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string())?;
        }
        Ok(format!("/{}/{container_id}/ctr", self.base))
    }

    /// For a host process: creates the container's cgroups (memory, cpu, pids) with their
    /// limits, the limits on the parent and the process in the `ctr` leaf (as runc lays it
    /// out); returns the leaves' `cgroup.procs` files the process must join.
    pub(crate) fn prepare_process(
        &self,
        container_id: &str,
        memory_limit: Option<i64>,
        cpu_limit_milli: Option<i64>,
        pids_limit: Option<i64>,
    ) -> io::Result<Vec<PathBuf>> {
        // The memory parent and its limit, as for runc.
        self.prepare(container_id, memory_limit)?;
        let mut procs = Vec::new();
        for ctrl in ["memory", "cpu", "pids"] {
            let parent = Path::new(CGROUP_ROOT)
                .join(ctrl)
                .join(&self.base)
                .join(container_id);
            let leaf = parent.join("ctr");
            std::fs::create_dir_all(&leaf)?;
            match ctrl {
                "cpu" => {
                    if let Some(milli) = cpu_limit_milli.filter(|m| *m > 0) {
                        const PERIOD_US: i64 = 100_000;
                        std::fs::write(parent.join("cpu.cfs_period_us"), PERIOD_US.to_string())?;
                        let quota = (milli * PERIOD_US / 1000).max(1000);
                        std::fs::write(parent.join("cpu.cfs_quota_us"), quota.to_string())?;
                    }
                }
                "pids" => {
                    if let Some(max) = pids_limit.filter(|m| *m > 0) {
                        std::fs::write(parent.join("pids.max"), max.to_string())?;
                    }
                }
                _ => {}
            }
            procs.push(leaf.join("cgroup.procs"));
        }
        Ok(procs)
    }

    /// Whether the container's memory limit was hit (charges failed), which with a SIGKILL
    /// exit means the kernel's OOM killer ended it.
    pub(crate) fn hit_memory_limit(&self, container_id: &str, limit: i64) -> bool {
        let read = |f: &str| {
            std::fs::read_to_string(self.memory_dir(container_id).join(f))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        read("memory.failcnt") > 0
            || u64::try_from(limit).is_ok_and(|l| read("memory.max_usage_in_bytes") >= l)
    }

    /// SIGKILLs every process in the container's cgroup and waits (briefly) for them to go:
    /// the fallback when runc cannot be asked (its state is gone).
    pub(crate) fn kill_all(&self, container_id: &str) {
        let procs = self
            .memory_dir(container_id)
            .join("ctr")
            .join("cgroup.procs");
        for _ in 0..100 {
            let pids: Vec<i32> = std::fs::read_to_string(&procs)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Removes the container's cgroups in every hierarchy (what runc left, then the parent).
    pub(crate) fn remove(&self, container_id: &str) {
        for hierarchy in hierarchies() {
            let dir = hierarchy.join(&self.base).join(container_id);
            rmdir(&dir.join("ctr"));
            rmdir(&dir);
        }
    }

    /// Removes this runtime's base cgroups (they must be empty by then), and the shared
    /// `kube-node` directory if no other runtime uses it.
    pub(crate) fn remove_base(&self) {
        for hierarchy in hierarchies() {
            rmdir(&hierarchy.join(&self.base));
            rmdir(&hierarchy.join("kube-node"));
        }
    }
}

fn hierarchies() -> Vec<PathBuf> {
    std::fs::read_dir(CGROUP_ROOT)
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn rmdir(dir: &Path) {
    match std::fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        // Busy (a process still in it, or another runtime's children): left for later.
        Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "cgroup not removed"),
    }
}
