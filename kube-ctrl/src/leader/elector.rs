//! [`LeaderElector`]: the acquire / renew / release protocol over one Lease.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube_core::store::Store;
use kube_core::typed::Api;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{LeaderElectionConfig, LeaderElectionError};

/// The last Lease record this replica saw, and when (on its own monotonic clock).
#[derive(Debug, Clone)]
struct Observed {
    resource_version: Option<String>,
    holder: Option<String>,
    at: Instant,
}

/// Handed to the leader's work: cancelled the moment leadership ends.
#[derive(Debug, Clone)]
pub struct Leadership {
    /// Cancelled when leadership is lost, released, or the elector shuts down. Work done for
    /// the leader must stop when it fires.
    pub token: CancellationToken,
    /// The Lease's `leaseTransitions` when this term began: a number no other term shares.
    pub term: i32,
}

/// How a term ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TermEnd {
    /// The leader's work returned by itself.
    Finished,
    /// The shutdown token fired.
    Shutdown,
    /// Renewal failed for `renew_deadline`, or another replica took the Lease.
    Lost,
}

/// Runs the leader-election protocol for one replica over one Lease.
pub struct LeaderElector {
    store: Arc<dyn Store>,
    config: LeaderElectionConfig,
    observed: Mutex<Option<Observed>>,
    leading: AtomicBool,
}

impl fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderElector")
            .field("config", &self.config)
            .field("leading", &self.is_leader())
            .finish_non_exhaustive()
    }
}

fn micro_now() -> MicroTime {
    // Through kube-core's helper: jiff's clock feature is off in this workspace.
    MicroTime(kube_core::object::now().0)
}

