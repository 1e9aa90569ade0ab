//! NodeAffinity: `spec.nodeSelector` and required node affinity must match the node;
//! preferred node affinity terms add their weights.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, PodSpec};
use kube_core::selector::{Operator, Requirement};

use super::default_normalize;
use crate::framework::{
    Cluster, CycleState, FilterPlugin, NodeInfo, Plugin, PodInfo, PreFilterPlugin, PreFilterResult,
    PreScorePlugin, ScorePlugin, Status,
};

/// Reason when the node does not match.
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

/// One parsed node selector term: label requirements and `metadata.name` requirements, all of
/// which must hold. A term that cannot match (empty, or with an invalid requirement) is `None`.
#[derive(Clone, Debug)]
struct Term(Option<(Vec<Requirement>, Vec<Requirement>)>);

fn requirement(r: &NodeSelectorRequirement) -> Option<Requirement> {
    let values = r.values.clone().unwrap_or_default();
    let one = |v: &[String]| {
        v.first()
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|_| v.len() == 1)
    };
    let operator = match r.operator.as_str() {
        "In" => Operator::In(values),
        "NotIn" => Operator::NotIn(values),
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        "Gt" => Operator::GreaterThan(one(&values)?),
        "Lt" => Operator::LessThan(one(&values)?),
        _ => return None,
    };
    Some(Requirement {
        key: r.key.clone(),
        operator,
    })
}

impl Term {
    fn parse(t: &NodeSelectorTerm) -> Self {
        let exprs = t.match_expressions.as_deref().unwrap_or(&[]);
        let fields = t.match_fields.as_deref().unwrap_or(&[]);
        if exprs.is_empty() && fields.is_empty() {
            return Self(None);
        }
        let labels: Option<Vec<_>> = exprs.iter().map(requirement).collect();
        // Only metadata.name is a valid field, with In or NotIn.
        let fields: Option<Vec<_>> = fields
            .iter()
            .map(|f| {
                (f.key == "metadata.name" && matches!(f.operator.as_str(), "In" | "NotIn"))
                    .then(|| requirement(f))
                    .flatten()
            })
            .collect();
        Self(labels.zip(fields))
    }

    fn matches(&self, node: &NodeInfo) -> bool {
        let Some((labels, fields)) = &self.0 else {
            return false;
        };
        if !labels.iter().all(|r| r.matches(node.labels())) {
            return false;
        }
        if fields.is_empty() {
            return true;
        }
        let name = BTreeMap::from([("metadata.name".to_string(), node.name().to_string())]);
        fields.iter().all(|r| r.matches(&name))
    }
}

/// A pod's node constraints (`nodeSelector` and required node affinity), parsed once.
#[derive(Clone, Debug, Default)]
pub struct NodeSelectorMatcher {
    selector: Vec<(String, String)>,
    /// `None`: no required affinity. Otherwise any term must match.
    required: Option<Vec<Term>>,
}

impl NodeSelectorMatcher {
    /// The constraints of `spec`.
    pub fn new(spec: &PodSpec) -> Self {
        let selector = spec
            .node_selector
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let required = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|s| s.node_selector_terms.iter().map(Term::parse).collect());
        Self { selector, required }
    }

    /// Whether there is no constraint at all.
    pub fn is_empty(&self) -> bool {
        self.selector.is_empty() && self.required.is_none()
    }

    /// Whether `node` satisfies the selector and one of the required terms.
    pub fn matches(&self, node: &NodeInfo) -> bool {
        let labels = node.labels();
        self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self
                .required
                .as_ref()
                .is_none_or(|terms| terms.iter().any(|t| t.matches(node)))
    }
}

/// The NodeAffinity plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeAffinity;

impl NodeAffinity {
    /// Registered name.
    pub const NAME: &'static str = "NodeAffinity";
}

const KEY: &str = NodeAffinity::NAME;
const SCORE_KEY: &str = "NodeAffinity/score";

struct Preferred(Vec<(i64, Term)>);

impl Plugin for NodeAffinity {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
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

impl PreFilterPlugin for NodeAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, _: &Cluster) -> PreFilterResult {
        let matcher = NodeSelectorMatcher::new(pod.spec());
        if matcher.is_empty() {
            return PreFilterResult::skip();
        }
        state.write(KEY, Arc::new(matcher));
        PreFilterResult::success()
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
        match state.read::<Arc<NodeSelectorMatcher>>(KEY) {
            Some(m) if !m.matches(node) => Status::unresolvable(REASON),
            _ => Status::success(),
        }
    }
}

impl PreScorePlugin for NodeAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &Cluster,
        _: &[&NodeInfo],
    ) -> Status {
        let terms: Vec<(i64, Term)> = pod
            .spec()
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .filter(|p| p.weight != 0)
            .map(|p| (i64::from(p.weight), Term::parse(&p.preference)))
            .collect();
        if terms.is_empty() {
            return Status::skip();
        }
        state.write(SCORE_KEY, Preferred(terms));
        Status::success()
    }
}

impl ScorePlugin for NodeAffinity {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        Ok(state
            .read::<Preferred>(SCORE_KEY)
            .map(|p| {
                p.0.iter()
                    .filter(|(_, t)| t.matches(node))
                    .map(|(w, _)| w)
                    .sum()
            })
            .unwrap_or(0))
    }

    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) -> Status {
        default_normalize(scores, false);
        Status::success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, labels: serde_json::Value) -> NodeInfo {
        NodeInfo::new(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap(),
        ))
    }
    fn matcher(spec: serde_json::Value) -> NodeSelectorMatcher {
        NodeSelectorMatcher::new(&serde_json::from_value(spec).unwrap())
    }
    fn required(terms: serde_json::Value) -> NodeSelectorMatcher {
        matcher(json!({"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}))
    }

    #[test]
    fn terms_are_ored_and_expressions_anded() {
        let n = node("n1", json!({"zone": "a", "gen": "5"}));
        let m = required(json!([
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
            {"matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a"]},
                {"key": "gen", "operator": "Gt", "values": ["4"]}
            ]}
        ]));
        assert!(m.matches(&n));
        let m = required(json!([{"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]},
            {"key": "gen", "operator": "Lt", "values": ["4"]}
        ]}]));
        assert!(!m.matches(&n));
    }

    #[test]
    fn empty_terms_match_nothing_and_fields_match_the_name() {
        let n = node("n1", json!({}));
        assert!(!required(json!([])).matches(&n));
        assert!(!required(json!([{}])).matches(&n));
        assert!(required(json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}])).matches(&n));
        assert!(!required(json!([{"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]}])).matches(&n));
        // Gt with a non-integer never matches; DoesNotExist matches a missing label.
        assert!(
            !required(
                json!([{"matchExpressions": [{"key": "x", "operator": "Gt", "values": ["a"]}]}])
            )
            .matches(&n)
        );
        assert!(
            required(json!([{"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}]))
                .matches(&n)
        );
    }

    #[test]
    fn node_selector_and_affinity_must_both_hold() {
        let n = node("n1", json!({"disk": "ssd", "zone": "a"}));
        let m = matcher(json!({"containers": [], "nodeSelector": {"disk": "ssd"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}]}}}}));
        assert!(!m.matches(&n));
        assert!(matcher(json!({"containers": [], "nodeSelector": {"disk": "ssd"}})).matches(&n));
    }
}
