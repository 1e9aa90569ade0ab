//! Defaults for the kinds that govern resources, as Kubernetes' `SetDefaults_*`: a
//! PriorityClass preempts lower priorities unless told otherwise; a LimitRange's Container
//! item takes its default limit from `max` and its default request from `default`, else
//! `min`; a container that states a limit but no request requests its limit.

use serde_json::{Map, Value, json};

/// `SetDefaults_PriorityClass`.
pub(super) fn priority_class(class: &mut Map<String, Value>) {
    if class.get("preemptionPolicy").is_none_or(Value::is_null) {
        class.insert("preemptionPolicy".into(), json!("PreemptLowerPriority"));
    }
}

/// Copies each `from` amount `to` where `to` has none.
fn fill(item: &mut Map<String, Value>, from: &str, to: &str) {
    let Some(Value::Object(source)) = item.get(from).cloned() else {
        return;
    };
    let target = item.entry(to).or_insert_with(|| json!({}));
    if let Value::Object(target) = target {
        for (name, amount) in source {
            target.entry(name).or_insert(amount);
        }
    }
}

/// `SetDefaults_LimitRangeItem` for every item of a LimitRange.
pub(super) fn limit_range(data: &mut Map<String, Value>) {
    let Some(Value::Array(items)) = data.get_mut("spec").and_then(|s| s.get_mut("limits")) else {
        return;
    };
    for item in items.iter_mut().filter_map(Value::as_object_mut) {
        if item.get("type").and_then(Value::as_str) != Some("Container") {
            continue;
        }
        fill(item, "max", "default");
        fill(item, "default", "defaultRequest");
        fill(item, "min", "defaultRequest");
    }
}

/// A container's requests default to its limits (`SetDefaults_Pod`).
pub(super) fn requests_from_limits(container: &mut Map<String, Value>) {
    let Some(Value::Object(resources)) = container.get_mut("resources") else {
        return;
    };
    let Some(Value::Object(limits)) = resources.get("limits").cloned() else {
        return;
    };
    if limits.is_empty() {
        return;
    }
    let requests = resources.entry("requests").or_insert_with(|| json!({}));
    if let Value::Object(requests) = requests {
        for (name, amount) in limits {
            requests.entry(name).or_insert(amount);
        }
    }
}
