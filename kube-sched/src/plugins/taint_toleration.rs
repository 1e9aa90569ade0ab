//! TaintToleration: NoSchedule and NoExecute taints must be tolerated; untolerated
//! PreferNoSchedule taints make a node less attractive.

use k8s_openapi::api::core::v1::{Taint, Toleration};

use super::default_normalize;
use crate::framework::{
    Cluster, CycleState, FilterPlugin, NodeInfo, Plugin, PodInfo, PreScorePlugin, ScorePlugin,
    Status,
};

/// Kubernetes' `ToleratesTaint`: the effect matches (or the toleration has none), the key
/// matches (or the toleration has none), and `Exists` or equal values.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

/// The TaintToleration plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct TaintToleration;

impl TaintToleration {
    /// Registered name.
    pub const NAME: &'static str = "TaintToleration";
}

impl Plugin for TaintToleration {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

/// The first NoSchedule/NoExecute taint of `taints` that `tolerations` do not tolerate.
pub(crate) fn untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
) -> Option<&'a Taint> {
    taints.iter().find(|taint| {
        matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
            && !tolerations.iter().any(|t| tolerates(t, taint))
    })
}

impl FilterPlugin for TaintToleration {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let taints = node.taints();
        if taints.is_empty() {
            return Status::success();
        }
        let tolerations = pod.spec().tolerations.as_deref().unwrap_or(&[]);
        match untolerated(taints, tolerations) {
            None => Status::success(),
            Some(taint) => Status::unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            )),
        }
    }
}

const KEY: &str = TaintToleration::NAME;

/// Per-cycle: the tolerations that count for PreferNoSchedule.
struct Prefer(Vec<Toleration>);

impl PreScorePlugin for TaintToleration {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &Cluster,
        nodes: &[&NodeInfo],
    ) -> Status {
        if nodes.iter().all(|n| n.taints().is_empty()) {
            // Every node scores the same: 100 after reverse normalization. Skipping keeps the
            // weights comparable only if all nodes are skipped together, which they are.
            return Status::skip();
        }
        let tolerations = pod
            .spec()
            .tolerations
            .iter()
            .flatten()
            .filter(|t| {
                matches!(
                    t.effect.as_deref(),
                    None | Some("") | Some("PreferNoSchedule")
                )
            })
            .cloned()
            .collect();
        state.write(KEY, Prefer(tolerations));
        Status::success()
    }
}

impl ScorePlugin for TaintToleration {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let empty = Prefer(Vec::new());
        let prefer = state.read::<Prefer>(KEY).unwrap_or(&empty);
        Ok(node
            .taints()
            .iter()
            .filter(|taint| {
                taint.effect == "PreferNoSchedule" && !prefer.0.iter().any(|t| tolerates(t, taint))
            })
            .count() as i64)
    }

    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) -> Status {
        default_normalize(scores, true);
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }
    fn taint(v: serde_json::Value) -> Taint {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn toleration_matching_follows_kubernetes() {
        let gpu = taint(json!({"key": "gpu", "value": "true", "effect": "NoSchedule"}));
        assert!(tolerates(
            &t(json!({"key": "gpu", "value": "true", "effect": "NoSchedule"})),
            &gpu
        ));
        assert!(tolerates(
            &t(json!({"key": "gpu", "operator": "Equal", "value": "true"})),
            &gpu
        ));
        assert!(tolerates(
            &t(json!({"key": "gpu", "operator": "Exists"})),
            &gpu
        ));
        assert!(
            tolerates(&t(json!({"operator": "Exists"})), &gpu),
            "empty key + Exists tolerates all"
        );
        assert!(!tolerates(
            &t(json!({"key": "gpu", "value": "false"})),
            &gpu
        ));
        assert!(!tolerates(
            &t(json!({"key": "gpu", "operator": "Exists", "effect": "NoExecute"})),
            &gpu
        ));
        assert!(!tolerates(
            &t(json!({"key": "gpu", "operator": "Bogus"})),
            &gpu
        ));
        let empty_value = taint(json!({"key": "k", "effect": "NoExecute"}));
        assert!(tolerates(&t(json!({"key": "k"})), &empty_value));
    }

    #[test]
    fn only_hard_effects_filter() {
        let taints = vec![
            taint(json!({"key": "soft", "effect": "PreferNoSchedule"})),
            taint(json!({"key": "hard", "value": "v", "effect": "NoExecute"})),
        ];
        assert_eq!(
            untolerated(&taints, &[]).map(|t| t.key.as_str()),
            Some("hard")
        );
        let tol = vec![t(json!({"key": "hard", "operator": "Exists"}))];
        assert!(untolerated(&taints, &tol).is_none());
    }
}
