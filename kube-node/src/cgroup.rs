//! cgroup bookkeeping for containers run by runc (and host processes, which the
//! ProcessRuntime puts in the same layout itself), on cgroup v1 or v2 — whichever the host
//! mounts at `/sys/fs/cgroup` (a hybrid host, with only a few controllers on its unified
//! hierarchy, counts as v1).
//!
//! Each container gets `kube-node/<runtime>/<container>`, owned by the runtime and holding
//! the limits, and its processes go one level below it (`…/<container>/ctr`: runc's leaf for
//! an OCI container, ours for a host process). runc removes its own leaf when the container
//! dies; the parent survives, so its OOM evidence (`memory.failcnt` on v1, `oom_kill` in
//! `memory.events` on v2) still tells an OOM kill from any other SIGKILL, and the runtime
//! removes the parents.
//!
//! * v1: one directory per hierarchy (`memory`, `cpu`, `pids`); limits in
//!   `memory.limit_in_bytes`, `cpu.cfs_quota_us`/`cpu.cfs_period_us`, `pids.max`.
//! * v2: one directory; the `memory`, `cpu` and `pids` controllers are enabled down the tree
//!   through `cgroup.subtree_control` (those the parent offers); limits in `memory.max`,
//!   `cpu.max` (`<quota> <period>`) and `pids.max`; `cgroup.kill` kills everything at once.
//!   Only unit-tested on a fake cgroupfs: the development host has v1 controllers only.

use std::io;
use std::path::{Path, PathBuf};

/// Where cgroups are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The CFS period given with a CPU limit, in microseconds.
const CPU_PERIOD_US: i64 = 100_000;

/// Which cgroup interface the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    /// One hierarchy per controller, under `<root>/<controller>`.
    V1,
    /// The unified hierarchy at `<root>`.
    V2,
}

impl Version {
    /// v2 when `root` is itself a cgroup2 mount (it has `cgroup.controllers`), else v1.
    fn detect(root: &Path) -> Self {
        if root.join("cgroup.controllers").exists() {
            Self::V2
        } else {
            Self::V1
        }
    }
}

/// The cgroups of one runtime instance.
#[derive(Debug, Clone)]
pub(crate) struct Cgroups {
    /// Relative to each hierarchy's root, e.g. `kube-node/<runtime id>`.
    base: String,
    /// Where the hierarchies are mounted (`/sys/fs/cgroup`; a directory in tests).
    root: PathBuf,
    version: Version,
}

impl Cgroups {
    pub(crate) fn new(runtime_id: &str) -> Self {
        Self::at(Path::new(CGROUP_ROOT), runtime_id)
    }

    /// The cgroups of runtime `runtime_id` in the cgroupfs mounted at `root`.
    pub(crate) fn at(root: &Path, runtime_id: &str) -> Self {
        Self {
            base: format!("kube-node/{runtime_id}"),
            root: root.to_path_buf(),
            version: Version::detect(root),
        }
    }

    /// The interface in use.
    #[cfg(test)]
    pub(crate) fn version(&self) -> Version {
        self.version
    }

    /// The container's own cgroup (the parent of its `ctr` leaf) holding its memory limit.
    fn container_dir(&self, container_id: &str) -> PathBuf {
        match self.version {
            Version::V1 => self.memory_dir(container_id),
            Version::V2 => self.root.join(&self.base).join(container_id),
        }
    }

    /// v2: enables `memory`, `cpu` and `pids` (those offered) for the children of every
    /// cgroup from the root down to the runtime's base, so limits can be set on containers.
    fn enable_controllers(&self) -> io::Result<()> {
        let mut dir = self.root.clone();
        let mut levels = vec![dir.clone()];
        for part in self.base.split('/') {
            dir.push(part);
            levels.push(dir.clone());
        }
        for (i, level) in levels.iter().enumerate() {
            std::fs::create_dir_all(level)?;
            let offered =
                std::fs::read_to_string(level.join("cgroup.controllers")).or_else(|e| {
                    // A fresh cgroup not yet populated by the kernel (or a fake root).
                    if i == 0 { Err(e) } else { Ok(String::new()) }
                })?;
            let offered: Vec<&str> = offered.split_whitespace().collect();
            for ctrl in ["memory", "cpu", "pids"] {
                // One write per controller: one unavailable one must not stop the others. At a
                // level whose offer cannot be read, all three are tried.
                if offered.is_empty() || offered.contains(&ctrl) {
                    let wrote = std::fs::OpenOptions::new()
                        .append(true)
                        .create(true)
                        .open(level.join("cgroup.subtree_control"))
                        .and_then(|mut f| {
                            std::io::Write::write_all(&mut f, format!("+{ctrl}\n").as_bytes())
                        });
                    if let Err(e) = wrote {
                        tracing::debug!(level = %level.display(), ctrl, error = %e, "enabling a cgroup controller failed");
                    }
                }
            }
        }
        Ok(())
    }

