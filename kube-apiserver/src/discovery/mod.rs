//! Discovery: `/version`, `/api`, `/apis`, `/apis/{group}` and each group version's resource
//! list, built from the kind registry, so clients (kubectl, kube-rs) find every kind with its
//! verbs, short names, categories and subresources.

pub(crate) mod openapi;

use std::collections::BTreeMap;

use kube_core::kind::{KindInfo, Registry};
use serde_json::{Value, json};

/// The Kubernetes version this server speaks (its types come from k8s-openapi's `v1_33`).
pub(crate) const KUBERNETES_MINOR: &str = "33";

const ITEM_VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v1.{KUBERNETES_MINOR}.0+kube-parts-{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rustc",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
    })
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub(crate) fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [],
    })
}

/// `authorization.k8s.io/v1`: its reviews are served outside the registry (serving/access.rs),
/// `(plural, kind, namespaced)`.
const AUTHORIZATION: &str = "authorization.k8s.io";
const AUTHORIZATION_REVIEWS: [(&str, &str, bool); 3] = [
    (
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        true,
    ),
    ("selfsubjectaccessreviews", "SelfSubjectAccessReview", false),
    ("subjectaccessreviews", "SubjectAccessReview", false),
];

/// Whether `group/version` is served outside the registry (and so is discoverable).
pub(crate) fn served_outside_registry(group: &str, version: &str) -> bool {
    group == AUTHORIZATION && version == "v1"
}

/// Groups (other than core) with their versions, the first registered version preferred.
fn groups(registry: &Registry) -> BTreeMap<String, Vec<String>> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    groups.insert(AUTHORIZATION.to_string(), vec!["v1".to_string()]);
    for info in registry.iter().filter(|k| !k.group.is_empty()) {
        let versions = groups.entry(info.group.clone()).or_default();
        if !versions.contains(&info.version) {
            versions.push(info.version.clone());
        }
    }
    groups
}

fn group_object(name: &str, versions: &[String]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "name": name,
        "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null),
    })
}

pub(crate) fn group_list(registry: &Registry) -> Value {
    let groups: Vec<Value> = groups(registry)
        .iter()
        .map(|(name, versions)| group_object(name, versions))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub(crate) fn group(registry: &Registry, name: &str) -> Option<Value> {
    let groups = groups(registry);
    let versions = groups.get(name)?;
    let mut group = group_object(name, versions);
    group["kind"] = json!("APIGroup");
    group["apiVersion"] = json!("v1");
    Some(group)
}

/// Subresources a kind serves: `(name, kind, group, version, verbs)`.
pub(crate) fn subresources(info: &KindInfo) -> Vec<(&'static str, &'static str, Value)> {
    let update = json!(["get", "patch", "update"]);
    let mut subs = Vec::new();
    if matches!(
        info.kind.as_str(),
        "Pod"
            | "Node"
            | "Service"
            | "Namespace"
            | "ReplicaSet"
            | "Deployment"
            | "DaemonSet"
            | "StatefulSet"
            | "Job"
            | "CronJob"
            | "ReplicationController"
            | "PodDisruptionBudget"
    ) {
        subs.push(("status", "", update.clone()));
    }
    if matches!(
        info.kind.as_str(),
        "ReplicaSet" | "Deployment" | "ReplicationController" | "StatefulSet"
    ) {
        subs.push(("scale", "Scale", update));
    }
    if info.kind == "ServiceAccount" && info.group.is_empty() {
        subs.push(("token", "TokenRequest", json!(["create"])));
    }
    if info.kind == "Pod" && info.group.is_empty() {
        subs.push(("binding", "Binding", json!(["create"])));
        subs.push(("eviction", "Eviction", json!(["create"])));
        subs.push(("log", "", json!(["get"])));
    }
    subs
}

pub(crate) fn resource_list(registry: &Registry, group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for info in registry
        .iter()
        .filter(|k| k.group == group && k.version == version)
    {
        let mut resource = json!({
            "name": info.plural,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": ITEM_VERBS,
        });
        if !info.short_names.is_empty() {
            resource["shortNames"] = json!(info.short_names);
        }
        if !info.categories.is_empty() {
            resource["categories"] = json!(info.categories);
        }
        resources.push(resource);
        for (name, kind, verbs) in subresources(info) {
            let mut sub = json!({
                "name": format!("{}/{name}", info.plural),
                "singularName": "",
                "namespaced": info.namespaced,
                "kind": if kind.is_empty() { info.kind.as_str() } else { kind },
                "verbs": verbs,
            });
            match kind {
                "Scale" => {
                    sub["group"] = json!("autoscaling");
                    sub["version"] = json!("v1");
                }
                "Eviction" => {
                    sub["group"] = json!("policy");
                    sub["version"] = json!("v1");
                }
                _ => {}
            }
            resources.push(sub);
        }
    }
    if served_outside_registry(group, version) {
        for (plural, kind, namespaced) in AUTHORIZATION_REVIEWS {
            resources.push(json!({
                "name": plural,
                "singularName": plural.trim_end_matches('s'),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": ["create"],
            }));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_list_has_pods_with_short_names_categories_and_subresources() {
        let list = resource_list(Registry::builtin(), "", "v1");
        let resources = list["resources"].as_array().unwrap();
        let pods = resources.iter().find(|r| r["name"] == "pods").unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert!(resources.iter().any(|r| r["name"] == "pods/log"));
        assert!(resources.iter().any(|r| r["name"] == "pods/binding"));
    }

    #[test]
    fn groups_list_apps() {
        let list = group_list(Registry::builtin());
        let groups = list["groups"].as_array().unwrap();
        let apps = groups.iter().find(|g| g["name"] == "apps").unwrap();
        assert_eq!(apps["preferredVersion"]["groupVersion"], "apps/v1");
    }
}
