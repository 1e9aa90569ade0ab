//! Real etcd members for tests, on loopback ports, killed when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn etcd_binary() -> &'static str {
    if Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        panic!(
            "etcd is not installed: these tests run a real etcd (Debian package etcd-server; scripts/test.sh installs it)"
        );
    }
    "etcd"
}

/// One etcd member's process and addresses.
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) client_url: String,
    child: Option<Child>,
}

impl Member {
    /// Kills the member with SIGKILL.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running etcd cluster (1 or 3 members) in a temporary directory.
pub(crate) struct EtcdCluster {
    pub(crate) members: Vec<Member>,
    _dir: TempDir,
}

impl EtcdCluster {
    pub(crate) fn single() -> Self {
        Self::start(1)
    }

    pub(crate) fn start(size: usize) -> Self {
        let binary = etcd_binary();
        let dir = tempfile::tempdir().unwrap();
        let peers: Vec<(String, u16, u16)> = (0..size)
            .map(|i| (format!("m{i}"), free_port(), free_port()))
            .collect();
        let initial = peers
            .iter()
            .map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (name, client, peer) in &peers {
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
            let child = Command::new(binary)
                .args(["--name", name])
                .arg("--data-dir")
                .arg(dir.path().join(name))
                .args([
                    "--listen-client-urls",
                    &client_url,
                    "--advertise-client-urls",
                    &client_url,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                ])
                .args([
                    "--initial-cluster",
                    &initial,
                    "--initial-cluster-state",
                    "new",
                ])
                .args(["--heartbeat-interval=10", "--election-timeout=100"])
                .arg("--experimental-watch-progress-notify-interval=500ms")
                .args(["--logger=zap", "--log-level=error"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start etcd");
            members.push(Member {
                name: name.clone(),
                client_url,
                child: Some(child),
            });
        }
        let cluster = Self { members, _dir: dir };
        cluster.wait_healthy(Duration::from_secs(20));
        cluster
    }

    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client_url.clone())
            .collect()
    }

    fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for member in &self.members {
            let addr = member.client_url.trim_start_matches("http://").to_string();
            loop {
                let healthy = std::net::TcpStream::connect(&addr).is_ok_and(|mut s| {
                    use std::io::{Read, Write};
                    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                    let request = format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n");
                    let mut body = String::new();
                    s.write_all(request.as_bytes()).is_ok()
                        && s.read_to_string(&mut body).is_ok()
                        && body.contains("\"health\":\"true\"")
                });
                if healthy {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd member {} did not become healthy",
                    member.name
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
