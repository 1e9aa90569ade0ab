//! RBAC with Kubernetes' semantics: Roles and ClusterRoles grant rules (verbs × apiGroups ×
//! resources[/subresources] × resourceNames, or nonResourceURLs); RoleBindings grant a Role or
//! ClusterRole inside their namespace, ClusterRoleBindings grant a ClusterRole everywhere;
//! subjects are users, groups and ServiceAccounts; `system:masters` may do anything.

use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::{ListOptions, Store, StoreError};
use serde_json::Value;

use super::Attributes;
use crate::authn::UserInfo;

const RBAC: &str = "rbac.authorization.k8s.io";

/// One rule of a Role or ClusterRole.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PolicyRule {
    pub(crate) verbs: Vec<String>,
    pub(crate) api_groups: Vec<String>,
    pub(crate) resources: Vec<String>,
    pub(crate) resource_names: Vec<String>,
    #[serde(rename = "nonResourceURLs")]
    pub(crate) non_resource_urls: Vec<String>,
}

fn has(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

impl PolicyRule {
    /// Whether this rule allows the request (Kubernetes' `RuleAllows`).
    pub(crate) fn allows(&self, a: &Attributes) -> bool {
        if !has(&self.verbs, &a.verb) {
            return false;
        }
        if !a.resource_request {
            return self.non_resource_urls.iter().any(|url| {
                url == "*"
                    || *url == a.path
                    || url.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
            });
        }
        if !has(&self.api_groups, &a.api_group) {
            return false;
        }
        let combined = match &a.subresource {
            Some(sub) => format!("{}/{sub}", a.resource),
            None => a.resource.clone(),
        };
        let resource_ok = self.resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || a.subresource
                    .as_ref()
                    .is_some_and(|sub| r.strip_prefix("*/") == Some(sub.as_str()))
        });
        if !resource_ok {
            return false;
        }
        self.resource_names.is_empty()
            || a.name
                .as_ref()
                .is_some_and(|n| self.resource_names.iter().any(|r| r == n))
    }
}

fn rules_of(role: &DynamicObject) -> Vec<PolicyRule> {
    role.data
        .get("rules")
        .cloned()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default()
}

/// Whether a binding's subjects include the user.
fn binds(binding: &DynamicObject, user: &UserInfo) -> bool {
    let subjects = binding
        .data
        .get("subjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    subjects.iter().any(|s| {
        let name = s["name"].as_str().unwrap_or_default();
        match s["kind"].as_str() {
            Some("User") => name == user.name,
            Some("Group") => user.groups.iter().any(|g| g == name),
            Some("ServiceAccount") => {
                let namespace = s["namespace"]
                    .as_str()
                    .or(binding.metadata.namespace.as_deref())
                    .unwrap_or_default();
                user.name == format!("system:serviceaccount:{namespace}:{name}")
            }
            _ => false,
        }
    })
}

/// The role a binding refers to: (kind, name).
fn role_ref(binding: &DynamicObject) -> Option<(String, String)> {
    let r = binding.data.get("roleRef")?;
    Some((
        r["kind"].as_str()?.to_string(),
        r["name"].as_str()?.to_string(),
    ))
}

async fn role_rules(
    store: &dyn Store,
    kind: &str,
    name: &str,
    namespace: Option<&str>,
) -> Result<Vec<PolicyRule>, StoreError> {
    let (gk, key) = match (kind, namespace) {
        ("ClusterRole", _) => (
            GroupKind::new(RBAC, "ClusterRole"),
            ObjectKey::cluster(name),
        ),
        ("Role", Some(ns)) => (
            GroupKind::new(RBAC, "Role"),
            ObjectKey::namespaced(ns, name),
        ),
        _ => return Ok(Vec::new()),
    };
    match store.get(&gk, &key).await {
        Ok(role) => Ok(rules_of(&role)),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Decides a request by RBAC: `Ok(None)` allowed, `Ok(Some(reason))` no rule allows it.
pub(crate) async fn authorize(
    store: &dyn Store,
    user: &UserInfo,
    a: &Attributes,
) -> Result<bool, StoreError> {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Ok(true);
    }
    let cluster_bindings = store
        .list(
            &GroupKind::new(RBAC, "ClusterRoleBinding"),
            None,
            &ListOptions::default(),
        )
        .await?;
    for binding in cluster_bindings.items.iter().filter(|b| binds(b, user)) {
        if let Some((kind, name)) = role_ref(binding) {
            if role_rules(store, &kind, &name, None)
                .await?
                .iter()
                .any(|r| r.allows(a))
            {
                return Ok(true);
            }
        }
    }
    let Some(namespace) = a.namespace.as_deref().filter(|_| a.resource_request) else {
        return Ok(false);
    };
    let bindings = store
        .list(
            &GroupKind::new(RBAC, "RoleBinding"),
            Some(namespace),
            &ListOptions::default(),
        )
        .await?;
    for binding in bindings.items.iter().filter(|b| binds(b, user)) {
        if let Some((kind, name)) = role_ref(binding) {
            if role_rules(store, &kind, &name, Some(namespace))
                .await?
                .iter()
                .any(|r| r.allows(a))
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(value: Value) -> PolicyRule {
        serde_json::from_value(value).unwrap()
    }

    fn request(
        verb: &str,
        group: &str,
        resource: &str,
        sub: Option<&str>,
        name: Option<&str>,
    ) -> Attributes {
        Attributes {
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.map(str::to_string),
            name: name.map(str::to_string),
            namespace: Some("default".into()),
            resource_request: true,
            path: String::new(),
        }
    }

    #[test]
    fn rules_match_like_kubernetes() {
        let pods =
            rule(json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}));
        assert!(pods.allows(&request("get", "", "pods", None, Some("a"))));
        assert!(!pods.allows(&request("delete", "", "pods", None, Some("a"))));
        assert!(
            !pods.allows(&request("get", "", "pods", Some("log"), Some("a"))),
            "subresources are separate"
        );
        assert!(!pods.allows(&request("get", "apps", "pods", None, None)));

        let logs = rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}));
        assert!(logs.allows(&request("get", "", "pods", Some("log"), Some("a"))));
        let any_scale = rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*/scale"]}));
        assert!(any_scale.allows(&request(
            "patch",
            "apps",
            "deployments",
            Some("scale"),
            Some("d")
        )));
        assert!(!any_scale.allows(&request("patch", "apps", "deployments", None, Some("d"))));

        let named = rule(
            json!({"verbs": ["get", "update"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["settings"]}),
        );
        assert!(named.allows(&request("get", "", "configmaps", None, Some("settings"))));
        assert!(!named.allows(&request("get", "", "configmaps", None, Some("other"))));
        assert!(
            !named.allows(&request("list", "", "configmaps", None, None)),
            "resourceNames never match a list"
        );

        let urls = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/apis/*"]}));
        let mut healthz = request("get", "", "", None, None);
        healthz.resource_request = false;
        healthz.path = "/healthz".into();
        assert!(urls.allows(&healthz));
        healthz.path = "/apis/apps/v1".into();
        assert!(urls.allows(&healthz));
        healthz.path = "/metrics".into();
        assert!(!urls.allows(&healthz));
    }
}
