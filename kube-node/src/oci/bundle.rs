//! OCI runtime-spec `config.json` for one container: the busybox-sized subset runc needs;
//! and the overlay root of containers of pulled images.

use std::path::Path;

use kube_core::runtime::ContainerConfig;
use serde_json::{Value, json};

use crate::pull::local::User;

/// The `PATH` given to containers that set none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// CPU quota period (µs) used to turn a millicore limit into a CFS quota, as the kubelet does.
const CPU_PERIOD_US: i64 = 100_000;

/// What a bundle needs beyond the container's own config.
#[derive(Debug)]
pub(crate) struct BundleFacts<'a> {
    /// The container's root: a registered image's directory (shared read-only by every
    /// container of the image) or the container's overlay mount.
    pub(crate) rootfs: &'a Path,
    /// Whether the root is mounted read-only (registered images; overlays are writable).
    pub(crate) readonly_root: bool,
    /// Who the process runs as.
    pub(crate) user: &'a User,
    /// The pod's network namespace (`None`: the host's network).
    pub(crate) netns: Option<&'a Path>,
    /// The pod's hostname.
    pub(crate) hostname: &'a str,
    /// `linux.cgroupsPath`.
    pub(crate) cgroups_path: &'a str,
}

/// The argv: `command` + `args` (the caller has already resolved them against the image's
/// Entrypoint and Cmd, see [`crate::pull::local::argv`]).
pub(crate) fn argv(config: &ContainerConfig) -> Vec<String> {
    config.command.iter().chain(&config.args).cloned().collect()
}

/// Builds `config.json`.
pub(crate) fn config_json(config: &ContainerConfig, facts: &BundleFacts<'_>) -> Value {
    let mut env: Vec<String> = Vec::with_capacity(config.env.len() + 2);
    if !config.env.iter().any(|(k, _)| k == "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    env.push(format!("HOSTNAME={}", facts.hostname));
    env.extend(config.env.iter().map(|(k, v)| format!("{k}={v}")));

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    // Containers of a pod share its network namespace; without one they use the host's.
    if let Some(netns) = facts.netns {
        namespaces.push(json!({"type": "network", "path": netns}));
    }

    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(milli) = config.resources.cpu_limit_milli.filter(|m| *m > 0) {
        // At least 1 ms per period: the kernel refuses smaller quotas.
        let quota = (milli * CPU_PERIOD_US / 1000).max(1000);
        resources["cpu"] = json!({"quota": quota, "period": CPU_PERIOD_US});
    }
    // Memory is limited on the parent cgroup the runtime owns (see `crate::cgroup`), so the
    // runtime can still read the OOM evidence after runc removes the container's own cgroup.

    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {
                "uid": facts.user.uid,
                "gid": facts.user.gid,
                "additionalGids": facts.user.additional_gids,
            },
            "args": argv(config),
            "env": env,
            "cwd": config.working_dir.as_deref().unwrap_or("/"),
            "capabilities": capabilities(),
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": facts.rootfs, "readonly": facts.readonly_root},
        "hostname": facts.hostname,
        "mounts": mounts(config),
        "linux": {
            "cgroupsPath": facts.cgroups_path,
            "resources": resources,
            "namespaces": namespaces,
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// Mounts `<bundle>/rootfs` as an overlay: `lower` (an image's unpacked root, shared and
/// never written) under `<bundle>/upper` (this container's changes), with `<bundle>/work`.
pub(crate) fn mount_overlay(lower: &Path, bundle: &Path) -> std::io::Result<()> {
    let (root, upper, work) = (
        bundle.join("rootfs"),
        bundle.join("upper"),
        bundle.join("work"),
    );
    for dir in [&root, &upper, &work] {
        std::fs::create_dir_all(dir)?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &root,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|e| std::io::Error::other(format!("mounting the overlay root ({options}): {e}")))
}

/// Unmounts `<bundle>/rootfs` if it is mounted (lazily: runc may still be letting go).
pub(crate) fn unmount_overlay(bundle: &Path) {
    let root = bundle.join("rootfs");
    if root.exists() {
        let _ = nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Docker's default capability set (what Kubernetes containers get unless told otherwise).
fn capabilities() -> Value {
    let caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ];
    json!({"bounding": caps, "effective": caps, "permitted": caps})
}

/// The usual container mounts, plus a writable `/tmp` (the image root is read-only, since
/// every container of an image shares it).
fn mounts(config: &ContainerConfig) -> Value {
    let mut mounts = json!([
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777"]}
    ]);
    // Pod volumes: bind mounts of the node's directories.
    if let Some(list) = mounts.as_array_mut() {
        for m in &config.mounts {
            let mode = if m.read_only { "ro" } else { "rw" };
            list.push(json!({
                "destination": m.container_path,
                "type": "bind",
                "source": m.host_path,
                "options": ["rbind", mode],
            }));
        }
    }
    mounts
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_core::runtime::ContainerResources;

    #[test]
    fn limits_env_and_netns_land_in_the_config() {
        let config = ContainerConfig {
            name: "c".into(),
            command: vec!["sh".into(), "-c".into()],
            args: vec!["echo hi".into()],
            env: vec![("A".into(), "1".into())],
            resources: ContainerResources {
                cpu_limit_milli: Some(250),
                memory_limit_bytes: Some(1 << 20),
            },
            ..Default::default()
        };
        let user = User {
            uid: 1000,
            gid: 50,
            additional_gids: vec![7],
        };
        let facts = BundleFacts {
            rootfs: Path::new("/images/busybox"),
            readonly_root: true,
            user: &user,
            netns: Some(Path::new("/run/netns/kn-1")),
            hostname: "web",
            cgroups_path: "/kube-node/x/c",
        };
        let json = config_json(&config, &facts);
        assert_eq!(json["process"]["args"], json!(["sh", "-c", "echo hi"]));
        assert!(
            json["process"]["env"]
                .as_array()
                .unwrap()
                .contains(&json!("A=1"))
        );
        assert_eq!(json["linux"]["resources"]["cpu"]["quota"], 25_000);
        assert_eq!(json["root"]["readonly"], true);
        assert_eq!(
            json["process"]["user"],
            json!({"uid": 1000, "gid": 50, "additionalGids": [7]})
        );
        let ns = json["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.contains(&json!({"type": "network", "path": "/run/netns/kn-1"})));
    }
}
