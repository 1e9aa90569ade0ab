//! The Kubernetes REST API over any [`Store`]: what kubectl, kube-rs and client-go talk to.
//!
//! [`ApiServer`] serves every kind of a [`Registry`] at Kubernetes' paths (`/api/v1/...`,
//! `/apis/{group}/{version}/...`) with Kubernetes' verbs and semantics: get, list (selectors,
//! paging, `Table` output), watch (from a `resourceVersion`, bookmarks, timeouts), create,
//! update, patch (JSON, merge, strategic merge, server-side apply), delete (grace periods,
//! finalizers, propagation, preconditions) and deletecollection; the `status`, `scale`,
//! `binding`, `eviction` and `log` subresources; discovery and OpenAPI; defaulting and
//! validation answered with `Status` objects carrying Kubernetes' codes and reasons.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use kube_apiserver::ApiServer;
//! use kube_store::MemStore;
//!
//! let server = ApiServer::new(Arc::new(MemStore::new()));
//! let running = server.serve("127.0.0.1:6443".parse()?).await?;
//! println!("kubectl --server {}", running.url());
//! running.shutdown().await;
//! # Ok(()) }
//! ```

// The modules follow a request through the server, in the order it meets them.
mod admission;
pub mod authn;
pub mod authz;
mod discovery;
mod encoding;
pub mod kubernetes_service;
mod registry;
mod serving;
mod streaming;

pub use authn::{CertPair, Pki, PkiError, Security, TokenSigner, UserInfo};
pub use kubernetes_service::KubernetesService;

use admission::serviceaccounts;
use encoding::encoded;
use registry::handlers;
use serving::{access, metrics, serve};
use streaming::watch_hub;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::Request;
use axum::response::Response;
use kube_core::kind::Registry;
use kube_core::orchestrator::{BoxError, Component, ComponentContext};
use kube_core::store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Settings of an [`ApiServer`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ApiServerConfig {
    /// Largest request body accepted; larger ones get 413 without being read. Kubernetes' limit
    /// is 3 MiB.
    pub max_body_bytes: usize,
    /// How long a watch runs when the client gives no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
    /// Interval of bookmarks on watches that ask for them.
    pub bookmark_interval: Duration,
    /// How long a `pods/log` request waits to connect to the node agent.
    pub node_connect_timeout: Duration,
    /// Requests (other than watches) served at once; more get 429 with `Retry-After`
    /// (Kubernetes' `--max-requests-inflight`).
    pub max_inflight: usize,
    /// Of those, how many one user may hold, so a client that floods the server leaves room
    /// for the others; more get 429.
    pub max_inflight_per_user: usize,
    /// Watches one user may hold open; more get 429.
    pub max_watches_per_user: usize,
    /// How long a request (other than a watch or a log stream) may run before 504.
    pub request_timeout: Duration,
    /// Namespace lifecycle admission: objects may be created only in a namespace that exists
    /// and is not terminating (default true).
    pub namespace_lifecycle: bool,
    /// Keep Service `default/kubernetes` and its Endpoints and EndpointSlice pointing at
    /// this server while it serves ([`KubernetesService`]; off when `None` or when it has no
    /// address to advertise). Default off.
    pub kubernetes_service: Option<KubernetesService>,
}

impl Default for ApiServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 3 * 1024 * 1024,
            default_watch_timeout: Duration::from_secs(30 * 60),
            bookmark_interval: Duration::from_secs(60),
            node_connect_timeout: Duration::from_secs(5),
            max_inflight: 400,
            max_inflight_per_user: 100,
            max_watches_per_user: 1000,
            request_timeout: Duration::from_secs(60),
            namespace_lifecycle: true,
            kubernetes_service: None,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: Registry,
    pub(crate) config: ApiServerConfig,
    pub(crate) security: Option<authn::Security>,
    pub(crate) limits: access::Limits,
    pub(crate) audit: Option<tokio::sync::mpsc::Sender<String>>,
    pub(crate) encoded: Arc<encoded::Encoded>,
    pub(crate) watch_hubs: Arc<watch_hub::Hubs>,
    pub(crate) metrics: metrics::Metrics,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiServer")
            .field("store", &self.store)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The Kubernetes API server over a [`Store`]. Cheap to clone.
///
/// A binary whose job is serving it should call
/// `kube_store::disable_transparent_huge_pages` first: with huge
/// pages, the memory a growing store takes arrives in 2 MiB stalls on request threads.
#[derive(Clone, Debug)]
pub struct ApiServer {
    inner: Arc<Inner>,
}

impl ApiServer {
    /// Serves the builtin kinds over `store`, with default settings.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_config(
            store,
            Registry::builtin().clone(),
            ApiServerConfig::default(),
        )
    }

    /// Serves the kinds of `registry` (e.g. the builtin kinds plus the user's own), without
    /// authentication: every request acts as an administrator. For tests and embedding on
    /// loopback; anything reachable by others wants [`ApiServer::secure`].
    pub fn with_config(store: Arc<dyn Store>, registry: Registry, config: ApiServerConfig) -> Self {
        Self::build(store, registry, config, None)
    }

    /// Serves over TLS with authentication (client certificates, bearer tokens,
    /// ServiceAccount tokens; anonymous requests get 401), authorization (the node authorizer,
    /// then RBAC; denials get 403) and, if configured, an audit log. Serving creates the
    /// bootstrap RBAC policy (`cluster-admin` for `system:masters`; discovery and
    /// `SelfSubjectAccessReview` for every authenticated user) if it is missing.
    pub fn secure(
        store: Arc<dyn Store>,
        registry: Registry,
        config: ApiServerConfig,
        security: authn::Security,
    ) -> Self {
        Self::build(store, registry, config, Some(security))
    }

    fn build(
        store: Arc<dyn Store>,
        registry: Registry,
        config: ApiServerConfig,
        security: Option<authn::Security>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                registry,
                limits: access::Limits::new(config.max_inflight),
                config,
                audit: None,
                security,
                encoded: Arc::default(),
                watch_hubs: Arc::default(),
                metrics: metrics::Metrics::default(),
            }),
        }
    }

    /// The store behind the server.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The server as an axum [`Router`], to mount in the user's own HTTP server.
    pub fn router(&self) -> Router {
        Router::new()
            .fallback(dispatch)
            .with_state(self.inner.clone())
    }

    /// Binds `addr` (port 0 picks a free port) and serves until [`RunningApiServer::shutdown`].
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<RunningApiServer> {
        let listener = TcpListener::bind(addr).await?;
        self.serve_on(listener).await
    }

    /// Serves on an already bound listener: HTTPS when the server is secure, else HTTP.
    pub async fn serve_on(&self, listener: TcpListener) -> std::io::Result<RunningApiServer> {
        let local_addr = listener.local_addr()?;
        let mut server = self.clone();
        let mut publisher = None;
        admission::system_priority::ensure(server.inner.store.as_ref())
            .await
            .map_err(std::io::Error::other)?;
        if let Some(security) = &server.inner.security {
            authz::reconcile_bootstrap_policy(server.inner.store.as_ref())
                .await
                .map_err(std::io::Error::other)?;
            // The root-CA publisher and the serviceaccounts controller: every namespace has
            // `kube-root-ca.crt` and the `default` ServiceAccount.
            let revision =
                serviceaccounts::publish_all(&server.inner.store, security.ca_pem.as_deref())
                    .await
                    .map_err(std::io::Error::other)?;
            publisher = Some((security.ca_pem.clone(), revision));
            if let Some(path) = &security.audit_log {
                // The writer needs a runtime, so it starts with the first serve.
                let mut inner = Inner {
                    store: server.inner.store.clone(),
                    registry: server.inner.registry.clone(),
                    config: server.inner.config.clone(),
                    security: server.inner.security.clone(),
                    limits: access::Limits::new(server.inner.config.max_inflight),
                    audit: None,
                    encoded: Arc::default(),
                    watch_hubs: Arc::default(),
                    metrics: metrics::Metrics::default(),
                };
                inner.audit = Some(access::audit_writer(path.clone()));
                server = Self {
                    inner: Arc::new(inner),
                };
            }
        }
        let tls = server
            .inner
            .security
            .as_ref()
            .map(|s| tokio_rustls::TlsAcceptor::from(s.tls.clone()));
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        if let Some((ca_pem, revision)) = publisher {
            tokio::spawn(serviceaccounts::run_publisher(
                server.inner.store.clone(),
                ca_pem,
                revision,
                shutdown.clone(),
            ));
        }
        if let Some(service) = &server.inner.config.kubernetes_service {
            if !service.addresses().is_empty() {
                tokio::spawn(kubernetes_service::run(
                    server.inner.store.clone(),
                    service.clone(),
                    local_addr.port(),
                    shutdown.clone(),
                ));
            }
        }
        let task = tokio::spawn(serve::accept_loop(listener, tls, server.router(), stop));
        Ok(RunningApiServer {
            local_addr,
            scheme: if server.inner.security.is_some() {
                "https"
            } else {
                "http"
            },
            shutdown,
            task,
        })
    }
}

