//! [`PodInfo`]: a pod with everything placement needs parsed once (requests, ports, affinity
//! terms, spread constraints), so filters and scores never re-parse quantities or selectors.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube_core::object::ObjectKey;
use kube_core::resources::{Resources, pod_requests};
use kube_core::selector::{Operator, Requirement, Selector};

use super::cluster::Cluster;
use crate::error::SchedError;
use crate::score::{NonZero, pod_non_zero};

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// A host port a pod asks for (`hostPort` set on a container port).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// `TCP` unless set.
    pub protocol: String,
    /// The host IP, `0.0.0.0` (every address) unless set.
    pub ip: String,
    /// The port.
    pub port: i32,
}

impl HostPort {
    /// Whether two host ports cannot both be bound on one node: same protocol and port, and the
    /// same IP or either is the wildcard.
    pub fn conflicts(&self, other: &Self) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// One pod (anti-)affinity term, with its selectors parsed.
#[derive(Clone, Debug)]
pub struct AffinityTerm {
    /// Pods the term is about; `None` (a null `labelSelector`) matches no pod.
    pub selector: Option<Selector>,
    /// Namespaces listed explicitly (or the pod's own one when neither list nor selector is set).
    pub namespaces: BTreeSet<String>,
    /// `namespaceSelector`: namespaces whose labels match also count (`{}` = all namespaces).
    pub namespace_selector: Option<Selector>,
    /// The node label defining the topology domain.
    pub topology_key: String,
}

impl AffinityTerm {
    fn parse(term: &PodAffinityTerm, pod_namespace: &str, pod: &Pod) -> Result<Self, SchedError> {
        let mut label_selector = term.label_selector.as_ref().map(selector).transpose()?;
        // matchLabelKeys / mismatchLabelKeys narrow the selector with the incoming pod's values.
        let labels = pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS);
        if let Some(sel) = &mut label_selector {
            let mut reqs = sel.requirements().to_vec();
            for key in term.match_label_keys.iter().flatten() {
                if let Some(v) = labels.get(key) {
                    reqs.push(Requirement {
                        key: key.clone(),
                        operator: Operator::In(vec![v.clone()]),
                    });
                }
            }
            for key in term.mismatch_label_keys.iter().flatten() {
                if let Some(v) = labels.get(key) {
                    reqs.push(Requirement {
                        key: key.clone(),
                        operator: Operator::NotIn(vec![v.clone()]),
                    });
                }
            }
            *sel = Selector::from_requirements(reqs);
        }
        let namespace_selector = term.namespace_selector.as_ref().map(selector).transpose()?;
        let mut namespaces: BTreeSet<String> = term.namespaces.iter().flatten().cloned().collect();
        if namespaces.is_empty() && namespace_selector.is_none() {
            namespaces.insert(pod_namespace.to_string());
        }
        Ok(Self {
            selector: label_selector,
            namespaces,
            namespace_selector,
            topology_key: term.topology_key.clone(),
        })
    }

    /// Whether `pod` is one of the pods this term is about. `cluster` gives namespaces' labels
    /// for `namespaceSelector` (unknown namespaces have none).
    pub fn matches(&self, pod: &PodInfo, cluster: &Cluster) -> bool {
        self.matches_with(pod, &|ns| cluster.namespace_labels(ns))
    }

    /// [`AffinityTerm::matches`] with namespaces' labels from `namespace_labels`.
    pub fn matches_with<'m>(
        &self,
        pod: &PodInfo,
        namespace_labels: &dyn Fn(&str) -> Option<&'m BTreeMap<String, String>>,
    ) -> bool {
        let Some(selector) = &self.selector else {
            return false;
        };
        let ns = pod.namespace();
        let ns_ok = self.namespaces.contains(ns)
            || self.namespace_selector.as_ref().is_some_and(|s| {
                s.is_empty() || s.matches(namespace_labels(ns).unwrap_or(&NO_LABELS))
            });
        ns_ok && selector.matches(pod.labels())
    }
}

