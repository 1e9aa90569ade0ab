//! The builder: composes a Store, a scheduler, controllers, node agents and a proxy into one
//! running orchestrator, with graceful shutdown.
//!
//! Each slot takes a [`Component`]: a long-running loop that drives one of the traits. The
//! implementation crates provide the loops, each wrapping any implementation of its trait:
//! `kube_sched::SchedulingLoop` wraps an `Arc<dyn Scheduler>`, `kube_ctrl::ControllerManager`
//! wraps `Arc<dyn Controller>`s, `kube_node::NodeAgent` wraps an `Arc<dyn Runtime>`,
//! `kube_net::ProxyLoop` wraps an `Arc<dyn Proxy>`. The orchestrator gives every component the
//! same store, the same informer caches and one shutdown signal.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::informer::InformerFactory;
use crate::store::Store;

/// A boxed error from a component.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What every component is given when it starts.
#[derive(Clone, Debug)]
pub struct ComponentContext {
    /// The cluster state.
    pub store: Arc<dyn Store>,
    /// Shared caches: one informer per kind for the whole orchestrator.
    pub informers: InformerFactory,
    /// Cancelled when the orchestrator shuts down; components return soon after.
    pub shutdown: CancellationToken,
}

/// A long-running part of the orchestrator (a scheduling loop, a controller manager, a node
/// agent, a proxy loop, or anything of the user's).
///
/// ```
/// use kube_core::orchestrator::{BoxError, Component, ComponentContext};
///
/// #[derive(Debug)]
/// struct Heartbeat;
/// #[async_trait::async_trait]
/// impl Component for Heartbeat {
///     fn name(&self) -> String { "heartbeat".into() }
///     async fn run(self: Box<Self>, ctx: ComponentContext) -> Result<(), BoxError> {
///         ctx.shutdown.cancelled().await;
///         Ok(())
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Component: Send + fmt::Debug {
    /// A name for logs and errors.
    fn name(&self) -> String;

    /// Runs until `ctx.shutdown` is cancelled (or the component's work is done).
    async fn run(self: Box<Self>, ctx: ComponentContext) -> Result<(), BoxError>;
}

/// A component run against a store of its own instead of the orchestrator's, with informers
/// of its own: how a scheduler or a controller manager reaches the cluster through an API server
/// (a `RemoteStore`) under its own identity while other parts of the same orchestrator use the
/// store directly.
///
/// ```no_run
/// # fn demo(remote: std::sync::Arc<dyn kube_core::store::Store>, scheduler: impl kube_core::orchestrator::Component + 'static) {
/// use kube_core::orchestrator::OnStore;
/// let scheduler = OnStore::new(remote, scheduler);
/// // builder.scheduler(scheduler)
/// # let _ = scheduler;
/// # }
/// ```
#[derive(Debug)]
pub struct OnStore<C> {
    store: Arc<dyn Store>,
    component: C,
}

impl<C: Component> OnStore<C> {
    /// Runs `component` against `store`.
    pub fn new(store: Arc<dyn Store>, component: C) -> Self {
        Self { store, component }
    }
}

#[async_trait::async_trait]
impl<C: Component + 'static> Component for OnStore<C> {
    fn name(&self) -> String {
        self.component.name()
    }

    async fn run(self: Box<Self>, ctx: ComponentContext) -> Result<(), BoxError> {
        let ctx = ComponentContext {
            informers: InformerFactory::new(self.store.clone(), ctx.shutdown.clone()),
            store: self.store,
            shutdown: ctx.shutdown,
        };
        Box::new(self.component).run(ctx).await
    }
}

/// Errors building or running an orchestrator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrchestratorError {
    /// `build()` was called without a store.
    #[error("no store was given to the builder")]
    MissingStore,
    /// A component failed.
    #[error("component {name} failed")]
    Component {
        /// The component's name.
        name: String,
        /// Its error.
        #[source]
        source: BoxError,
    },
    /// Components did not stop within the shutdown timeout.
    #[error("components did not stop within {0:?}: {1:?}")]
    ShutdownTimeout(Duration, Vec<String>),
}

/// Collects the parts of an orchestrator. See [`Orchestrator::builder`].
#[derive(Debug, Default)]
pub struct OrchestratorBuilder {
    store: Option<Arc<dyn Store>>,
    scheduler: Option<Box<dyn Component>>,
    controllers: Vec<Box<dyn Component>>,
    nodes: Vec<Box<dyn Component>>,
    proxy: Option<Box<dyn Component>>,
    others: Vec<Box<dyn Component>>,
    shutdown_timeout: Option<Duration>,
}

impl OrchestratorBuilder {
    /// The store (required).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The scheduling loop.
    pub fn scheduler(mut self, component: impl Component + 'static) -> Self {
        self.scheduler = Some(Box::new(component));
        self
    }

    /// A controller manager (may be given several times).
    pub fn controllers(mut self, component: impl Component + 'static) -> Self {
        self.controllers.push(Box::new(component));
        self
    }

    /// A node agent (one per node).
    pub fn node(mut self, component: impl Component + 'static) -> Self {
        self.nodes.push(Box::new(component));
        self
    }

