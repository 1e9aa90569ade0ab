//! From pods, namespaces and policies to one nftables table: the structure (sets, maps,
//! chains, rules), which changes only when policies or the combinations of policies selecting
//! local pods change, and the elements (addresses), which pod churn changes.
//!
//! The table has two base chains on the `forward` hook: `pod-egress` checks packets leaving
//! local pods, `pod-ingress` packets reaching them. An accept in one base chain still leaves
//! the packet to the other, so traffic between two isolated pods must be allowed by both
//! sides, as Kubernetes requires. Each starts with `ct state established,related accept`:
//! replies pass, and only new connections meet the rules, so a policy change applies to the
//! next connection at once. Then a verdict map keyed by the pod's address sends a packet to
//! the chain of the combination of policies that select the pod; that chain jumps to each
//! policy's chain (where any matching rule accepts) and drops what none accepted.
//! Addresses live in sets (peer pods, ipBlock ranges, named ports resolved per pod), so the
//! rules stay few and a pod change is a few element updates.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use kube_core::object::ObjectKey;

use super::model::{Peer, PodInfo, PolicyInfo, PortMatch, Rule};
use super::ranges::{self, Family, Range};

/// Everything the table is computed from.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cluster {
    pub(crate) pods: BTreeMap<ObjectKey, PodInfo>,
    pub(crate) namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub(crate) policies: BTreeMap<ObjectKey, PolicyInfo>,
}

/// One set's or map's elements as written (`10.0.0.1`, `10.0.0.1 : goto ing-c0`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Elements {
    /// A map: elements are `key : value`, deleted by key.
    map: bool,
    items: BTreeSet<String>,
}

/// A rendered table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ruleset {
    /// The table's body without elements.
    structure: String,
    /// Set or map name → its elements.
    elements: BTreeMap<String, Elements>,
    /// Rules in the table.
    pub(crate) rules: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    /// Prefix of its chains and sets.
    fn prefix(self) -> &'static str {
        match self {
            Self::Ingress => "ing",
            Self::Egress => "egr",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }

    /// The field holding the policed pod's address.
    fn own(self) -> &'static str {
        match self {
            Self::Ingress => "daddr",
            Self::Egress => "saddr",
        }
    }

    /// The field holding the peer's address.
    fn peer(self) -> &'static str {
        match self {
            Self::Ingress => "saddr",
            Self::Egress => "daddr",
        }
    }

    fn rules(self, policy: &PolicyInfo) -> Option<&Vec<Rule>> {
        match self {
            Self::Ingress => policy.ingress.as_ref(),
            Self::Egress => policy.egress.as_ref(),
        }
    }
}

/// Who a rendered rule matches as its peer.
enum Matcher {
    Anyone,
    Set(Family, String),
}

struct Builder<'a> {
    cluster: &'a Cluster,
    declarations: String,
    chains: String,
    elements: BTreeMap<String, Elements>,
    rules: usize,
}

