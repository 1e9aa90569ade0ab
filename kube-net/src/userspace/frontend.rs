//! A frontend: one address a service is reachable at (ClusterIP:port or node:NodePort), the
//! endpoints behind it, and the drain tokens of those endpoints' connections.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::select::Balancer;

/// Shared by a frontend's listener task and its connections.
#[derive(Debug)]
pub(crate) struct Frontend {
    balancer: Mutex<Balancer>,
    /// Per endpoint: cancelled to cut its connections, `drain_timeout` after it went away.
    drains: Mutex<HashMap<SocketAddr, CancellationToken>>,
    /// Cancelled when the whole proxy shuts down; parent of every drain token.
    root: CancellationToken,
    drain_timeout: Duration,
    /// Where drain timers run, so shutdown can wait for them.
    tasks: TaskTracker,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves consistent-enough data (plain maps).
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Frontend {
    pub(crate) fn new(
        endpoints: Vec<SocketAddr>,
        affinity: Option<Duration>,
        root: CancellationToken,
        drain_timeout: Duration,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            balancer: Mutex::new(Balancer::new(endpoints, affinity)),
            drains: Mutex::new(HashMap::new()),
            root,
            drain_timeout,
            tasks,
        }
    }

    /// Picks an endpoint for a new connection or flow from `client`, with the token that cuts it
    /// when the endpoint has been gone for longer than the drain timeout.
    pub(crate) fn pick(
        &self,
        client: IpAddr,
        exclude: &[SocketAddr],
    ) -> Option<(SocketAddr, CancellationToken)> {
        let endpoint = lock(&self.balancer).pick(client, exclude, Instant::now())?;
        let token = lock(&self.drains)
            .entry(endpoint)
            .or_insert_with(|| self.root.child_token())
            .clone();
        Some((endpoint, token))
    }

    /// New endpoints and affinity; connections to endpoints that went away are drained.
    pub(crate) fn update(&self, endpoints: Vec<SocketAddr>, affinity: Option<Duration>) {
        let mut balancer = lock(&self.balancer);
        let gone: Vec<SocketAddr> = lock(&self.drains)
            .keys()
            .filter(|e| !endpoints.contains(e))
            .copied()
            .collect();
        balancer.update(endpoints, affinity);
        drop(balancer);
        for endpoint in gone {
            self.drain(endpoint);
        }
    }

    /// The frontend is going away: drain every endpoint's connections.
    pub(crate) fn close(&self) {
        self.update(Vec::new(), None);
    }

    /// Existing connections to `endpoint` keep going for the drain timeout, then are cut. New
    /// ones no longer go there (the balancer has forgotten it).
    fn drain(&self, endpoint: SocketAddr) {
        let Some(token) = lock(&self.drains).remove(&endpoint) else {
            return;
        };
        let timeout = self.drain_timeout;
        let root = self.root.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(timeout) => token.cancel(),
                // Shutdown cuts everything anyway (the token is the root's child).
                () = root.cancelled() => {}
            }
        });
    }

    pub(crate) fn endpoints(&self) -> Vec<SocketAddr> {
        lock(&self.balancer).endpoints().to_vec()
    }
}
