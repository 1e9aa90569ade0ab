//! The cluster zone as an index from names to records, kept up to date from informer events, so
//! answering a query is a hash lookup, never a scan of the cluster's objects.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::rr::rdata::{SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use kube_core::object::ObjectKey;

use super::PodRecords;
use super::records;

/// The version of the Kubernetes DNS schema served at `dns-version.<zone>`.
const SCHEMA_VERSION: &str = "1.0.1";

/// The records at one name, and how many names right below it exist (a name with records
/// below it exists even without records of its own: an "empty non-terminal", RFC 8020).
#[derive(Debug, Default)]
pub(crate) struct Node {
    pub(crate) records: Vec<Record>,
    children: u32,
    /// Names that exist whatever the cluster holds (`svc.<zone>`, `pod.<zone>`).
    pinned: bool,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.children == 0 && !self.pinned
    }
}

/// Which authoritative zone a name falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Authority {
    /// The cluster domain.
    Cluster,
    /// `in-addr.arpa.`: answered for the cluster's addresses, the rest forwarded.
    ReverseV4,
    /// `ip6.arpa.`: likewise.
    ReverseV6,
}

/// What the zone holds for a name.
#[derive(Debug)]
pub(crate) enum Found<'a> {
    /// The name exists, with these records (maybe none: NODATA).
    Node(&'a Node),
    /// A pod name (`a-b-c-d.<ns>.pod.<zone>`) standing for this address.
    Pod(IpAddr),
    /// The name does not exist in a zone of ours (NXDOMAIN).
    Missing,
    /// Not ours: forward it.
    Elsewhere,
}

/// The index: every record of every Service, by owner name.
#[derive(Debug)]
pub(crate) struct Zone {
    apex: Name,
    pod_apex: Name,
    ttl: u32,
    pod_mode: PodRecords,
    soa: Record,
    reverse_soa: [Record; 2],
    reverse_apex: [Name; 2],
    names: HashMap<Name, Node>,
    /// What each Service contributed, to take it back when the Service changes.
    sources: HashMap<ObjectKey, Vec<Record>>,
    /// Pod addresses by namespace, counting pods (two pods may share an address: host network).
    pods: HashMap<(String, IpAddr), u32>,
    /// The addresses each pod contributed.
    pod_sources: HashMap<ObjectKey, Vec<IpAddr>>,
    /// Pods per namespace, so `<ns>.pod.<zone>` exists while a pod does.
    pod_namespaces: HashMap<String, u32>,
}