impl Builder<'_> {
    fn declare(&mut self, name: &str, kind: &str, flags: Option<&str>, map: bool) {
        let keyword = if map { "map" } else { "set" };
        let _ = writeln!(self.declarations, "  {keyword} {name} {{");
        let _ = writeln!(self.declarations, "    type {kind};");
        if let Some(flags) = flags {
            let _ = writeln!(self.declarations, "    flags {flags};");
        }
        self.declarations.push_str("  }\n");
        self.elements.insert(
            name.to_owned(),
            Elements {
                map,
                items: BTreeSet::new(),
            },
        );
    }

    fn add(&mut self, set: &str, element: String) {
        if let Some(elements) = self.elements.get_mut(set) {
            elements.items.insert(element);
        }
    }

    fn chain(&mut self, name: &str, body: &[String]) {
        let _ = writeln!(self.chains, "  chain {name} {{");
        for line in body {
            let _ = writeln!(self.chains, "    {line}");
        }
        self.chains.push_str("  }\n");
        self.rules += body.len();
    }

    /// The chain of one policy in one direction: a rule accepts what it allows.
    fn policy_chain(
        &mut self,
        direction: Direction,
        index: usize,
        policy: &PolicyInfo,
        selected: &[&PodInfo],
    ) {
        let Some(rules) = direction.rules(policy) else {
            return;
        };
        let mut body = Vec::new();
        for (r, rule) in rules.iter().enumerate() {
            let base = format!("{}-p{index}-r{r}", direction.prefix());
            let comment = format!(
                "comment \"{}/{} {}[{r}]\"",
                policy.namespace,
                policy.name,
                direction.name()
            );
            let matchers = self.matchers(&base, policy, rule);
            let mut clauses: Vec<String> = Vec::new();
            let mut named = Vec::new();
            for port in &rule.ports {
                match port {
                    PortMatch::Any(protocol) => {
                        clauses.push(format!("meta l4proto {} ", protocol.nft()));
                    }
                    PortMatch::Range(protocol, start, end) if start == end => {
                        clauses.push(format!("meta l4proto {} th dport {start} ", protocol.nft()));
                    }
                    PortMatch::Range(protocol, start, end) => clauses.push(format!(
                        "meta l4proto {} th dport {start}-{end} ",
                        protocol.nft()
                    )),
                    PortMatch::Named(protocol, name) => named.push((*protocol, name.as_str())),
                }
            }
            if rule.ports.is_empty() {
                clauses.push(String::new());
            }
            for matcher in &matchers {
                for clause in &clauses {
                    body.push(format!(
                        "{}{clause}accept {comment}",
                        matcher.text(direction)
                    ));
                }
            }
            if named.is_empty() || matchers.is_empty() {
                continue;
            }
            // Named ports resolve against the destination pod: the selected pod for ingress,
            // the peer pod for egress. A set of `address . protocol . port` holds them.
            for family in Family::ALL {
                let set = format!("{base}-named-{}", family.suffix());
                let kind = format!("{} . inet_proto . inet_service", family.addr_type());
                self.declare(&set, &kind, None, false);
            }
            let destinations: Vec<&PodInfo> = match direction {
                Direction::Ingress => selected.to_vec(),
                Direction::Egress => peer_pods(self.cluster, policy, rule).collect(),
            };
            for pod in destinations {
                for &(protocol, name) in &named {
                    for port in pod.named(name, protocol) {
                        for ip in &pod.ips {
                            let set = format!("{base}-named-{}", Family::of(*ip).suffix());
                            self.add(&set, format!("{ip} . {} . {port}", protocol.nft()));
                        }
                    }
                }
            }
            let lookup = |family: Family| {
                format!(
                    "{} daddr . meta l4proto . th dport @{base}-named-{} ",
                    family.keyword(),
                    family.suffix()
                )
            };
            match direction {
                Direction::Ingress => {
                    for matcher in &matchers {
                        for family in Family::ALL {
                            if matcher.family().is_none_or(|f| f == family) {
                                body.push(format!(
                                    "{}{}accept {comment}",
                                    matcher.text(direction),
                                    lookup(family)
                                ));
                            }
                        }
                    }
                }
                // The named set holds the peer pods already.
                Direction::Egress => {
                    for family in Family::ALL {
                        body.push(format!("{}accept {comment}", lookup(family)));
                    }
                }
            }
        }
        self.chain(&format!("{}-p{index}", direction.prefix()), &body);
    }

    /// The peer matchers of a rule, declaring and filling their sets.
    fn matchers(&mut self, base: &str, policy: &PolicyInfo, rule: &Rule) -> Vec<Matcher> {
        let Some(peers) = &rule.peers else {
            return vec![Matcher::Anyone];
        };
        let mut matchers = Vec::new();
        if peers.iter().any(|p| matches!(p, Peer::Pods { .. })) {
            for family in Family::ALL {
                let set = format!("{base}-pods-{}", family.suffix());
                self.declare(&set, family.addr_type(), None, false);
                matchers.push(Matcher::Set(family, set));
            }
            let ips: Vec<IpAddr> = peer_pods(self.cluster, policy, rule)
                .flat_map(|pod| pod.ips.iter().copied())
                .collect();
            for ip in ips {
                self.add(
                    &format!("{base}-pods-{}", Family::of(ip).suffix()),
                    ip.to_string(),
                );
            }
        }
        let blocks: Vec<Range> = peers
            .iter()
            .filter_map(|p| match p {
                Peer::Block(ranges) => Some(ranges.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect();
        for family in Family::ALL {
            let ranges: Vec<Range> = ranges::union(
                blocks
                    .iter()
                    .filter(|r| r.family == family)
                    .copied()
                    .collect(),
            );
            if ranges.is_empty() {
                continue;
            }
            let set = format!("{base}-cidr-{}", family.suffix());
            self.declare(&set, family.addr_type(), Some("interval"), false);
            for range in ranges {
                self.add(&set, range.element());
            }
            matchers.push(Matcher::Set(family, set));
        }
        matchers
    }
}

/// Pods of the cluster that are peers of `rule` of `policy` (every pod when it allows
/// anyone).
fn peer_pods<'c>(
    cluster: &'c Cluster,
    policy: &'c PolicyInfo,
    rule: &'c Rule,
) -> impl Iterator<Item = &'c PodInfo> + 'c {
    cluster.pods.values().filter(move |pod| match &rule.peers {
        None => true,
        Some(peers) => peers
            .iter()
            .any(|p| p.matches_pod(&policy.namespace, pod, &cluster.namespaces)),
    })
}

impl Matcher {
    fn text(&self, direction: Direction) -> String {
        match self {
            Self::Anyone => String::new(),
            Self::Set(family, set) => format!("{} {} @{set} ", family.keyword(), direction.peer()),
        }
    }

    fn family(&self) -> Option<Family> {
        match self {
            Self::Anyone => None,
            Self::Set(family, _) => Some(*family),
        }
    }
}

/// Renders the table for the pods on `node` (every pod when `None`).
pub(crate) fn compile(cluster: &Cluster, node: Option<&str>) -> Ruleset {
    let mut b = Builder {
        cluster,
        declarations: String::new(),
        chains: String::new(),
        elements: BTreeMap::new(),
        rules: 0,
    };
    let local: Vec<&PodInfo> = cluster
        .pods
        .values()
        .filter(|pod| node.is_none() || pod.node.as_deref() == node)
        .collect();
    let policies: Vec<&PolicyInfo> = cluster.policies.values().collect();
    for direction in [Direction::Ingress, Direction::Egress] {
        // The policies selecting each local pod, and the pods each policy selects.
        let mut combos: BTreeMap<Vec<usize>, Vec<IpAddr>> = BTreeMap::new();
        let mut selected: BTreeMap<usize, Vec<&PodInfo>> = BTreeMap::new();
        for pod in &local {
            let selecting: Vec<usize> = policies
                .iter()
                .enumerate()
                .filter(|(_, p)| direction.rules(p).is_some() && p.selects(pod))
                .map(|(i, _)| i)
                .collect();
            if selecting.is_empty() {
                continue;
            }
            for &i in &selecting {
                selected.entry(i).or_default().push(pod);
            }
            combos.entry(selecting).or_default().extend(&pod.ips);
        }
        for (&i, pods) in &selected {
            b.policy_chain(direction, i, policies[i], pods);
        }
        let prefix = direction.prefix();
        let mut dispatch = Vec::new();
        for family in Family::ALL {
            let map = format!("{prefix}-pods-{}", family.suffix());
            b.declare(
                &map,
                &format!("{} : verdict", family.addr_type()),
                None,
                true,
            );
            dispatch.push(format!(
                "{} {} vmap @{map}",
                family.keyword(),
                direction.own()
            ));
        }
        for (k, (combo, ips)) in combos.iter().enumerate() {
            let chain = format!("{prefix}-c{k}");
            let mut body: Vec<String> = combo
                .iter()
                .map(|i| format!("jump {prefix}-p{i}"))
                .collect();
            body.push("counter drop".into());
            b.chain(&chain, &body);
            for ip in ips {
                let map = format!("{prefix}-pods-{}", Family::of(*ip).suffix());
                b.add(&map, format!("{ip} : goto {chain}"));
            }
        }
        let mut body = vec![
            "type filter hook forward priority filter; policy accept;".to_string(),
            "ct state established,related accept".to_string(),
        ];
        body.extend(dispatch);
        b.chain(&format!("pod-{}", direction.name()), &body);
        // The hook line is not a rule.
        b.rules -= 1;
    }
    Ruleset {
        structure: format!("{}{}", b.declarations, b.chains),
        elements: b.elements,
        rules: b.rules,
    }
}

fn element_line(out: &mut String, verb: &str, table: &str, set: &str, items: &[&str]) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "{verb} element inet {table} {set} {{ {} }}",
        items.join(", ")
    );
}