    /// The runtime's cgroup, relative to each hierarchy's root.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    fn memory_dir(&self, container_id: &str) -> PathBuf {
        self.root.join("memory").join(&self.base).join(container_id)
    }

    /// Creates the container's parent cgroup with its memory limit; returns the
    /// `linux.cgroupsPath` for runc.
    pub(crate) fn prepare(
        &self,
        container_id: &str,
        memory_limit: Option<i64>,
    ) -> io::Result<String> {
        if self.version == Version::V2 {
            self.enable_controllers()?;
        }
        let dir = self.container_dir(container_id);
        std::fs::create_dir_all(&dir)?;
        if let Some(limit) = memory_limit.filter(|l| *l > 0) {
            match self.version {
                // Only the memory limit: with an equal memory+swap limit the kernel stops
                // counting `memory.failcnt`, the evidence of an OOM kill read below.
                Version::V1 => {
                    std::fs::write(dir.join("memory.limit_in_bytes"), limit.to_string())?;
                }
                Version::V2 => std::fs::write(dir.join("memory.max"), limit.to_string())?,
            }
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
        if self.version == Version::V2 {
            let dir = self.container_dir(container_id);
            if let Some(milli) = cpu_limit_milli.filter(|m| *m > 0) {
                let quota = (milli * CPU_PERIOD_US / 1000).max(1000);
                std::fs::write(dir.join("cpu.max"), format!("{quota} {CPU_PERIOD_US}"))?;
            }
            if let Some(max) = pids_limit.filter(|m| *m > 0) {
                std::fs::write(dir.join("pids.max"), max.to_string())?;
            }
            let leaf = dir.join("ctr");
            std::fs::create_dir_all(&leaf)?;
            return Ok(vec![leaf.join("cgroup.procs")]);
        }
        let mut procs = Vec::new();
        for ctrl in ["memory", "cpu", "pids"] {
            let parent = self.root.join(ctrl).join(&self.base).join(container_id);
            let leaf = parent.join("ctr");
            std::fs::create_dir_all(&leaf)?;
            match ctrl {
                "cpu" => {
                    if let Some(milli) = cpu_limit_milli.filter(|m| *m > 0) {
                        std::fs::write(
                            parent.join("cpu.cfs_period_us"),
                            CPU_PERIOD_US.to_string(),
                        )?;
                        let quota = (milli * CPU_PERIOD_US / 1000).max(1000);
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
        if self.version == Version::V2 {
            // `memory.events` counts the whole subtree (unless mounted with
            // `memory_localevents`): read the leaf's too.
            let dir = self.container_dir(container_id);
            return [dir.join("memory.events"), dir.join("ctr/memory.events")]
                .iter()
                .any(|f| oom_kills(&std::fs::read_to_string(f).unwrap_or_default()) > 0);
        }
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
        let dir = self.container_dir(container_id);
        if self.version == Version::V2 {
            // Linux 5.14+: the kernel kills the whole subtree.
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
        }
        let procs = dir.join("ctr").join("cgroup.procs");
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
        for hierarchy in self.hierarchies() {
            let dir = hierarchy.join(&self.base).join(container_id);
            rmdir(&dir.join("ctr"));
            rmdir(&dir);
        }
    }

    /// Removes this runtime's base cgroups (they must be empty by then), and the shared
    /// `kube-node` directory if no other runtime uses it.
    pub(crate) fn remove_base(&self) {
        for hierarchy in self.hierarchies() {
            rmdir(&hierarchy.join(&self.base));
            rmdir(&hierarchy.join("kube-node"));
        }
    }
}

impl Cgroups {
    /// Where the runtime's cgroups may be: every v1 hierarchy, or the one v2 tree.
    fn hierarchies(&self) -> Vec<PathBuf> {
        if self.version == Version::V2 {
            return vec![self.root.clone()];
        }
        std::fs::read_dir(&self.root)
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The `oom_kill` count of a v2 `memory.events` file.
fn oom_kills(events: &str) -> u64 {
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn rmdir(dir: &Path) {
    match std::fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        // Busy (a process still in it, or another runtime's children): left for later.
        Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "cgroup not removed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake cgroup2 mount: the root's interface files, as the kernel shows them.
    fn fake_v2() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        )
        .expect("controllers");
        std::fs::write(dir.path().join("cgroup.subtree_control"), "").expect("subtree");
        dir
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn the_hosts_interface_is_detected() {
        let v2 = fake_v2();
        assert_eq!(Cgroups::at(v2.path(), "rt").version(), Version::V2);
        let v1 = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(v1.path().join("memory")).expect("memory");
        assert_eq!(Cgroups::at(v1.path(), "rt").version(), Version::V1);
    }

    #[test]
    fn v2_limits_go_in_the_unified_files() {
        let root = fake_v2();
        let cg = Cgroups::at(root.path(), "rt");
        let procs = cg
            .prepare_process("c1", Some(64 << 20), Some(250), Some(32))
            .expect("prepared");
        let dir = root.path().join("kube-node/rt/c1");
        assert_eq!(procs, [dir.join("ctr/cgroup.procs")]);
        assert_eq!(read(&dir.join("memory.max")), (64u64 << 20).to_string());
        assert_eq!(read(&dir.join("cpu.max")), "25000 100000");
        assert_eq!(read(&dir.join("pids.max")), "32");
        assert!(dir.join("ctr").is_dir(), "the process goes in a leaf");
        // Controllers are enabled for the children of every level down to the runtime.
        for level in ["", "kube-node", "kube-node/rt"] {
            let enabled = read(&root.path().join(level).join("cgroup.subtree_control"));
            for ctrl in ["+memory", "+cpu", "+pids"] {
                assert!(enabled.contains(ctrl), "{level:?}: {enabled:?}");
            }
        }
        // runc's cgroupsPath for an OCI container is the same leaf.
        assert_eq!(
            cg.prepare("c2", None).expect("prepared"),
            "/kube-node/rt/c2/ctr"
        );
        assert!(!root.path().join("kube-node/rt/c2/memory.max").exists());
    }

    #[test]
    fn v2_controllers_the_root_lacks_are_not_asked_for() {
        let root = fake_v2();
        std::fs::write(root.path().join("cgroup.controllers"), "memory hugetlb\n")
            .expect("controllers");
        Cgroups::at(root.path(), "rt")
            .prepare("c", None)
            .expect("prepared");
        assert_eq!(
            read(&root.path().join("cgroup.subtree_control")),
            "+memory\n"
        );
    }

    #[test]
    fn v2_oom_kills_are_read_from_memory_events() {
        let root = fake_v2();
        let cg = Cgroups::at(root.path(), "rt");
        cg.prepare("c", Some(1 << 20)).expect("prepared");
        let events = root.path().join("kube-node/rt/c/memory.events");
        std::fs::write(&events, "low 0\nhigh 0\nmax 12\noom 1\noom_kill 0\n").expect("events");
        assert!(
            !cg.hit_memory_limit("c", 1 << 20),
            "reclaim at the limit is no kill"
        );
        std::fs::write(&events, "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n").expect("events");
        assert!(cg.hit_memory_limit("c", 1 << 20));
        assert_eq!(oom_kills("oom_kill 3\noom_group_kill 0\n"), 3);
        assert_eq!(oom_kills(""), 0);
    }

    #[test]
    fn v2_kill_all_uses_cgroup_kill_and_signals_the_leaf() {
        let root = fake_v2();
        let cg = Cgroups::at(root.path(), "rt");
        let procs = cg.prepare_process("c", None, None, None).expect("prepared");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        std::fs::write(&procs[0], format!("{}\n", child.id())).expect("procs");
        // The fake cgroupfs cannot empty `cgroup.procs` itself: kill_all gives up after its
        // tries, having signalled what is listed.
        cg.kill_all("c");
        let status = child.wait().expect("reaped");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert_eq!(read(&root.path().join("kube-node/rt/c/cgroup.kill")), "1");
        assert_eq!(cg.hierarchies(), [root.path().to_path_buf()]);
    }
}
