//! [`ProxyLoop`]: keeps a [`Proxy`] programmed with the cluster's services.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_core::informer::InformerEvent;
use kube_core::object::{GroupKind, ObjectKey};
use kube_core::orchestrator::{BoxError, Component, ComponentContext};
use kube_core::proxy::{Proxy, ProxyError, ServiceEntry, ServiceTable};
use kube_core::workqueue::Backoff;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Instant;

use crate::desired::Sources;
use crate::metrics::{MetricsCell, ProxyMetrics};

/// How a [`ProxyLoop`] runs.
#[derive(Clone, Debug)]
pub struct ProxyLoopConfig {
    /// Delays between attempts while the proxy keeps failing. Default 100 ms doubling to 30 s.
    pub backoff: Backoff,
    /// At least this long between two calls to the data plane: changes arriving meanwhile are
    /// batched into the next call (a data plane like nftables rewrites a lot per call).
    /// Default 100 ms.
    pub min_sync_interval: Duration,
}

impl Default for ProxyLoopConfig {
    fn default() -> Self {
        Self {
            backoff: Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(30),
            },
            min_sync_interval: Duration::from_millis(100),
        }
    }
}

/// Reads a [`ProxyLoop`]'s metrics while it runs; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ProxyMetricsHandle(Arc<MetricsCell>);

impl ProxyMetricsHandle {
    /// The metrics now.
    pub fn get(&self) -> ProxyMetrics {
        self.0.snapshot()
    }
}

/// The proxy component: give it to `Orchestrator::builder().proxy(..)`.
///
/// Once the shared Service, EndpointSlice and Endpoints informers have synced, it hands the proxy the whole
/// table ([`Proxy::sync`], entries from [`ServiceEntry::from_objects`]); after that, every
/// change becomes an increment ([`Proxy::apply`] with `Upsert`/`Remove`), with whatever changed
/// meanwhile batched into one call. When the proxy fails, what it holds is unknown, so the loop
/// waits out a backoff and syncs the whole table again. A service's EndpointSlices (label
/// `kubernetes.io/service-name`) are used when it has any; its Endpoints otherwise. Calls are at
/// least [`ProxyLoopConfig::min_sync_interval`] apart; [`ProxyLoop::metrics`] reports sync
/// latency and table size. On shutdown it calls [`Proxy::shutdown`].
///
/// ```no_run
/// # async fn demo(store: std::sync::Arc<dyn kube_core::store::Store>) -> Result<(), kube_core::OrchestratorError> {
/// use std::sync::Arc;
/// use kube_core::Orchestrator;
/// use kube_net::{MemoryProxy, ProxyLoop};
///
/// let proxy = Arc::new(MemoryProxy::new());
/// let running = Orchestrator::builder()
///     .store(store)
///     .proxy(ProxyLoop::new(proxy.clone()))
///     .build()?
///     .start();
/// running.shutdown().await
/// # }
/// ```
pub struct ProxyLoop {
    proxy: Arc<dyn Proxy>,
    config: ProxyLoopConfig,
    metrics: ProxyMetricsHandle,
}

impl fmt::Debug for ProxyLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyLoop")
            .field("proxy", &self.proxy)
            .field("config", &self.config)
            .finish()
    }
}

impl ProxyLoop {
    /// A loop feeding `proxy`, with the default [`ProxyLoopConfig`].
    pub fn new(proxy: Arc<dyn Proxy>) -> Self {
        Self::with_config(proxy, ProxyLoopConfig::default())
    }

    /// A loop feeding `proxy`, with `config`.
    pub fn with_config(proxy: Arc<dyn Proxy>, config: ProxyLoopConfig) -> Self {
        Self {
            proxy,
            config,
            metrics: ProxyMetricsHandle::default(),
        }
    }

    /// A handle on this loop's metrics, to keep before handing the loop to the orchestrator.
    pub fn metrics(&self) -> ProxyMetricsHandle {
        self.metrics.clone()
    }
}

#[async_trait::async_trait]
impl Component for ProxyLoop {
    fn name(&self) -> String {
        "proxy".into()
    }

