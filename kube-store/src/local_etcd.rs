//! [`LocalEtcd`]: real etcd members on loopback ports, data in a temporary directory, for tests
//! and benchmarks (cargo feature `etcd`). Members are killed, and the data removed, on drop.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One etcd member's process and address.
#[derive(Debug)]
pub struct Member {
    /// Member name (`m0`, `m1`, ...).
    pub name: String,
    /// Its client URL.
    pub client_url: String,
    child: Option<Child>,
}

impl Member {
    /// Kills the member with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the member's process is still running (not killed by us).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A running etcd cluster on loopback.
#[derive(Debug)]
pub struct LocalEtcd {
    /// The members, in start order.
    pub members: Vec<Member>,
    dir: PathBuf,
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        for member in &mut self.members {
            member.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl LocalEtcd {
    /// Starts one member and waits until it is healthy.
    pub fn single() -> io::Result<Self> {
        Self::start(1)
    }

    /// Starts `size` members (fast election timers, 500 ms progress notifications) and waits
    /// until all are healthy. Fails if the `etcd` binary (Debian's `etcd-server`) is missing.
    pub fn start(size: usize) -> io::Result<Self> {
        let binary = "etcd";
        if Command::new(binary)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "etcd is not installed (Debian package etcd-server; scripts/test.sh installs it)",
            ));
        }
        let dir = std::env::temp_dir().join(format!(
            "kube-store-etcd-{}-{}",
            std::process::id(),
            free_port()?
        ));
        std::fs::create_dir_all(&dir)?;
        let mut peers = Vec::new();
        for i in 0..size {
            peers.push((format!("m{i}"), free_port()?, free_port()?));
        }
        let initial = peers
            .iter()
            .map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            members: Vec::new(),
            dir,
        };
        for (name, client, peer) in &peers {
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let log = std::fs::File::create(cluster.dir.join(format!("{name}.log")))?;
            let child = Command::new(binary)
                .args(["--name", name])
                .arg("--data-dir")
                .arg(cluster.dir.join(name))
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
                .spawn()?;
            cluster.members.push(Member {
                name: name.clone(),
                client_url,
                child: Some(child),
            });
        }
        cluster.wait_healthy(Duration::from_secs(20))?;
        Ok(cluster)
    }

    /// Client URLs of the members still running.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| m.is_running())
            .map(|m| m.client_url.clone())
            .collect()
    }

    fn healthy(addr: &str) -> bool {
        let Ok(mut stream) = TcpStream::connect(addr) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut body = String::new();
        stream
            .write_all(format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .is_ok()
            && stream.read_to_string(&mut body).is_ok()
            && body.contains("\"health\":\"true\"")
    }

    fn wait_healthy(&self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        for member in &self.members {
            let addr = member.client_url.trim_start_matches("http://");
            while !Self::healthy(addr) {
                if Instant::now() > deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "etcd member {} did not become healthy (log in {})",
                            member.name,
                            self.dir.display()
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}