/// Whole seconds, rounded up, for `leaseDurationSeconds` (never shorter than what we use).
fn ceil_secs(d: std::time::Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

impl LeaderElector {
    /// An elector; checks the config.
    pub fn new(
        store: Arc<dyn Store>,
        config: LeaderElectionConfig,
    ) -> Result<Self, LeaderElectionError> {
        config.validate()?;
        Ok(Self {
            store,
            config,
            observed: Mutex::new(None),
            leading: AtomicBool::new(false),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LeaderElectionConfig {
        &self.config
    }

    /// Whether this replica's last acquire or renew succeeded and its term has not ended.
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    fn api(&self) -> Api<Lease> {
        Api::namespaced(self.store.clone(), &self.config.namespace)
    }

    fn observe(&self, lease: &Lease, now: Instant) {
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        let rv = lease.metadata.resource_version.clone();
        // A record we have already seen keeps its first sighting time: expiry counts from
        // when the record last changed, not from when we last looked.
        if observed.as_ref().is_some_and(|o| o.resource_version == rv) {
            return;
        }
        *observed = Some(Observed {
            resource_version: rv,
            holder: lease.spec.as_ref().and_then(|s| s.holder_identity.clone()),
            at: now,
        });
    }

    fn observed(&self) -> Option<Observed> {
        self.observed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The holder of the Lease as last observed (`None` if free or never read).
    pub fn observed_holder(&self) -> Option<String> {
        self.observed()
            .and_then(|o| o.holder)
            .filter(|h| !h.is_empty())
    }

    /// One step of the protocol: creates the Lease, renews it if we hold it, or takes it over
    /// if it is free or has not changed for `lease_duration`. Returns whether we now hold it.
    /// Losing a race (a conflict) is `Ok(false)`, not an error.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaderElectionError> {
        let now = Instant::now();
        let api = self.api();
        let me = self.config.identity.clone();
        let duration = ceil_secs(self.config.lease_duration);
        let Some(current) = api.get_opt(&self.config.name).await? else {
            let mut lease = Lease {
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(micro_now()),
                    renew_time: Some(micro_now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
                ..Lease::default()
            };
            lease.metadata.name = Some(self.config.name.clone());
            lease.metadata.namespace = Some(self.config.namespace.clone());
            return match api.create(&lease).await {
                Ok(created) => {
                    self.observe(&created, now);
                    Ok(true)
                }
                Err(e) if e.is_already_exists() => Ok(false),
                Err(e) => Err(e.into()),
            };
        };
        self.observe(&current, now);
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let held_by_me = holder == me;
        if !holder.is_empty() && !held_by_me {
            // Respect the longer of our duration and the holder's advertised one.
            let advertised = std::time::Duration::from_secs(
                u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
            );
            let wait = self.config.lease_duration.max(advertised);
            let seen_at = self.observed().map_or(now, |o| o.at);
            if now < seen_at + wait {
                return Ok(false);
            }
            tracing::info!(lease = %self.config.name, old = %holder, new = %me, "lease expired; taking over");
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let mut next = current.clone();
        next.spec = Some(LeaseSpec {
            holder_identity: Some(me),
            lease_duration_seconds: Some(duration),
            acquire_time: if held_by_me {
                spec.acquire_time.clone()
            } else {
                Some(micro_now())
            },
            renew_time: Some(micro_now()),
            lease_transitions: Some(if held_by_me {
                transitions
            } else {
                transitions.saturating_add(1)
            }),
            ..spec
        });
        // `next` carries the resourceVersion we read: a concurrent writer makes this a
        // conflict, so at most one replica wins each term.
        match api.replace(&next).await {
            Ok(written) => {
                self.observe(&written, now);
                Ok(true)
            }
            Err(e) if e.is_conflict() || e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the Lease up if we hold it (empty holder, so a waiting replica takes it at once).
    pub async fn release(&self) -> Result<(), LeaderElectionError> {
        self.leading.store(false, Ordering::SeqCst);
        let api = self.api();
        let Some(current) = api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        let mut next = current;
        next.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(micro_now()),
            ..spec
        });
        match api.replace(&next).await {
            Ok(_) => Ok(()),
            // Someone else wrote it: it is not ours to release any more.
            Err(e) if e.is_conflict() || e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The term number of the Lease as we last wrote or read it.
    async fn term(&self) -> i32 {
        match self.api().get_opt(&self.config.name).await {
            Ok(Some(lease)) => lease.spec.and_then(|s| s.lease_transitions).unwrap_or(0),
            _ => 0,
        }
    }

    /// Waits until this replica holds the Lease (or `shutdown` fires: `None`). Returns when
    /// the winning attempt started, which is when the renew deadline counts from.
    async fn acquire(&self, shutdown: &CancellationToken) -> Option<Instant> {
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            let start = Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(true) => return Some(start),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(lease = %self.config.name, error = %e, "acquiring lease failed")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(self.config.retry_period) => {}
            }
        }
    }

    /// Renews every `retry_period` until shutdown or until renewal has failed for
    /// `renew_deadline` since the last success started.
    async fn keep_renewing(&self, mut last: Instant, shutdown: &CancellationToken) -> TermEnd {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return TermEnd::Shutdown,
                () = tokio::time::sleep(self.config.retry_period) => {}
            }
            let deadline = last + self.config.renew_deadline;
            let start = Instant::now();
            match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => last = start,
                // Someone else holds it: stopping early is always safe.
                Ok(Ok(false)) => return TermEnd::Lost,
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.config.name, error = %e, "renewing lease failed");
                    if Instant::now() >= deadline {
                        return TermEnd::Lost;
                    }
                }
                Err(_elapsed) => return TermEnd::Lost,
            }
        }
    }

    /// Campaigns until this replica wins the Lease (or `shutdown` fires: `Ok(None)`), then runs
    /// `lead` for one term with a [`Leadership`] whose token fires when the term ends. When the
    /// work returns by itself or `shutdown` fires, the Lease is released and the work's output
    /// returned; when leadership is lost, the work is stopped and awaited, and the result is
    /// [`LeaderElectionError::Lost`].
    pub async fn lead_once<F, Fut, T>(
        &self,
        shutdown: &CancellationToken,
        lead: F,
    ) -> Result<Option<T>, LeaderElectionError>
    where
        F: FnOnce(Leadership) -> Fut,
        Fut: Future<Output = T>,
    {
        let Some(acquired) = self.acquire(shutdown).await else {
            return Ok(None);
        };
        self.leading.store(true, Ordering::SeqCst);
        let token = shutdown.child_token();
        let term = self.term().await;
        tracing::info!(lease = %self.config.name, identity = %self.config.identity, term, "became leader");
        let mut work = std::pin::pin!(lead(Leadership {
            token: token.clone(),
            term,
        }));
        let mut renewing = std::pin::pin!(self.keep_renewing(acquired, shutdown));
        let (end, output) = tokio::select! {
            output = &mut work => (TermEnd::Finished, Some(output)),
            end = &mut renewing => (end, None),
        };
        // Stop the work, and wait for it, before anyone else could take over.
        self.leading.store(false, Ordering::SeqCst);
        token.cancel();
        let output = match output {
            Some(o) => o,
            None => work.await,
        };
        if end == TermEnd::Lost {
            tracing::warn!(lease = %self.config.name, identity = %self.config.identity, term, "lost leadership");
            return Err(LeaderElectionError::Lost(self.config.name.clone()));
        }
        if let Err(e) = self.release().await {
            tracing::warn!(lease = %self.config.name, error = %e, "releasing lease failed");
        }
        Ok(Some(output))
    }

    /// Campaigns until `shutdown`: each time this replica wins the Lease it runs `lead` for
    /// that term (see [`LeaderElector::lead_once`]), and after losing it campaigns again. On
    /// shutdown, or when `lead` returns by itself, the Lease is released and this returns.
    pub async fn run<F, Fut>(&self, shutdown: &CancellationToken, mut lead: F)
    where
        F: FnMut(Leadership) -> Fut,
        Fut: Future<Output = ()>,
    {
        while let Err(LeaderElectionError::Lost(_)) = self.lead_once(shutdown, &mut lead).await {}
    }
}
