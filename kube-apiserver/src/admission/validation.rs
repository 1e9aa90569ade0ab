//! Validation, answered with a 422 `Invalid` listing every cause: names (DNS-1123), labels,
//! the kind's typed form (every field decodes; unknown fields refused under
//! `fieldValidation=Strict`), required fields, unique container names, selectors that match
//! their template, and fields that may not change on update.

mod network_policy;
mod priority_class;
mod quota_kinds;
mod stateful_set;

use std::collections::BTreeSet;

use kube_core::kind::KindInfo;
use kube_core::object::DynamicObject;
use kube_core::selector::{Selector, validate_key, validate_value};
use serde_json::{Map, Value};

use crate::encoding::status::Cause;

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;

/// A DNS-1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric.
pub(crate) fn dns1123_label(value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= DNS1123_LABEL_MAX
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (at most {DNS1123_LABEL_MAX} characters)"
        ))
    }
}

/// A DNS-1123 subdomain: dot-separated labels.
pub(crate) fn dns1123_subdomain(value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= DNS1123_SUBDOMAIN_MAX
        && value.split('.').all(|part| dns1123_label(part).is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (at most {DNS1123_SUBDOMAIN_MAX} characters)"
        ))
    }
}

/// Kinds whose names must be DNS-1123 labels (they become DNS names or label values).
fn name_is_label(kind: &str) -> bool {
    matches!(kind, "Service" | "Namespace")
}

/// Validates a new or updated object; `old` is the stored object on update.
pub(crate) fn validate(
    info: &KindInfo,
    object: &DynamicObject,
    old: Option<&DynamicObject>,
    strict: bool,
) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = object.metadata.name.as_deref().unwrap_or_default();
    let name_check = if name_is_label(&info.kind) {
        dns1123_label(name)
    } else if info.group == "rbac.authorization.k8s.io" {
        // RBAC names are path segments (`system:discovery`); the store checks them.
        Ok(())
    } else {
        dns1123_subdomain(name)
    };
    if name.is_empty() && object.metadata.generate_name.is_none() {
        causes.push(Cause::required("metadata.name"));
    } else if let (false, Err(why)) = (name.is_empty(), name_check) {
        causes.push(Cause::invalid("metadata.name", name, why));
    }
    if let Some(labels) = &object.metadata.labels {
        for (key, value) in labels {
            if let Err(why) = validate_key(key) {
                causes.push(Cause::invalid("metadata.labels", key, why));
            }
            if let Err(why) = validate_value(value) {
                causes.push(Cause::invalid("metadata.labels", value, why));
            }
        }
    }
    if let Some(validator) = info.validator {
        if let Err(e) = validator(object) {
            causes.push(Cause::invalid(e.path, "", e.message));
        } else if strict {
            match serde_json::to_value(object) {
                Ok(value) => causes.extend(unknown_fields(info, &value)),
                Err(e) => causes.push(Cause::invalid("", "", e.to_string())),
            }
        }
    }
    if !causes.is_empty() {
        return causes;
    }
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Pod") => {
            if let Some(spec) = object.data.get("spec") {
                pod_spec("spec", spec, &mut causes);
            } else {
                causes.push(Cause::required("spec"));
            }
            if let (Some(old), Some(spec)) = (old, object.data.get("spec")) {
                pod_spec_immutable(old.data.get("spec"), spec, &mut causes);
            }
        }
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") => {
            workload(object, &mut causes);
            if let Some(old) = old {
                let selector =
                    |o: &DynamicObject| o.data.get("spec").and_then(|s| s.get("selector")).cloned();
                if selector(old) != selector(object) {
                    causes.push(Cause::invalid(
                        "spec.selector",
                        &selector(object).map(|s| s.to_string()).unwrap_or_default(),
                        "field is immutable",
                    ));
                }
            }
        }
        ("batch", "Job") => match object.data.get("spec") {
            Some(spec) => job_spec("spec", spec, &mut causes),
            None => causes.push(Cause::required("spec")),
        },
        ("batch", "CronJob") => cron_job(object, &mut causes),
        ("", "ReplicationController") => replication_controller(object, &mut causes),
        ("", "PodTemplate") => match object.data.get("template").and_then(|t| t.get("spec")) {
            Some(pod) => pod_spec("template.spec", pod, &mut causes),
            None => causes.push(Cause::required("template.spec")),
        },
        ("", "Service") => service(object, old, &mut causes),
        ("networking.k8s.io", "NetworkPolicy") => network_policy::validate(object, &mut causes),
        ("apps", "StatefulSet") => stateful_set::validate(object, old, &mut causes),
        ("scheduling.k8s.io", "PriorityClass") => {
            priority_class::validate(object, old, &mut causes)
        }
        ("", "ResourceQuota") => quota_kinds::resource_quota(object, &mut causes),
        ("", "LimitRange") => quota_kinds::limit_range(object, &mut causes),
        _ => {}
    }
    causes
}

