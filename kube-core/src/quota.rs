//! ResourceQuota usage, shared by the API server's quota admission and the quota controller:
//! what an object costs (`pods`, `requests.cpu`, `count/<resource>.<group>`, …), which quota
//! resources a kind is charged against, which pods a quota's scopes select, and quantities
//! summed and printed as Kubernetes prints them (`1500m`, `2Gi`, `1k`).
//!
//! The evaluators follow Kubernetes' `pkg/quota/v1/evaluator/core`: pods, services and
//! PersistentVolumeClaims have their own resources; ConfigMaps, Secrets,
//! ReplicationControllers and ResourceQuotas also have a legacy count name; every kind has
//! its object count.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use crate::object::DynamicObject;
use crate::quantity::{Quantity, QuantityError};

/// An amount of one resource: exact in thousandths of a unit, plus whether it was written in
/// binary units (`Ki`, `Mi`, …), which decides how it is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount {
    milli: i64,
    binary: bool,
}

impl Amount {
    /// Parses a quantity (`500m`, `1Gi`, `3`).
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        let quantity = Quantity::parse(input)?;
        Ok(Self {
            milli: quantity.milli_value()?,
            binary: input.ends_with('i'),
        })
    }

    /// A count (`pods: 1`).
    pub fn count(n: i64) -> Self {
        Self {
            milli: n.saturating_mul(1000),
            binary: false,
        }
    }

    /// The amount in thousandths of a unit (millicores for CPU).
    pub fn milli(&self) -> i64 {
        self.milli
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.milli == 0
    }

    /// The sum; the format is `self`'s unless `self` is zero (as Kubernetes' `Add` keeps the
    /// receiver's format).
    pub fn plus(self, other: Self) -> Self {
        Self {
            milli: self.milli.saturating_add(other.milli),
            binary: if self.milli == 0 {
                other.binary
            } else {
                self.binary
            },
        }
    }

    /// The difference.
    pub fn minus(self, other: Self) -> Self {
        Self {
            milli: self.milli.saturating_sub(other.milli),
            binary: self.binary,
        }
    }
}

const DECIMAL_SUFFIXES: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
const BINARY_SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

impl fmt::Display for Amount {
    /// Kubernetes' canonical form: fractions in milli-units (`1500m`), binary amounts of at
    /// least 1024 in the largest exact binary unit (`1536Mi`, or plain bytes), the rest in the
    /// largest exact decimal unit (`1k`, `2M`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.milli % 1000 != 0 {
            return write!(f, "{}m", self.milli);
        }
        let units = self.milli / 1000;
        let magnitude = units.unsigned_abs();
        let sign = if units < 0 { "-" } else { "" };
        if magnitude == 0 {
            return f.write_str("0");
        }
        let (base, suffixes) = if self.binary && magnitude >= 1024 {
            (1024u64, BINARY_SUFFIXES)
        } else {
            (1000u64, DECIMAL_SUFFIXES)
        };
        let mut mantissa = magnitude;
        let mut exponent = 0;
        while exponent + 1 < suffixes.len() && mantissa % base == 0 {
            mantissa /= base;
            exponent += 1;
        }
        write!(f, "{sign}{mantissa}{}", suffixes[exponent])
    }
}

/// Amounts by resource name, sorted (so printed lists come out in Kubernetes' order).
pub type ResourceList = BTreeMap<String, Amount>;

