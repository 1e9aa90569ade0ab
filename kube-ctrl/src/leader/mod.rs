//! Leader election on a coordination/v1 `Lease`, as client-go's `leaderelection` does it.
//!
//! Several replicas of a component (a controller manager, a scheduler) run at once; one holds
//! the Lease and acts, the others wait. The holder renews the Lease every `retry_period`; a
//! waiting replica takes over only after it has seen the same Lease record, unchanged, for a
//! whole `lease_duration` on its own clock (so clocks need not agree). The holder stops acting
//! once it has failed to renew for `renew_deadline`, which is shorter than `lease_duration`:
//! the old leader has stopped before anyone else may start. Every write carries the Lease's
//! `resourceVersion`, so of two replicas racing for one term only one wins.
//!
//! - [`LeaderElector`] does the protocol: one step ([`LeaderElector::try_acquire_or_renew`]),
//!   [`LeaderElector::release`], or a whole life ([`LeaderElector::run`]).
//! - [`LeaderElected`] wraps any [`kube_core::Component`] (e.g. the scheduling loop) so it runs
//!   only while leading; `ControllerManager::leader_election` does the same for controllers.

mod component;
mod elector;

pub use component::LeaderElected;
pub use elector::{LeaderElector, Leadership};

use std::time::Duration;

use kube_core::store::StoreError;

/// Where the Lease lives, who we are, and the protocol's timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElectionConfig {
    /// Namespace of the Lease (Kubernetes uses `kube-system`).
    pub namespace: String,
    /// Name of the Lease, one per elected component (e.g. `kube-controller-manager`).
    pub name: String,
    /// This replica's identity, unique among the candidates (e.g. host name plus a UUID).
    pub identity: String,
    /// How long a waiting replica must see an unchanged Lease before taking it over
    /// (default 15 s, as Kubernetes).
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal (default 10 s).
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew (default 2 s).
    pub retry_period: Duration,
}

impl LeaderElectionConfig {
    /// A config with Kubernetes' default timing (15 s / 10 s / 2 s).
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Sets the three durations.
    pub fn timing(
        mut self,
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    ) -> Self {
        self.lease_duration = lease_duration;
        self.renew_deadline = renew_deadline;
        self.retry_period = retry_period;
        self
    }

    /// Checks `retry_period < renew_deadline < lease_duration` and that names are set; the
    /// safety argument needs the first two.
    pub fn validate(&self) -> Result<(), LeaderElectionError> {
        let bad = |m: &str| Err(LeaderElectionError::InvalidConfig(m.to_string()));
        if self.namespace.is_empty() || self.name.is_empty() {
            return bad("lease namespace and name are required");
        }
        if self.identity.is_empty() {
            return bad("identity is required");
        }
        if self.retry_period.is_zero() {
            return bad("retry_period must be positive");
        }
        if self.renew_deadline <= self.retry_period {
            return bad("renew_deadline must be longer than retry_period");
        }
        if self.lease_duration <= self.renew_deadline {
            return bad("lease_duration must be longer than renew_deadline");
        }
        Ok(())
    }
}

/// Why leader election failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaderElectionError {
    /// The configuration breaks the protocol's assumptions.
    #[error("invalid leader election config: {0}")]
    InvalidConfig(String),
    /// A store call failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Leadership was lost (renewal failed for `renew_deadline`, or another replica holds the
    /// Lease) while a component that cannot restart was running.
    #[error("lost leadership of lease {0}")]
    Lost(String),
}
