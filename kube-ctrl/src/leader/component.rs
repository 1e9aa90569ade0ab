//! [`LeaderElected`]: runs any component only while this replica holds a Lease.

use kube_core::orchestrator::{BoxError, Component, ComponentContext};

use super::{LeaderElectionConfig, LeaderElector};

/// Wraps a [`Component`] (e.g. `kube_sched::SchedulingLoop`) so that it starts only once this
/// replica is elected, and is stopped (its shutdown token fires) the moment leadership ends.
///
/// A component runs once (`run` consumes it), so if leadership is lost this returns
/// [`super::LeaderElectionError::Lost`] and the orchestrator reports the component as failed,
/// as a Kubernetes component exits when it loses its lease; restart it to campaign again. On
/// shutdown the Lease is released so a standby takes over at once.
#[derive(Debug)]
pub struct LeaderElected<C> {
    inner: C,
    config: LeaderElectionConfig,
}

impl<C: Component + 'static> LeaderElected<C> {
    /// Runs `inner` only while holding the Lease named by `config`.
    pub fn new(inner: C, config: LeaderElectionConfig) -> Self {
        Self { inner, config }
    }
}

#[async_trait::async_trait]
impl<C: Component + 'static> Component for LeaderElected<C> {
    fn name(&self) -> String {
        format!("{} (leader-elected)", self.inner.name())
    }

    async fn run(self: Box<Self>, ctx: ComponentContext) -> Result<(), BoxError> {
        let elector = LeaderElector::new(ctx.store.clone(), self.config.clone())?;
        let inner = Box::new(self.inner);
        let outcome = elector
            .lead_once(&ctx.shutdown, |leadership| {
                let ctx = ComponentContext {
                    shutdown: leadership.token,
                    ..ctx.clone()
                };
                inner.run(ctx)
            })
            .await?;
        outcome.unwrap_or(Ok(()))
    }
}