/// Fields present in the request that the kind's typed form does not know: the typed form
/// drops them on a round trip, so what is missing afterwards was unknown.
fn unknown_fields(info: &KindInfo, value: &Value) -> Vec<Cause> {
    match roundtrip(&info.kind, &info.group, value) {
        Some(known) => {
            let mut unknown = Vec::new();
            diff_unknown("", value, &known, &mut unknown);
            unknown.into_iter().map(Cause::unknown_field).collect()
        }
        None => Vec::new(),
    }
}

fn roundtrip(kind: &str, group: &str, value: &Value) -> Option<Value> {
    use k8s_openapi::api::{apps, batch, core, networking};
    fn via<K: serde::de::DeserializeOwned + serde::Serialize>(value: &Value) -> Option<Value> {
        serde_json::from_value::<K>(value.clone())
            .ok()
            .and_then(|k| serde_json::to_value(k).ok())
    }
    match (group, kind) {
        ("", "Pod") => via::<core::v1::Pod>(value),
        ("", "Service") => via::<core::v1::Service>(value),
        ("", "ConfigMap") => via::<core::v1::ConfigMap>(value),
        ("", "Secret") => via::<core::v1::Secret>(value),
        ("", "Namespace") => via::<core::v1::Namespace>(value),
        ("apps", "Deployment") => via::<apps::v1::Deployment>(value),
        ("apps", "ReplicaSet") => via::<apps::v1::ReplicaSet>(value),
        ("apps", "DaemonSet") => via::<apps::v1::DaemonSet>(value),
        ("batch", "Job") => via::<batch::v1::Job>(value),
        ("batch", "CronJob") => via::<batch::v1::CronJob>(value),
        ("", "ReplicationController") => via::<core::v1::ReplicationController>(value),
        ("", "PodTemplate") => via::<core::v1::PodTemplate>(value),
        ("networking.k8s.io", "NetworkPolicy") => via::<networking::v1::NetworkPolicy>(value),
        _ => None,
    }
}

fn diff_unknown(path: &str, given: &Value, known: &Value, out: &mut Vec<String>) {
    match (given, known) {
        (Value::Object(given), Value::Object(known)) => {
            for (key, value) in given {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match known.get(key) {
                    Some(k) => diff_unknown(&child, value, k, out),
                    // Nulls and empty values are dropped by the typed form without being unknown.
                    None if is_emptyish(value) => {}
                    None => out.push(child),
                }
            }
        }
        (Value::Array(given), Value::Array(known)) => {
            for (i, (g, k)) in given.iter().zip(known).enumerate() {
                diff_unknown(&format!("{path}[{i}]"), g, k, out);
            }
        }
        _ => {}
    }
}

