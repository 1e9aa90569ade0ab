//! OpenAPI documents for clients.
//!
//! `/openapi/v3` lists one document per group version; each names every resource path with its
//! operations, tagged with `x-kubernetes-group-version-kind`, and declares the
//! `fieldValidation` parameter on writes. kubectl reads that to learn the server validates
//! fields itself, then sends `fieldValidation=Strict` and leaves validation to the server
//! (which refuses unknown and malformed fields with 422). `/openapi/v2` answers an empty
//! protobuf document: clients that look a kind up there find no schema and skip their own
//! validation instead of failing.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kube_core::kind::{KindInfo, Registry};
use serde_json::{Map, Value, json};

use crate::encoding::status::ApiResult;

fn group_versions(registry: &Registry) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for info in registry.iter() {
        let gv = (info.group.clone(), info.version.clone());
        if !out.contains(&gv) {
            out.push(gv);
        }
    }
    out
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

pub(crate) fn v3_root(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for (group, version) in group_versions(registry) {
        let path = gv_path(&group, &version);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", env!("CARGO_PKG_VERSION"))}),
        );
    }
    json!({"paths": paths})
}

fn operation(info: &KindInfo, verb: &str, writes: bool) -> Value {
    let mut parameters =
        vec![json!({"name": "pretty", "in": "query", "schema": {"type": "string"}})];
    if writes {
        parameters.push(json!({"name": "dryRun", "in": "query", "schema": {"type": "string"}}));
        parameters
            .push(json!({"name": "fieldManager", "in": "query", "schema": {"type": "string"}}));
        parameters
            .push(json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}));
    }
    json!({
        "operationId": format!("{verb}{}", info.kind),
        "parameters": parameters,
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": verb,
        "x-kubernetes-group-version-kind": {"group": info.group, "version": info.version, "kind": info.kind},
    })
}

pub(crate) fn v3_group_version(registry: &Registry, path: &str) -> Option<Value> {
    let path = path.trim_end_matches('/');
    let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", version] => (String::new(), (*version).to_string()),
        ["apis", group, version] => ((*group).to_string(), (*version).to_string()),
        _ => return None,
    };
    let kinds: Vec<_> = registry
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for info in kinds {
        let namespace = info.namespaced.then_some("{namespace}");
        let collection = info.collection_path(namespace);
        let item = info.item_path(namespace, "{name}");
        paths.insert(
            collection,
            json!({
                "get": operation(info, "list", false),
                "post": operation(info, "post", true),
                "delete": operation(info, "deletecollection", false),
            }),
        );
        paths.insert(
            item,
            json!({
                "get": operation(info, "get", false),
                "put": operation(info, "put", true),
                "patch": operation(info, "patch", true),
                "delete": operation(info, "delete", false),
            }),
        );
        let name = if info.group.is_empty() {
            format!("io.k8s.api.core.{}.{}", info.version, info.kind)
        } else {
            format!(
                "io.k8s.api.{}.{}.{}",
                info.group.split('.').next().unwrap_or_default(),
                info.version,
                info.kind
            )
        };
        schemas.insert(
            name,
            json!({
                "type": "object",
                "x-kubernetes-group-version-kind": [{"group": info.group, "version": info.version, "kind": info.kind}],
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{}.0", crate::discovery::KUBERNETES_MINOR)},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// The v2 document: empty, in the protobuf form kubectl asks for, or `{}`-shaped JSON.
pub(crate) fn v2(registry: &Registry, headers: &HeaderMap) -> ApiResult<Response> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if accept.contains("protobuf") {
        // An empty message is a valid, empty `openapi_v2.Document`.
        return Ok((
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            )],
            Vec::<u8>::new(),
        )
            .into_response());
    }
    let _ = registry;
    Ok(crate::registry::handlers::json_response(
        StatusCode::OK,
        &json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": format!("v1.{}.0", crate::discovery::KUBERNETES_MINOR)}, "paths": {}, "definitions": {}}),
    ))
}
