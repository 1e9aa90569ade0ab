//! What enforcement needs from Pods, Namespaces and NetworkPolicies, read once per change:
//! the informers' objects reduced to the fields that matter, so that an update touching
//! anything else (a pod's conditions, a policy's annotations) changes nothing here.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_core::selector::Selector;

use super::ranges::{self, Range};

/// The label Kubernetes gives every namespace, holding its name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A transport protocol a policy port names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(value: Option<&str>) -> Option<Self> {
        match value.unwrap_or("TCP") {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            _ => None,
        }
    }

    /// The nftables name.
    pub(crate) fn nft(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// A pod as policies see it: where it is, its labels, its addresses and its named ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PodInfo {
    pub(crate) namespace: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) node: Option<String>,
    pub(crate) ips: Vec<IpAddr>,
    /// `(name, protocol, containerPort)` of every named container port.
    pub(crate) named_ports: Vec<(String, Protocol, u16)>,
}

impl PodInfo {
    /// The pod, or `None` when policies cannot apply to it: no address yet, host network
    /// (its address is the node's), or finished (its address may already be another pod's).
    pub(crate) fn from_pod(pod: &Pod) -> Option<Self> {
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.host_network) == Some(true) {
            return None;
        }
        let status = pod.status.as_ref()?;
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            return None;
        }
        let mut ips: Vec<IpAddr> = status
            .pod_ips
            .iter()
            .flatten()
            .filter_map(|p| p.ip.parse().ok())
            .chain(status.pod_ip.as_deref().and_then(|ip| ip.parse().ok()))
            .collect();
        ips.sort();
        ips.dedup();
        if ips.is_empty() {
            return None;
        }
        let mut named_ports: Vec<(String, Protocol, u16)> = spec
            .into_iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let name = p.name.clone().filter(|n| !n.is_empty())?;
                let protocol = Protocol::parse(p.protocol.as_deref())?;
                let port = u16::try_from(p.container_port).ok()?;
                Some((name, protocol, port))
            })
            .collect();
        named_ports.sort();
        Some(Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            node: spec.and_then(|s| s.node_name.clone()),
            ips,
            named_ports,
        })
    }

    /// The container ports named `name` for `protocol`.
    pub(crate) fn named<'a>(
        &'a self,
        name: &'a str,
        protocol: Protocol,
    ) -> impl Iterator<Item = u16> + 'a {
        self.named_ports
            .iter()
            .filter(move |(n, p, _)| n == name && *p == protocol)
            .map(|(_, _, port)| *port)
    }
}

/// A namespace's labels, with the name label Kubernetes always sets.
pub(crate) fn namespace_labels(namespace: &Namespace) -> BTreeMap<String, String> {
    let mut labels = namespace.metadata.labels.clone().unwrap_or_default();
    if let Some(name) = &namespace.metadata.name {
        labels.insert(NAMESPACE_NAME_LABEL.into(), name.clone());
    }
    labels
}

/// Which ports a rule allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PortMatch {
    /// Every port of the protocol (a port entry with no `port`).
    Any(Protocol),
    /// `port` to `endPort`, inclusive.
    Range(Protocol, u16, u16),
    /// A container port name, resolved against the destination pod.
    Named(Protocol, String),
}

/// Whom a rule allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Peer {
    /// Pods matching `pods` in the policy's namespace (`namespaces: None`) or in the
    /// namespaces matching `namespaces`.
    Pods {
        pods: Selector,
        namespaces: Option<Selector>,
    },
    /// Addresses in these ranges (a CIDR minus its exceptions).
    Block(Vec<Range>),
    /// A peer that can match nothing (an invalid selector or CIDR): it allows nobody.
    Nothing,
}

/// One ingress or egress rule: traffic from (to) any of `peers` (`None`: anyone) on any of
/// `ports` (empty: any port, any protocol).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rule {
    pub(crate) peers: Option<Vec<Peer>>,
    pub(crate) ports: Vec<PortMatch>,
}

/// A NetworkPolicy as enforced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PolicyInfo {
    pub(crate) namespace: String,
    pub(crate) name: String,
    /// Which pods of its namespace it selects; `None` (an invalid selector) selects none.
    pub(crate) pod_selector: Option<Selector>,
    /// The ingress rules when it is an Ingress policy.
    pub(crate) ingress: Option<Vec<Rule>>,
    /// The egress rules when it is an Egress policy.
    pub(crate) egress: Option<Vec<Rule>>,
}

