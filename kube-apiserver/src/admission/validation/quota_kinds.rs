//! ResourceQuota and LimitRange validation, after Kubernetes' `pkg/apis/core/validation`:
//! quota amounts are not negative and scopes are known; a LimitRange's item types are known
//! and its `min` ≤ `defaultRequest` ≤ `default` ≤ `max` for each resource.

use kube_core::object::DynamicObject;
use kube_core::quota::{Amount, parse_list};
use serde_json::Value;

use super::not_supported;
use crate::encoding::status::Cause;

const SCOPES: [&str; 6] = [
    "BestEffort",
    "CrossNamespacePodAffinity",
    "NotBestEffort",
    "NotTerminating",
    "PriorityClass",
    "Terminating",
];
const LIMIT_TYPES: [&str; 3] = ["Container", "PersistentVolumeClaim", "Pod"];

/// Appends the causes a ResourceQuota gives.
pub(super) fn resource_quota(object: &DynamicObject, causes: &mut Vec<Cause>) {
    let Some(spec) = object.data.get("spec") else {
        return;
    };
    for (name, amount) in parse_list(spec.get("hard")) {
        if amount.milli() < 0 {
            causes.push(Cause::invalid(
                format!("spec.hard[{name}]"),
                &amount.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    let scopes = spec.get("scopes").and_then(Value::as_array);
    for (i, scope) in scopes.into_iter().flatten().enumerate() {
        let scope = scope.as_str().unwrap_or_default();
        if !SCOPES.contains(&scope) {
            causes.push(not_supported(format!("spec.scopes[{i}]"), scope, &SCOPES));
        }
    }
}

/// Appends the causes a LimitRange gives.
pub(super) fn limit_range(object: &DynamicObject, causes: &mut Vec<Cause>) {
    let items = object
        .data
        .get("spec")
        .and_then(|s| s.get("limits"))
        .and_then(Value::as_array);
    for (i, item) in items.into_iter().flatten().enumerate() {
        let at = format!("spec.limits[{i}]");
        let kind = item["type"].as_str().unwrap_or_default();
        if !LIMIT_TYPES.contains(&kind) {
            causes.push(not_supported(format!("{at}.type"), kind, &LIMIT_TYPES));
        }
        let list = |key: &str| parse_list(item.get(key));
        let (min, max, default, request) = (
            list("min"),
            list("max"),
            list("default"),
            list("defaultRequest"),
        );
        let mut names: Vec<&String> = min
            .keys()
            .chain(max.keys())
            .chain(default.keys())
            .chain(request.keys())
            .collect();
        names.sort();
        names.dedup();
        for name in names {
            let over = |a: Option<&Amount>, b: Option<&Amount>| match (a, b) {
                (Some(a), Some(b)) => a.milli() > b.milli(),
                _ => false,
            };
            let (lo, hi, d, r) = (
                min.get(name),
                max.get(name),
                default.get(name),
                request.get(name),
            );
            let shown = |a: Option<&Amount>| a.map(|a| a.to_string()).unwrap_or_default();
            let mut push = |field: &str, value: Option<&Amount>, why: String| {
                causes.push(Cause::invalid(
                    format!("{at}.{field}[{name}]"),
                    &shown(value),
                    why,
                ));
            };
            if over(lo, hi) {
                push(
                    "min",
                    lo,
                    format!(
                        "min value {} is greater than max value {}",
                        shown(lo),
                        shown(hi)
                    ),
                );
            }
            if over(lo, r) {
                push(
                    "defaultRequest",
                    r,
                    format!(
                        "min value {} is greater than default request value {}",
                        shown(lo),
                        shown(r)
                    ),
                );
            }
            if over(r, hi) {
                push(
                    "defaultRequest",
                    r,
                    format!(
                        "default request value {} is greater than max value {}",
                        shown(r),
                        shown(hi)
                    ),
                );
            }
            if over(r, d) {
                push(
                    "defaultRequest",
                    r,
                    format!(
                        "default request value {} is greater than default limit value {}",
                        shown(r),
                        shown(d)
                    ),
                );
            }
            if over(lo, d) {
                push(
                    "default",
                    lo,
                    format!(
                        "min value {} is greater than default value {}",
                        shown(lo),
                        shown(d)
                    ),
                );
            }
            if over(d, hi) {
                push(
                    "default",
                    hi,
                    format!(
                        "default value {} is greater than max value {}",
                        shown(d),
                        shown(hi)
                    ),
                );
            }
        }
    }
}
