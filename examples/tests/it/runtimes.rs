//! The quickstart's cluster on Docker and on containerd, as a user drives it: `kubectl create
//! deployment web --image=hello-httpd:1` names no command, so the pod runs the image's
//! Entrypoint (busybox `httpd` on 8080), pulled by the runtime from a real registry on
//! loopback (`scripts/local-registry.sh`) through the runtime's own mirror for `docker.io`.
//! Each test starts a private daemon of its own under a temporary directory; dropping it
//! kills and removes what the daemon leaves on the host (its shims, containers, mounts,
//! cgroups, bridge).
//!
//! Needs root, kubectl, Debian's docker-registry, umoci, skopeo and busybox-static, and
//! `dockerd` and `/usr/bin/docker` (resp. `containerd`, `ctr` and the CNI plugins); without
//! them a test skips, except under `CI=true` where it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use examples::cluster::{ClusterConfig, ImageOptions, LocalCluster, RuntimeKind, StoreKind};
use kube_core::runtime::Runtime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::kubectl::{Kubectl, kubectl_binary};

/// What the hello-httpd image's Entrypoint serves.
const HELLO: &str = "hello from an image's entrypoint";

/// Whether everything in `tools` (commands on `PATH` or absolute paths) is here and we are
/// root; if not, `false` to skip, or a failure under `CI=true`.
fn require(tools: &[&str]) -> bool {
    let on_path = |tool: &str| {
        if tool.starts_with('/') {
            return Path::new(tool).exists();
        }
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
    };
    let mut missing: Vec<&str> = tools.iter().copied().filter(|t| !on_path(t)).collect();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root");
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: this test needs {}",
        missing.join(", ")
    );
    eprintln!("skipping: needs {}", missing.join(", "));
    false
}

/// The tools `scripts/local-registry.sh` runs.
const REGISTRY_TOOLS: [&str; 4] = ["docker-registry", "umoci", "skopeo", "/bin/busybox"];

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The loopback registry of `scripts/local-registry.sh`: `docker.io/library/busybox:latest`,
/// `:1.36` and `hello-httpd:1`. Stopped on drop.
struct Registry {
    dir: tempfile::TempDir,
    host: String,
}

