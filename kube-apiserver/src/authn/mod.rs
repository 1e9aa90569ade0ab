//! Authentication: who is asking. Client certificates verified by the TLS layer, bearer tokens
//! from a static file, ServiceAccount tokens the server signs (anonymous is refused), and
//! impersonation on top of them.

mod impersonation;
pub mod pki;
mod tokens;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use kube_core::object::{GroupKind, ObjectKey};
use kube_core::store::{Store, StoreError};

pub use pki::{CertPair, Pki, PkiError};
pub use tokens::TokenSigner;

pub(crate) use impersonation::{Refusal as ImpersonationRefusal, impersonated};
pub(crate) use tokens::TokenClaims;
/// An authenticated user: name and groups, as Kubernetes' `UserInfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    /// The user name (`kubernetes-admin`, `system:node:node-1`,
    /// `system:serviceaccount:default:robot`).
    pub name: String,
    /// Groups, `system:authenticated` included.
    pub groups: Vec<String>,
}

impl UserInfo {
    fn new(name: impl Into<String>, mut groups: Vec<String>) -> Self {
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        Self {
            name: name.into(),
            groups,
        }
    }

    /// The user the API server's own components act as when security is off.
    pub(crate) fn anonymous_admin() -> Self {
        Self::new("system:admin", vec!["system:masters".into()])
    }
}

/// How the server authenticates and authorizes: TLS material, the token file, the
/// ServiceAccount token signer, and the audit log.
#[derive(Clone, Debug)]
pub struct Security {
    pub(crate) tls: Arc<rustls::ServerConfig>,
    pub(crate) static_tokens: HashMap<String, UserInfo>,
    pub(crate) signer: TokenSigner,
    pub(crate) audit_log: Option<std::path::PathBuf>,
    /// The cluster CA certificate (PEM) published in every namespace as `kube-root-ca.crt`.
    pub(crate) ca_pem: Option<String>,
    /// The bearer token the server presents to node agents' kubelet servers (for `pods/log`),
    /// standing for [`KUBELET_CLIENT_USER`]; random, made with the `Security`, kept in memory.
    pub(crate) kubelet_client_token: String,
}

/// Who the API server is when it calls node agents' kubelet servers (kubeadm's name for it),
/// bound to `system:kubelet-api-admin` by the bootstrap policy.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// 244 random bits (two v4 UUIDs), as hex.
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

impl Security {
    /// TLS with `tls`, tokens signed by `signer`, no static tokens and no audit log.
    pub fn new(tls: Arc<rustls::ServerConfig>, signer: TokenSigner) -> Self {
        let kubelet_client_token = random_token();
        let mut static_tokens = HashMap::new();
        static_tokens.insert(
            kubelet_client_token.clone(),
            UserInfo::new(KUBELET_CLIENT_USER, Vec::new()),
        );
        Self {
            tls,
            static_tokens,
            signer,
            audit_log: None,
            ca_pem: None,
            kubelet_client_token,
        }
    }

    /// Reads a static token file: CSV lines `token,user,uid,"group1,group2"` (Kubernetes'
    /// `--token-auth-file` format).
    pub fn token_file(mut self, path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let mut fields = split_csv(line).into_iter();
            let (Some(token), Some(user)) = (fields.next(), fields.next()) else {
                continue;
            };
            let _uid = fields.next();
            let groups = fields
                .next()
                .map(|g| {
                    g.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            self.static_tokens
                .insert(token, UserInfo::new(user, groups));
        }
        Ok(self)
    }

    /// Adds one static bearer token for `user` in `groups`.
    pub fn token(mut self, token: impl Into<String>, user: &str, groups: &[&str]) -> Self {
        self.static_tokens.insert(
            token.into(),
            UserInfo::new(user, groups.iter().map(|g| g.to_string()).collect()),
        );
        self
    }

    /// The cluster CA certificate (PEM), which the server publishes in every namespace as the
    /// `ca.crt` key of the `kube-root-ca.crt` ConfigMap, for the `ca.crt` file of pods'
    /// ServiceAccount token volumes (what in-cluster clients trust).
    pub fn ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Writes an audit log (JSON lines, metadata level) to `path`.
    pub fn audit_log(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.audit_log = Some(path.into());
        self
    }
}

fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    fields.push(current);
    fields
}

