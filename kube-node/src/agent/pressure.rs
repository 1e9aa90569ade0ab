//! Node pressure conditions from the host, with the kubelet's default hard eviction
//! thresholds: memory available < 100Mi, node filesystem available < 10%, and (ours) fewer
//! than 10% of PIDs free.

use std::path::Path;

/// Which resources are short on the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pressure {
    pub(crate) memory: bool,
    pub(crate) disk: bool,
    pub(crate) pid: bool,
}

const MEMORY_AVAILABLE_MIN_KIB: u64 = 100 * 1024;

fn meminfo_kib(meminfo: &str, field: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// Measures the host now; `disk` is the filesystem holding the node's data (pod volumes).
/// What cannot be measured counts as no pressure.
pub(crate) fn measure(disk: &Path) -> Pressure {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory =
        meminfo_kib(&meminfo, "MemAvailable").is_some_and(|k| k < MEMORY_AVAILABLE_MIN_KIB);
    let disk = nix::sys::statvfs::statvfs(disk).is_ok_and(|s| {
        let total = s.blocks();
        total > 0 && s.blocks_available().saturating_mul(10) < total
    });
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let processes = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count() as u64
        })
        .unwrap_or(0);
    let pid = pid_max > 0 && processes.saturating_mul(10) > pid_max.saturating_mul(9);
    Pressure { memory, disk, pid }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_meminfo_fields() {
        let m = "MemTotal:       16000000 kB\nMemAvailable:      50000 kB\n";
        assert_eq!(meminfo_kib(m, "MemAvailable"), Some(50_000));
        assert_eq!(meminfo_kib(m, "MemFree"), None);
    }

    #[test]
    fn this_host_can_be_measured() {
        // Only that it runs: the values depend on the machine.
        let _ = measure(Path::new("/"));
    }
}