impl Registry {
    fn start(port: u16) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kp-registry-")
            .tempdir()
            .unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/local-registry.sh");
        let host = run(Command::new(script)
            .arg("start")
            .arg(dir.path())
            .arg(port.to_string()))
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
        Self { dir, host }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/local-registry.sh");
        let _ = Command::new(script)
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// A bridge of our own on the host, for the daemon's pods (removed with the daemon).
fn add_bridge(name: &str, gateway_cidr: &str) {
    let _ = Command::new("ip").args(["link", "del", name]).output();
    run(Command::new("ip").args(["link", "add", name, "type", "bridge"]));
    run(Command::new("ip").args(["addr", "add", gateway_cidr, "dev", name]));
    run(Command::new("ip").args(["link", "set", name, "up"]));
}

/// A private dockerd or containerd: config, socket, state under a temporary directory.
/// Dropping it stops the daemon, then kills and removes what it leaves.
struct Daemon {
    child: Option<Child>,
    dir: tempfile::TempDir,
    socket: PathBuf,
    log: PathBuf,
    bridge: String,
    /// Cgroups below which the daemon puts every container (dockerd's `cgroup-parent`).
    cgroup_parent: Option<String>,
}

impl Daemon {
    fn spawn(
        program: &str,
        config_flag: &str,
        config: &Path,
        dir: tempfile::TempDir,
        socket: PathBuf,
        bridge: &str,
        cgroup_parent: Option<String>,
    ) -> Self {
        let log = dir.path().join(format!("{program}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .arg(config_flag)
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        Self {
            child: Some(child),
            dir,
            socket,
            log,
            bridge: bridge.to_string(),
            cgroup_parent,
        }
    }

    /// The daemon's log, for failure messages.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `ready` says the daemon answers.
    fn wait_ready(&mut self, what: &str, ready: impl Fn(&Path) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("{what} exited ({status}): {}", self.log());
            }
            if self.socket.exists() && ready(&self.socket) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A dockerd pulling `docker.io` through `mirror` (plain HTTP), its pods on `bridge`
    /// (created here with `gateway_cidr`), no iptables, every container under a cgroup parent
    /// of its own.
    fn dockerd(mirror: &str, bridge: &str, gateway_cidr: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kp-dockerd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        add_bridge(bridge, gateway_cidr);
        let socket = d.join("docker.sock");
        let cgroup_parent = format!("/kube-parts-docker-{}", std::process::id());
        let config = serde_json::json!({
            "data-root": d.join("root"),
            "exec-root": d.join("exec"),
            "pidfile": d.join("docker.pid"),
            "hosts": [format!("unix://{}", socket.display())],
            "registry-mirrors": [format!("http://{mirror}")],
            "insecure-registries": [mirror],
            "bridge": bridge,
            "iptables": false,
            "ip-forward": false,
            "ip-masq": false,
            "storage-driver": "overlay2",
            "cgroup-parent": cgroup_parent,
            "shutdown-timeout": 1,
        });
        let path = d.join("daemon.json");
        std::fs::write(&path, config.to_string()).unwrap();
        let mut me = Self::spawn(
            "dockerd",
            "--config-file",
            &path,
            dir,
            socket,
            bridge,
            Some(cgroup_parent),
        );
        me.wait_ready("dockerd", docker_ping);
        me
    }

    /// The Docker CLI against this daemon.
    fn docker(&self, args: &[&str]) -> String {
        run(Command::new("/usr/bin/docker")
            .args(args)
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display())))
    }

    /// A containerd pulling `docker.io` through `mirror` (a `config_path` hosts directory),
    /// its pods on a CNI bridge network `bridge` in `subnet`, and a sandbox image of busybox
    /// running `sleep` imported (there is no pause image in the registry).
    fn containerd(mirror: &str, bridge: &str, subnet: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kp-containerd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let certs = d.join("certs.d");
        std::fs::create_dir_all(certs.join("docker.io")).unwrap();
        std::fs::write(
            certs.join("docker.io/hosts.toml"),
            format!(
                "server = \"https://registry-1.docker.io\"\n\n[host.\"http://{mirror}\"]\n  \
                 capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n"
            ),
        )
        .unwrap();
        let cni = d.join("cni");
        std::fs::create_dir_all(&cni).unwrap();
        std::fs::write(
            cni.join("10-kube-parts.conflist"),
            serde_json::json!({
                "cniVersion": "0.4.0",
                "name": bridge,
                "plugins": [{
                    "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                             "dataDir": d.join("ipam")}
                }, {"type": "loopback"}]
            })
            .to_string(),
        )
        .unwrap();
        let socket = d.join("containerd.sock");
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
  # The pods' network namespaces under our directory: unmounted with it.
  netns_mounts_under_state_dir = true
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
            cni = cni.display(),
            certs = certs.display(),
        );
        let path = d.join("config.toml");
        std::fs::write(&path, config).unwrap();
        let mut me = Self::spawn("containerd", "--config", &path, dir, socket, bridge, None);
        me.wait_ready("containerd", |_| true);
        me.import_pause_image();
        me
    }

