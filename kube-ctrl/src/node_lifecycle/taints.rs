//! Taints and tolerations: which NoExecute taints a pod tolerates, and for how long.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Taint, Toleration};

/// The taint on a node whose heartbeats stopped.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint on a node that reports itself not ready.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// Whether `toleration` tolerates `taint` (Kubernetes' `ToleratesTaint`).
pub(crate) fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if toleration
        .effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" => {
            // An empty key only makes sense with Exists.
            !key.is_empty()
                && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// How long `pod` may stay on a node with `taint` (`NoExecute`): `Some(ZERO)` if not tolerated,
/// `None` if tolerated forever. Pods with no toleration for the not-ready and unreachable taints
/// get `default` for them, as Kubernetes' DefaultTolerationSeconds admission plugin gives.
pub(crate) fn allowed_time(pod: &Pod, taint: &Taint, default: Duration) -> Option<Duration> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    let matching: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
    if matching.is_empty() {
        if taint.key == UNREACHABLE || taint.key == NOT_READY {
            return Some(default);
        }
        return Some(Duration::ZERO);
    }
    // The shortest bound among matching tolerations; forever only if none is bounded.
    let mut bound: Option<Duration> = None;
    for t in matching {
        let Some(secs) = t.toleration_seconds else {
            continue;
        };
        let d = Duration::from_secs(u64::try_from(secs).unwrap_or(0));
        bound = Some(bound.map_or(d, |b| b.min(d)));
    }
    bound
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            ..Taint::default()
        }
    }

    fn pod(tolerations: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "spec": {"containers": [], "tolerations": tolerations}
        }))
        .unwrap_or_default()
    }

    #[test]
    fn toleration_seconds_bound_the_stay() {
        let default = Duration::from_secs(300);
        assert_eq!(
            allowed_time(&pod(serde_json::json!([])), &taint(UNREACHABLE), default),
            Some(default)
        );
        assert_eq!(
            allowed_time(&pod(serde_json::json!([])), &taint("other"), default),
            Some(Duration::ZERO)
        );
        let short = pod(
            serde_json::json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]),
        );
        assert_eq!(
            allowed_time(&short, &taint(UNREACHABLE), default),
            Some(Duration::from_secs(5))
        );
        let forever = pod(serde_json::json!([{"operator": "Exists"}]));
        assert_eq!(allowed_time(&forever, &taint(UNREACHABLE), default), None);
    }
}
