//! Request paths and query strings: which kind, namespace, object and subresource a request
//! names, and its list/watch/delete parameters.

use std::collections::HashMap;
use std::sync::Arc;

use kube_core::kind::{KindInfo, Registry};
use kube_core::selector::{FieldSelector, Selector};

use crate::encoding::status::{ApiError, ApiResult};

/// What a resource path names.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) info: Arc<KindInfo>,
    /// The namespace in the path (`None` for cluster-scoped kinds and all-namespace lists).
    pub(crate) namespace: Option<String>,
    /// The object's name; `None` for a collection.
    pub(crate) name: Option<String>,
    /// `status`, `scale`, `binding`, `log`, `eviction`, ...
    pub(crate) subresource: Option<String>,
}

/// A parsed API path.
#[derive(Clone, Debug)]
pub(crate) enum ApiPath {
    /// `/api` or `/apis`.
    Root { legacy: bool },
    /// `/apis/{group}`.
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`.
    GroupVersion { group: String, version: String },
    /// A resource, collection or object.
    Resource(Target),
}

/// Parses `/api/...` and `/apis/...` paths against the registry.
pub(crate) fn parse_path(registry: &Registry, path: &str) -> ApiResult<ApiPath> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api"] => return Ok(ApiPath::Root { legacy: true }),
        ["apis"] => return Ok(ApiPath::Root { legacy: false }),
        ["apis", group] => return Ok(ApiPath::Group((*group).to_string())),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(not_found_path(path)),
    };
    if rest.is_empty() {
        let known = registry
            .iter()
            .any(|k| k.group == group && k.version == version);
        if !known && !crate::discovery::served_outside_registry(group, version) {
            return Err(not_found_path(path));
        }
        return Ok(ApiPath::GroupVersion {
            group: group.to_string(),
            version: version.to_string(),
        });
    }
    let lookup = |plural: &str| -> ApiResult<Arc<KindInfo>> {
        registry
            .by_plural(group, plural)
            .filter(|k| k.version == version)
            .cloned()
            .ok_or_else(|| not_found_path(path))
    };
    // `/namespaces/{ns}/{plural}...` addresses namespaced objects; `/namespaces/{name}` and
    // `/namespaces/{name}/status` address the Namespace object itself.
    let target = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if registry
                .by_plural(group, plural)
                .is_some_and(|k| k.namespaced) =>
        {
            let info = lookup(plural)?;
            let (name, subresource) = split_tail(tail, path)?;
            Target {
                info,
                namespace: Some(validate_segment(ns, path)?),
                name,
                subresource,
            }
        }
        [plural, tail @ ..] => {
            let info = lookup(plural)?;
            let (name, subresource) = split_tail(tail, path)?;
            if info.namespaced && name.is_some() {
                // A namespaced object must be addressed inside its namespace.
                return Err(not_found_path(path));
            }
            Target {
                info,
                namespace: None,
                name,
                subresource,
            }
        }
        [] => return Err(not_found_path(path)),
    };
    Ok(ApiPath::Resource(target))
}

fn split_tail(tail: &[&str], path: &str) -> ApiResult<(Option<String>, Option<String>)> {
    match tail {
        [] => Ok((None, None)),
        [name] => Ok((Some(validate_segment(name, path)?), None)),
        [name, sub] => Ok((
            Some(validate_segment(name, path)?),
            Some((*sub).to_string()),
        )),
        _ => Err(not_found_path(path)),
    }
}

/// A path segment, percent-decoded (clients encode names such as `system:node` as
/// `system%3Anode`). Empty, `.`, `..`, a `/` once decoded, and malformed escapes are 404.
fn validate_segment(segment: &str, path: &str) -> ApiResult<String> {
    let decoded = percent_decode(segment).ok_or_else(|| not_found_path(path))?;
    if decoded.is_empty() || decoded == "." || decoded == ".." || decoded.contains('/') {
        return Err(not_found_path(path));
    }
    Ok(decoded)
}

fn percent_decode(segment: &str) -> Option<String> {
    if !segment.contains('%') {
        return Some(segment.to_string());
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub(crate) fn not_found_path(path: &str) -> ApiError {
    ApiError::not_found(format!(
        "the server could not find the requested resource ({path})"
    ))
}

/// The query string, decoded.
#[derive(Clone, Debug, Default)]
pub(crate) struct Query(HashMap<String, String>);

impl Query {
    pub(crate) fn parse(query: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn flag(&self, key: &str) -> ApiResult<bool> {
        match self.0.get(key).map(String::as_str) {
            // Go's `strconv.ParseBool` forms, as kube-apiserver accepts them (plus a bare
            // `?key`, which means true).
            None | Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
            Some("" | "1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "invalid value for {key}: strconv.ParseBool: parsing \"{other}\": invalid syntax"
            ))),
        }
    }

    pub(crate) fn number<T: std::str::FromStr>(&self, key: &str) -> ApiResult<Option<T>> {
        self.get(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: \"{v}\"")))
            })
            .transpose()
    }

    pub(crate) fn label_selector(&self) -> ApiResult<Option<Selector>> {
        self.get("labelSelector")
            .map(|s| {
                Selector::parse(s)
                    .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))
            })
            .transpose()
    }

    pub(crate) fn field_selector(&self) -> ApiResult<Option<FieldSelector>> {
        self.get("fieldSelector")
            .map(|s| {
                FieldSelector::parse(s).map_err(|e| {
                    ApiError::bad_request(format!("invalid field selector \"{s}\": {e}"))
                })
            })
            .transpose()
    }

    /// `resourceVersion` as a store revision. `""` and `"0"` mean "any" (`None`).
    pub(crate) fn resource_version(&self) -> ApiResult<Option<u64>> {
        match self.get("resourceVersion") {
            None | Some("0") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: \"{v}\""))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Target {
        match parse_path(Registry::builtin(), path).unwrap() {
            ApiPath::Resource(t) => t,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn resource_paths_name_kind_namespace_object_and_subresource() {
        let t = target("/api/v1/namespaces/default/pods/web/log");
        assert_eq!(t.info.kind, "Pod");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.subresource.as_deref(), Some("log"));

        let t = target("/apis/apps/v1/deployments");
        assert_eq!(t.info.kind, "Deployment");
        assert!(t.namespace.is_none() && t.name.is_none());

        let t = target("/api/v1/namespaces/kube-system");
        assert_eq!(t.info.kind, "Namespace");
        assert_eq!(t.name.as_deref(), Some("kube-system"));

        let t = target("/api/v1/nodes/n1/status");
        assert_eq!(t.info.kind, "Node");
        assert_eq!(t.subresource.as_deref(), Some("status"));

        // Names arrive percent-encoded from some clients.
        let t = target("/apis/rbac.authorization.k8s.io/v1/clusterroles/system%3Anode");
        assert_eq!(t.name.as_deref(), Some("system:node"));
    }

    #[test]
    fn unknown_or_malformed_paths_are_not_found() {
        for path in [
            "/api/v2/pods",
            "/apis/apps/v1/widgets",
            "/api/v1/pods/web",
            "/api/v1/namespaces/default/pods/web/log/extra",
            "/api/v1/namespaces/default/pods/a%2Fb",
            "/api/v1/namespaces/default/pods/%2E%2E",
            "/api/v1/namespaces/default/pods/bad%zz",
            "/apis/apps/v1beta9",
        ] {
            let err = parse_path(Registry::builtin(), path).unwrap_err();
            assert_eq!(err.code.as_u16(), 404, "{path}");
        }
    }
}
