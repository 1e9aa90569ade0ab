//! Authorization: may they. The node authorizer for node agents, then RBAC; the attributes of
//! what a request asks to do; and the bootstrap policy every secured cluster starts with.

mod node;
mod node_volumes;
mod rbac;

use kube_core::store::{Store, StoreError};
use serde_json::json;

use crate::authn::{KUBELET_CLIENT_USER, UserInfo};

pub(crate) use node::{admit_create as admit_node_create, node_name, pod_account};

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
        // VolumeBinding: the selected-node annotation on claims, a static volume's claimRef.
        {"apiGroups": [""], "resources": ["persistentvolumeclaims", "persistentvolumes"], "verbs": ["update", "patch"]},
        {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses", "csinodes", "csidrivers", "csistoragecapacities"], "verbs": ["get", "list", "watch"]},
    ])
}

/// What a controller manager may do: the union of Kubernetes' per-controller roles for the
/// controllers kube-ctrl runs (ReplicaSet, ReplicationController, Deployment, DaemonSet, Job,
/// CronJob, TTL-after-finished, endpoints and EndpointSlices, Service IPs, namespace deletion,
/// node lifecycle, garbage collection), plus events and its leader lease. Like Kubernetes'
/// garbage collector and namespace controller it may read and delete any object; it creates
/// and updates only what its controllers own, and it cannot create or change Roles and
/// bindings, Secrets or ServiceAccount tokens.
fn controller_manager_rules() -> serde_json::Value {
    let rw = [
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];
    json!([
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch", "delete", "deletecollection"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create", "get", "update"]},
        {"apiGroups": [""], "resources": ["pods", "endpoints", "replicationcontrollers", "podtemplates"], "verbs": rw},
        {"apiGroups": [""], "resources": ["replicationcontrollers/status", "replicationcontrollers/scale",
            "replicationcontrollers/finalizers"], "verbs": ["update", "patch"]},
        {"apiGroups": [""], "resources": ["pods/status", "pods/binding", "pods/eviction"], "verbs": ["create", "update", "patch"]},
        {"apiGroups": [""], "resources": ["services", "services/status", "nodes", "nodes/status",
            "namespaces", "namespaces/status", "namespaces/finalize"], "verbs": ["update", "patch"]},
        {"apiGroups": ["apps"], "resources": ["replicasets", "deployments", "daemonsets"], "verbs": rw},
        {"apiGroups": ["apps"], "resources": ["replicasets/status", "replicasets/scale", "deployments/status",
            "deployments/scale", "daemonsets/status", "replicasets/finalizers", "deployments/finalizers"],
            "verbs": ["update", "patch"]},
        {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": rw},
        {"apiGroups": ["batch"], "resources": ["jobs/status", "jobs/finalizers", "cronjobs/status",
            "cronjobs/finalizers"], "verbs": ["update", "patch"]},
        // The StatefulSet controller (and the DaemonSet controller's revisions).
        {"apiGroups": ["apps"], "resources": ["statefulsets", "controllerrevisions"], "verbs": rw},
        {"apiGroups": ["apps"], "resources": ["statefulsets/status", "statefulsets/scale",
            "statefulsets/finalizers"], "verbs": ["update", "patch"]},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["create"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": rw},
        // The disruption and resource quota controllers write their objects' status.
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets", "poddisruptionbudgets/status"],
            "verbs": ["update", "patch"]},
        {"apiGroups": [""], "resources": ["resourcequotas", "resourcequotas/status"], "verbs": ["update", "patch"]},
        // The PV controller, its protection controllers and in-process provisioners.
        {"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": rw},
        {"apiGroups": [""], "resources": ["persistentvolumeclaims", "persistentvolumeclaims/status",
            "persistentvolumes/status"], "verbs": ["update", "patch"]},
    ])
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

/// Objects every secured cluster starts with: `cluster-admin` for `system:masters`, what every
/// authenticated user may do (discovery, health, `SelfSubjectAccessReview`), the `view` and
/// `edit` roles, and the least-privilege roles of the scheduler, the controller manager and the
/// service proxy.
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
