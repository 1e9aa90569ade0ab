//! Which endpoints a frontend may send to, and how a userspace frontend picks one per client.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use kube_core::proxy::Endpoint;

/// The endpoints traffic may go to: with a `Local` traffic policy only those on `node`; ready
/// ones, or — when none is ready — the serving-terminating ones, as Kubernetes does so that a
/// rolling update never leaves a service without backends.
pub(crate) fn usable(
    endpoints: &[Endpoint],
    local_only: bool,
    node: Option<&str>,
) -> Vec<Endpoint> {
    let allowed = |e: &&Endpoint| !local_only || (node.is_some() && e.node_name.as_deref() == node);
    let ready: Vec<Endpoint> = endpoints
        .iter()
        .filter(allowed)
        .filter(|e| !e.terminating)
        .cloned()
        .collect();
    if !ready.is_empty() {
        return ready;
    }
    endpoints
        .iter()
        .filter(allowed)
        .filter(|e| e.terminating)
        .cloned()
        .collect()
}

/// Round robin over a frontend's endpoints, with optional ClientIP affinity.
#[derive(Debug, Default)]
pub(crate) struct Balancer {
    endpoints: Vec<SocketAddr>,
    next: usize,
    affinity: Option<Duration>,
    /// Client IP → the endpoint it last used and when.
    sticky: HashMap<IpAddr, (SocketAddr, Instant)>,
}

impl Balancer {
    pub(crate) fn new(endpoints: Vec<SocketAddr>, affinity: Option<Duration>) -> Self {
        Self {
            endpoints,
            affinity,
            ..Self::default()
        }
    }

    /// Replaces the endpoints and affinity; affinities to endpoints that are gone are dropped.
    pub(crate) fn update(&mut self, endpoints: Vec<SocketAddr>, affinity: Option<Duration>) {
        self.sticky.retain(|_, (e, _)| endpoints.contains(e));
        if affinity.is_none() {
            self.sticky.clear();
        }
        self.endpoints = endpoints;
        self.affinity = affinity;
    }

    pub(crate) fn endpoints(&self) -> &[SocketAddr] {
        &self.endpoints
    }

    /// The endpoint for a new connection or flow from `client`, skipping `exclude` (endpoints
    /// that already refused it). `None` when no endpoint is left.
    pub(crate) fn pick(
        &mut self,
        client: IpAddr,
        exclude: &[SocketAddr],
        now: Instant,
    ) -> Option<SocketAddr> {
        if let Some(timeout) = self.affinity {
            if let Some((endpoint, last)) = self.sticky.get(&client).copied() {
                if now.saturating_duration_since(last) < timeout && !exclude.contains(&endpoint) {
                    // Like iptables' `recent --update`: each use restarts the timeout.
                    self.sticky.insert(client, (endpoint, now));
                    return Some(endpoint);
                }
            }
            // Bound memory: expired affinities go when the map grows.
            if self.sticky.len() > 65_536 {
                self.sticky
                    .retain(|_, (_, last)| now.saturating_duration_since(*last) < timeout);
            }
        }
        let len = self.endpoints.len();
        for i in 0..len {
            let candidate = self.endpoints[(self.next + i) % len];
            if !exclude.contains(&candidate) {
                self.next = (self.next + i + 1) % len;
                if self.affinity.is_some() {
                    self.sticky.insert(client, (candidate, now));
                }
                return Some(candidate);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(ip: &str, node: &str, terminating: bool) -> Endpoint {
        Endpoint {
            ip: ip.parse().unwrap(),
            port: 80,
            node_name: Some(node.into()),
            terminating,
        }
    }

    #[test]
    fn ready_first_then_serving_terminating_and_local_only() {
        let all = [
            ep("10.0.0.1", "a", false),
            ep("10.0.0.2", "b", true),
            ep("10.0.0.3", "b", false),
        ];
        assert_eq!(usable(&all, false, None).len(), 2);
        assert_eq!(usable(&all, true, Some("a")), vec![all[0].clone()]);
        assert_eq!(usable(&all[..2], true, Some("b")), vec![all[1].clone()]);
        assert!(usable(&all, true, None).is_empty());
    }

    #[test]
    fn round_robin_skips_excluded_and_affinity_sticks_until_timeout() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let client: IpAddr = "1.1.1.1".parse().unwrap();
        let now = Instant::now();
        let mut rr = Balancer::new(vec![a, b], None);
        assert_eq!(rr.pick(client, &[], now), Some(a));
        assert_eq!(rr.pick(client, &[], now), Some(b));
        assert_eq!(rr.pick(client, &[a], now), Some(b));
        assert_eq!(rr.pick(client, &[a, b], now), None);

        let mut sticky = Balancer::new(vec![a, b], Some(Duration::from_secs(10)));
        let first = sticky.pick(client, &[], now);
        for _ in 0..5 {
            assert_eq!(sticky.pick(client, &[], now), first);
        }
        let later = now + Duration::from_secs(11);
        assert_ne!(sticky.pick(client, &[], later), first, "expired affinity");
        sticky.update(vec![a], Some(Duration::from_secs(10)));
        assert_eq!(sticky.pick(client, &[], later), Some(a));
    }
}
