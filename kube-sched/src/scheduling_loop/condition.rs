//! The `PodScheduled` condition, edited in a pod's JSON so fields this crate does not model
//! survive the write.

use kube_core::object::{DynamicObject, now};
use serde_json::{Map, Value};

/// The condition type the scheduler owns.
pub(crate) const POD_SCHEDULED: &str = "PodScheduled";

/// Sets `PodScheduled` to `status` with `reason` and `message`. Returns whether anything
/// changed, so callers can skip writes that would only churn the pod.
pub(crate) fn set_pod_scheduled(
    pod: &mut DynamicObject,
    status: bool,
    reason: Option<&str>,
    message: Option<&str>,
) -> bool {
    let status = if status { "True" } else { "False" };
    let mut changed = false;
    with_object(&mut pod.data, "status", |pod_status| {
        let mut conditions = match pod_status.remove("conditions") {
            Some(Value::Array(list)) => list,
            _ => Vec::new(),
        };
        changed = upsert(&mut conditions, status, reason, message);
        pod_status.insert("conditions".into(), Value::Array(conditions));
    });
    changed
}

/// Replaces or appends the `PodScheduled` entry of `conditions`; returns whether it changed.
fn upsert(
    conditions: &mut Vec<Value>,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) -> bool {
    let existing = conditions
        .iter()
        .position(|c| c.get("type").and_then(Value::as_str) == Some(POD_SCHEDULED));
    let old = existing.and_then(|i| conditions.get(i));
    let field = |name: &str| old.and_then(|c| c.get(name)).and_then(Value::as_str);
    let same_status = field("status") == Some(status);
    if same_status && field("reason") == reason && field("message") == message {
        return false;
    }
    // The transition time moves only when the status flips, as in Kubernetes.
    let transition = match old.and_then(|c| c.get("lastTransitionTime")) {
        Some(time) if same_status => time.clone(),
        _ => serde_json::to_value(now()).unwrap_or(Value::Null),
    };
    let mut condition = Map::new();
    condition.insert("type".into(), POD_SCHEDULED.into());
    condition.insert("status".into(), status.into());
    if let Some(reason) = reason {
        condition.insert("reason".into(), reason.into());
    }
    if let Some(message) = message {
        condition.insert("message".into(), message.into());
    }
    if !transition.is_null() {
        condition.insert("lastTransitionTime".into(), transition);
    }
    match existing.and_then(|i| conditions.get_mut(i)) {
        Some(slot) => *slot = Value::Object(condition),
        None => conditions.push(Value::Object(condition)),
    }
    true
}

/// Runs `edit` on the JSON object at `map[name]`, which is created (or replaced, if it is not
/// an object) as needed.
pub(crate) fn with_object<T>(
    map: &mut Map<String, Value>,
    name: &str,
    edit: impl FnOnce(&mut Map<String, Value>) -> T,
) -> T {
    let mut object = match map.remove(name) {
        Some(Value::Object(object)) => object,
        _ => Map::new(),
    };
    let out = edit(&mut object);
    map.insert(name.to_string(), Value::Object(object));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_is_replaced_and_unchanged_writes_are_reported() {
        let mut pod: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}
        }))
        .unwrap();
        assert!(set_pod_scheduled(
            &mut pod,
            false,
            Some("Unschedulable"),
            Some("no")
        ));
        assert!(!set_pod_scheduled(
            &mut pod,
            false,
            Some("Unschedulable"),
            Some("no")
        ));
        assert!(set_pod_scheduled(&mut pod, true, None, None));
        let conditions = pod.field("status.conditions").unwrap();
        let conditions = conditions.as_array().unwrap();
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[1]["type"], "PodScheduled");
        assert_eq!(conditions[1]["status"], "True");
        assert!(conditions[1].get("reason").is_none());
        assert!(conditions[1]["lastTransitionTime"].is_string());
    }
}
