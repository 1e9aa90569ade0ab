//! UDP frontends: one flow per client address, each with its own connected socket towards the
//! endpoint it was given, closed after an idle timeout.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::frontend::Frontend;

const MAX_DATAGRAM: usize = 65_536;

#[derive(Debug)]
struct Flow {
    socket: UdpSocket,
    /// Milliseconds since `epoch` of the last datagram either way.
    last: AtomicU64,
}

type Flows = Arc<Mutex<HashMap<SocketAddr, Arc<Flow>>>>;

/// Receives on `socket` until `stop`, forwarding each client's datagrams over its flow.
pub(crate) async fn serve(
    socket: UdpSocket,
    frontend: Arc<Frontend>,
    stop: CancellationToken,
    tasks: TaskTracker,
    idle: Duration,
) {
    let socket = Arc::new(socket);
    let flows: Flows = Arc::default();
    let epoch = Instant::now();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => break,
            received = socket.recv_from(&mut buf) => received,
        };
        let (n, client) = match received {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "udp receive failed");
                continue;
            }
        };
        let existing = flows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&client)
            .cloned();
        let flow = match existing {
            Some(flow) => flow,
            None => {
                let Some((endpoint, drained)) = frontend.pick(client.ip(), &[]) else {
                    continue;
                };
                let Ok(flow) = open(endpoint).await else {
                    continue;
                };
                flow.last.store(millis(epoch), Ordering::Relaxed);
                let flow = Arc::new(flow);
                flows
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(client, flow.clone());
                tasks.spawn(replies(
                    flow.clone(),
                    client,
                    socket.clone(),
                    flows.clone(),
                    FlowEnd {
                        drained,
                        stop: stop.clone(),
                        idle,
                        epoch,
                    },
                ));
                flow
            }
        };
        flow.last.store(millis(epoch), Ordering::Relaxed);
        if let Err(e) = flow.socket.send(&buf[..n]).await {
            tracing::debug!(%client, error = %e, "udp send to endpoint failed; dropping flow");
            forget(&flows, client, &flow);
        }
    }
}

async fn open(endpoint: SocketAddr) -> std::io::Result<Flow> {
    let local: SocketAddr = if endpoint.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(endpoint).await?;
    Ok(Flow {
        socket,
        last: AtomicU64::new(0),
    })
}

fn millis(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn forget(flows: &Flows, client: SocketAddr, flow: &Arc<Flow>) {
    let mut flows = flows.lock().unwrap_or_else(PoisonError::into_inner);
    // Only if it is still this flow: a new one may have replaced it.
    if flows.get(&client).is_some_and(|f| Arc::ptr_eq(f, flow)) {
        flows.remove(&client);
    }
}

struct FlowEnd {
    drained: CancellationToken,
    stop: CancellationToken,
    idle: Duration,
    epoch: Instant,
}

/// Sends the endpoint's replies back to `client` from the frontend socket (so the client sees
/// them come from the address it talked to), until the flow idles out or is cut.
async fn replies(
    flow: Arc<Flow>,
    client: SocketAddr,
    frontend: Arc<UdpSocket>,
    flows: Flows,
    end: FlowEnd,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let last = Duration::from_millis(flow.last.load(Ordering::Relaxed));
        let deadline = end.epoch + last + end.idle;
        tokio::select! {
            () = end.drained.cancelled() => break,
            () = end.stop.cancelled() => break,
            () = tokio::time::sleep_until(deadline) => {
                // The client may have sent something since the deadline was computed.
                let last = Duration::from_millis(flow.last.load(Ordering::Relaxed));
                if end.epoch + last + end.idle <= Instant::now() {
                    break;
                }
            }
            received = flow.socket.recv(&mut buf) => match received {
                Ok(n) => {
                    flow.last.store(millis(end.epoch), Ordering::Relaxed);
                    if let Err(e) = frontend.send_to(&buf[..n], client).await {
                        tracing::debug!(%client, error = %e, "udp reply failed");
                    }
                }
                Err(e) => {
                    // ECONNREFUSED from an ICMP port unreachable: the next datagram from this
                    // client opens a flow to another endpoint.
                    tracing::debug!(%client, error = %e, "endpoint unreachable; dropping flow");
                    break;
                }
            },
        }
    }
    forget(&flows, client, &flow);
}
