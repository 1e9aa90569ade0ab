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
//! (`NodeAgent::builder(..).token_source(Arc::new(RemoteTokenSource::new(remote)))`), and
//! checks who calls its kubelet server with the API server's TokenReview and
//! SubjectAccessReview with [`RemoteKubeletAuth`] (`.kubelet_auth(..)`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube_core::object::ObjectKey;
use kube_core::orchestrator::BoxError;
use kube_core::store::{Store, StoreError};
use kube_node::{
    KubeletAccess, KubeletAuth, KubeletRequest, ServiceAccountToken, TokenRequest, TokenSource,
};
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

/// A [`KubeletAuth`] that asks the API server, as the kubelet's webhook mode does: who a bearer
/// token stands for (TokenReview), then whether that user may `get` the node's subresource
/// (SubjectAccessReview on `nodes/proxy` for logs). The API server's own calls come as
/// `kube-apiserver-kubelet-client`, which its bootstrap policy allows. Answers are remembered
/// for a short while (allowed 5 minutes, refused 30 seconds, as the kubelet caches them), so a
/// followed log or a busy `kubectl logs` loop does not cost two reviews each time. Needs the
/// node's identity to be allowed to create reviews (the node authorizer allows it).
#[derive(Debug)]
pub struct RemoteKubeletAuth {
    remote: Arc<RemoteStore>,
    decided: Mutex<HashMap<Asked, (KubeletAccess, Instant)>>,
}

/// What a caller asked: its token, the verb, the node's subresource.
type Asked = (String, String, String);

/// How long an allowed caller is remembered.
const ALLOWED_FOR: Duration = Duration::from_secs(300);
/// How long a refused one is.
const REFUSED_FOR: Duration = Duration::from_secs(30);
/// Remembered answers at most; past it the memory starts over.
const REMEMBERED: usize = 1024;

impl RemoteKubeletAuth {
    /// Reviews through `remote`'s API server, with `remote`'s identity.
    pub fn new(remote: Arc<RemoteStore>) -> Self {
        Self {
            remote,
            decided: Mutex::new(HashMap::new()),
        }
    }

    async fn decide(
        &self,
        token: &str,
        request: &KubeletRequest<'_>,
    ) -> Result<KubeletAccess, BoxError> {
        let Some((user, groups)) = self.remote.review_token(token, &[]).await? else {
            return Ok(KubeletAccess::Unauthenticated);
        };
        let attributes = [
            ("verb", request.verb),
            ("resource", "nodes"),
            ("subresource", request.subresource),
            ("name", request.node),
        ];
        Ok(
            if self
                .remote
                .review_access(&user, &groups, &attributes)
                .await?
            {
                KubeletAccess::Allowed
            } else {
                KubeletAccess::Forbidden { user }
            },
        )
    }
}

#[async_trait::async_trait]
impl KubeletAuth for RemoteKubeletAuth {
    async fn check(
        &self,
        bearer: Option<&str>,
        request: &KubeletRequest<'_>,
    ) -> Result<KubeletAccess, BoxError> {
        let Some(token) = bearer else {
            return Ok(KubeletAccess::Unauthenticated);
        };
        let key = (
            token.to_string(),
            request.verb.to_string(),
            request.subresource.to_string(),
        );
        if let Ok(decided) = self.decided.lock()
            && let Some((access, at)) = decided.get(&key)
        {
            let keep = match access {
                KubeletAccess::Allowed => ALLOWED_FOR,
                _ => REFUSED_FOR,
            };
            if at.elapsed() < keep {
                return Ok(access.clone());
            }
        }
        let access = self.decide(token, request).await?;
        if let Ok(mut decided) = self.decided.lock() {
            if decided.len() >= REMEMBERED {
                decided.clear();
            }
            decided.insert(key, (access.clone(), Instant::now()));
        }
        Ok(access)
    }
}