/// The token of an `Authorization: Bearer <token>` header. The scheme is case-insensitive
/// (RFC 7235, and Kubernetes' bearer authenticator): the Python client sends `bearer`.
pub(crate) fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Identifies the user from a verified client certificate or a bearer token; `None` is
/// anonymous (refused with 401).
pub(crate) async fn authenticate(
    security: &Security,
    store: &dyn Store,
    client_cert: Option<&[u8]>,
    authorization: Option<&str>,
) -> Result<Option<UserInfo>, StoreError> {
    if let Some(token) = authorization.and_then(bearer_token) {
        if let Some(user) = security.static_tokens.get(token) {
            return Ok(Some(user.clone()));
        }
        if let Some(claims) = security.signer.verify(token) {
            // Bound to an account that still exists, with the same UID.
            let key = ObjectKey::namespaced(claims.namespace.clone(), claims.name.clone());
            if let Some((pod, uid)) = &claims.pod {
                // A token bound to a pod ends with the pod.
                let key = ObjectKey::namespaced(claims.namespace.clone(), pod.clone());
                match store.get(&GroupKind::POD, &key).await {
                    Ok(pod) if pod.metadata.uid.as_deref() == Some(uid.as_str()) => {}
                    Ok(_) => return Ok(None),
                    Err(e) if e.is_not_found() => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            return match store.get(&GroupKind::new("", "ServiceAccount"), &key).await {
                Ok(account) if account.metadata.uid.as_deref() == Some(claims.uid.as_str()) => {
                    Ok(Some(UserInfo::new(
                        format!("system:serviceaccount:{}:{}", claims.namespace, claims.name),
                        vec![
                            "system:serviceaccounts".into(),
                            format!("system:serviceaccounts:{}", claims.namespace),
                        ],
                    )))
                }
                Ok(_) => Ok(None),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            };
        }
        return Ok(None);
    }
    if let Some(der) = client_cert {
        if let Some((user, groups)) = pki::subject(der) {
            return Ok(Some(UserInfo::new(user, groups)));
        }
    }
    Ok(None)
}

/// What a TokenReview finds: the user a bearer token stands for and the audiences it is good
/// for, or why it is refused.
pub(crate) enum TokenReviewed {
    Authenticated(UserInfo, Vec<String>),
    Refused(String),
}

/// Reviews `token` as the server would authenticate it, for the `audiences` the reviewer names
/// (none: the server's own). ServiceAccount tokens must have been issued for one of them;
/// static tokens are good for any, as in Kubernetes.
pub(crate) async fn review_token(
    security: &Security,
    store: &dyn Store,
    token: &str,
    audiences: &[String],
) -> Result<TokenReviewed, StoreError> {
    let issued_for = security
        .signer
        .verify_with_audiences(token)
        .map(|(_, issued_for)| issued_for);
    if let Some(issued_for) = &issued_for
        && !audiences.is_empty()
        && !audiences.iter().any(|a| issued_for.contains(a))
    {
        return Ok(TokenReviewed::Refused(format!(
            "token audiences {issued_for:?} is invalid for the target audiences {audiences:?}"
        )));
    }
    let bearer = format!("Bearer {token}");
    Ok(
        match authenticate(security, store, None, Some(&bearer)).await? {
            Some(user) => {
                let good_for = match (audiences.is_empty(), issued_for) {
                    (true, Some(issued_for)) => issued_for,
                    (false, Some(issued_for)) => audiences
                        .iter()
                        .filter(|a| issued_for.contains(a))
                        .cloned()
                        .collect(),
                    (_, None) => audiences.to_vec(),
                };
                TokenReviewed::Authenticated(user, good_for)
            }
            None => TokenReviewed::Refused("invalid bearer token".into()),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}