fn is_emptyish(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(m) => m.values().all(is_emptyish),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn pod_spec(path: &str, spec: &Value, causes: &mut Vec<Cause>) {
    let containers = spec.get("containers").and_then(Value::as_array);
    if containers.is_none_or(|c| c.is_empty()) {
        causes.push(Cause::required(format!("{path}.containers")));
    }
    let mut names = BTreeSet::new();
    for list in ["initContainers", "containers"] {
        let Some(items) = spec.get(list).and_then(Value::as_array) else {
            continue;
        };
        for (i, container) in items.iter().enumerate() {
            let at = format!("{path}.{list}[{i}]");
            match container.get("name").and_then(Value::as_str) {
                None | Some("") => causes.push(Cause::required(format!("{at}.name"))),
                Some(name) => {
                    if let Err(why) = dns1123_label(name) {
                        causes.push(Cause::invalid(format!("{at}.name"), name, why));
                    } else if !names.insert(name.to_string()) {
                        causes.push(Cause::duplicate(format!("{at}.name"), name));
                    }
                }
            }
            if container
                .get("image")
                .and_then(Value::as_str)
                .is_none_or(|i| i.trim().is_empty())
            {
                causes.push(Cause::required(format!("{at}.image")));
            }
            for (kind, section) in [
                ("requests", "resources.requests"),
                ("limits", "resources.limits"),
            ] {
                let Some(values) = container
                    .get("resources")
                    .and_then(|r| r.get(kind))
                    .and_then(Value::as_object)
                else {
                    continue;
                };
                for (resource, quantity) in values {
                    let text = quantity
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| quantity.to_string());
                    if text.parse::<kube_core::quantity::Quantity>().is_err() {
                        causes.push(Cause::invalid(
                            format!("{at}.{section}[{resource}]"),
                            &text,
                            "must be a valid quantity",
                        ));
                    }
                }
            }
        }
    }
    if let Some(policy) = spec.get("restartPolicy").and_then(Value::as_str) {
        if !matches!(policy, "Always" | "OnFailure" | "Never") {
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: format!("{path}.restartPolicy"),
                message: format!(
                    "Unsupported value: \"{policy}\": supported values: \"Always\", \"OnFailure\", \"Never\""
                ),
            });
        }
    }
}

/// Pod specs are immutable but for images, `activeDeadlineSeconds`, added tolerations, and
/// `nodeName` set once (binding through an update, as this project's stores allow).
fn pod_spec_immutable(old: Option<&Value>, new: &Value, causes: &mut Vec<Cause>) {
    let Some(old) = old else { return };
    let normalize = |spec: &Value, other: &Value| -> Value {
        let mut spec = spec.clone();
        if let Some(map) = spec.as_object_mut() {
            map.remove("activeDeadlineSeconds");
            map.remove("tolerations");
            if other.get("nodeName").is_none_or(Value::is_null)
                || map.get("nodeName").is_none_or(Value::is_null)
            {
                map.remove("nodeName");
            }
            for list in ["initContainers", "containers"] {
                if let Some(Value::Array(items)) = map.get_mut(list) {
                    for item in items.iter_mut().filter_map(Value::as_object_mut) {
                        item.remove("image");
                    }
                }
            }
        }
        spec
    };
    if normalize(old, new) != normalize(new, old) {
        causes.push(Cause::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations)",
        ));
    }
}

fn not_supported(field: String, value: &str, supported: &[&str]) -> Cause {
    let supported: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
    Cause {
        reason: "FieldValueNotSupported",
        field,
        message: format!(
            "Unsupported value: \"{value}\": supported values: {}",
            supported.join(", ")
        ),
    }
}

fn required_when(field: String, when: &str) -> Cause {
    Cause {
        message: format!("Required value: {when}"),
        ..Cause::required(field)
    }
}

fn non_negative(field: String, value: Option<&Value>, causes: &mut Vec<Cause>) {
    if let Some(n) = value.and_then(Value::as_i64).filter(|n| *n < 0) {
        causes.push(Cause::invalid(
            field,
            &n.to_string(),
            "must be greater than or equal to 0",
        ));
    }
}

