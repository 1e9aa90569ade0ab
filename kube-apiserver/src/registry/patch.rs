//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902), Kubernetes' strategic merge
//! patch (lists merged by their merge key, `$patch`, `$setElementOrder`, `$retainKeys`,
//! `$deleteFromPrimitiveList` directives, as kubectl sends them), and the merge step of
//! server-side apply.

use serde_json::{Map, Value};

use crate::encoding::status::{ApiError, ApiResult};

/// The patch types the server accepts, by `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub(crate) fn from_content_type(content_type: &str) -> ApiResult<Self> {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/json-patch+json" => Ok(Self::Json),
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Self::Apply),
            _ => Err(ApiError::unsupported_media_type(content_type)),
        }
    }
}

/// Applies a JSON, merge or strategic patch to `target`.
pub(crate) fn apply_patch(kind: PatchType, target: &mut Value, patch: &Value) -> ApiResult<()> {
    match kind {
        PatchType::Json => {
            let patch: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(target, &patch).map_err(|e| {
                ApiError::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    format!("the JSON patch could not be applied: {e}"),
                )
            })
        }
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            kube_core::typed::merge_patch(target, patch);
            Ok(())
        }
        PatchType::Strategic | PatchType::Apply => {
            let Value::Object(patch) = patch else {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            };
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(target) = target {
                strategic_map(target, patch)?;
            }
            Ok(())
        }
    }
}

/// The merge key of a list field, as Kubernetes' types declare with `patchMergeKey`.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" | "addresses" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "taints" => "key",
        "topologySpreadConstraints" => "topologyKey",
        "ports" => {
            // Container ports merge by containerPort, service ports by port.
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Lists of scalars that merge as sets (`patchStrategy: merge`).
fn merges_as_set(field: &str) -> bool {
    matches!(field, "finalizers")
}

fn strategic_map(target: &mut Map<String, Value>, patch: &Map<String, Value>) -> ApiResult<()> {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = patch.clone();
        target.remove("$patch");
        return Ok(());
    }
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        target.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(remove)) = (target.get_mut(field), value)
            {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if key.starts_with("$setElementOrder/") {
            continue;
        }
        if value.is_null() {
            target.remove(key);
            continue;
        }
        match (target.get_mut(key), value) {
            (Some(Value::Object(existing)), Value::Object(patch)) => {
                strategic_map(existing, patch)?
            }
            (Some(Value::Array(existing)), Value::Array(patch)) => {
                strategic_list(key, existing, patch)?;
            }
            (_, Value::Object(patch)) => {
                let mut fresh = Map::new();
                strategic_map(&mut fresh, patch)?;
                target.insert(key.clone(), Value::Object(fresh));
            }
            (_, Value::Array(patch)) => {
                let mut fresh = Vec::new();
                strategic_list(key, &mut fresh, patch)?;
                target.insert(key.clone(), Value::Array(fresh));
            }
            (_, other) => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
    // Order merged lists as the patch asks (`$setElementOrder/<field>`).
    for (key, order) in patch {
        let (Some(field), Value::Array(order)) = (key.strip_prefix("$setElementOrder/"), order)
        else {
            continue;
        };
        if let Some(Value::Array(list)) = target.get_mut(field) {
            reorder(field, list, order);
        }
    }
    Ok(())
}

fn strategic_list(field: &str, target: &mut Vec<Value>, patch: &[Value]) -> ApiResult<()> {
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *target = patch
            .iter()
            .filter(|p| p.get("$patch").is_none())
            .cloned()
            .collect();
        return Ok(());
    }
    if merges_as_set(field) {
        for item in patch {
            if !target.contains(item) {
                target.push(item.clone());
            }
        }
        return Ok(());
    }
    let mut all = target.clone();
    all.extend(patch.iter().cloned());
    let Some(key) = merge_key(field, &all) else {
        *target = patch.to_vec();
        return Ok(());
    };
    for item in patch {
        let Value::Object(item_map) = item else {
            return Err(ApiError::bad_request(format!(
                "strategic merge patch: items of {field} must be objects"
            )));
        };
        let id = item_map.get(key).cloned();
        let position = id
            .as_ref()
            .and_then(|id| target.iter().position(|t| t.get(key) == Some(id)));
        let delete = item_map.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                target.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                if let Value::Object(existing) = &mut target[i] {
                    strategic_map(existing, item_map)?;
                }
            }
            (None, false) => {
                let mut fresh = Map::new();
                strategic_map(&mut fresh, item_map)?;
                target.push(Value::Object(fresh));
            }
        }
    }
    Ok(())
}

fn reorder(field: &str, list: &mut [Value], order: &[Value]) {
    let Some(key) = merge_key(field, list).or(if merges_as_set(field) { Some("") } else { None })
    else {
        return;
    };
    let id = |v: &Value| -> Value {
        if key.is_empty() {
            v.clone()
        } else {
            v.get(key).cloned().unwrap_or(Value::Null)
        }
    };
    let rank = |v: &Value| {
        let wanted = id(v);
        order
            .iter()
            .position(|o| id(o) == wanted)
            .unwrap_or(usize::MAX)
    };
    list.sort_by_key(rank);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn strategic(target: Value, patch: Value) -> Value {
        let mut target = target;
        apply_patch(PatchType::Strategic, &mut target, &patch).unwrap();
        target
    }

    #[test]
    fn containers_merge_by_name() {
        let out = strategic(
            json!({"spec": {"containers": [
                {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}),
            json!({"spec": {"containers": [{"name": "b", "image": "b:2"}]}}),
        );
        assert_eq!(
            out,
            json!({"spec": {"containers": [
                {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}]}})
        );
    }

    #[test]
    fn delete_directive_and_element_order() {
        let out = strategic(
            json!({"spec": {"containers": [
                {"name": "a", "image": "a"}, {"name": "b", "image": "b"}, {"name": "c", "image": "c"}]}}),
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
                "containers": [{"name": "b", "$patch": "delete"}]}}),
        );
        assert_eq!(
            out,
            json!({"spec": {"containers": [
                {"name": "c", "image": "c"}, {"name": "a", "image": "a"}]}})
        );
    }

    #[test]
    fn unkeyed_lists_are_replaced_and_null_deletes() {
        let out = strategic(
            json!({"spec": {"args": ["x", "y"], "keep": 1, "drop": 2}}),
            json!({"spec": {"args": ["z"], "drop": null}}),
        );
        assert_eq!(out, json!({"spec": {"args": ["z"], "keep": 1}}));
    }

    #[test]
    fn json_patch_and_merge_patch() {
        let mut target = json!({"spec": {"replicas": 1}});
        apply_patch(
            PatchType::Json,
            &mut target,
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
        )
        .unwrap();
        assert_eq!(target["spec"]["replicas"], 3);
        apply_patch(
            PatchType::Merge,
            &mut target,
            &json!({"spec": {"paused": true}}),
        )
        .unwrap();
        assert_eq!(target, json!({"spec": {"replicas": 3, "paused": true}}));
        let err = apply_patch(
            PatchType::Json,
            &mut target,
            &json!([{"op": "test", "path": "/spec/replicas", "value": 9}]),
        )
        .unwrap_err();
        assert_eq!(err.code.as_u16(), 422);
    }
}