impl Zone {
    /// An empty zone for `domain` (`cluster.local`), answers with `ttl` seconds.
    pub(crate) fn new(domain: &str, ttl: u32, pod_mode: PodRecords) -> Option<Self> {
        let apex = Name::from_ascii(format!("{}.", domain.trim_end_matches('.')))
            .ok()?
            .to_lowercase();
        let serial = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| {
            u32::try_from(d.as_secs() % u64::from(u32::MAX)).unwrap_or(1)
        });
        let soa_for = |owner: &Name| -> Option<Record> {
            let mname = records::fqdn("ns.dns", &apex)?;
            let rname = records::fqdn("hostmaster", &apex)?;
            let refresh = i32::try_from(ttl).unwrap_or(i32::MAX);
            Some(Record::from_rdata(
                owner.clone(),
                ttl,
                RData::SOA(SOA::new(
                    mname, rname, serial, refresh, refresh, 86_400, ttl,
                )),
            ))
        };
        let reverse_apex = [
            Name::from_ascii("in-addr.arpa.").ok()?,
            Name::from_ascii("ip6.arpa.").ok()?,
        ];
        let mut zone = Self {
            pod_apex: records::fqdn("pod", &apex)?,
            soa: soa_for(&apex)?,
            reverse_soa: [soa_for(&reverse_apex[0])?, soa_for(&reverse_apex[1])?],
            reverse_apex,
            apex,
            ttl,
            pod_mode,
            names: HashMap::new(),
            sources: HashMap::new(),
            pods: HashMap::new(),
            pod_sources: HashMap::new(),
            pod_namespaces: HashMap::new(),
        };
        let static_records = [
            zone.soa.clone(),
            Record::from_rdata(
                records::fqdn("dns-version", &zone.apex)?,
                ttl,
                RData::TXT(TXT::new(vec![SCHEMA_VERSION.into()])),
            ),
        ];
        for record in static_records {
            zone.insert(record);
        }
        for pinned in ["svc", "pod"] {
            let name = records::fqdn(pinned, &zone.apex)?;
            zone.node_mut(&name).pinned = true;
        }
        Some(zone)
    }

    /// The cluster domain, as an FQDN in lower case.
    pub(crate) fn apex(&self) -> &Name {
        &self.apex
    }

    /// The SOA record of the zone `authority`, for negative answers.
    pub(crate) fn soa(&self, authority: Authority) -> &Record {
        match authority {
            Authority::Cluster => &self.soa,
            Authority::ReverseV4 => &self.reverse_soa[0],
            Authority::ReverseV6 => &self.reverse_soa[1],
        }
    }

    /// Which of our zones `name` falls in, if any.
    pub(crate) fn authority(&self, name: &Name) -> Option<Authority> {
        if self.apex.zone_of(name) {
            Some(Authority::Cluster)
        } else if self.reverse_apex[0].zone_of(name) {
            Some(Authority::ReverseV4)
        } else if self.reverse_apex[1].zone_of(name) {
            Some(Authority::ReverseV6)
        } else {
            None
        }
    }

    /// What the zone holds for `name` (any case).
    pub(crate) fn find(&self, name: &Name) -> Found<'_> {
        if let Some(node) = self.names.get(name) {
            return Found::Node(node);
        }
        match self.authority(name) {
            None => Found::Elsewhere,
            // The cluster's addresses are ours; other addresses are the upstream's.
            Some(Authority::ReverseV4 | Authority::ReverseV6) => Found::Elsewhere,
            Some(Authority::Cluster) => self.find_pod(name).unwrap_or(Found::Missing),
        }
    }

    /// `<a-b-c-d>.<ns>.pod.<zone>` or `<ns>.pod.<zone>`.
    fn find_pod(&self, name: &Name) -> Option<Found<'_>> {
        if self.pod_mode == PodRecords::Disabled {
            return None;
        }
        let extra = name.num_labels().checked_sub(self.pod_apex.num_labels())?;
        if !self.pod_apex.zone_of(name) || extra == 0 || extra > 2 {
            return None;
        }
        let mut labels = name.iter();
        let first = String::from_utf8_lossy(labels.next()?).to_ascii_lowercase();
        if extra == 1 {
            // `<ns>.pod.<zone>`: exists while the namespace has pods (always, insecure).
            let exists =
                self.pod_mode == PodRecords::Insecure || self.pod_namespaces.contains_key(&first);
            return exists.then_some(Found::Node(&EMPTY));
        }
        let namespace = String::from_utf8_lossy(labels.next()?).to_ascii_lowercase();
        let ip = records::undashed(&first)?;
        let exists = match self.pod_mode {
            PodRecords::Insecure => true,
            PodRecords::Verified => self.pods.contains_key(&(namespace, ip)),
            PodRecords::Disabled => false,
        };
        exists.then_some(Found::Pod(ip))
    }

    /// The A and AAAA records at `name`, for the additional section.
    pub(crate) fn addresses(&self, name: &Name) -> impl Iterator<Item = &Record> {
        self.names.get(name).into_iter().flat_map(|n| {
            n.records
                .iter()
                .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
        })
    }

    /// The TTL of answers.
    pub(crate) fn ttl(&self) -> u32 {
        self.ttl
    }

    /// Replaces what the Service `key` contributes with `records` (none: it is gone).
    pub(crate) fn set_service(&mut self, key: &ObjectKey, records: Vec<Record>) {
        if let Some(old) = self.sources.remove(key) {
            for record in &old {
                self.remove(record);
            }
        }
        if records.is_empty() {
            return;
        }
        for record in &records {
            self.insert(record.clone());
        }
        self.sources.insert(key.clone(), records);
    }

    /// Replaces the addresses the pod `key` (in `namespace`) has with `ips` (none: it is gone).
    pub(crate) fn set_pod(&mut self, key: &ObjectKey, namespace: &str, ips: Vec<IpAddr>) {
        if let Some(old) = self.pod_sources.remove(key) {
            for ip in old {
                let slot = (namespace.to_ascii_lowercase(), ip);
                if let Some(count) = self.pods.get_mut(&slot) {
                    *count -= 1;
                    if *count == 0 {
                        self.pods.remove(&slot);
                    }
                }
            }
            if let Some(count) = self.pod_namespaces.get_mut(namespace) {
                *count -= 1;
                if *count == 0 {
                    self.pod_namespaces.remove(namespace);
                }
            }
        }
        if ips.is_empty() {
            return;
        }
        for ip in &ips {
            *self
                .pods
                .entry((namespace.to_ascii_lowercase(), *ip))
                .or_default() += 1;
        }
        *self
            .pod_namespaces
            .entry(namespace.to_ascii_lowercase())
            .or_default() += 1;
        self.pod_sources.insert(key.clone(), ips);
    }

    fn insert(&mut self, record: Record) {
        self.node_mut(&record.name.clone()).records.push(record);
    }

    /// The node at `name`, created (with its parents up to the apex) if absent.
    fn node_mut(&mut self, name: &Name) -> &mut Node {
        if !self.names.contains_key(name) {
            self.names.insert(name.clone(), Node::default());
            // A new name under the apex makes its parent exist too.
            if self.apex.zone_of(name) && *name != self.apex {
                let parent = name.base_name();
                self.node_mut(&parent).children += 1;
            }
        }
        self.names.entry(name.clone()).or_default()
    }

    fn remove(&mut self, record: &Record) {
        let Some(node) = self.names.get_mut(&record.name) else {
            return;
        };
        if let Some(at) = node.records.iter().position(|r| r == record) {
            node.records.remove(at);
        }
        self.prune(&record.name);
    }

    /// Drops `name` and then its parents while they hold nothing.
    fn prune(&mut self, name: &Name) {
        if !self.names.get(name).is_some_and(Node::is_empty) || *name == self.apex {
            return;
        }
        self.names.remove(name);
        if self.apex.zone_of(name) {
            let parent = name.base_name();
            if let Some(node) = self.names.get_mut(&parent) {
                node.children = node.children.saturating_sub(1);
            }
            self.prune(&parent);
        }
    }

    /// How many names the zone holds (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.names.len()
    }
}