/// A Job's spec (of a Job at `spec`, or of a CronJob's template at `spec.jobTemplate.spec`),
/// with Kubernetes' rules: the pod template's restart policy is Never or OnFailure; counts are
/// not negative; `Indexed` needs `completions`; `backoffLimitPerIndex` needs `Indexed`;
/// `maxFailedIndexes` needs `backoffLimitPerIndex` and at most `completions`; a
/// `podFailurePolicy` needs restart policy Never and known actions and operators.
fn job_spec(path: &str, spec: &Value, causes: &mut Vec<Cause>) {
    let field = |name: &str| format!("{path}.{name}");
    for name in [
        "parallelism",
        "completions",
        "backoffLimit",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
        "ttlSecondsAfterFinished",
    ] {
        non_negative(field(name), spec.get(name), causes);
    }
    if let Some(d) = spec
        .get("activeDeadlineSeconds")
        .and_then(Value::as_i64)
        .filter(|d| *d <= 0)
    {
        causes.push(Cause::invalid(
            field("activeDeadlineSeconds"),
            &d.to_string(),
            "must be greater than 0",
        ));
    }
    let mode = spec
        .get("completionMode")
        .and_then(Value::as_str)
        .unwrap_or("NonIndexed");
    if !matches!(mode, "NonIndexed" | "Indexed") {
        causes.push(not_supported(
            field("completionMode"),
            mode,
            &["NonIndexed", "Indexed"],
        ));
    }
    let completions = spec.get("completions").and_then(Value::as_i64);
    if mode == "Indexed" && completions.is_none() {
        causes.push(required_when(
            field("completions"),
            "when completion mode is Indexed",
        ));
    }
    let per_index = spec
        .get("backoffLimitPerIndex")
        .filter(|v| !v.is_null())
        .is_some();
    if per_index && mode != "Indexed" {
        causes.push(Cause::forbidden(
            field("backoffLimitPerIndex"),
            "requires indexed completion mode",
        ));
    }
    if let Some(max) = spec.get("maxFailedIndexes").and_then(Value::as_i64) {
        if !per_index {
            causes.push(required_when(
                field("backoffLimitPerIndex"),
                "when maxFailedIndexes is specified",
            ));
        } else if completions.is_some_and(|c| max > c) {
            causes.push(Cause::invalid(
                field("maxFailedIndexes"),
                &max.to_string(),
                "must be less than or equal to completions",
            ));
        }
    }
    let Some(pod) = spec.get("template").and_then(|t| t.get("spec")) else {
        causes.push(Cause::required(field("template")));
        return;
    };
    pod_spec(&field("template.spec"), pod, causes);
    let policy = pod.get("restartPolicy").and_then(Value::as_str);
    if !matches!(policy, Some("Never" | "OnFailure")) {
        causes.push(not_supported(
            field("template.spec.restartPolicy"),
            policy.unwrap_or_default(),
            &["OnFailure", "Never"],
        ));
    }
    if per_index && policy != Some("Never") {
        causes.push(Cause::invalid(
            field("backoffLimitPerIndex"),
            &spec
                .get("backoffLimitPerIndex")
                .map(Value::to_string)
                .unwrap_or_default(),
            "requires the pod's restartPolicy to be Never",
        ));
    }
    if let Some(rules) = spec.get("podFailurePolicy").map(|p| p.get("rules")) {
        if policy != Some("Never") {
            causes.push(Cause::invalid(
                field("template.spec.restartPolicy"),
                policy.unwrap_or_default(),
                "only \"Never\" is supported when podFailurePolicy is specified",
            ));
        }
        for (i, rule) in rules
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = |name: &str| field(&format!("podFailurePolicy.rules[{i}].{name}"));
            let action = rule
                .get("action")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !matches!(action, "FailJob" | "FailIndex" | "Ignore" | "Count") {
                causes.push(not_supported(
                    at("action"),
                    action,
                    &["Count", "FailIndex", "FailJob", "Ignore"],
                ));
            }
            if action == "FailIndex" && !per_index {
                causes.push(Cause::forbidden(
                    at("action"),
                    "The action FailIndex can be used only when backoffLimitPerIndex is specified",
                ));
            }
            let exit_codes = rule.get("onExitCodes").filter(|v| !v.is_null());
            let conditions = rule.get("onPodConditions").filter(|v| !v.is_null());
            match (exit_codes, conditions) {
                (Some(_), Some(_)) => causes.push(Cause::invalid(
                    field(&format!("podFailurePolicy.rules[{i}]")),
                    "",
                    "specifying both OnExitCodes and OnPodConditions is not supported",
                )),
                (None, None) => causes.push(Cause::invalid(
                    field(&format!("podFailurePolicy.rules[{i}]")),
                    "",
                    "specifying one of OnExitCodes and OnPodConditions is required",
                )),
                _ => {}
            }
            if let Some(codes) = exit_codes {
                let operator = codes
                    .get("operator")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if !matches!(operator, "In" | "NotIn") {
                    causes.push(not_supported(
                        at("onExitCodes.operator"),
                        operator,
                        &["In", "NotIn"],
                    ));
                }
                let values = codes.get("values").and_then(Value::as_array);
                if values.is_none_or(Vec::is_empty) {
                    causes.push(Cause::required(at("onExitCodes.values")));
                }
                if operator == "In"
                    && values.is_some_and(|v| v.iter().any(|c| c.as_i64() == Some(0)))
                {
                    causes.push(Cause::invalid(
                        at("onExitCodes.values"),
                        "0",
                        "must not be 0 for the In operator",
                    ));
                }
            }
        }
    }
}

