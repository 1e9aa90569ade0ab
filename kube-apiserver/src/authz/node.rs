//! The node authorizer and NodeRestriction: a node agent (user `system:node:<name>` in group
//! `system:nodes`) may change only its own Node and Lease and the pods bound to it, and read the
//! ConfigMaps and Secrets its pods use — nothing of other nodes.

use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::selector::FieldSelector;
use kube_core::store::{ListOptions, Store, StoreError};
use serde_json::Value;

use super::Attributes;
use crate::authn::UserInfo;

/// The group of node identities.
pub(crate) const NODE_GROUP: &str = "system:nodes";

/// The node a user is, if it is one.
pub(crate) fn node_name(user: &UserInfo) -> Option<&str> {
    if !user.groups.iter().any(|g| g == NODE_GROUP) {
        return None;
    }
    user.name
        .strip_prefix("system:node:")
        .filter(|n| !n.is_empty())
}

const READ: [&str; 3] = ["get", "list", "watch"];

/// `Some(decision)` for node users, `None` for everyone else (RBAC decides).
pub(crate) async fn authorize(
    store: &dyn Store,
    user: &UserInfo,
    a: &Attributes,
) -> Result<Option<bool>, StoreError> {
    let Some(node) = node_name(user) else {
        return Ok(None);
    };
    if !a.resource_request {
        return Ok(Some(a.verb == "get"));
    }
    let read = READ.contains(&a.verb.as_str());
    let own = a.name.as_deref() == Some(node);
    let decision = match (a.api_group.as_str(), a.resource.as_str()) {
        ("", "nodes") => match a.verb.as_str() {
            v if READ.contains(&v) => true,
            // The name of a created Node is checked against the identity on admission.
            "create" => true,
            "update" | "patch" | "delete" => own,
            _ => false,
        },
        ("coordination.k8s.io", "leases") => {
            a.namespace.as_deref() == Some("kube-node-lease")
                && match a.verb.as_str() {
                    "create" => true,
                    "get" | "watch" | "list" => true,
                    "update" | "patch" | "delete" => own,
                    _ => false,
                }
        }
        ("", "pods") => match (a.verb.as_str(), a.subresource.as_deref()) {
            (v, None) if READ.contains(&v) => true,
            ("update" | "patch", Some("status")) | ("update" | "patch" | "delete", None) => {
                pod_bound_to(store, a, node).await?
            }
            _ => false,
        },
        ("", "services" | "endpoints" | "namespaces") | ("discovery.k8s.io", "endpointslices") => {
            read
        }
        ("", "events") | ("events.k8s.io", "events") => {
            matches!(a.verb.as_str(), "create" | "update" | "patch")
        }
        ("", "configmaps" | "secrets") => {
            a.verb == "get"
                && match (&a.namespace, &a.name) {
                    (Some(ns), Some(name)) => {
                        used_by_pod_on(store, node, ns, &a.resource, name).await?
                    }
                    _ => false,
                }
        }
        // The claims its pods mount, and the volumes those are bound to.
        ("", "persistentvolumeclaims") => {
            a.verb == "get"
                && match (&a.namespace, &a.name) {
                    (Some(ns), Some(name)) => {
                        super::node_volumes::claim_used_on(store, node, ns, name).await?
                    }
                    _ => false,
                }
        }
        ("", "persistentvolumes") => {
            a.verb == "get"
                && match &a.name {
                    Some(name) => super::node_volumes::volume_used_on(store, node, name).await?,
                    None => false,
                }
        }
        // Its own reviews, and those it checks its kubelet server's callers with.
        ("authorization.k8s.io", "selfsubjectaccessreviews" | "subjectaccessreviews")
        | ("authentication.k8s.io", "selfsubjectreviews" | "tokenreviews") => a.verb == "create",
        // Tokens for the accounts its pods run as; the token handler checks that the token is
        // bound to one of its pods.
        ("", "serviceaccounts") => {
            a.verb == "create"
                && a.subresource.as_deref() == Some("token")
                && match (&a.namespace, &a.name) {
                    (Some(ns), Some(name)) => account_used_on(store, node, ns, name).await?,
                    _ => false,
                }
        }
        _ => false,
    };
    Ok(Some(decision))
}