impl Ruleset {
    /// Set and map elements in the table.
    pub(crate) fn element_count(&self) -> usize {
        self.elements.values().map(|e| e.items.len()).sum()
    }

    /// The script that replaces `table` with this ruleset in one transaction (creating the
    /// table first makes the delete succeed when there is none).
    pub(crate) fn full_script(&self, table: &str) -> String {
        let mut out = format!(
            "table inet {table} {{}}\ndelete table inet {table}\ntable inet {table} {{\n{}}}\n",
            self.structure
        );
        for (set, elements) in &self.elements {
            let items: Vec<&str> = elements.items.iter().map(String::as_str).collect();
            element_line(&mut out, "add", table, set, &items);
        }
        out
    }

    /// The element updates that turn `applied` into this ruleset, with how many elements
    /// change; `None` when the structure differs and the table must be rewritten.
    pub(crate) fn increment(&self, applied: &Ruleset, table: &str) -> Option<(String, usize)> {
        if self.structure != applied.structure {
            return None;
        }
        let mut deletes = String::new();
        let mut adds = String::new();
        let mut changed = 0;
        for (set, elements) in &self.elements {
            let empty = Elements::default();
            let before = applied.elements.get(set).unwrap_or(&empty);
            let removed: Vec<&str> = before
                .items
                .difference(&elements.items)
                .map(|e| {
                    if elements.map {
                        // Map elements are deleted by key.
                        e.split(" : ").next().unwrap_or(e)
                    } else {
                        e.as_str()
                    }
                })
                .collect();
            let added: Vec<&str> = elements
                .items
                .difference(&before.items)
                .map(String::as_str)
                .collect();
            changed += removed.len() + added.len();
            element_line(&mut deletes, "delete", table, set, &removed);
            element_line(&mut adds, "add", table, set, &added);
        }
        Some((deletes + &adds, changed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cluster() -> Cluster {
        let mut cluster = Cluster::default();
        for (name, ip, node, app) in [
            ("db", "10.0.0.10", "a", "db"),
            ("api", "10.0.0.11", "a", "api"),
            ("far", "10.0.1.10", "b", "api"),
        ] {
            let pod = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "web", "labels": {"app": app}},
                "spec": {"nodeName": node, "containers": [{"name": "c",
                    "ports": [{"name": "metrics", "containerPort": 9100}]}]},
                "status": {"podIP": ip}}))
            .unwrap();
            cluster.pods.insert(
                ObjectKey::namespaced("web", name),
                PodInfo::from_pod(&pod).unwrap(),
            );
        }
        cluster.namespaces.insert(
            "web".into(),
            BTreeMap::from([("team".into(), "web".into())]),
        );
        let policy = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "web"},
            "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "api"}}},
                          {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}],
                 "ports": [{"port": 5432, "endPort": 5440}, {"port": "metrics"}]}]}}))
        .unwrap();
        cluster.policies.insert(
            ObjectKey::namespaced("web", "db"),
            PolicyInfo::from_policy(&policy),
        );
        cluster
    }

    #[test]
    fn rules_stay_few_and_addresses_go_to_sets() {
        let ruleset = compile(&cluster(), Some("a"));
        let script = ruleset.full_script("t");
        for line in [
            "ip daddr vmap @ing-pods-v4",
            "ct state established,related accept",
            "jump ing-p0",
            "ip saddr @ing-p0-r0-pods-v4 meta l4proto tcp th dport 5432-5440 accept comment \"web/db ingress[0]\"",
            "ip saddr @ing-p0-r0-cidr-v4 ip daddr . meta l4proto . th dport @ing-p0-r0-named-v4 accept",
            "add element inet t ing-pods-v4 { 10.0.0.10 : goto ing-c0 }",
            "add element inet t ing-p0-r0-pods-v4 { 10.0.0.11, 10.0.1.10 }",
            "add element inet t ing-p0-r0-cidr-v4 { 192.168.0.0-192.168.0.255, 192.168.2.0-192.168.255.255 }",
            "add element inet t ing-p0-r0-named-v4 { 10.0.0.10 . tcp . 9100 }",
        ] {
            assert!(script.contains(line), "no {line:?} in\n{script}");
        }
        // Only the pod of node `a` is policed here.
        assert!(!script.contains("10.0.1.10 : goto"), "{script}");
    }

    #[test]
    fn a_pod_change_is_an_element_update() {
        let mut cluster = cluster();
        let before = compile(&cluster, Some("a"));
        let far = cluster
            .pods
            .get_mut(&ObjectKey::namespaced("web", "far"))
            .unwrap();
        far.labels.insert("app".into(), "other".into());
        let after = compile(&cluster, Some("a"));
        let (script, changed) = after.increment(&before, "t").unwrap();
        assert_eq!(changed, 1);
        assert_eq!(
            script,
            "delete element inet t ing-p0-r0-pods-v4 { 10.0.1.10 }\n"
        );
        assert_eq!(after.increment(&after, "t").unwrap(), (String::new(), 0));
    }
}