fn selector(selector: Option<&LabelSelector>, what: &str) -> Option<Selector> {
    match selector {
        None => Some(Selector::everything()),
        Some(s) => Selector::from_label_selector(s)
            .map_err(|e| tracing::warn!(error = %e, "network policy {what} is invalid; it matches nothing"))
            .ok(),
    }
}

fn peer(peer: &NetworkPolicyPeer) -> Peer {
    if let Some(block) = &peer.ip_block {
        let Some(cidr) = Range::parse_cidr(&block.cidr) else {
            return Peer::Nothing;
        };
        let except: Option<Vec<Range>> = block
            .except
            .iter()
            .flatten()
            .map(|e| Range::parse_cidr(e))
            .collect();
        return match except {
            Some(except) => Peer::Block(ranges::subtract(cidr, &except)),
            None => Peer::Nothing,
        };
    }
    if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
        return Peer::Nothing;
    }
    let pods = selector(peer.pod_selector.as_ref(), "peer podSelector");
    let namespaces = peer
        .namespace_selector
        .as_ref()
        .map(|s| selector(Some(s), "peer namespaceSelector"));
    match (pods, namespaces) {
        (Some(pods), None) => Peer::Pods {
            pods,
            namespaces: None,
        },
        (Some(pods), Some(Some(namespaces))) => Peer::Pods {
            pods,
            namespaces: Some(namespaces),
        },
        _ => Peer::Nothing,
    }
}

fn port(port: &NetworkPolicyPort) -> Option<PortMatch> {
    let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
        tracing::warn!(protocol = ?port.protocol, "network policy port protocol unsupported; it matches nothing");
        return None;
    };
    let number = |n: i32| u16::try_from(n).ok().filter(|n| *n > 0);
    Some(match &port.port {
        None => PortMatch::Any(protocol),
        Some(IntOrString::String(name)) => match name.parse::<i32>() {
            // A numeric string is a number (as intstr's IntValue reads it).
            Ok(n) => PortMatch::Range(protocol, number(n)?, number(n)?),
            Err(_) => PortMatch::Named(protocol, name.clone()),
        },
        Some(IntOrString::Int(n)) => {
            let start = number(*n)?;
            let end = port.end_port.map_or(Some(start), number)?;
            if end < start {
                return None;
            }
            PortMatch::Range(protocol, start, end)
        }
    })
}

/// A rule's `from`/`to` and `ports`.
type RawRule<'a> = (
    Option<&'a [NetworkPolicyPeer]>,
    Option<&'a [NetworkPolicyPort]>,
);

