//! Kubernetes' Priority admission plugin: a new pod's `priorityClassName` becomes its
//! `spec.priority` and `spec.preemptionPolicy` (a pod naming no class gets the
//! `globalDefault` class, or priority 0); a PriorityClass may not become a second
//! `globalDefault`.

use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::{ListOptions, Store};
use serde_json::{Value, json};

use super::refused::Refused;

/// The kind the plugin resolves names against.
pub(crate) const PRIORITY_CLASS: GroupKind =
    GroupKind::from_static("scheduling.k8s.io", "PriorityClass");
/// What a class without `preemptionPolicy` means (and what PriorityClass defaulting sets).
pub(crate) const DEFAULT_PREEMPTION_POLICY: &str = "PreemptLowerPriority";

/// The class marked `globalDefault`; with several (a race between writers), the lowest value,
/// as Kubernetes picks.
async fn default_class(store: &dyn Store) -> Result<Option<DynamicObject>, Refused> {
    let classes = store
        .list(&PRIORITY_CLASS, None, &ListOptions::default())
        .await?;
    Ok(classes
        .items
        .into_iter()
        .filter(|c| c.data.get("globalDefault") == Some(&Value::Bool(true)))
        .min_by_key(class_value))
}

fn class_value(class: &DynamicObject) -> i64 {
    class.data.get("value").and_then(Value::as_i64).unwrap_or(0)
}

fn class_policy(class: Option<&DynamicObject>) -> String {
    class
        .and_then(|c| c.data.get("preemptionPolicy"))
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_PREEMPTION_POLICY)
        .to_string()
}

/// Resolves a new pod's priority; refuses an unknown class, or a `priority` or
/// `preemptionPolicy` in the pod that disagrees with its class.
pub(crate) async fn admit_pod(store: &dyn Store, pod: &mut DynamicObject) -> Result<(), Refused> {
    if pod.kind != "Pod" || pod.api_version != "v1" {
        return Ok(());
    }
    let Some(Value::Object(spec)) = pod.data.get("spec") else {
        return Ok(());
    };
    let named = spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let (class_name, class) = match named {
        Some(name) => {
            match store
                .get(&PRIORITY_CLASS, &ObjectKey::cluster(name.clone()))
                .await
            {
                Ok(class) => (Some(name), Some(class)),
                Err(e) if e.is_not_found() => {
                    return Err(Refused::Forbidden(format!(
                        "no PriorityClass with name {name} was found"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        None => {
            let class = default_class(store).await?;
            (class.as_ref().and_then(|c| c.metadata.name.clone()), class)
        }
    };
    let priority = class.as_ref().map_or(0, class_value);
    let policy = class_policy(class.as_ref());
    if let Some(given) = spec.get("priority").and_then(Value::as_i64) {
        if given != priority {
            return Err(Refused::Forbidden(format!(
                "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
            )));
        }
    }
    if let Some(given) = spec.get("preemptionPolicy").and_then(Value::as_str) {
        if given != policy {
            return Err(Refused::Forbidden(format!(
                "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
            )));
        }
    }
    if let Some(Value::Object(spec)) = pod.data.get_mut("spec") {
        if let Some(name) = class_name {
            spec.insert("priorityClassName".into(), json!(name));
        }
        spec.insert("priority".into(), json!(priority));
        spec.insert("preemptionPolicy".into(), json!(policy));
    }
    Ok(())
}

/// Refuses a PriorityClass that would be a second `globalDefault` (on create, or on an
/// update of another class than the current default).
pub(crate) async fn validate_class(
    store: &dyn Store,
    class: &DynamicObject,
) -> Result<(), Refused> {
    if class.group_kind() != PRIORITY_CLASS
        || class.data.get("globalDefault") != Some(&Value::Bool(true))
    {
        return Ok(());
    }
    if let Some(existing) = default_class(store).await? {
        if existing.metadata.name != class.metadata.name {
            return Err(Refused::Forbidden(format!(
                "PriorityClass {} is already marked as default. Only one default can exist",
                existing.metadata.name.unwrap_or_default()
            )));
        }
    }
    Ok(())
}