async fn dispatch(State(inner): State<Arc<Inner>>, request: Request<Body>) -> Response {
    let guarded = inner.clone();
    access::guard(&guarded, request, async move |request| {
        handlers::handle(&inner, request).await
    })
    .await
}

/// A serving [`ApiServer`].
#[derive(Debug)]
pub struct RunningApiServer {
    local_addr: SocketAddr,
    scheme: &'static str,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningApiServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://host:port` (or `https://` when secure), for clients.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.local_addr)
    }

    /// Stops accepting requests, ends open watches, and waits for the server to stop.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        // Long-lived watches end when their connections do; don't wait on them forever.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// An [`ApiServer`] as an orchestrator [`Component`], listening on one address.
#[derive(Debug)]
pub struct ApiServerComponent {
    server: ApiServer,
    listener: std::sync::Mutex<Option<std::net::TcpListener>>,
}

impl ApiServerComponent {
    /// Binds `addr` now (so the caller learns the port before the orchestrator starts) and
    /// serves `server` on it while the orchestrator runs.
    pub fn bind(server: ApiServer, addr: SocketAddr) -> std::io::Result<(Self, SocketAddr)> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        Ok((
            Self {
                server,
                listener: std::sync::Mutex::new(Some(listener)),
            },
            local,
        ))
    }
}

#[async_trait::async_trait]
impl Component for ApiServerComponent {
    fn name(&self) -> String {
        "apiserver".into()
    }

    async fn run(self: Box<Self>, ctx: ComponentContext) -> Result<(), BoxError> {
        let listener = self
            .listener
            .lock()
            .map_err(|_| "listener lock poisoned")?
            .take()
            .ok_or("the API server component runs once")?;
        let running = self
            .server
            .serve_on(TcpListener::from_std(listener)?)
            .await?;
        ctx.shutdown.cancelled().await;
        running.shutdown().await;
        Ok(())
    }
}
