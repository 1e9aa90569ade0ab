//! Where a [`NodeAgent`](crate::NodeAgent) gets the ServiceAccount tokens it writes into
//! projected volumes (`serviceAccountToken` sources): a [`TokenSource`], typically the API
//! server's TokenRequest (`POST .../serviceaccounts/{name}/token`) with the token bound to the
//! pod. kube-node does not talk to an API server itself, so the source is given to it
//! ([`NodeAgentBuilder::token_source`](crate::NodeAgentBuilder::token_source));
//! `kube_parts::remote::RemoteTokenSource` is one over a `RemoteStore`.

use std::time::{Duration, SystemTime};

use kube_core::orchestrator::BoxError;

/// What a projected `serviceAccountToken` source asks for, for one pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenRequest {
    /// The pod's namespace.
    pub namespace: String,
    /// The ServiceAccount the pod runs as (`spec.serviceAccountName`).
    pub service_account: String,
    /// The audiences asked for (`audience` of the source); empty means the API server's.
    pub audiences: Vec<String>,
    /// The lifetime asked for (`expirationSeconds`, default 3600).
    pub expiration_seconds: u64,
    /// The pod the token is bound to: its name.
    pub pod_name: String,
    /// The pod the token is bound to: its UID.
    pub pod_uid: String,
}

/// A token and when it stops working.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountToken {
    /// The bearer token.
    pub token: String,
    /// When it expires.
    pub expires: SystemTime,
}

/// Issues ServiceAccount tokens for the pods of a node. Object-safe: an agent holds an
/// `Arc<dyn TokenSource>`.
#[async_trait::async_trait]
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// A token for `request`'s ServiceAccount, bound to its pod.
    async fn token(&self, request: &TokenRequest) -> Result<ServiceAccountToken, BoxError>;
}

/// A token the agent holds, and when it was fetched.
#[derive(Clone, Debug)]
pub(crate) struct HeldToken {
    pub(crate) token: ServiceAccountToken,
    pub(crate) fetched: SystemTime,
}

impl HeldToken {
    /// Whether it is due for renewal: like the kubelet, once 80% of its lifetime has passed
    /// (or after 24 hours, whichever is sooner).
    pub(crate) fn due(&self, now: SystemTime) -> bool {
        let lifetime = self
            .token
            .expires
            .duration_since(self.fetched)
            .unwrap_or_default();
        let renew_after = lifetime.mul_f64(0.8).min(Duration::from_secs(24 * 3600));
        now.duration_since(self.fetched).unwrap_or_default() >= renew_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_after_eighty_percent_of_their_life() {
        let fetched = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let held = HeldToken {
            token: ServiceAccountToken {
                token: "t".into(),
                expires: fetched + Duration::from_secs(1000),
            },
            fetched,
        };
        assert!(!held.due(fetched + Duration::from_secs(799)));
        assert!(held.due(fetched + Duration::from_secs(800)));
    }
}
