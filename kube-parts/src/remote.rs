//! Control-plane components as clients of an API server (feature `client`).
//!
//! A scheduler, controller manager or node agent can run in its own process against an API
//! server, through kube-store's [`RemoteStore`], under its own identity (a client certificate
//! with CN `system:kube-scheduler`, `system:kube-controller-manager` or `system:node:NAME`,
//! which the server's bootstrap policy and node authorizer give least privilege). One thing
//! differs from an in-process store: the API server never lets a plain update set
//! `spec.nodeName`, so a remote scheduler binds through `pods/binding` with [`ApiBinder`]:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//!
//! use kube_parts::remote::ApiBinder;
//! use kube_parts::sched::framework::Framework;
//! use kube_parts::sched::{DEFAULT_SCHEDULER_NAME, SchedulingConfig, SchedulingLoop};
//! use kube_parts::store::{RemoteAuth, RemoteStore};
//!
//! let auth = RemoteAuth {
//!     ca_pem: Some(std::fs::read_to_string("pki/ca.crt")?),
//!     client_cert: Some((
//!         std::fs::read_to_string("pki/scheduler.crt")?,
//!         std::fs::read_to_string("pki/scheduler.key")?,
//!     )),
//!     token: None,
//! };
//! let remote = Arc::new(RemoteStore::with_auth("https://127.0.0.1:6443", auth)?);
//! let scheduler = SchedulingLoop::with_framework(
//!     Arc::new(Framework::new()),
//!     DEFAULT_SCHEDULER_NAME,
//!     SchedulingConfig::default(),
//! )
//! .with_binder(Arc::new(ApiBinder::new(remote.clone())));
//! // Then: Orchestrator::builder().store(remote).scheduler(scheduler).build()?.start()
//! # let _ = scheduler;
//! # Ok(())
//! # }
//! ```
//!
//! A remote node agent gets the ServiceAccount tokens of its pods' projected volumes from the
//! API server's TokenRequest with [`RemoteTokenSource`]
//! (`NodeAgent::builder(..).token_source(Arc::new(RemoteTokenSource::new(remote)))`).

use std::sync::Arc;

use kube_core::object::ObjectKey;
use kube_core::orchestrator::BoxError;
use kube_core::store::{Store, StoreError};
use kube_node::{ServiceAccountToken, TokenRequest, TokenSource};
use kube_sched::binding::{BindOutcome, Binder};
use kube_store::RemoteStore;

/// A [`Binder`] that POSTs a `Binding` to the API server's `pods/{name}/binding`, as
/// kube-scheduler does. A pod already bound (to any node), being deleted or replaced comes back
/// as [`StoreError::Conflict`], which the scheduling loop treats as "someone else decided".
#[derive(Clone, Debug)]
pub struct ApiBinder {
    remote: Arc<RemoteStore>,
}

impl ApiBinder {
    /// Binds through `remote`'s API server, with `remote`'s identity.
    pub fn new(remote: Arc<RemoteStore>) -> Self {
        Self { remote }
    }
}

#[async_trait::async_trait]
impl Binder for ApiBinder {
    async fn bind(
        &self,
        _store: &Arc<dyn Store>,
        key: &ObjectKey,
        uid: Option<&str>,
        node: &str,
    ) -> Result<BindOutcome, StoreError> {
        self.remote.bind(key, uid, node).await?;
        Ok(BindOutcome::Bound)
    }
}

/// A [`TokenSource`] that asks the API server for each token
/// (`POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`), bound to the pod, as the
/// kubelet does. With a node's identity (`system:node:NAME`) the server issues tokens only for
/// the accounts of pods bound to that node, and only bound to those pods.
#[derive(Clone, Debug)]
pub struct RemoteTokenSource {
    remote: Arc<RemoteStore>,
}

impl RemoteTokenSource {
    /// Requests tokens through `remote`'s API server, with `remote`'s identity.
    pub fn new(remote: Arc<RemoteStore>) -> Self {
        Self { remote }
    }
}

#[async_trait::async_trait]
impl TokenSource for RemoteTokenSource {
    async fn token(&self, request: &TokenRequest) -> Result<ServiceAccountToken, BoxError> {
        let account =
            ObjectKey::namespaced(request.namespace.clone(), request.service_account.clone());
        let (token, expires) = self
            .remote
            .request_token(
                &account,
                &request.audiences,
                request.expiration_seconds,
                Some((&request.pod_name, &request.pod_uid)),
            )
            .await?;
        Ok(ServiceAccountToken { token, expires })
    }
}
