//! Facts about pods that several controllers need.

use k8s_openapi::api::core::v1::Pod;

/// The pod's phase (`Pending` if unset).
pub(crate) fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Whether the pod counts towards a controller's replicas: not finished and not being deleted.
pub(crate) fn is_active(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_none()
}

/// Whether the pod's `Ready` condition is `True`.
pub(crate) fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// When the pod's `Ready` condition last became `True`, if it is `True`.
fn ready_since(pod: &Pod) -> Option<std::time::SystemTime> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    let secs = condition
        .last_transition_time
        .as_ref()
        .map_or(0, |t| t.0.as_second());
    // A Ready condition without a transition time counts as ready since forever, as
    // Kubernetes treats it.
    Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

/// Whether the pod is available: ready for at least `min_ready_seconds` at `now`. If it is
/// ready but not yet available, also returns how long until it will be.
pub(crate) fn availability(
    pod: &Pod,
    min_ready_seconds: i32,
    now: std::time::SystemTime,
) -> (bool, Option<std::time::Duration>) {
    if !is_ready(pod) {
        return (false, None);
    }
    let min_ready = std::time::Duration::from_secs(u64::try_from(min_ready_seconds).unwrap_or(0));
    if min_ready.is_zero() {
        return (true, None);
    }
    let Some(since) = ready_since(pod) else {
        return (false, None);
    };
    let available_at = since + min_ready;
    match available_at.duration_since(now) {
        Ok(wait) if !wait.is_zero() => (false, Some(wait)),
        _ => (true, None),
    }
}