/// An affinity term with its preference weight.
#[derive(Clone, Debug)]
pub struct WeightedTerm {
    /// 1..=100.
    pub weight: i64,
    /// The term.
    pub term: AffinityTerm,
}

/// One topology spread constraint, parsed.
#[derive(Clone, Debug)]
pub struct SpreadConstraint {
    /// Largest allowed difference between a domain's matching pods and the global minimum.
    pub max_skew: i64,
    /// The node label defining domains.
    pub topology_key: String,
    /// `DoNotSchedule` (a filter) rather than `ScheduleAnyway` (a score).
    pub hard: bool,
    /// The pods counted; `None` counts none.
    pub selector: Option<Selector>,
    /// Below this many domains the global minimum counts as 0.
    pub min_domains: Option<i64>,
    /// `nodeAffinityPolicy: Honor` (the default): only nodes matching the pod's node affinity
    /// and selector are counted.
    pub honor_node_affinity: bool,
    /// `nodeTaintsPolicy: Honor` (default Ignore): only nodes whose taints the pod tolerates count.
    pub honor_node_taints: bool,
}

/// A pod with what placement needs, parsed once.
///
/// The fields a cycle reads for every pod it walks (priority, requests, key) come first, so
/// they share cache lines with the `Arc`'s counts: preemption walks every pod of hundreds of
/// nodes per decision.
#[derive(Clone, Debug)]
#[repr(C)]
pub struct PodInfo {
    /// `spec.priority` (0 when unset).
    pub priority: i32,
    /// CPU and memory as scoring counts them (defaults for containers without requests).
    pub non_zero: NonZero,
    /// Effective requests (init containers as a peak, overhead added, one pod).
    pub requests: Resources,
    /// Namespace and name.
    pub key: ObjectKey,
    /// Host ports.
    pub ports: Vec<HostPort>,
    /// The pod.
    pub pod: Arc<Pod>,
    /// Required pod affinity terms.
    pub required_affinity: Vec<AffinityTerm>,
    /// Required pod anti-affinity terms.
    pub required_anti_affinity: Vec<AffinityTerm>,
    /// Preferred pod affinity terms.
    pub preferred_affinity: Vec<WeightedTerm>,
    /// Preferred pod anti-affinity terms.
    pub preferred_anti_affinity: Vec<WeightedTerm>,
    /// Topology spread constraints.
    pub spread: Vec<SpreadConstraint>,
}

fn selector(s: &LabelSelector) -> Result<Selector, SchedError> {
    Selector::from_label_selector(s).map_err(|e| SchedError::InvalidPod(e.to_string()))
}

impl PodInfo {
    /// Parses `pod`. Fails on what Kubernetes' validation would reject (unparsable quantities
    /// or selectors) and on a pod without a spec.
    pub fn new(pod: Arc<Pod>) -> Result<Self, SchedError> {
        let spec = pod
            .spec
            .as_ref()
            .ok_or_else(|| SchedError::InvalidPod("pod has no spec".into()))?;
        let key = ObjectKey::from_meta(&pod.metadata);
        let namespace = key.namespace.clone().unwrap_or_default();
        let requests = pod_requests(spec).map_err(|e| SchedError::InvalidPod(e.to_string()))?;
        let mut info = Self {
            key,
            requests,
            non_zero: pod_non_zero(spec),
            priority: spec.priority.unwrap_or(0),
            ports: host_ports(spec),
            required_affinity: Vec::new(),
            required_anti_affinity: Vec::new(),
            preferred_affinity: Vec::new(),
            preferred_anti_affinity: Vec::new(),
            spread: spread_constraints(spec, &pod)?,
            pod: pod.clone(),
        };
        if let Some(affinity) = &spec.affinity {
            let parse = |t: &PodAffinityTerm| AffinityTerm::parse(t, &namespace, &pod);
            if let Some(a) = &affinity.pod_affinity {
                for t in a
                    .required_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                {
                    info.required_affinity.push(parse(t)?);
                }
                for w in a
                    .preferred_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                {
                    info.preferred_affinity.push(WeightedTerm {
                        weight: i64::from(w.weight),
                        term: parse(&w.pod_affinity_term)?,
                    });
                }
            }
            if let Some(a) = &affinity.pod_anti_affinity {
                for t in a
                    .required_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                {
                    info.required_anti_affinity.push(parse(t)?);
                }
                for w in a
                    .preferred_during_scheduling_ignored_during_execution
                    .iter()
                    .flatten()
                {
                    info.preferred_anti_affinity.push(WeightedTerm {
                        weight: i64::from(w.weight),
                        term: parse(&w.pod_affinity_term)?,
                    });
                }
            }
        }
        Ok(info)
    }