/// Reads a `ResourceList` (`{"pods": "10", "requests.cpu": "2"}`); amounts that do not parse
/// are left out (the API server validated them).
pub fn parse_list(value: Option<&Value>) -> ResourceList {
    value
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(name, v)| {
                    let amount = match v {
                        Value::String(s) => Amount::parse(s).ok()?,
                        Value::Number(n) => Amount::count(n.as_i64()?),
                        _ => return None,
                    };
                    Some((name.clone(), amount))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A `ResourceList` as JSON, amounts in canonical form.
pub fn list_to_json(list: &ResourceList) -> Value {
    Value::Object(
        list.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
            .collect(),
    )
}

/// `name=amount` pairs joined by commas, as Kubernetes' quota messages print lists.
pub fn pretty(list: &ResourceList) -> String {
    list.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `a + b` for every resource of either.
pub fn add(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    for (k, v) in b {
        let entry = out.entry(k.clone()).or_insert(Amount::count(0));
        *entry = entry.plus(*v);
    }
    out
}

/// Only the resources of `list` named in `names`.
pub fn mask<'a>(list: &ResourceList, names: impl IntoIterator<Item = &'a String>) -> ResourceList {
    names
        .into_iter()
        .filter_map(|n| list.get(n).map(|v| (n.clone(), *v)))
        .collect()
}

/// The object count resource of a kind: `count/pods`, `count/deployments.apps`.
pub fn object_count_name(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }
}

/// The resources a pod's compute usage may be charged as.
const POD_RESOURCES: [&str; 10] = [
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
];

/// Resources that, when a quota limits them, every container must state (Kubernetes'
/// backward-compatibility rule, kept for cpu and memory only).
const MUST_SPECIFY: [&str; 6] = [
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

const STORAGE_CLASS_INFIX: &str = ".storageclass.storage.k8s.io/";

/// Kinds with a count name older than `count/…`.
fn legacy_count_name(group: &str, plural: &str) -> Option<&'static str> {
    if !group.is_empty() {
        return None;
    }
    match plural {
        "pods" => Some("pods"),
        "services" => Some("services"),
        "configmaps" => Some("configmaps"),
        "secrets" => Some("secrets"),
        "replicationcontrollers" => Some("replicationcontrollers"),
        "resourcequotas" => Some("resourcequotas"),
        "persistentvolumeclaims" => Some("persistentvolumeclaims"),
        _ => None,
    }
}

/// An extended resource request (`requests.example.com/gpu`): a domain-qualified name.
fn extended_request(name: &str) -> bool {
    name.strip_prefix("requests.")
        .is_some_and(|r| r.contains('/') && !r.contains("kubernetes.io/"))
}

/// Of the resource names a quota limits, those objects of this kind are charged against.
pub fn matching_resources<'a>(
    group: &str,
    plural: &str,
    names: impl IntoIterator<Item = &'a String>,
) -> Vec<String> {
    let count = object_count_name(group, plural);
    let legacy = legacy_count_name(group, plural);
    names
        .into_iter()
        .filter(|name| {
            let name = name.as_str();
            if name == count || Some(name) == legacy {
                return true;
            }
            match (group, plural) {
                ("", "pods") => {
                    POD_RESOURCES.contains(&name)
                        || name.starts_with("hugepages-")
                        || name.starts_with("requests.hugepages-")
                        || extended_request(name)
                }
                ("", "services") => {
                    matches!(name, "services.loadbalancers" | "services.nodeports")
                }
                ("", "persistentvolumeclaims") => {
                    name == "requests.storage"
                        || name.contains(STORAGE_CLASS_INFIX)
                            && (name.ends_with("/requests.storage")
                                || name.ends_with("/persistentvolumeclaims"))
                }
                _ => false,
            }
        })
        .cloned()
        .collect()
}

/// Whether an update of this kind can change its usage (pods and the rest are charged on
/// create only; a Service can change type, a claim can grow).
pub fn charged_on_update(group: &str, plural: &str) -> bool {
    group.is_empty() && matches!(plural, "services" | "persistentvolumeclaims")
}

/// One scope a quota selects objects by (`spec.scopes` entries are `Exists` selectors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeSelector {
    /// `Terminating`, `NotTerminating`, `BestEffort`, `NotBestEffort`, `PriorityClass`, …
    pub scope: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// The values of `In` and `NotIn`.
    pub values: Vec<String>,
}

/// A quota's scope selectors: `spec.scopes`, then `spec.scopeSelector.matchExpressions`.
pub fn scope_selectors(quota: &DynamicObject) -> Vec<ScopeSelector> {
    let spec = quota.data.get("spec");
    let mut out: Vec<ScopeSelector> = spec
        .and_then(|s| s.get("scopes"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|scope| ScopeSelector {
            scope: scope.to_string(),
            operator: "Exists".into(),
            values: Vec::new(),
        })
        .collect();
    let expressions = spec
        .and_then(|s| s.get("scopeSelector"))
        .and_then(|s| s.get("matchExpressions"))
        .and_then(Value::as_array);
    for e in expressions.into_iter().flatten() {
        out.push(ScopeSelector {
            scope: e["scopeName"].as_str().unwrap_or_default().to_string(),
            operator: e["operator"].as_str().unwrap_or_default().to_string(),
            values: e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        });
    }
    out
}

/// Whether a quota's scopes select the object: a quota without scopes selects everything,
/// one with scopes only pods that match every one of them.
pub fn matches_scopes(
    selectors: &[ScopeSelector],
    group: &str,
    plural: &str,
    object: &DynamicObject,
) -> bool {
    if selectors.is_empty() {
        return true;
    }
    if !(group.is_empty() && plural == "pods") {
        return false;
    }
    let spec = object.data.get("spec").cloned().unwrap_or(Value::Null);
    selectors.iter().all(|s| pod_matches_scope(s, &spec))
}

fn pod_matches_scope(selector: &ScopeSelector, spec: &Value) -> bool {
    let terminating = spec["activeDeadlineSeconds"]
        .as_i64()
        .is_some_and(|s| s >= 0);
    match selector.scope.as_str() {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort(spec),
        "NotBestEffort" => !best_effort(spec),
        "PriorityClass" => {
            let class = spec["priorityClassName"].as_str().filter(|c| !c.is_empty());
            match (selector.operator.as_str(), class) {
                ("Exists", class) => class.is_some(),
                ("DoesNotExist", class) => class.is_none(),
                ("In", Some(class)) => selector.values.iter().any(|v| v == class),
                ("In", None) => false,
                ("NotIn", Some(class)) => !selector.values.iter().any(|v| v == class),
                ("NotIn", None) => true,
                _ => false,
            }
        }
        _ => false,
    }
}

fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers"]
        .into_iter()
        .flat_map(move |list| spec[list].as_array().into_iter().flatten())
}

