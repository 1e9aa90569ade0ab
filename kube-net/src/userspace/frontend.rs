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
    /// One lock for what a new connection needs: picking costs one uncontended lock.
    inner: Mutex<Inner>,
    /// Cancelled when the whole proxy shuts down; parent of every drain token.
    root: CancellationToken,
    drain_timeout: Duration,
    /// Where drain timers run, so shutdown can wait for them.
    tasks: TaskTracker,
}

#[derive(Debug)]
struct Inner {
    balancer: Balancer,
    /// Per endpoint: cancelled to cut its connections, `drain_timeout` after it went away.
    drains: HashMap<SocketAddr, CancellationToken>,
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
            inner: Mutex::new(Inner {
                balancer: Balancer::new(endpoints, affinity),
                drains: HashMap::new(),
            }),
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
        let mut inner = lock(&self.inner);
        let endpoint = inner.balancer.pick(client, exclude, Instant::now())?;
        let token = inner
            .drains
            .entry(endpoint)
            .or_insert_with(|| self.root.child_token())
            .clone();
        Some((endpoint, token))
    }

    /// New endpoints and affinity; connections to endpoints that went away are drained.
    pub(crate) fn update(&self, endpoints: Vec<SocketAddr>, affinity: Option<Duration>) {
        let mut inner = lock(&self.inner);
        let mut gone = Vec::new();
        inner.drains.retain(|endpoint, token| {
            let keep = endpoints.contains(endpoint);
            if !keep {
                gone.push(token.clone());
            }
            keep
        });
        inner.balancer.update(endpoints, affinity);
        drop(inner);
        for token in gone {
            self.drain(token);
        }
    }

    /// The frontend is going away: drain every endpoint's connections.
    pub(crate) fn close(&self) {
        self.update(Vec::new(), None);
    }

    /// Existing connections to an endpoint that went away (cut by `token`) keep going for the
    /// drain timeout, then are cut. New ones no longer go there (the balancer has forgotten it).
    fn drain(&self, token: CancellationToken) {
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
        lock(&self.inner).balancer.endpoints().to_vec()
    }
}
