//! What the listeners share (the zone, upstream), and the TCP listener; UDP is in `udp`.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::answer::{self, Outcome, Request, Transport};
use super::upstream;
use super::zone::Zone;

/// How long a TCP connection may sit idle between queries (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

/// What every listener task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) zone: Arc<RwLock<Zone>>,
    pub(crate) upstream: Vec<SocketAddr>,
    pub(crate) upstream_timeout: Duration,
}

impl Shared {
    /// Whether names outside our zones are forwarded (else refused).
    pub(crate) fn recursion(&self) -> bool {
        !self.upstream.is_empty()
    }

    /// Answers `packet` from the zone into `out` (under the read lock, which is never held
    /// across an await).
    fn answer(&self, packet: &[u8], transport: Transport, out: &mut Vec<u8>) -> Outcome {
        let zone = self.zone.read().unwrap_or_else(|p| p.into_inner());
        answer::handle(&zone, packet, transport, self.recursion(), out)
    }

    /// Completes what the zone could not answer alone: forwarding, or following an
    /// ExternalName. `false`: nothing to send.
    pub(crate) async fn complete(
        &self,
        outcome: Outcome,
        packet: &[u8],
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> bool {
        match outcome {
            Outcome::Reply => true,
            Outcome::Drop => false,
            Outcome::Forward(request) => {
                match upstream::forward(&self.upstream, packet, transport, self.upstream_timeout)
                    .await
                {
                    Some(reply) => {
                        out.clear();
                        out.extend_from_slice(&reply);
                    }
                    None => self.fail(&request, out),
                }
                true
            }
            Outcome::Chase(request, cname) => {
                let target = match &cname.data {
                    hickory_proto::rr::RData::CNAME(target) => Some(target.0.clone()),
                    _ => None,
                };
                let qtype = request.query().query_type();
                let looked_up = match target {
                    Some(target) => {
                        upstream::lookup(&self.upstream, &target, qtype, self.upstream_timeout)
                            .await
                    }
                    None => None,
                };
                answer::chased(&request, &cname, looked_up.as_ref(), out);
                true
            }
        }
    }

    fn fail(&self, request: &Request, out: &mut Vec<u8>) {
        answer::code(request, ResponseCode::ServFail, self.recursion(), out);
    }
}

/// Accepts TCP connections until `shutdown`, each answered on a task of its own.
pub(crate) async fn tcp(shared: Arc<Shared>, listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "dns accept failed");
                    // Out of descriptors, most likely: let some close.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = connection(&shared, stream) => {}
            }
        });
    }
}

/// Length-prefixed queries, one after another, until the client closes or idles.
async fn connection(shared: &Shared, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut packet = Vec::new();
    let mut out = Vec::new();
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            _ => return,
        };
        packet.resize(len, 0);
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut packet)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let outcome = shared.answer(&packet, Transport::Tcp, &mut out);
        if !shared
            .complete(outcome, &packet, Transport::Tcp, &mut out)
            .await
        {
            continue;
        }
        let Ok(len) = u16::try_from(out.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(out.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&out);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}