/// A pod is BestEffort when no container requests or limits cpu or memory.
fn best_effort(spec: &Value) -> bool {
    containers(spec).all(|c| {
        ["requests", "limits"].iter().all(|which| {
            let list = &c["resources"][*which];
            list.get("cpu").is_none() && list.get("memory").is_none()
        })
    })
}

/// What one container (or a pod's totals) is charged for its requests and limits.
fn compute_usage(requests: &ResourceList, limits: &ResourceList) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("pods".into(), Amount::count(1));
    for name in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(r) = requests.get(name) {
            out.insert(name.into(), *r);
            out.insert(format!("requests.{name}"), *r);
        }
        if let Some(l) = limits.get(name) {
            out.insert(format!("limits.{name}"), *l);
        }
    }
    for (name, r) in requests {
        if name.starts_with("hugepages-") {
            out.insert(name.clone(), *r);
            out.insert(format!("requests.{name}"), *r);
        } else if name.contains('/') && !name.contains("kubernetes.io/") {
            out.insert(format!("requests.{name}"), *r);
        }
    }
    out
}

fn container_list(container: &Value, which: &str) -> ResourceList {
    parse_list(container["resources"].get(which))
}

/// A pod's total requests or limits: the containers' (and restartable init containers') sum,
/// raised to any regular init container's, plus the pod overhead.
fn pod_total(spec: &Value, which: &str) -> ResourceList {
    let mut sum = ResourceList::new();
    for c in spec["containers"].as_array().into_iter().flatten() {
        sum = add(&sum, &container_list(c, which));
    }
    let mut sidecars = ResourceList::new();
    let mut init_peak = ResourceList::new();
    for c in spec["initContainers"].as_array().into_iter().flatten() {
        let own = container_list(c, which);
        if c["restartPolicy"] == "Always" {
            sidecars = add(&sidecars, &own);
            sum = add(&sum, &own);
        } else {
            for (k, v) in add(&own, &sidecars) {
                let peak = init_peak.entry(k).or_insert(v);
                if v.milli > peak.milli {
                    *peak = v;
                }
            }
        }
    }
    for (k, v) in init_peak {
        let total = sum.entry(k).or_insert(v);
        if v.milli > total.milli {
            *total = v;
        }
    }
    add(&sum, &parse_list(spec.get("overhead")))
}

/// Whether a pod still holds compute quota: not finished, and not past the end of a
/// deletion's grace period.
fn pod_charged(pod: &DynamicObject) -> bool {
    let phase = pod
        .data
        .get("status")
        .and_then(|s| s.get("phase"))
        .and_then(Value::as_str);
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    match &pod.metadata.deletion_timestamp {
        // The deletion timestamp already is the end of the grace period.
        Some(at) => at.0.as_second() > crate::object::now().0.as_second(),
        None => true,
    }
}

