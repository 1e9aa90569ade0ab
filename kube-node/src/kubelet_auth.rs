//! Who may call a node agent's kubelet server. The kubelet does not decide this itself: it
//! asks the API server who a bearer token stands for (TokenReview) and whether that user may
//! act on the node (SubjectAccessReview) — "webhook" authentication and authorization. kube-node
//! does not talk to an API server, so the check is given to it
//! ([`NodeAgentBuilder::kubelet_auth`](crate::NodeAgentBuilder::kubelet_auth));
//! `kube_parts::remote::RemoteKubeletAuth` is one over a `RemoteStore`. Without one, the
//! server answers anyone who reaches it (tests, and clusters inside one process).

use kube_core::orchestrator::BoxError;

/// A request to a kubelet server, as it is authorized: the verb (`get` for reads) on the
/// node's `subresource` (`proxy` for `/containerLogs`, as the kubelet maps its paths).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeletRequest<'a> {
    /// The node the server belongs to.
    pub node: &'a str,
    /// `get`, `create`, ... from the HTTP method.
    pub verb: &'a str,
    /// The `nodes` subresource the path falls under.
    pub subresource: &'a str,
}

/// What the check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeletAccess {
    /// Go on.
    Allowed,
    /// No token, or one that stands for nobody: 401.
    Unauthenticated,
    /// This user may not: 403.
    Forbidden {
        /// Who asked.
        user: String,
    },
}

/// Authenticates and authorizes the kubelet server's requests. Object-safe: an agent holds an
/// `Arc<dyn KubeletAuth>`.
#[async_trait::async_trait]
pub trait KubeletAuth: Send + Sync + std::fmt::Debug {
    /// Decides on a request carrying `bearer` (the token of its `Authorization: Bearer`
    /// header, if any). An error means it could not decide (the server answers 503).
    async fn check(
        &self,
        bearer: Option<&str>,
        request: &KubeletRequest<'_>,
    ) -> Result<KubeletAccess, BoxError>;
}