fn rules(list: &[RawRule<'_>]) -> Vec<Rule> {
    list.iter()
        .map(|&(peers, ports)| {
            let peers = peers
                .filter(|p| !p.is_empty())
                .map(|p| p.iter().map(peer).collect());
            let given: Vec<&NetworkPolicyPort> = ports.into_iter().flatten().collect();
            let ports: Vec<PortMatch> = given.iter().filter_map(|p| port(p)).collect();
            // Ports were given but none can match: the rule allows nothing, which an empty
            // peer list (not `None`, which means anyone) says.
            let peers = if !given.is_empty() && ports.is_empty() {
                Some(Vec::new())
            } else {
                peers
            };
            Rule { peers, ports }
        })
        .collect()
}

impl PolicyInfo {
    /// The policy as enforced. Without `policyTypes` (objects that were not defaulted by an
    /// API server) the types are Kubernetes' defaults: Ingress, and Egress when it has egress
    /// rules.
    pub(crate) fn from_policy(policy: &NetworkPolicy) -> Self {
        let spec = policy.spec.clone().unwrap_or_default();
        let types = spec.policy_types.clone().filter(|t| !t.is_empty());
        let has_egress = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
        let (is_ingress, is_egress) = match &types {
            Some(types) => (
                types.iter().any(|t| t == "Ingress"),
                types.iter().any(|t| t == "Egress"),
            ),
            None => (true, has_egress),
        };
        let ingress: Vec<_> = spec
            .ingress
            .iter()
            .flatten()
            .map(|r| (r.from.as_deref(), r.ports.as_deref()))
            .collect();
        let egress: Vec<_> = spec
            .egress
            .iter()
            .flatten()
            .map(|r| (r.to.as_deref(), r.ports.as_deref()))
            .collect();
        Self {
            namespace: policy.metadata.namespace.clone().unwrap_or_default(),
            name: policy.metadata.name.clone().unwrap_or_default(),
            pod_selector: selector(spec.pod_selector.as_ref(), "podSelector"),
            ingress: is_ingress.then(|| rules(&ingress)),
            egress: is_egress.then(|| rules(&egress)),
        }
    }

    /// Whether it selects `pod`.
    pub(crate) fn selects(&self, pod: &PodInfo) -> bool {
        pod.namespace == self.namespace
            && self
                .pod_selector
                .as_ref()
                .is_some_and(|s| s.matches(&pod.labels))
    }
}

impl Peer {
    /// Whether pod `pod` is this peer of a policy in `policy_namespace`, given every
    /// namespace's labels.
    pub(crate) fn matches_pod(
        &self,
        policy_namespace: &str,
        pod: &PodInfo,
        namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> bool {
        match self {
            Peer::Pods {
                pods,
                namespaces: None,
            } => pod.namespace == policy_namespace && pods.matches(&pod.labels),
            Peer::Pods {
                pods,
                namespaces: Some(selector),
            } => {
                namespaces
                    .get(&pod.namespace)
                    .is_some_and(|labels| selector.matches(labels))
                    && pods.matches(&pod.labels)
            }
            Peer::Block(_) | Peer::Nothing => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(spec: serde_json::Value) -> PolicyInfo {
        PolicyInfo::from_policy(
            &serde_json::from_value(
                json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec}),
            )
            .unwrap(),
        )
    }

    #[test]
    fn policy_types_default_as_kubernetes_does() {
        let deny = policy(json!({"podSelector": {}}));
        assert_eq!(deny.ingress, Some(vec![]));
        assert_eq!(deny.egress, None);
        let both = policy(json!({"podSelector": {}, "egress": [{}]}));
        assert!(both.ingress.is_some());
        assert_eq!(
            both.egress,
            Some(vec![Rule {
                peers: None,
                ports: vec![]
            }])
        );
        let egress_only = policy(json!({"podSelector": {}, "policyTypes": ["Egress"]}));
        assert_eq!(
            (egress_only.ingress, egress_only.egress),
            (None, Some(vec![]))
        );
    }

    #[test]
    fn rules_read_peers_and_ports() {
        let p = policy(
            json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{
            "from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                     {"namespaceSelector": {}}],
            "ports": [{"port": 80, "endPort": 90}, {"port": "http", "protocol": "UDP"},
                      {"protocol": "SCTP"}, {"port": "8080"}]}]}),
        );
        let rule = &p.ingress.unwrap()[0];
        assert_eq!(
            rule.ports,
            [
                PortMatch::Range(Protocol::Tcp, 80, 90),
                PortMatch::Named(Protocol::Udp, "http".into()),
                PortMatch::Any(Protocol::Sctp),
                PortMatch::Range(Protocol::Tcp, 8080, 8080),
            ]
        );
        let peers = rule.peers.as_ref().unwrap();
        let Peer::Block(ranges) = &peers[0] else {
            panic!("{peers:?}")
        };
        assert_eq!(ranges.len(), 2);
        assert!(matches!(
            &peers[1],
            Peer::Pods {
                namespaces: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn pods_without_addresses_or_on_the_host_network_are_not_enforced() {
        let pod = |spec: serde_json::Value, status: serde_json::Value| {
            PodInfo::from_pod(
                &serde_json::from_value(json!({"metadata": {"name": "a", "namespace": "ns"},
                    "spec": spec, "status": status}))
                .unwrap(),
            )
        };
        let containers = json!([{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]);
        let info = pod(
            json!({"containers": containers, "nodeName": "n1"}),
            json!({"podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}]}),
        )
        .unwrap();
        assert_eq!(info.ips.len(), 2);
        assert_eq!(
            info.named("http", Protocol::Tcp).collect::<Vec<_>>(),
            [8080]
        );
        assert!(pod(json!({"containers": containers}), json!({})).is_none());
        assert!(
            pod(
                json!({"containers": containers, "hostNetwork": true}),
                json!({"podIP": "10.0.0.5"})
            )
            .is_none()
        );
        assert!(
            pod(
                json!({"containers": containers}),
                json!({"podIP": "10.0.0.5", "phase": "Succeeded"})
            )
            .is_none()
        );
    }
}