    fn import_pause_image(&self) {
        use kube_node::image::{ArchiveImage, HOST_BUSYBOX, busybox_rootfs, oci_archive};
        let d = self.dir.path();
        let rootfs = busybox_rootfs(&d.join("busybox"), Path::new(HOST_BUSYBOX)).unwrap();
        let archive = d.join("pause.tar");
        oci_archive(
            &rootfs,
            &[ArchiveImage {
                name: PAUSE_IMAGE.into(),
                cmd: vec!["sleep".into(), "2147483647".into()],
            }],
            &archive,
        )
        .unwrap();
        run(Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&archive));
    }

    fn kill(&mut self) {
        let needle = self.dir.path().to_string_lossy().into_owned();
        // containerd's tasks (by id), whose runc state and cgroups outlive a killed shim.
        let tasks: Vec<String> = std::fs::read_dir(
            self.dir
                .path()
                .join("state/io.containerd.runtime.v2.task/k8s.io"),
        )
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // The daemon's shims (and dockerd's containerd) name our directory on their command
        // lines; the containers' first processes are the shims' children, and killing them
        // ends every process of their PID namespaces.
        let mut sockets = Vec::new();
        for _ in 0..2 {
            let ours = processes_mentioning(&needle);
            sockets.extend(shim_sockets(&ours));
            for pid in children_of(&ours).iter().chain(&ours) {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for socket in sockets {
            let _ = std::fs::remove_file(socket);
        }
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut mounted: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&needle))
            .collect();
        mounted.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounted {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
        if let Some(parent) = &self.cgroup_parent {
            remove_cgroups(parent);
        }
        for id in &tasks {
            // containerd's default cgroups path for CRI containers with no cgroup parent.
            remove_cgroups(&format!("k8s.io/{id}"));
            let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc/k8s.io").join(id));
        }
        // Their parent, unless another containerd's containers are in it.
        remove_cgroups_if_empty("k8s.io");
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        // Fixed directories the daemons create, unless another one still uses them
        // (remove_dir needs them empty).
        for d in [
            "/run/containerd/runc/k8s.io",
            "/run/containerd/runc",
            "/run/containerd/s",
            "/run/containerd",
            "/run/docker/plugins",
            "/run/docker",
        ] {
            let _ = std::fs::remove_dir(d);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Removes every pod sandbox of `runtime` (and so their containers, network namespaces and
/// IPs), as a clean end of a test: the node agent leaves its pods running when it stops, as
/// the kubelet does.
async fn remove_sandboxes(runtime: &dyn Runtime) {
    for s in runtime.list_pod_sandboxes().await.unwrap() {
        runtime.stop_pod_sandbox(&s.id).await.unwrap();
        runtime.remove_pod_sandbox(&s.id).await.unwrap();
    }
}

/// The sandbox image of the containerd test (imported, never pulled).
const PAUSE_IMAGE: &str = "kube-parts.test/pause:1";

/// Whether the Docker API answers `GET /_ping` on `socket`.
fn docker_ping(socket: &Path) -> bool {
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

/// PIDs of processes (not this one) whose command line contains `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    proc_entries()
        .filter_map(|(pid, dir)| {
            let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
            (pid != me && String::from_utf8_lossy(&cmdline).contains(needle)).then_some(pid)
        })
        .collect()
}

/// The sockets of the containerd shims among `pids`, which a killed shim leaves behind:
/// containerd 1.6 names them `/run/containerd/s/<sha256 of ADDRESS/NAMESPACE/ID>`.
fn shim_sockets(pids: &[String]) -> Vec<PathBuf> {
    pids.iter()
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if !args.first()?.contains("containerd-shim") {
                return None;
            }
            let flag = |name: &str| {
                let i = args.iter().position(|a| a == name)?;
                args.get(i + 1).cloned()
            };
            let key = format!(
                "{}/{}/{}",
                flag("-address")?,
                flag("-namespace")?,
                flag("-id")?
            );
            let out = Command::new("sh")
                .args(["-c", "printf %s \"$1\" | sha256sum", "sh", &key])
                .output()
                .ok()?;
            let digest = String::from_utf8_lossy(&out.stdout);
            Some(Path::new("/run/containerd/s").join(digest.split_whitespace().next()?))
        })
        .collect()
}

/// PIDs of the children of `parents`.
fn children_of(parents: &[String]) -> Vec<String> {
    proc_entries()
        .filter_map(|(pid, dir)| {
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            // `pid (comm) state ppid ...`: comm may hold spaces, so split after its `)`.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            parents.iter().any(|p| p == ppid).then_some(pid)
        })
        .collect()
}

fn proc_entries() -> impl Iterator<Item = (String, PathBuf)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(pid, _)| pid.bytes().all(|b| b.is_ascii_digit()))
}