/// What an object of this kind costs.
pub fn usage(group: &str, plural: &str, object: &DynamicObject) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert(object_count_name(group, plural), Amount::count(1));
    if let Some(legacy) = legacy_count_name(group, plural) {
        out.insert(legacy.into(), Amount::count(1));
    }
    let spec = object.data.get("spec").cloned().unwrap_or(Value::Null);
    match (group, plural) {
        ("", "pods") => {
            out.remove("pods");
            if pod_charged(object) {
                let requests = pod_total(&spec, "requests");
                let limits = pod_total(&spec, "limits");
                out.extend(compute_usage(&requests, &limits));
            }
        }
        ("", "services") => {
            let ports = spec["ports"].as_array().map_or(0, Vec::len) as i64;
            match spec["type"].as_str() {
                Some("NodePort") => {
                    out.insert("services.nodeports".into(), Amount::count(ports));
                }
                Some("LoadBalancer") => {
                    out.insert("services.loadbalancers".into(), Amount::count(1));
                    if spec["allocateLoadBalancerNodePorts"] != Value::Bool(false) {
                        out.insert("services.nodeports".into(), Amount::count(ports));
                    }
                }
                _ => {}
            }
        }
        ("", "persistentvolumeclaims") => {
            let storage = spec["resources"]["requests"]["storage"]
                .as_str()
                .and_then(|s| Amount::parse(s).ok());
            if let Some(storage) = storage {
                out.insert("requests.storage".into(), storage);
            }
            if let Some(class) = spec["storageClassName"].as_str().filter(|c| !c.is_empty()) {
                out.insert(
                    format!("{class}{STORAGE_CLASS_INFIX}persistentvolumeclaims"),
                    Amount::count(1),
                );
                if let Some(storage) = storage {
                    out.insert(
                        format!("{class}{STORAGE_CLASS_INFIX}requests.storage"),
                        storage,
                    );
                }
            }
        }
        _ => {}
    }
    out
}

/// Kubernetes' quota constraint on a new pod: when a quota limits cpu or memory (requests,
/// limits or the bare names), every container must state it; the error names what each is
/// missing (`must specify limits.cpu for: app,sidecar`).
pub fn pod_constraints(required: &[String], pod: &DynamicObject) -> Result<(), String> {
    let required: BTreeSet<&str> = required
        .iter()
        .map(String::as_str)
        .filter(|r| MUST_SPECIFY.contains(r))
        .collect();
    if required.is_empty() {
        return Ok(());
    }
    let spec = pod.data.get("spec").cloned().unwrap_or(Value::Null);
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for c in containers(&spec) {
        let has = compute_usage(&container_list(c, "requests"), &container_list(c, "limits"));
        for r in &required {
            if !has.contains_key(*r) {
                let name = c["name"].as_str().unwrap_or_default().to_string();
                missing.entry(r).or_default().insert(name);
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(r, names)| {
            format!(
                "{r} for: {}",
                names.iter().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    Err(format!("must specify {}", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> DynamicObject {
        serde_json::from_value(value).expect("object decodes")
    }

    #[test]
    fn amounts_print_canonically() {
        let print = |s: &str| Amount::parse(s).expect("parses").to_string();
        assert_eq!(print("1500m"), "1500m");
        assert_eq!(print("1000m"), "1");
        assert_eq!(print("2000000"), "2M");
        assert_eq!(print("1Gi"), "1Gi");
        assert_eq!(print("1536Mi"), "1536Mi");
        assert_eq!(print("0"), "0");
        let sum = Amount::parse("512Mi")
            .expect("parses")
            .plus(Amount::parse("512Mi").expect("parses"));
        assert_eq!(sum.to_string(), "1Gi");
    }

    #[test]
    fn pods_cost_their_requests_limits_and_counts() {
        let pod = object(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
                {"name": "b", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}]}}),
        );
        let used = usage("", "pods", &pod);
        assert_eq!(
            pretty(&used),
            "count/pods=1,cpu=500m,limits.cpu=1,memory=128Mi,pods=1,requests.cpu=500m,requests.memory=128Mi"
        );
        assert_eq!(
            pod_constraints(&["limits.cpu".into(), "pods".into()], &pod),
            Err("must specify limits.cpu for: b".into())
        );
    }

    #[test]
    fn scopes_select_pods() {
        let quota = object(
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
            "spec": {"scopes": ["NotBestEffort"], "scopeSelector": {"matchExpressions": [
                {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}}),
        );
        let selectors = scope_selectors(&quota);
        let pod = |class: &str, cpu: bool| {
            let resources = if cpu {
                json!({"requests": {"cpu": "1"}})
            } else {
                json!({})
            };
            object(
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"priorityClassName": class, "containers": [{"name": "a", "resources": resources}]}}),
            )
        };
        assert!(matches_scopes(&selectors, "", "pods", &pod("high", true)));
        assert!(!matches_scopes(&selectors, "", "pods", &pod("low", true)));
        assert!(!matches_scopes(&selectors, "", "pods", &pod("high", false)));
        let cm =
            object(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}));
        assert!(!matches_scopes(&selectors, "", "configmaps", &cm));
    }
}
