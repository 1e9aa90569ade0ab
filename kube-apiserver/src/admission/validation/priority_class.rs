//! PriorityClass validation, as Kubernetes' `pkg/apis/scheduling/validation`: names starting
//! `system-` belong to the built-in classes (with their values), other classes are at most
//! 1000000000, `preemptionPolicy` is `PreemptLowerPriority` or `Never`, and neither `value`
//! nor `preemptionPolicy` changes on update.

use kube_core::object::DynamicObject;
use serde_json::Value;

use super::not_supported;
use crate::admission::system_priority::{HIGHEST_USER_DEFINABLE_PRIORITY, SYSTEM_CLASSES};
use crate::encoding::status::Cause;

const PREFIX: &str = "system-";

/// Appends the causes a PriorityClass gives; `old` is the stored class on update.
pub(super) fn validate(
    object: &DynamicObject,
    old: Option<&DynamicObject>,
    causes: &mut Vec<Cause>,
) {
    let name = object.metadata.name.as_deref().unwrap_or_default();
    let value = object
        .data
        .get("value")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let global = object.data.get("globalDefault") == Some(&Value::Bool(true));
    if name.starts_with(PREFIX) {
        let known = SYSTEM_CLASSES.iter().find(|(n, _, _)| *n == name);
        let error = match known {
            None => Some(format!("{name} is not a known system priority class")),
            Some((n, v, _)) if *v != value => {
                Some(format!("value of {n} PriorityClass must be {v}"))
            }
            Some((n, _, _)) if global => {
                Some(format!("globalDefault of {n} PriorityClass must be false"))
            }
            Some(_) => None,
        };
        if let Some(error) = error {
            causes.push(Cause::forbidden(
                "metadata.name",
                format!("priority class names with '{PREFIX}' prefix are reserved for system use only. error: {error}"),
            ));
        }
    } else if value > HIGHEST_USER_DEFINABLE_PRIORITY {
        causes.push(Cause::forbidden(
            "value",
            format!("maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"),
        ));
    }
    if let Some(policy) = object.data.get("preemptionPolicy").and_then(Value::as_str) {
        if !matches!(policy, "PreemptLowerPriority" | "Never") {
            causes.push(not_supported(
                "preemptionPolicy".into(),
                policy,
                &["Never", "PreemptLowerPriority"],
            ));
        }
    }
    let Some(old) = old else {
        return;
    };
    if old.data.get("value") != object.data.get("value") {
        causes.push(Cause::forbidden(
            "value",
            "may not be changed in an update.",
        ));
    }
    let policy = |o: &DynamicObject| o.data.get("preemptionPolicy").cloned();
    if policy(old) != policy(object) {
        let shown = policy(object)
            .and_then(|p| p.as_str().map(str::to_string))
            .unwrap_or_default();
        causes.push(Cause::invalid(
            "preemptionPolicy",
            &shown,
            "field is immutable",
        ));
    }
}