/// Kills what still runs in `path` and below (in the memory hierarchy, which every
/// container joins) and removes those cgroups in every hierarchy.
fn remove_cgroups(path: &str) {
    fn pids(dir: &Path, out: &mut Vec<String>) {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(procs.lines().map(str::to_string));
        }
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                pids(&e.path(), out);
            }
        }
    }
    fn rm(dir: &Path) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rm(&e.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    let path = path.trim_start_matches('/');
    for _ in 0..50 {
        let mut left = Vec::new();
        pids(&Path::new("/sys/fs/cgroup/memory").join(path), &mut left);
        if left.is_empty() {
            break;
        }
        for pid in left {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        rm(&h.path().join(path));
    }
}

/// Removes `path` in every hierarchy if nothing is in it.
fn remove_cgroups_if_empty(path: &str) {
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = std::fs::remove_dir(h.path().join(path));
    }
}

async fn http_get(addr: &str) -> std::io::Result<String> {
    let mut stream =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await??;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
        .await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response)).await??;
    Ok(response)
}

/// The quickstart's cluster with one node on `runtime`; a kubectl for it once the node is
/// Ready.
async fn cluster(
    binary: PathBuf,
    dir: &Path,
    listen: &str,
    runtime: RuntimeKind,
    images: ImageOptions,
    pod_network_base: usize,
) -> (LocalCluster, Kubectl) {
    let cluster = LocalCluster::start(ClusterConfig {
        listen: listen.parse().unwrap(),
        data_dir: dir.to_path_buf(),
        nodes: 1,
        runtime,
        store: StoreKind::Memory,
        pod_network_base,
        images,
        ..ClusterConfig::default()
    })
    .await
    .unwrap();
    let k = Kubectl {
        binary,
        kubeconfig: cluster.kubeconfig.clone(),
    };
    k.wait_for("the node Ready", &["get", "nodes"], |out| {
        out.contains(" Ready ")
    })
    .await;
    (cluster, k)
}

