//! StatefulSet validation, with the rules and wording of Kubernetes'
//! `ValidateStatefulSetSpec` and `ValidateStatefulSetUpdate`: the workload rules (selector
//! matching the template, the pod template, `restartPolicy: Always`), the policies' supported
//! values, non-negative counts and partition, a positive `maxUnavailable`, claim templates with
//! names and access modes, and on update only `replicas`, `ordinals`, `template`,
//! `updateStrategy`, `revisionHistoryLimit`, `persistentVolumeClaimRetentionPolicy` and
//! `minReadySeconds` may change.

use kube_core::object::DynamicObject;
use serde_json::Value;

use super::{dns1123_label, non_negative, not_supported, required_when, workload};
use crate::encoding::status::Cause;

/// Spec fields an update may change.
const MUTABLE: [&str; 7] = [
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

/// Appends the causes a StatefulSet (`old` on update) gives.
pub(super) fn validate(
    object: &DynamicObject,
    old: Option<&DynamicObject>,
    causes: &mut Vec<Cause>,
) {
    workload(object, causes);
    let Some(spec) = object.data.get("spec") else {
        return;
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    if let Some(policy) = text(spec.get("podManagementPolicy")) {
        if !["OrderedReady", "Parallel"].contains(&policy.as_str()) {
            causes.push(not_supported(
                "spec.podManagementPolicy".into(),
                &policy,
                &["OrderedReady", "Parallel"],
            ));
        }
    }
    if let Some(service) = text(spec.get("serviceName")).filter(|s| !s.is_empty()) {
        if let Err(why) = dns1123_label(&service) {
            causes.push(Cause::invalid("spec.serviceName", &service, why));
        }
    }
    for field in ["minReadySeconds", "revisionHistoryLimit"] {
        non_negative(format!("spec.{field}"), spec.get(field), causes);
    }
    non_negative(
        "spec.ordinals.start".into(),
        spec.get("ordinals").and_then(|o| o.get("start")),
        causes,
    );
    if let Some(strategy) = spec.get("updateStrategy") {
        update_strategy(strategy, causes);
    }
    if let Some(policy) = spec.get("persistentVolumeClaimRetentionPolicy") {
        for field in ["whenDeleted", "whenScaled"] {
            if let Some(value) = text(policy.get(field)) {
                if !["Retain", "Delete"].contains(&value.as_str()) {
                    causes.push(not_supported(
                        format!("spec.persistentVolumeClaimRetentionPolicy.{field}"),
                        &value,
                        &["Retain", "Delete"],
                    ));
                }
            }
        }
    }
    if let Some(Value::Array(claims)) = spec.get("volumeClaimTemplates") {
        for (i, claim) in claims.iter().enumerate() {
            let path = format!("spec.volumeClaimTemplates[{i}]");
            match text(claim.get("metadata").and_then(|m| m.get("name"))) {
                None => causes.push(Cause::required(format!("{path}.metadata.name"))),
                Some(name) => {
                    if let Err(why) = dns1123_label(&name) {
                        causes.push(Cause::invalid(format!("{path}.metadata.name"), &name, why));
                    }
                }
            }
            let modes = claim
                .get("spec")
                .and_then(|s| s.get("accessModes"))
                .and_then(Value::as_array);
            if modes.is_none_or(Vec::is_empty) {
                causes.push(required_when(
                    format!("{path}.spec.accessModes"),
                    "at least 1 access mode is required",
                ));
            }
        }
    }
    if let Some(old_spec) = old.and_then(|o| o.data.get("spec")) {
        let frozen = |s: &Value| {
            let mut s = s.as_object().cloned().unwrap_or_default();
            for field in MUTABLE {
                s.remove(field);
            }
            s
        };
        if frozen(old_spec) != frozen(spec) {
            causes.push(Cause::forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
    }
}

fn update_strategy(strategy: &Value, causes: &mut Vec<Cause>) {
    let kind = strategy.get("type").and_then(Value::as_str);
    let rolling = strategy.get("rollingUpdate").filter(|r| !r.is_null());
    match kind {
        None => causes.push(Cause::required("spec.updateStrategy.type")),
        Some("OnDelete") if rolling.is_some() => causes.push(Cause::invalid(
            "spec.updateStrategy.rollingUpdate",
            "",
            "only allowed for updateStrategy 'RollingUpdate'",
        )),
        Some("OnDelete") => {}
        Some("RollingUpdate") => {
            let Some(rolling) = rolling else {
                return;
            };
            non_negative(
                "spec.updateStrategy.rollingUpdate.partition".into(),
                rolling.get("partition"),
                causes,
            );
            let field = "spec.updateStrategy.rollingUpdate.maxUnavailable";
            match rolling.get("maxUnavailable") {
                Some(Value::Number(n)) if n.as_i64().is_none_or(|n| n < 1) => {
                    causes.push(Cause::invalid(
                        field,
                        &n.to_string(),
                        "must be greater than 0",
                    ));
                }
                Some(Value::String(p)) => {
                    let pct = p.strip_suffix('%').and_then(|n| n.parse::<u32>().ok());
                    match pct {
                        Some(0) => {
                            causes.push(Cause::invalid(field, p, "must be greater than 0"))
                        }
                        Some(n) if n > 100 => causes.push(Cause::invalid(
                            field,
                            p,
                            "must not be greater than 100%",
                        )),
                        Some(_) => {}
                        None => causes.push(Cause::invalid(
                            field,
                            p,
                            "a valid percent string must be a numeric string followed by an ending '%'",
                        )),
                    }
                }
                _ => {}
            }
        }
        Some(other) => causes.push(not_supported(
            "spec.updateStrategy.type".into(),
            other,
            &["OnDelete", "RollingUpdate"],
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(spec: Value) -> DynamicObject {
        let mut base = json!({
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "db"}]}},
        });
        if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), spec) {
            base.extend(extra);
        }
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db"}, "spec": base,
        }))
        .expect("a StatefulSet")
    }

    fn fields(object: &DynamicObject, old: Option<&DynamicObject>) -> Vec<String> {
        let mut causes = Vec::new();
        validate(object, old, &mut causes);
        causes.into_iter().map(|c| c.field).collect()
    }

    #[test]
    fn policies_counts_and_claims_are_checked() {
        assert!(fields(&set(json!({})), None).is_empty());
        let bad = set(json!({
            "podManagementPolicy": "Random",
            "updateStrategy": {"type": "RollingUpdate",
                "rollingUpdate": {"partition": -1, "maxUnavailable": 0}},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Keep"},
            "volumeClaimTemplates": [{"metadata": {}, "spec": {}}],
            "ordinals": {"start": -2},
        }));
        assert_eq!(
            fields(&bad, None),
            [
                "spec.podManagementPolicy",
                "spec.ordinals.start",
                "spec.updateStrategy.rollingUpdate.partition",
                "spec.updateStrategy.rollingUpdate.maxUnavailable",
                "spec.persistentVolumeClaimRetentionPolicy.whenDeleted",
                "spec.volumeClaimTemplates[0].metadata.name",
                "spec.volumeClaimTemplates[0].spec.accessModes",
            ]
        );
        let on_delete = set(json!({"updateStrategy": {"type": "OnDelete", "rollingUpdate": {}}}));
        assert_eq!(
            fields(&on_delete, None),
            ["spec.updateStrategy.rollingUpdate"]
        );
    }

    #[test]
    fn updates_may_change_only_some_fields() {
        let old = set(json!({"replicas": 1}));
        let scaled = set(json!({"replicas": 3, "updateStrategy": {"type": "OnDelete"}}));
        assert!(fields(&scaled, Some(&old)).is_empty());
        let renamed = set(json!({"replicas": 1, "serviceName": "other"}));
        assert_eq!(fields(&renamed, Some(&old)), ["spec"]);
    }
}