    /// The service proxy loop.
    pub fn proxy(mut self, component: impl Component + 'static) -> Self {
        self.proxy = Some(Box::new(component));
        self
    }

    /// Any other component.
    pub fn component(mut self, component: impl Component + 'static) -> Self {
        self.others.push(Box::new(component));
        self
    }

    /// How long shutdown waits for components to stop (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = Some(timeout);
        self
    }

    /// Checks the parts and returns the orchestrator, ready to start.
    pub fn build(self) -> Result<Orchestrator, OrchestratorError> {
        let store = self.store.ok_or(OrchestratorError::MissingStore)?;
        let mut components = Vec::new();
        components.extend(self.nodes);
        components.extend(self.controllers);
        components.extend(self.scheduler);
        components.extend(self.proxy);
        components.extend(self.others);
        Ok(Orchestrator {
            store,
            components,
            shutdown_timeout: self.shutdown_timeout.unwrap_or(Duration::from_secs(30)),
        })
    }
}

/// A composed orchestrator, not yet running.
#[derive(Debug)]
pub struct Orchestrator {
    store: Arc<dyn Store>,
    components: Vec<Box<dyn Component>>,
    shutdown_timeout: Duration,
}

impl Orchestrator {
    /// Starts composing an orchestrator.
    ///
    /// ```no_run
    /// # async fn demo(store: std::sync::Arc<dyn kube_core::store::Store>) -> Result<(), kube_core::orchestrator::OrchestratorError> {
    /// use kube_core::orchestrator::Orchestrator;
    /// let running = Orchestrator::builder().store(store).build()?.start();
    /// // ... use running.store() ...
    /// running.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub fn builder() -> OrchestratorBuilder {
        OrchestratorBuilder::default()
    }

    /// The names of the composed components, in start order.
    pub fn component_names(&self) -> Vec<String> {
        self.components.iter().map(|c| c.name()).collect()
    }

    /// Starts every component on the current Tokio runtime.
    pub fn start(self) -> RunningOrchestrator {
        let shutdown = CancellationToken::new();
        let informers = InformerFactory::new(self.store.clone(), shutdown.clone());
        let ctx = ComponentContext {
            store: self.store.clone(),
            informers: informers.clone(),
            shutdown: shutdown.clone(),
        };
        let mut tasks = JoinSet::new();
        let mut names = Vec::new();
        for component in self.components {
            let name = component.name();
            names.push(name.clone());
            let ctx = ctx.clone();
            tracing::debug!(component = %name, "starting");
            tasks.spawn(async move { (name, component.run(ctx).await) });
        }
        RunningOrchestrator {
            store: self.store,
            informers,
            shutdown,
            tasks,
            names,
            shutdown_timeout: self.shutdown_timeout,
        }
    }

    /// Runs until `signal` completes (e.g. `tokio::signal::ctrl_c()`) or a component fails,
    /// then shuts down gracefully.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()>,
    ) -> Result<(), OrchestratorError> {
        let mut running = self.start();
        tokio::select! {
            () = signal => running.shutdown().await,
            failed = running.failure() => {
                let _ = running.shutdown().await;
                Err(failed)
            }
        }
    }
}

/// A running orchestrator.
#[derive(Debug)]
pub struct RunningOrchestrator {
    store: Arc<dyn Store>,
    informers: InformerFactory,
    shutdown: CancellationToken,
    tasks: JoinSet<(String, Result<(), BoxError>)>,
    names: Vec<String>,
    shutdown_timeout: Duration,
}

impl RunningOrchestrator {
    /// The store every component uses.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// The shared informer caches.
    pub fn informers(&self) -> &InformerFactory {
        &self.informers
    }

    /// The names of the running components.
    pub fn component_names(&self) -> &[String] {
        &self.names
    }

    /// Waits until some component fails (components that finish cleanly are not failures).
    pub async fn failure(&mut self) -> OrchestratorError {
        loop {
            match self.tasks.join_next().await {
                Some(Ok((_, Ok(())))) => continue,
                Some(Ok((name, Err(source)))) => {
                    return OrchestratorError::Component { name, source };
                }
                Some(Err(join)) => {
                    return OrchestratorError::Component {
                        name: "<panicked>".into(),
                        source: Box::new(join),
                    };
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Signals every component to stop and waits for them (up to the shutdown timeout).
    pub async fn shutdown(mut self) -> Result<(), OrchestratorError> {
        self.shutdown.cancel();
        let mut first_error = None;
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(None) => break,
                Ok(Some(Ok((_, Ok(()))))) => {}
                Ok(Some(Ok((name, Err(source))))) => {
                    tracing::warn!(component = %name, error = %source, "component failed");
                    first_error.get_or_insert(OrchestratorError::Component { name, source });
                }
                Ok(Some(Err(join))) => {
                    first_error.get_or_insert(OrchestratorError::Component {
                        name: "<panicked>".into(),
                        source: Box::new(join),
                    });
                }
                Err(_) => {
                    self.tasks.abort_all();
                    return Err(OrchestratorError::ShutdownTimeout(
                        self.shutdown_timeout,
                        self.names.clone(),
                    ));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
