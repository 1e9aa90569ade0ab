//! A private containerd for tests and benches: its own config, socket, root and state under a
//! temporary directory, the CRI plugin with `restrict_oom_score_adj`, a busybox image and a
//! busybox "pause" sandbox image imported from an OCI archive, a CNI bridge network, and
//! optionally a registry mirror for `docker.io` (containerd's `config_path` hosts directory).
//! Also [`Dockerd`]: a private Docker daemon (with the containerd it starts) in the same
//! manner. Shared by the integration tests and the `pod_startup` bench (included with
//! `#[path]`).

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube_node::image::{ArchiveImage, HOST_BUSYBOX, busybox_rootfs, oci_archive};
use kube_node::{CriRuntime, DockerRuntime};

/// The sandbox image the config names (imported, never pulled).
pub const PAUSE_IMAGE: &str = "kube-node.test/pause:1";

/// A running containerd; call [`Containerd::stop`] at the end (dropping it kills it too, less
/// thoroughly).
#[derive(Debug)]
pub struct Containerd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub socket: PathBuf,
    bridge: String,
    cgroup_parent: String,
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl Containerd {
    /// Starts containerd with pods on `bridge` in `subnet`, and imports the images.
    pub fn start(bridge: &str, subnet: &str) -> anyhow::Result<Self> {
        Self::start_with_registries(bridge, subnet, None, &[])
    }

    /// As [`start`](Self::start), with `docker.io` pulled through the plain-HTTP registry
    /// `mirror` (`127.0.0.1:PORT`), and each of `plain_http` (hosts) spoken to over plain
    /// HTTP, as containerd's hosts directory (`config_path`) configures them.
    pub fn start_with_registries(
        bridge: &str,
        subnet: &str,
        mirror: Option<&str>,
        plain_http: &[&str],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("kn-ctrd-").tempdir()?;
        let d = dir.path();
        let certs = d.join("certs.d");
        if let Some(mirror) = mirror {
            let hosts = certs.join("docker.io");
            std::fs::create_dir_all(&hosts)?;
            std::fs::write(
                hosts.join("hosts.toml"),
                format!(
                    "server = \"https://registry-1.docker.io\"\n\n\
                     [host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  \
                     skip_verify = true\n"
                ),
            )?;
        }
        for host in plain_http {
            let hosts = certs.join(host);
            std::fs::create_dir_all(&hosts)?;
            std::fs::write(
                hosts.join("hosts.toml"),
                format!(
                    "server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  \
                     capabilities = [\"pull\", \"resolve\"]\n"
                ),
            )?;
        }
        let socket = d.join("containerd.sock");
        let cni_dir = d.join("cni");
        std::fs::create_dir_all(&cni_dir)?;
        std::fs::write(
            cni_dir.join("10-kube-node.conflist"),
            serde_json::json!({
                "cniVersion": "0.4.0",
                "name": bridge,
                "plugins": [{
                    "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                             "dataDir": d.join("ipam")}
                }]
            })
            .to_string(),
        )?;
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"#,
            root = d.join("root").display(),
            state = d.join("state").display(),
            socket = socket.display(),
            cni = cni_dir.display(),
            certs = certs.display(),
        );
        let config_path = d.join("config.toml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(d.join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let cgroup_parent = format!(
            "/kube-node-cri-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut me = Self {
            child: Some(child),
            dir,
            socket,
            bridge: bridge.to_string(),
            cgroup_parent,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !me.socket.exists() {
            if let Some(child) = me.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                anyhow::bail!("containerd exited ({status}): {}", me.log());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                me.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        me.import_images()?;
        Ok(me)
    }

    /// containerd's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn import_images(&self) -> anyhow::Result<()> {
        let d = self.dir.path();
        let rootfs = busybox_rootfs(&d.join("busybox"), Path::new(HOST_BUSYBOX))?;
        let archive = d.join("images.tar");
        oci_archive(
            &rootfs,
            &[
                ArchiveImage {
                    name: "docker.io/library/busybox:latest".into(),
                    cmd: vec!["sh".into()],
                },
                ArchiveImage {
                    name: PAUSE_IMAGE.into(),
                    cmd: vec!["sleep".into(), "2147483647".into()],
                },
            ],
            &archive,
        )?;
        run(Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&archive))
    }

    /// A CRI client for this containerd, with logs under its directory.
    pub async fn runtime(&self) -> anyhow::Result<CriRuntime> {
        Ok(
            CriRuntime::connect(&self.socket, self.dir.path().join("pods"))
                .await?
                .with_cgroup_parent(self.cgroup_parent.clone()),
        )
    }

    /// Removes every sandbox (and so container, netns and IP) through CRI, then stops
    /// containerd and removes what it leaves on the host.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        use kube_core::runtime::Runtime;
        let runtime = self.runtime().await?;
        for s in runtime.list_pod_sandboxes().await? {
            runtime.stop_pod_sandbox(&s.id).await?;
            runtime.remove_pod_sandbox(&s.id).await?;
        }
        self.kill();
        Ok(())
    }

    fn kill(&mut self) {
        // Whatever still runs in our cgroups (only after a failed test) dies first.
        kill_cgroup_tree(&self.cgroup_parent);
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Shims of this containerd (they outlive it by design).
        if let Ok(procs) = std::fs::read_dir("/proc") {
            let needle = self.socket.to_string_lossy().into_owned();
            for p in procs.flatten() {
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline);
                if cmdline.contains("containerd-shim") && cmdline.contains(&needle) {
                    let _ = Command::new("kill")
                        .args(["-9", &p.file_name().to_string_lossy()])
                        .status();
                }
            }
        }
        // Mounts under our directory (snapshots, shm) go before the directory does.
        let prefix = self.dir.path().to_string_lossy().into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        remove_cgroup_tree(&self.cgroup_parent);
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        // The shim's fixed directories, if nothing else uses them (remove_dir needs empty).
        for d in [
            "/run/containerd/runc/k8s.io",
            "/run/containerd/runc",
            "/run/containerd/s",
        ] {
            let _ = std::fs::remove_dir(d);
        }
        let _ = std::fs::remove_dir("/run/containerd");
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn hierarchies() -> Vec<PathBuf> {
    std::fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn kill_cgroup_tree(parent: &str) {
    let root = Path::new("/sys/fs/cgroup/memory").join(parent.trim_start_matches('/'));
    for _ in 0..50 {
        let mut pids = Vec::new();
        collect_pids(&root, &mut pids);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn collect_pids(dir: &Path, out: &mut Vec<String>) {
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(procs.lines().map(str::to_string));
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_pids(&e.path(), out);
        }
    }
}

/// Removes `parent` and every cgroup below it, in every hierarchy.
pub fn remove_cgroup_tree(parent: &str) {
    fn rm(dir: &Path) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rm(&e.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    for h in hierarchies() {
        rm(&h.join(parent.trim_start_matches('/')));
    }
}

/// A private Docker daemon: config, socket, data and exec roots under a temporary directory,
/// no bridge and no iptables (sandboxes use `--network none`), every container under a cgroup
/// parent of its own, and optionally `docker.io` mirrored by a plain-HTTP registry. Dropping
/// it stops the daemon, and kills and removes what it leaves (its containerd, shims, mounts,
/// cgroups).
#[derive(Debug)]
pub struct Dockerd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub socket: PathBuf,
    cgroup_parent: String,
}

impl Dockerd {
    /// Starts dockerd with `docker.io` mirrored by `mirror` (`127.0.0.1:PORT`, plain HTTP) and
    /// `insecure` registries (hosts) allowed over plain HTTP, and waits until it answers.
    pub fn start(mirror: Option<&str>, insecure: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("kn-dockerd-").tempdir()?;
        let d = dir.path();
        let socket = d.join("docker.sock");
        let cgroup_parent = format!(
            "/kube-node-docker-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let mut insecure: Vec<String> = insecure.iter().map(|h| h.to_string()).collect();
        insecure.extend(mirror.map(str::to_string));
        let config = serde_json::json!({
            "data-root": d.join("root"),
            "exec-root": d.join("exec"),
            "pidfile": d.join("docker.pid"),
            "hosts": [format!("unix://{}", socket.display())],
            "registry-mirrors": mirror.map(|m| format!("http://{m}")).into_iter().collect::<Vec<_>>(),
            "insecure-registries": insecure,
            "bridge": "none",
            "iptables": false,
            "ip-forward": false,
            "ip-masq": false,
            "storage-driver": "overlay2",
            "cgroup-parent": cgroup_parent,
            // A failed test's containers need no grace when the daemon goes.
            "shutdown-timeout": 1,
        });
        let config_path = d.join("daemon.json");
        std::fs::write(&config_path, config.to_string())?;
        let log = std::fs::File::create(d.join("dockerd.log"))?;
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut me = Self {
            child: Some(child),
            dir,
            socket,
            cgroup_parent,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = me.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                anyhow::bail!("dockerd exited ({status}): {}", me.log());
            }
            // The socket appears before the API is served; a ping tells.
            if me.socket.exists() && ping(&me.socket) {
                return Ok(me);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "dockerd did not start: {}",
                me.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The daemon's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// A runtime on this daemon whose sandboxes run `sandbox_image` with `sleep` (a busybox
    /// image) on no network.
    pub async fn runtime(&self, sandbox_image: &str) -> anyhow::Result<DockerRuntime> {
        Ok(DockerRuntime::builder()
            .socket(&self.socket)
            .sandbox_image(sandbox_image)
            .sandbox_command(["sleep", "2147483647"])
            .network("none")
            .build()
            .await?)
    }

    fn kill(&mut self) {
        kill_cgroup_tree(&self.cgroup_parent);
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // dockerd's containerd and its shims name our directory on their command lines.
        let needle = self.dir.path().to_string_lossy().into_owned();
        for _ in 0..2 {
            for pid in processes_mentioning(&needle) {
                let _ = Command::new("kill").args(["-9", &pid]).status();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&needle))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        remove_cgroup_tree(&self.cgroup_parent);
        // Fixed directories dockerd and its containerd create, unless another daemon still
        // uses them (remove_dir needs them empty).
        if processes_named("dockerd").is_empty() {
            for d in ["/run/docker/plugins", "/run/docker"] {
                let _ = std::fs::remove_dir(d);
            }
        }
        for d in ["/run/containerd/s", "/run/containerd"] {
            let _ = std::fs::remove_dir(d);
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether the Docker API answers `GET /_ping` on `socket`.
fn ping(socket: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

/// PIDs of processes whose command line contains `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|p| {
            let pid = p.file_name().to_string_lossy().into_owned();
            let cmdline = std::fs::read(p.path().join("cmdline")).ok()?;
            (pid != me && String::from_utf8_lossy(&cmdline).contains(needle)).then_some(pid)
        })
        .collect()
}

/// PIDs of processes named `name`.
fn processes_named(name: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|p| {
            let comm = std::fs::read_to_string(p.path().join("comm")).ok()?;
            (comm.trim() == name).then(|| p.file_name().to_string_lossy().into_owned())
        })
        .collect()
}