    /// Parses a pod given by value.
    pub fn from_pod(pod: Pod) -> Result<Self, SchedError> {
        Self::new(Arc::new(pod))
    }

    /// The pod's spec (pods without one are rejected by [`PodInfo::new`]).
    pub fn spec(&self) -> &PodSpec {
        static EMPTY: std::sync::OnceLock<PodSpec> = std::sync::OnceLock::new();
        self.pod
            .spec
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(PodSpec::default))
    }

    /// The pod's namespace (empty if unset).
    pub fn namespace(&self) -> &str {
        self.key.namespace.as_deref().unwrap_or("")
    }

    /// The pod's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS)
    }

    /// The pod's uid, if set.
    pub fn uid(&self) -> Option<&str> {
        self.pod.metadata.uid.as_deref()
    }

    /// Whether the pod has any pod affinity or anti-affinity term.
    pub fn has_affinity(&self) -> bool {
        !(self.required_affinity.is_empty()
            && self.required_anti_affinity.is_empty()
            && self.preferred_affinity.is_empty()
            && self.preferred_anti_affinity.is_empty())
    }

    /// Whether the pod is being deleted.
    pub fn terminating(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }

    /// `spec.nodeName`, if set and non-empty.
    pub fn node_name(&self) -> Option<&str> {
        self.spec().node_name.as_deref().filter(|n| !n.is_empty())
    }

    /// Whether `preemptionPolicy: Never` forbids this pod to preempt others.
    pub fn never_preempts(&self) -> bool {
        self.spec().preemption_policy.as_deref() == Some("Never")
    }
}

fn host_ports(spec: &PodSpec) -> Vec<HostPort> {
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    containers
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|p| *p > 0)?;
            Some(HostPort {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ip: p
                    .host_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                port,
            })
        })
        .collect()
}

fn spread_constraints(spec: &PodSpec, pod: &Pod) -> Result<Vec<SpreadConstraint>, SchedError> {
    let labels = pod.metadata.labels.as_ref().unwrap_or(&NO_LABELS);
    let mut out = Vec::new();
    for c in spec.topology_spread_constraints.iter().flatten() {
        let mut sel = c.label_selector.as_ref().map(selector).transpose()?;
        if let Some(sel) = &mut sel {
            let mut reqs = sel.requirements().to_vec();
            for key in c.match_label_keys.iter().flatten() {
                if let Some(v) = labels.get(key) {
                    reqs.push(Requirement {
                        key: key.clone(),
                        operator: Operator::In(vec![v.clone()]),
                    });
                }
            }
            *sel = Selector::from_requirements(reqs);
        }
        out.push(SpreadConstraint {
            max_skew: i64::from(c.max_skew.max(1)),
            topology_key: c.topology_key.clone(),
            hard: c.when_unsatisfiable != "ScheduleAnyway",
            selector: sel,
            min_domains: c.min_domains.map(i64::from),
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        });
    }
    Ok(out)
}
