//! TCP frontends: accept, pick an endpoint (trying the next one when refused), relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::frontend::Frontend;
use super::splice::relay;

/// What a connection needs from the proxy's configuration.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TcpSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) zero_copy: bool,
    pub(crate) buffer: usize,
}

/// Accepts on `listener` until `stop`; each connection runs on `tasks`.
pub(crate) async fn serve(
    listener: TcpListener,
    frontend: Arc<Frontend>,
    stop: CancellationToken,
    tasks: TaskTracker,
    settings: TcpSettings,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => {
                tasks.spawn(connection(client, peer, frontend.clone(), settings));
            }
            Err(e) => {
                // Typically EMFILE: back off a little instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn connection(
    mut client: TcpStream,
    peer: SocketAddr,
    frontend: Arc<Frontend>,
    settings: TcpSettings,
) {
    let mut refused = Vec::new();
    let (mut backend, drained) = loop {
        let Some((endpoint, drained)) = frontend.pick(peer.ip(), &refused) else {
            tracing::debug!(%peer, ?refused, "no endpoint for connection; closing it");
            return;
        };
        match tokio::time::timeout(settings.connect_timeout, TcpStream::connect(endpoint)).await {
            Ok(Ok(stream)) => break (stream, drained),
            Ok(Err(e)) => {
                tracing::debug!(%endpoint, error = %e, "endpoint refused; trying another")
            }
            Err(_) => tracing::debug!(%endpoint, "connect timed out; trying another"),
        }
        refused.push(endpoint);
    };
    // Small request/response traffic must not wait for Nagle.
    let _ = client.set_nodelay(true);
    let _ = backend.set_nodelay(true);
    tokio::select! {
        () = drained.cancelled() => tracing::debug!(%peer, "endpoint drained; connection cut"),
        result = relay(&mut client, &mut backend, settings.zero_copy, settings.buffer) => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
    }
}