/// A CronJob: a schedule Kubernetes' cron parser accepts, a known time zone, a known
/// concurrency policy, non-negative deadlines and history limits, a name of at most 52
/// characters (its Jobs append 11), and a valid Job template.
fn cron_job(object: &DynamicObject, causes: &mut Vec<Cause>) {
    let name = object.metadata.name.as_deref().unwrap_or_default();
    if name.len() > 52 {
        causes.push(Cause::invalid(
            "metadata.name",
            name,
            "must be no more than 52 characters",
        ));
    }
    let Some(spec) = object.data.get("spec") else {
        causes.push(Cause::required("spec"));
        return;
    };
    match spec.get("schedule").and_then(Value::as_str) {
        None | Some("") => causes.push(Cause::required("spec.schedule")),
        Some(schedule) => {
            if let Err(e) = kube_core::cron::Schedule::parse(schedule) {
                causes.push(Cause::invalid("spec.schedule", schedule, e.to_string()));
            }
        }
    }
    if let Some(tz) = spec.get("timeZone").and_then(Value::as_str) {
        if let Err(e) = kube_core::cron::time_zone(Some(tz)) {
            causes.push(Cause::invalid("spec.timeZone", tz, e.to_string()));
        }
    }
    if let Some(policy) = spec.get("concurrencyPolicy").and_then(Value::as_str) {
        if !matches!(policy, "Allow" | "Forbid" | "Replace") {
            causes.push(not_supported(
                "spec.concurrencyPolicy".into(),
                policy,
                &["Allow", "Forbid", "Replace"],
            ));
        }
    }
    for name in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        non_negative(format!("spec.{name}"), spec.get(name), causes);
    }
    match spec.get("jobTemplate").and_then(|t| t.get("spec")) {
        Some(job) => job_spec("spec.jobTemplate.spec", job, causes),
        None => causes.push(Cause::required("spec.jobTemplate.spec")),
    }
}

/// A ReplicationController: a non-empty selector (a label map) that the template's labels
/// match, a template whose restart policy is Always, and non-negative replicas.
fn replication_controller(object: &DynamicObject, causes: &mut Vec<Cause>) {
    let Some(spec) = object.data.get("spec") else {
        causes.push(Cause::required("spec"));
        return;
    };
    non_negative("spec.replicas".into(), spec.get("replicas"), causes);
    non_negative(
        "spec.minReadySeconds".into(),
        spec.get("minReadySeconds"),
        causes,
    );
    let selector: std::collections::BTreeMap<String, String> = spec
        .get("selector")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    if selector.is_empty() {
        causes.push(Cause::required("spec.selector"));
    }
    let Some(template) = spec.get("template").filter(|t| !t.is_null()) else {
        causes.push(Cause::required("spec.template"));
        return;
    };
    let labels: std::collections::BTreeMap<String, String> = template
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    if !selector.is_empty() && !Selector::from_labels(&selector).matches(&labels) {
        causes.push(Cause::invalid(
            "spec.template.metadata.labels",
            &format!("{labels:?}"),
            "`selector` does not match template `labels`",
        ));
    }
    match template.get("spec") {
        Some(pod) => {
            pod_spec("spec.template.spec", pod, causes);
            let policy = pod.get("restartPolicy").and_then(Value::as_str);
            if policy != Some("Always") {
                causes.push(not_supported(
                    "spec.template.spec.restartPolicy".into(),
                    policy.unwrap_or_default(),
                    &["Always"],
                ));
            }
        }
        None => causes.push(Cause::required("spec.template.spec")),
    }
}

