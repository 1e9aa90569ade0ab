//! Names outside the cluster: the upstream servers (by default the host's resolv.conf
//! nameservers) answer them, over the transport the client used.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::answer::{MAX_UDP_PAYLOAD, Transport};

/// The `nameserver` lines of a resolv.conf, on port 53.
pub(crate) fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // A scoped IPv6 address (`fe80::1%eth0`) cannot be used without its interface.
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// The host's nameservers, from `/etc/resolv.conf` (none if it cannot be read).
pub(crate) fn host_nameservers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|text| nameservers(&text))
        .unwrap_or_default()
}

/// Asks each of `upstreams` in turn until one answers `packet` (a query), each within
/// `timeout`; the answer carries the query's id. `None`: none answered.
pub(crate) async fn forward(
    upstreams: &[SocketAddr],
    packet: &[u8],
    transport: Transport,
    timeout: Duration,
) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let asked = match transport {
            Transport::Udp => tokio::time::timeout(timeout, ask_udp(*upstream, packet)).await,
            Transport::Tcp => tokio::time::timeout(timeout, ask_tcp(*upstream, packet)).await,
        };
        match asked {
            Ok(Ok(answer)) if answers(packet, &answer) => return Some(answer),
            Ok(Ok(_)) => tracing::debug!(%upstream, "upstream answered another query"),
            Ok(Err(e)) => tracing::debug!(%upstream, error = %e, "upstream failed"),
            Err(_) => tracing::debug!(%upstream, "upstream timed out"),
        }
    }
    None
}

/// Asks upstream for `name`'s `qtype` records (to follow an ExternalName's CNAME).
pub(crate) async fn lookup(
    upstreams: &[SocketAddr],
    name: &Name,
    qtype: RecordType,
    timeout: Duration,
) -> Option<Message> {
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(name.clone(), qtype));
    let packet = query.to_vec().ok()?;
    let answer = forward(upstreams, &packet, Transport::Udp, timeout).await?;
    Message::from_vec(&answer).ok()
}

/// Whether `answer` is a response with the id of `query`.
fn answers(query: &[u8], answer: &[u8]) -> bool {
    answer.len() >= 12 && query.get(..2) == answer.get(..2) && answer[2] & 0x80 != 0
}

async fn ask_udp(upstream: SocketAddr, packet: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    // A fresh socket per query: a random source port, and only the upstream can answer it.
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(packet).await?;
    let mut buf = vec![0u8; usize::from(MAX_UDP_PAYLOAD)];
    loop {
        let n = socket.recv(&mut buf).await?;
        if answers(packet, &buf[..n]) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn ask_tcp(upstream: SocketAddr, packet: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(packet.len())
        .map_err(|_| std::io::Error::other("query longer than 65535 bytes"))?;
    let mut framed = Vec::with_capacity(packet.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(packet);
    stream.write_all(&framed).await?;
    let len = stream.read_u16().await?;
    let mut answer = vec![0u8; usize::from(len)];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nameserver_lines() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.2\nnameserver fd00::53\n\
                    nameserver fe80::1%eth0\noptions ndots:5\n";
        assert_eq!(
            nameservers(text),
            vec![
                "10.0.0.2:53".parse::<SocketAddr>().expect("addr"),
                "[fd00::53]:53".parse().expect("addr"),
            ]
        );
    }
}
