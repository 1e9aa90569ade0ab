//! Who is asking, and may they: authentication (client certificates, bearer tokens from a
//! static file, ServiceAccount tokens the server signs; anonymous refused), authorization (the
//! node authorizer, then RBAC), and what a request asks to do (its attributes).

mod impersonation;
mod node;
pub mod pki;
mod rbac;
mod tokens;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use kube_core::object::{GroupKind, ObjectKey};
use kube_core::store::{Store, StoreError};
use serde_json::json;

pub use pki::{CertPair, Pki, PkiError};
pub use tokens::TokenSigner;

pub(crate) use impersonation::{Refusal as ImpersonationRefusal, impersonated};
pub(crate) use node::{admit_create as admit_node_create, node_name, pod_account};
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

/// What a request asks to do, as RBAC sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Attributes {
    pub(crate) verb: String,
    pub(crate) api_group: String,
    pub(crate) resource: String,
    pub(crate) subresource: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) namespace: Option<String>,
    /// False for non-resource URLs such as `/healthz`.
    pub(crate) resource_request: bool,
    pub(crate) path: String,
}

impl Attributes {
    /// Kubernetes' wording of a denial:
    /// `pods "web" is forbidden: User "u" cannot get resource "pods" in API group "" in the
    /// namespace "default"`.
    pub(crate) fn forbidden_message(&self, user: &UserInfo) -> String {
        if !self.resource_request {
            return format!(
                "forbidden: User \"{}\" cannot {} path \"{}\"",
                user.name, self.verb, self.path
            );
        }
        let resource = match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        };
        let object = match &self.name {
            Some(name) => format!("{resource} \"{name}\" is forbidden"),
            None => format!("{resource} is forbidden"),
        };
        let scope = match &self.namespace {
            Some(ns) => format!(" in the namespace \"{ns}\""),
            None => " at the cluster scope".into(),
        };
        format!(
            "{object}: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\"{scope}",
            user.name, self.verb, self.api_group
        )
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

/// Identifies the user from a verified client certificate or a bearer token; `None` is
/// anonymous (refused with 401).
pub(crate) async fn authenticate(
    security: &Security,
    store: &dyn Store,
    client_cert: Option<&[u8]>,
    authorization: Option<&str>,
) -> Result<Option<UserInfo>, StoreError> {
    if let Some(token) = authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
    {
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

/// Decides a request: the node authorizer for nodes, then RBAC.
pub(crate) async fn authorize(
    store: &dyn Store,
    user: &UserInfo,
    attributes: &Attributes,
) -> Result<bool, StoreError> {
    if let Some(decision) = node::authorize(store, user, attributes).await? {
        return Ok(decision);
    }
    rbac::authorize(store, user, attributes).await
}

/// The user a scheduler authenticates as (CN of its client certificate), bound to the
/// ClusterRole of the same name: Kubernetes' `system:kube-scheduler`.
pub const SCHEDULER_USER: &str = "system:kube-scheduler";
/// The user a controller manager authenticates as, bound to the ClusterRole of the same name.
pub const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";
/// The user a service proxy authenticates as, bound to the ClusterRole `system:node-proxier`
/// as in Kubernetes.
pub const PROXY_USER: &str = "system:kube-proxy";

/// A ClusterRole named `role` and the ClusterRoleBinding of the same name that grants it to
/// `user`.
fn component_role(role: &str, user: &str, rules: serde_json::Value) -> [serde_json::Value; 2] {
    let rbac = "rbac.authorization.k8s.io/v1";
    [
        json!({"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": role}, "rules": rules}),
        json!({"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}),
    ]
}

/// What a service proxy may do, after Kubernetes' `system:node-proxier`: read Services, their
/// endpoints and Nodes, and record events.
fn proxy_rules() -> serde_json::Value {
    json!([
        {"apiGroups": [""], "resources": ["services", "endpoints", "nodes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
    ])
}

/// What a scheduler may do, after Kubernetes' `system:kube-scheduler`: read what placement
/// depends on, bind pods, write their status (conditions, nominated node), delete preemption
/// victims, record events, and hold its leader lease. Nothing else: it cannot create pods,
/// touch workloads, nodes or secrets.
fn scheduler_rules() -> serde_json::Value {
    json!([
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create", "get", "update"]},
        {"apiGroups": [""], "resources": ["nodes", "namespaces", "services", "replicationcontrollers",
            "persistentvolumes", "persistentvolumeclaims"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]},
        {"apiGroups": [""], "resources": ["bindings", "pods/binding"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch", "update"]},
        {"apiGroups": ["apps"], "resources": ["replicasets", "statefulsets"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
    ])
}

/// What a controller manager may do: the union of Kubernetes' per-controller roles for the
/// controllers kube-ctrl runs (ReplicaSet, Deployment, DaemonSet, Job, endpoints and
/// EndpointSlices, Service IPs, namespace deletion, node lifecycle, garbage collection), plus
/// events and its leader lease. Like Kubernetes' garbage collector and namespace controller it
/// may read and delete any object; it creates and updates only what its controllers own, and
/// it cannot create or change Roles and bindings, Secrets or ServiceAccount tokens.
fn controller_manager_rules() -> serde_json::Value {
    let rw = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    json!([
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch", "delete", "deletecollection"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create", "get", "update"]},
        {"apiGroups": [""], "resources": ["pods", "endpoints"], "verbs": rw},
        {"apiGroups": [""], "resources": ["pods/status", "pods/binding", "pods/eviction"], "verbs": ["create", "update", "patch"]},
        {"apiGroups": [""], "resources": ["services", "services/status", "nodes", "nodes/status",
            "namespaces", "namespaces/status", "namespaces/finalize"], "verbs": ["update", "patch"]},
        {"apiGroups": ["apps"], "resources": ["replicasets", "deployments", "daemonsets"], "verbs": rw},
        {"apiGroups": ["apps"], "resources": ["replicasets/status", "replicasets/scale", "deployments/status",
            "deployments/scale", "daemonsets/status", "replicasets/finalizers", "deployments/finalizers"],
            "verbs": ["update", "patch"]},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": rw},
        {"apiGroups": ["batch"], "resources": ["jobs/status", "jobs/finalizers"], "verbs": ["update", "patch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": rw},
    ])
}

/// Objects every secured cluster starts with: `cluster-admin` for `system:masters`, what every
/// authenticated user may do (discovery, health, `SelfSubjectAccessReview`), the `view` and
/// `edit` roles, and the least-privilege roles of the scheduler, the controller manager and the
/// service proxy.
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

/// Writes the bootstrap policy at start: what is missing is created, and a bootstrap
/// ClusterRole that exists gets the bootstrap rules it lacks (Kubernetes' reconciliation: rules
/// are added, never removed; `rbac.authorization.kubernetes.io/autoupdate: "false"` opts a role
/// out). A cluster made by an older version so gains the permissions newer ones need.
pub(crate) async fn reconcile_bootstrap_policy(store: &dyn Store) -> Result<(), StoreError> {
    for object in bootstrap_policy() {
        let object: kube_core::object::DynamicObject = serde_json::from_value(object)
            .map_err(|e| StoreError::Invalid(format!("bootstrap policy: {e}")))?;
        let (kind, key) = (object.group_kind(), object.key());
        let wanted = object.data.get("rules").and_then(|r| r.as_array()).cloned();
        match store.create(object).await {
            Ok(_) => {}
            Err(e) if e.is_already_exists() => {
                let Some(wanted) = wanted else { continue };
                let mut existing = store.get(&kind, &key).await?;
                let opted_out = existing
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("rbac.authorization.kubernetes.io/autoupdate"))
                    .is_some_and(|v| v == "false");
                let mut rules = existing
                    .data
                    .get("rules")
                    .and_then(|r| r.as_array())
                    .cloned()
                    .unwrap_or_default();
                let missing: Vec<_> = wanted.into_iter().filter(|r| !rules.contains(r)).collect();
                if opted_out || missing.is_empty() {
                    continue;
                }
                rules.extend(missing);
                existing.data.insert("rules".into(), rules.into());
                match store.update(existing).await {
                    // A concurrent writer (another server starting) did it or changed it.
                    Ok(_) => {}
                    Err(e) if e.is_conflict() => {}
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub(crate) fn bootstrap_policy() -> Vec<serde_json::Value> {
    let rbac = "rbac.authorization.k8s.io/v1";
    let mut policy = vec![
        json!({"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "cluster-admin"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                      {"nonResourceURLs": ["*"], "verbs": ["*"]}]}),
        json!({"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": "cluster-admin"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}]}),
        json!({"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "system:discovery"},
            "rules": [{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/readyz",
                        "/openapi", "/openapi/*", "/version", "/version/"], "verbs": ["get"]}]}),
        json!({"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": "system:discovery"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:discovery"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}]}),
        json!({"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "system:basic-user"},
            "rules": [{"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
                      {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]}]}),
        json!({"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": "system:basic-user"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:basic-user"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}]}),
        json!({"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "system:kubelet-api-admin"},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "proxy"]},
                      {"apiGroups": [""], "resources": ["nodes/log", "nodes/metrics", "nodes/proxy", "nodes/stats"], "verbs": ["*"]}]}),
        json!({"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": "system:kube-apiserver-kubelet-client"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:kubelet-api-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KUBELET_CLIENT_USER}]}),
        json!({"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "system:monitoring"},
            "rules": [{"nonResourceURLs": ["/healthz", "/healthz/*", "/livez", "/livez/*", "/readyz", "/readyz/*", "/metrics"],
                "verbs": ["get"]}]}),
        json!({"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": {"name": "system:monitoring"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:monitoring"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:monitoring"}]}),
        json!({"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "system:auth-delegator"},
            "rules": [{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                      {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}]}),
        json!({"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "view"},
            "rules": [{"apiGroups": ["", "apps", "batch", "discovery.k8s.io", "policy"],
                "resources": ["pods", "pods/log", "services", "endpoints", "configmaps", "replicasets", "deployments",
                    "daemonsets", "jobs", "endpointslices", "poddisruptionbudgets", "events", "namespaces"],
                "verbs": ["get", "list", "watch"]}]}),
        json!({"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "edit"},
            "rules": [{"apiGroups": ["", "apps", "batch", "discovery.k8s.io", "policy"],
                "resources": ["pods", "pods/log", "pods/eviction", "services", "endpoints", "configmaps", "secrets",
                    "replicasets", "replicasets/scale", "deployments", "deployments/scale", "daemonsets", "jobs",
                    "endpointslices", "poddisruptionbudgets", "events", "serviceaccounts"],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]}]}),
    ];
    policy.extend(component_role(
        SCHEDULER_USER,
        SCHEDULER_USER,
        scheduler_rules(),
    ));
    policy.extend(component_role(
        CONTROLLER_MANAGER_USER,
        CONTROLLER_MANAGER_USER,
        controller_manager_rules(),
    ));
    policy.extend(component_role(
        "system:node-proxier",
        PROXY_USER,
        proxy_rules(),
    ));
    policy
}