fn workload(object: &DynamicObject, causes: &mut Vec<Cause>) {
    let Some(spec) = object.data.get("spec") else {
        causes.push(Cause::required("spec"));
        return;
    };
    if let Some(replicas) = spec.get("replicas").and_then(Value::as_i64) {
        if replicas < 0 {
            causes.push(Cause::invalid(
                "spec.replicas",
                &replicas.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    let Some(selector) = spec.get("selector") else {
        causes.push(Cause::required("spec.selector"));
        return;
    };
    let parsed = serde_json::from_value(selector.clone())
        .map_err(|e| e.to_string())
        .and_then(|s| Selector::from_label_selector(&s).map_err(|e| e.to_string()));
    let selector = match parsed {
        Ok(s) if s.is_empty() => {
            causes.push(Cause::invalid(
                "spec.selector",
                "{}",
                "empty selector is invalid for deployment",
            ));
            return;
        }
        Ok(s) => s,
        Err(why) => {
            causes.push(Cause::invalid("spec.selector", &selector.to_string(), why));
            return;
        }
    };
    let Some(template) = spec.get("template") else {
        causes.push(Cause::required("spec.template"));
        return;
    };
    let labels: std::collections::BTreeMap<String, String> = template
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    if !selector.matches(&labels) {
        causes.push(Cause::invalid(
            "spec.template.metadata.labels",
            &format!("{labels:?}"),
            "`selector` does not match template `labels`",
        ));
    }
    match template.get("spec") {
        Some(pod) => {
            pod_spec("spec.template.spec", pod, causes);
            if object.kind != "Job"
                && pod.get("restartPolicy").and_then(Value::as_str) != Some("Always")
            {
                causes.push(Cause {
                    reason: "FieldValueNotSupported",
                    field: "spec.template.spec.restartPolicy".into(),
                    message: "Unsupported value: only \"Always\" is supported".into(),
                });
            }
        }
        None => causes.push(Cause::required("spec.template.spec")),
    }
}

fn service(object: &DynamicObject, old: Option<&DynamicObject>, causes: &mut Vec<Cause>) {
    let spec = object
        .data
        .get("spec")
        .cloned()
        .unwrap_or(Value::Object(Map::new()));
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    if !matches!(
        service_type,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "spec.type".into(),
            message: format!("Unsupported value: \"{service_type}\""),
        });
    }
    let ports = spec
        .get("ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if ports.is_empty() && service_type != "ExternalName" && !headless {
        causes.push(Cause::required("spec.ports"));
    }
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&number) {
            causes.push(Cause::invalid(
                format!("spec.ports[{i}].port"),
                &number.to_string(),
                "must be between 1 and 65535, inclusive",
            ));
        }
        let name = port.get("name").and_then(Value::as_str).unwrap_or_default();
        if ports.len() > 1 && name.is_empty() {
            causes.push(Cause::required(format!("spec.ports[{i}].name")));
        }
        if !name.is_empty() && !names.insert(name.to_string()) {
            causes.push(Cause::duplicate(format!("spec.ports[{i}].name"), name));
        }
    }
    if let Some(old) = old {
        let ip = |o: &DynamicObject| {
            o.data
                .get("spec")
                .and_then(|s| s.get("clusterIP"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        if let (Some(before), Some(after)) = (ip(old), ip(object)) {
            if before != after {
                causes.push(Cause::invalid(
                    "spec.clusterIP",
                    &after,
                    "field is immutable",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_core::kind::Registry;
    use serde_json::json;

    fn check(api_version: &str, kind: &str, value: Value, strict: bool) -> Vec<Cause> {
        let mut value = value;
        value["apiVersion"] = json!(api_version);
        value["kind"] = json!(kind);
        let object: DynamicObject = serde_json::from_value(value).unwrap();
        let info = Registry::builtin()
            .get(&object.group_kind())
            .unwrap()
            .clone();
        validate(&info, &object, None, strict)
    }

    #[test]
    fn names_must_be_dns1123() {
        let causes = check(
            "v1",
            "ConfigMap",
            json!({"metadata": {"name": "Bad_Name"}}),
            false,
        );
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "metadata.name");
    }

    #[test]
    fn pods_need_containers_with_unique_names_and_images() {
        let causes = check(
            "v1",
            "Pod",
            json!({"metadata": {"name": "p"}, "spec": {"containers": [
                {"name": "a", "image": "x"}, {"name": "a"}]}}),
            false,
        );
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.containers[1].name", "spec.containers[1].image"]
        );
    }

    #[test]
    fn strict_validation_names_unknown_fields() {
        let causes = check(
            "v1",
            "Pod",
            json!({"metadata": {"name": "p"}, "spec": {"containers": [
                {"name": "a", "image": "x", "imagePullPolice": "Always"}]}}),
            true,
        );
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.containers[0].imagePullPolice");
    }

    #[test]
    fn deployment_selector_must_match_template() {
        let causes = check(
            "apps/v1",
            "Deployment",
            json!({"metadata": {"name": "d"}, "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "other"}},
                    "spec": {"restartPolicy": "Always", "containers": [{"name": "a", "image": "x"}]}}}}),
            false,
        );
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
    }
}