/// The node of a name that exists with no records.
static EMPTY: Node = Node {
    records: Vec::new(),
    children: 0,
    pinned: true,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("name")
    }

    fn a(owner: &str, ip: &str) -> Record {
        Record::from_rdata(name(owner), 5, records::address(ip.parse().expect("ip")))
    }

    #[test]
    fn names_exist_with_their_parents_and_go_away() {
        let mut zone = Zone::new("cluster.local", 5, PodRecords::Verified).expect("zone");
        let empty = zone.len();
        let key = ObjectKey::namespaced("default", "web");
        zone.set_service(
            &key,
            vec![a("web.default.svc.cluster.local.", "10.96.0.10")],
        );
        assert!(matches!(
            zone.find(&name("WEB.default.svc.cluster.local.")),
            Found::Node(n) if n.records.len() == 1
        ));
        assert!(matches!(
            zone.find(&name("default.svc.cluster.local.")),
            Found::Node(n) if n.records.is_empty()
        ));
        assert!(matches!(
            zone.find(&name("other.svc.cluster.local.")),
            Found::Missing
        ));
        assert!(matches!(zone.find(&name("example.com.")), Found::Elsewhere));
        zone.set_service(&key, Vec::new());
        assert!(matches!(
            zone.find(&name("default.svc.cluster.local.")),
            Found::Missing
        ));
        assert!(matches!(
            zone.find(&name("svc.cluster.local.")),
            Found::Node(_)
        ));
        assert_eq!(zone.len(), empty);
    }

    #[test]
    fn pods_are_verified_by_namespace_and_address() {
        let mut zone = Zone::new("cluster.local", 5, PodRecords::Verified).expect("zone");
        let key = ObjectKey::namespaced("default", "p");
        zone.set_pod(&key, "default", vec!["10.244.0.7".parse().expect("ip")]);
        assert!(matches!(
            zone.find(&name("10-244-0-7.default.pod.cluster.local.")),
            Found::Pod(_)
        ));
        assert!(matches!(
            zone.find(&name("10-244-0-7.other.pod.cluster.local.")),
            Found::Missing
        ));
        zone.set_pod(&key, "default", Vec::new());
        assert!(matches!(
            zone.find(&name("10-244-0-7.default.pod.cluster.local.")),
            Found::Missing
        ));
        let insecure = Zone::new("cluster.local", 5, PodRecords::Insecure).expect("zone");
        assert!(matches!(
            insecure.find(&name("1-2-3-4.any.pod.cluster.local.")),
            Found::Pod(_)
        ));
    }
}