    async fn run(self: Box<Self>, ctx: ComponentContext) -> Result<(), BoxError> {
        let sources = Sources {
            services: ctx.informers.informer(&GroupKind::SERVICE),
            endpoints: ctx.informers.informer(&GroupKind::ENDPOINTS),
            slices: ctx.informers.informer(&GroupKind::of::<EndpointSlice>()),
        };
        tokio::select! {
            () = ctx.shutdown.cancelled() => return Ok(()),
            () = async {
                tokio::join!(
                    sources.services.wait_until_synced(),
                    sources.endpoints.wait_until_synced(),
                    sources.slices.wait_until_synced(),
                );
            } => {}
        }
        let mut service_events = sources.services.subscribe();
        let mut endpoint_events = sources.endpoints.subscribe();
        let mut slice_events = sources.slices.subscribe();
        // A new subscription replays the cache; the full sync below covers all of it. Anything
        // drained here is already in the caches the full sync reads.
        while service_events.try_recv().is_ok() {}
        while endpoint_events.try_recv().is_ok() {}
        while slice_events.try_recv().is_ok() {}

        let proxy = self.proxy.clone();
        let min_interval = self.config.min_sync_interval;
        let mut syncer = Syncer::new(self.proxy, sources, self.config.backoff, self.metrics);
        syncer.flush().await;
        let mut last_flush = Instant::now();
        loop {
            tokio::select! {
                () = ctx.shutdown.cancelled() => break,
                event = service_events.recv() => match event {
                    Some(event) => syncer.mark(&event),
                    None => break,
                },
                event = endpoint_events.recv() => match event {
                    Some(event) => syncer.mark(&event),
                    None => break,
                },
                event = slice_events.recv() => match event {
                    Some(event) => syncer.mark(&event),
                    None => break,
                },
                () = syncer.retry_due() => {}
            }
            // Not sooner than the minimum interval after the last call; what arrives meanwhile
            // joins this batch.
            tokio::select! {
                () = ctx.shutdown.cancelled() => break,
                () = tokio::time::sleep_until(last_flush + min_interval) => {}
            }
            // Batch whatever else is already waiting into the same call.
            drain(&mut service_events, &mut syncer);
            drain(&mut endpoint_events, &mut syncer);
            drain(&mut slice_events, &mut syncer);
            syncer.flush().await;
            last_flush = Instant::now();
        }
        // Leave nothing behind: rules, listeners, addresses.
        if let Err(e) = proxy.shutdown().await {
            tracing::warn!(error = %e, "proxy shutdown failed");
        }
        tracing::info!("proxy loop stopped");
        Ok(())
    }
}

fn drain(events: &mut UnboundedReceiver<InformerEvent>, syncer: &mut Syncer) {
    while let Ok(event) = events.try_recv() {
        syncer.mark(&event);
    }
}

/// What the loop believes the proxy holds, and what it still owes it.
struct Syncer {
    proxy: Arc<dyn Proxy>,
    sources: Sources,
    backoff: Backoff,
    /// The table as last applied successfully.
    applied: BTreeMap<ObjectKey, ServiceEntry>,
    /// Services changed since the last successful call.
    dirty: BTreeSet<ObjectKey>,
    /// Whether the next call must be a full sync (at start, and after any failure).
    needs_full_sync: bool,
    failures: u32,
    /// While backing off: when to try again.
    retry_at: Option<Instant>,
    metrics: ProxyMetricsHandle,
}

impl Syncer {
    fn new(
        proxy: Arc<dyn Proxy>,
        sources: Sources,
        backoff: Backoff,
        metrics: ProxyMetricsHandle,
    ) -> Self {
        Self {
            metrics,
            proxy,
            sources,
            backoff,
            applied: BTreeMap::new(),
            dirty: BTreeSet::new(),
            needs_full_sync: true,
            failures: 0,
            retry_at: None,
        }
    }

    /// Marks the service an event's object belongs to.
    fn mark(&mut self, event: &InformerEvent) {
        if let Some(key) = Sources::service_key(event.object()) {
            self.dirty.insert(key);
        }
    }

    /// Completes when a backed-off attempt is due; never while not backing off.
    async fn retry_due(&self) {
        match self.retry_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    /// Sends the proxy what it is owed, unless backing off and not yet due.
    async fn flush(&mut self) {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        self.retry_at = None;
        match self.send().await {
            Ok(()) => self.failures = 0,
            Err(e) => {
                self.metrics.0.update(|m| m.failures += 1);
                let delay = self.backoff.delay(self.failures);
                self.failures = self.failures.saturating_add(1);
                tracing::warn!(error = %e, ?delay, "proxy failed; will sync the whole table");
                // After a failure the proxy may hold anything: only a full sync is safe.
                self.needs_full_sync = true;
                self.retry_at = Some(Instant::now() + delay);
            }
        }
    }

    async fn send(&mut self) -> Result<(), ProxyError> {
        if self.needs_full_sync {
            let table = self.sources.table();
            let started = std::time::Instant::now();
            self.proxy.sync(&table).await?;
            self.metrics
                .0
                .synced(true, started.elapsed(), table.services.values());
            tracing::debug!(services = table.services.len(), "proxy synced");
            self.applied = table.services;
            self.needs_full_sync = false;
            self.dirty.clear();
            return Ok(());
        }
        let changes = self.sources.changes(&self.dirty, &self.applied);
        if !changes.is_empty() {
            let started = std::time::Instant::now();
            self.proxy.apply(&changes).await?;
            let took = started.elapsed();
            tracing::debug!(changes = changes.len(), ?took, "proxy updated");
            let mut applied = ServiceTable {
                services: std::mem::take(&mut self.applied),
            };
            applied.apply(&changes);
            self.applied = applied.services;
            self.metrics.0.synced(false, took, self.applied.values());
        }
        self.dirty.clear();
        Ok(())
    }
}
