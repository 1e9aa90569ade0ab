//! Deployment status and its `Available` and `Progressing` conditions, with the reasons
//! `kubectl rollout status` reads.

use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};

/// Reason of `Progressing=True` once the rollout is complete.
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
/// Reason of `Progressing=False` when no progress was made within the deadline.
pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";

/// Sets a condition, keeping `lastTransitionTime` unless the status changes and
/// `lastUpdateTime` unless anything changes.
pub(crate) fn set_condition(
    status: &mut DeploymentStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: String,
) {
    let now = kube_core::object::now();
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == value && c.reason.as_deref() == Some(reason) => {
            if c.message.as_deref() != Some(message.as_str()) {
                c.message = Some(message);
                c.last_update_time = Some(now);
            }
        }
        Some(c) => {
            if c.status != value {
                c.last_transition_time = Some(now.clone());
            }
            c.status = value.to_string();
            c.reason = Some(reason.to_string());
            c.message = Some(message);
            c.last_update_time = Some(now);
        }
        None => conditions.push(DeploymentCondition {
            type_: type_.to_string(),
            status: value.to_string(),
            reason: Some(reason.to_string()),
            message: Some(message),
            last_transition_time: Some(now.clone()),
            last_update_time: Some(now),
        }),
    }
}

/// The condition of `type_`, if set.
pub(crate) fn condition<'a>(
    status: &'a DeploymentStatus,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}
