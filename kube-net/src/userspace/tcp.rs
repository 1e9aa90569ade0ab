//! TCP frontends: accept, pick an endpoint (trying the next one when refused), relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
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
async fn connect(endpoint: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if endpoint.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    socket.set_nodelay(true)?;
    socket.connect(endpoint).await
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
