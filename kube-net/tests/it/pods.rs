//! "Pods": real processes (python3) serving on loopback addresses, and clients that ask them
//! who they are.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};
use tokio::process::{Child, Command};

/// TCP: greets each connection with its name, then echoes. UDP: answers each datagram with its
/// name. Prints `ready` once both sockets listen.
const SERVER: &str = r#"
import socket, sys, threading
name, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
# With a 4th argument "peer", each TCP connection is greeted with the client's address instead.
peer = len(sys.argv) > 4 and sys.argv[4] == "peer"
family = socket.AF_INET6 if ":" in ip else socket.AF_INET
tcp = socket.socket(family); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind((ip, port)); tcp.listen(128)
udp = socket.socket(family, socket.SOCK_DGRAM); udp.bind((ip, port))
def conn(c, a):
    try:
        c.sendall(((a[0] if peer else name) + "\n").encode())
        while True:
            d = c.recv(65536)
            if not d: break
            c.sendall(d)
    except OSError: pass
    finally: c.close()
def serve_tcp():
    while True:
        c, a = tcp.accept()
        threading.Thread(target=conn, args=(c, a), daemon=True).start()
def serve_udp():
    while True:
        d, a = udp.recvfrom(65536)
        udp.sendto(name.encode(), a)
threading.Thread(target=serve_udp, daemon=True).start()
print("ready", flush=True)
serve_tcp()
"#;

/// A backend process; killed when dropped.
pub(crate) struct Pod {
    pub(crate) name: String,
    child: Child,
}

impl Pod {
    pub(crate) async fn start(name: &str, ip: &str, port: u16) -> Pod {
        Self::start_in(None, name, ip, port).await
    }

    /// A pod inside network namespace `netns` (when given).
    pub(crate) async fn start_in(netns: Option<&str>, name: &str, ip: &str, port: u16) -> Pod {
        Self::spawn(netns, name, ip, port, &[]).await
    }

    /// A pod inside `netns` that greets each TCP connection with the client's address (what
    /// source address the endpoint sees, after any NAT).
    pub(crate) async fn start_peer_echo(netns: &str, ip: &str, port: u16) -> Pod {
        Self::spawn(Some(netns), "peer-echo", ip, port, &["peer"]).await
    }

    async fn spawn(netns: Option<&str>, name: &str, ip: &str, port: u16, extra: &[&str]) -> Pod {
        let ip: IpAddr = ip.parse().unwrap();
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "/usr/bin/python3"]);
                c
            }
            None => Command::new("/usr/bin/python3"),
        };
        let mut child = command
            .args(["-c", SERVER, name, &ip.to_string(), &port.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("pod did not start")
            .unwrap();
        assert_eq!(line.as_deref(), Some("ready"), "pod {name} failed to start");
        Pod {
            name: name.into(),
            child,
        }
    }

    pub(crate) async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// Connects to `addr` and returns the greeting (the pod's name), or an error string.
pub(crate) async fn ask(addr: SocketAddr) -> Result<String, String> {
    let attempt = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        if line.is_empty() {
            return Err("closed without greeting".to_string());
        }
        Ok(line.trim().to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// Like [`ask`], from a given local address (a distinct client IP).
pub(crate) async fn ask_from(addr: SocketAddr, from: IpAddr) -> Result<String, String> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    Ok(line.trim().to_string())
}

/// An open connection: greeted by `name`, echoes what is sent.
pub(crate) struct Session {
    pub(crate) name: String,
    reader: BufReader<TcpStream>,
}

impl Session {
    pub(crate) async fn open(addr: SocketAddr) -> Session {
        let mut reader = BufReader::new(TcpStream::connect(addr).await.unwrap());
        let mut name = String::new();
        reader.read_line(&mut name).await.unwrap();
        Session {
            name: name.trim().into(),
            reader,
        }
    }

    /// Sends a line and reads its echo; an error if the connection was cut.
    pub(crate) async fn echo(&mut self, text: &str) -> Result<(), String> {
        let line = format!("{text}\n");
        self.reader
            .get_mut()
            .write_all(line.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut back = String::new();
        let n = tokio::time::timeout(Duration::from_secs(5), self.reader.read_line(&mut back))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 || back != line {
            return Err(format!("got {back:?}"));
        }
        Ok(())
    }

    /// Waits until the proxy closes the connection.
    pub(crate) async fn closed(mut self) -> bool {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.reader.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

/// Sends one datagram from `socket` to `addr` and returns the reply (the pod's name).
pub(crate) async fn ask_udp(socket: &UdpSocket, addr: SocketAddr) -> Result<String, String> {
    let mut buf = [0u8; 256];
    for _ in 0..5 {
        socket
            .send_to(b"who", addr)
            .await
            .map_err(|e| e.to_string())?;
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await
        {
            return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    Err("no udp reply".into())
}

/// Blocking client (for threads inside a network namespace): the greeting of a TCP server.
pub(crate) fn ask_blocking(addr: SocketAddr) -> Result<String, String> {
    use std::io::BufRead;
    let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(line.trim().to_string())
}

/// Blocking client: the reply to one UDP datagram (retried a few times).
pub(crate) fn ask_udp_blocking(addr: SocketAddr) -> Result<String, String> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 256];
    for _ in 0..5 {
        socket.send_to(b"who", addr).map_err(|e| e.to_string())?;
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    Err("no udp reply".into())
}