async fn pod_bound_to(store: &dyn Store, a: &Attributes, node: &str) -> Result<bool, StoreError> {
    let (Some(ns), Some(name)) = (&a.namespace, &a.name) else {
        return Ok(false);
    };
    match store
        .get(
            &GroupKind::POD,
            &ObjectKey::namespaced(ns.clone(), name.clone()),
        )
        .await
    {
        Ok(pod) => Ok(bound_node(&pod).as_deref() == Some(node)),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

fn bound_node(pod: &DynamicObject) -> Option<String> {
    pod.field("spec.nodeName")
        .and_then(|n| n.as_str().map(str::to_string))
}

/// Whether a pod bound to `node` runs as this ServiceAccount.
async fn account_used_on(
    store: &dyn Store,
    node: &str,
    namespace: &str,
    account: &str,
) -> Result<bool, StoreError> {
    let options = ListOptions::default().fields(FieldSelector::equals("spec.nodeName", node));
    let pods = store
        .list(&GroupKind::POD, Some(namespace), &options)
        .await?;
    Ok(pods.items.iter().any(|pod| pod_account(pod) == account))
}

/// The ServiceAccount a pod runs as.
pub(crate) fn pod_account(pod: &DynamicObject) -> String {
    pod.field("spec.serviceAccountName")
        .and_then(|n| n.as_str().map(str::to_string))
        .unwrap_or_else(|| "default".into())
}

/// Whether a pod bound to `node` refers to this ConfigMap or Secret (volumes, env, envFrom).
async fn used_by_pod_on(
    store: &dyn Store,
    node: &str,
    namespace: &str,
    resource: &str,
    name: &str,
) -> Result<bool, StoreError> {
    let options = ListOptions::default().fields(FieldSelector::equals("spec.nodeName", node));
    let pods = store
        .list(&GroupKind::POD, Some(namespace), &options)
        .await?;
    let (volume_field, volume_key, env_field) = if resource == "secrets" {
        ("secret", "secretName", "secretKeyRef")
    } else {
        ("configMap", "name", "configMapKeyRef")
    };
    let env_from = if resource == "secrets" {
        "secretRef"
    } else {
        "configMapRef"
    };
    Ok(pods.items.iter().any(|pod| {
        let spec = pod.data.get("spec").cloned().unwrap_or(Value::Null);
        let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
        let in_volumes = volumes.iter().any(|v| {
            v[volume_field][volume_key] == name
                || v["projected"]["sources"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| s[volume_field]["name"] == name))
        });
        let containers = ["containers", "initContainers"]
            .iter()
            .flat_map(|list| spec[list].as_array().cloned().unwrap_or_default())
            .collect::<Vec<_>>();
        let in_env = containers.iter().any(|c| {
            c["env"].as_array().is_some_and(|env| {
                env.iter()
                    .any(|e| e["valueFrom"][env_field]["name"] == name)
            }) || c["envFrom"]
                .as_array()
                .is_some_and(|from| from.iter().any(|f| f[env_from]["name"] == name))
        });
        in_volumes || in_env
    }))
}

/// NodeRestriction on writes whose target is only known from the body: a node may create only
/// its own Node, and only its own Lease.
pub(crate) fn admit_create(user: &UserInfo, object: &DynamicObject) -> Result<(), String> {
    let Some(node) = node_name(user) else {
        return Ok(());
    };
    let name = object.metadata.name.as_deref().unwrap_or_default();
    match object.kind.as_str() {
        "Node" | "Lease" if name != node => Err(format!(
            "node \"{node}\" is not allowed to create {} \"{name}\"",
            object.kind.to_ascii_lowercase()
        )),
        "Pod" => Err(format!("node \"{node}\" is not allowed to create pods")),
        _ => Ok(()),
    }
}
