//! TCP frontends: accept, pick an endpoint (trying the next one when refused), relay.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::frontend::Frontend;
use super::splice::{PipePool, RelayMode, relay};

/// What a connection needs from the proxy's configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TcpSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) relay: RelayMode,
}

/// Accepts on `listener` until `stop`; each connection runs on `tasks`.
pub(crate) async fn serve(
    listener: TcpListener,
    frontend: Arc<Frontend>,
    stop: CancellationToken,
    tasks: TaskTracker,
    settings: TcpSettings,
    pipes: Arc<PipePool>,
) {
    // One cancellation future for the listener's life, not one per accepted connection.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut stopped => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => {
                tasks.spawn(connection(
                    client,
                    peer,
                    frontend.clone(),
                    settings,
                    pipes.clone(),
                ));
            }
            Err(e) => {
                // Typically EMFILE: back off a little instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Connects with Nagle off: small request/response traffic must not wait. (The client side
/// inherits TCP_NODELAY from the listener.)
///
/// A non-blocking `socket`, `setsockopt` and `connect`, and a registration; an outcome not
/// known at once is read from the readiness the kernel reports (an error flag when refused),
/// without the `getsockopt(SO_ERROR)` a generic connect makes on success.
async fn connect(endpoint: SocketAddr) -> io::Result<TcpStream> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrStorage, connect, setsockopt, socket, sockopt,
    };
    let family = if endpoint.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
    let addr = SockaddrStorage::from(endpoint);
    match connect(fd.as_raw_fd(), &addr) {
        Ok(()) => return TcpStream::from_std(std::net::TcpStream::from(fd)),
        Err(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    // To a local endpoint (another process on this node, a pod behind a veth) the handshake
    // has usually completed inside `connect`: asking again says so at once, and the
    // connection goes on in this same poll, with no readiness round and no timer armed.
    match connect(fd.as_raw_fd(), &addr) {
        Ok(()) | Err(nix::errno::Errno::EISCONN) => {
            return TcpStream::from_std(std::net::TcpStream::from(fd));
        }
        Err(nix::errno::Errno::EALREADY | nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(fd))?;
    let ready = stream.ready(Interest::WRITABLE | Interest::ERROR).await?;
    if ready.is_error() || ready.is_write_closed() {
        // Refused or unreachable: only now ask for the reason.
        return Err(stream
            .take_error()?
            .unwrap_or_else(|| io::ErrorKind::ConnectionRefused.into()));
    }
    Ok(stream)
}

async fn connection(
    mut client: TcpStream,
    peer: SocketAddr,
    frontend: Arc<Frontend>,
    settings: TcpSettings,
    pipes: Arc<PipePool>,
) {
    let mut refused = Vec::new();
    let (mut backend, drained) = loop {
        let Some((endpoint, drained)) = frontend.pick(peer.ip(), &refused) else {
            tracing::debug!(%peer, ?refused, "no endpoint for connection; closing it");
            return;
        };
        match tokio::time::timeout(settings.connect_timeout, connect(endpoint)).await {
            Ok(Ok(stream)) => break (stream, drained),
            Ok(Err(e)) => {
                tracing::debug!(%endpoint, error = %e, "endpoint refused; trying another")
            }
            Err(_) => tracing::debug!(%endpoint, "connect timed out; trying another"),
        }
        refused.push(endpoint);
    };
    tokio::select! {
        () = drained.cancelled() => tracing::debug!(%peer, "endpoint drained; connection cut"),
        result = relay(&mut client, &mut backend, settings.relay, &pipes) => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
    }
}