/// `kubectl create deployment web --image=hello-httpd:1`, no command: the pod runs the
/// image's Entrypoint, pulled by the runtime, and serves at its pod IP (in `subnet_prefix`)
/// and inside the pod. `logs` is the runtime's log, for failure messages.
async fn web_runs_the_image_entrypoint(
    k: &Kubectl,
    subnet_prefix: &str,
    logs: impl Fn() -> String,
) {
    let out = k
        .run(&["create", "deployment", "web", "--image=hello-httpd:1"])
        .await;
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let rollout = k
        .command(&["rollout", "status", "deployment/web", "--timeout=120s"])
        .output()
        .await
        .unwrap();
    if !rollout.status.success() {
        let pods = k.run(&["describe", "pods", "-l", "app=web"]).await;
        panic!(
            "rollout: {}{}\n{pods}\nruntime log:\n{}",
            String::from_utf8_lossy(&rollout.stdout),
            String::from_utf8_lossy(&rollout.stderr),
            logs()
        );
    }
    let pod = k
        .run(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].spec.containers[0].command}|{.items[0].status.podIP}",
        ])
        .await;
    let (command, ip) = pod.split_once('|').unwrap();
    assert_eq!(command, "", "the pod names no command: {pod}");
    assert!(ip.starts_with(subnet_prefix), "the pod's own IP: {pod}");

    // The Entrypoint serves at the pod's IP, from the host.
    let addr = format!("{ip}:8080");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match http_get(&addr).await {
            Ok(response) if response.contains(HELLO) => break,
            other => assert!(Instant::now() < deadline, "GET http://{addr}/: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And inside the pod (busybox's wget needs glibc's NSS: nc does not).
    let inside = k
        .run(&[
            "exec",
            "deploy/web",
            "--",
            "sh",
            "-c",
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 8080",
        ])
        .await;
    assert!(inside.contains(HELLO), "{inside}");

    // The runtime pulled the image (tagged, not present: IfNotPresent pulls it).
    let events = k
        .run(&[
            "get",
            "events",
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ])
        .await;
    assert!(
        events
            .lines()
            .any(|l| l.starts_with("Pulled: Successfully pulled image \"hello-httpd:1\"")),
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtimes_docker_runs_an_image_entrypoint_through_the_quickstart() {
    let Some(binary) = kubectl_binary() else {
        return;
    };
    if !require(&[&REGISTRY_TOOLS[..], &["dockerd", "/usr/bin/docker"]].concat()) {
        return;
    }
    let registry = Registry::start(5061);
    let dockerd = Daemon::dockerd(&registry.host, "kpd31", "10.231.0.1/24");
    // Stands in for the pause image a machine on the internet pulls from registry.k8s.io
    // (only docker.io is mirrored): busybox, from the mirror, sleeping.
    dockerd.docker(&["pull", "busybox:latest"]);
    dockerd.docker(&["create", "--name", "pause-src", "busybox:latest"]);
    dockerd.docker(&[
        "commit",
        "--change",
        r#"ENTRYPOINT ["sleep", "2147483647"]"#,
        "--change",
        "CMD []",
        "pause-src",
        kube_node::DEFAULT_SANDBOX_IMAGE,
    ]);
    dockerd.docker(&["rm", "pause-src"]);
    let dir = tempfile::tempdir().unwrap();
    let images = ImageOptions {
        docker_socket: Some(dockerd.socket.clone()),
        ..ImageOptions::default()
    };
    let (cluster, k) = cluster(
        binary,
        dir.path(),
        "127.0.0.31:0",
        RuntimeKind::Docker,
        images,
        31,
    )
    .await;
    web_runs_the_image_entrypoint(&k, "10.231.0.", || dockerd.log()).await;
    let images = dockerd.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.contains("hello-httpd:1"), "{images}");
    cluster.shutdown().await.unwrap();
    let runtime = kube_node::DockerRuntime::builder()
        .socket(&dockerd.socket)
        .build()
        .await
        .unwrap();
    remove_sandboxes(&runtime).await;
    drop(dockerd);
    drop(registry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtimes_containerd_runs_an_image_entrypoint_through_the_quickstart() {
    let Some(binary) = kubectl_binary() else {
        return;
    };
    let cni = [
        "/usr/lib/cni/bridge",
        "/usr/lib/cni/host-local",
        "/usr/lib/cni/loopback",
    ];
    if !require(&[&REGISTRY_TOOLS[..], &["containerd", "ctr"], &cni[..]].concat()) {
        return;
    }
    let registry = Registry::start(5062);
    let containerd = Daemon::containerd(&registry.host, "kpc32", "10.232.0.0/24");
    let dir = tempfile::tempdir().unwrap();
    let images = ImageOptions {
        cri_socket: Some(containerd.socket.clone()),
        ..ImageOptions::default()
    };
    let (cluster, k) = cluster(
        binary,
        dir.path(),
        "127.0.0.32:0",
        RuntimeKind::Cri,
        images,
        32,
    )
    .await;
    web_runs_the_image_entrypoint(&k, "10.232.0.", || containerd.log()).await;
    let images = run(Command::new("ctr")
        .arg("-a")
        .arg(&containerd.socket)
        .args(["-n", "k8s.io", "images", "ls", "-q"]));
    assert!(
        images.contains("docker.io/library/hello-httpd:1"),
        "{images}"
    );
    cluster.shutdown().await.unwrap();
    let runtime = kube_node::CriRuntime::connect(&containerd.socket, dir.path().join("cri-logs"))
        .await
        .unwrap();
    remove_sandboxes(&runtime).await;
    drop(containerd);
    drop(registry);
}
