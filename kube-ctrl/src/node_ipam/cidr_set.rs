//! [`CidrSet`]: the node-sized subnets of one cluster CIDR, which of them are taken and by
//! which node, as Kubernetes' `cidrset.CidrSet`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address range `address/prefix`, kept as its network address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Cidr {
    /// The network address (host bits cleared), IPv4 in the low 32 bits.
    pub(crate) network: u128,
    /// The prefix length.
    pub(crate) prefix: u8,
    /// Whether this is an IPv6 range.
    pub(crate) v6: bool,
}

impl Cidr {
    /// Parses `address/prefix`, clearing host bits as Go's `net.ParseCIDR` does.
    pub(crate) fn parse(text: &str) -> Option<Cidr> {
        let (addr, prefix) = text.trim().split_once('/')?;
        let prefix: u8 = prefix.parse().ok()?;
        let (value, v6) = match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) => (u128::from(u32::from(a)), false),
            IpAddr::V6(a) => (u128::from(a), true),
        };
        let cidr = Cidr {
            network: 0,
            prefix,
            v6,
        };
        if prefix > cidr.bits() {
            return None;
        }
        Some(Cidr {
            network: value & cidr.mask(),
            ..cidr
        })
    }

    /// 32 or 128.
    pub(crate) fn bits(&self) -> u8 {
        if self.v6 { 128 } else { 32 }
    }

    /// The netmask as an integer of this family's width.
    fn mask(&self) -> u128 {
        let host = u32::from(self.bits() - self.prefix);
        let all = if self.v6 {
            u128::MAX
        } else {
            u128::from(u32::MAX)
        };
        // A /0 has no network bits; shifting by the full width would overflow.
        all.checked_shl(host).map_or(0, |m| m & all)
    }

    /// The last address of the range.
    fn last(&self) -> u128 {
        let all = if self.v6 {
            u128::MAX
        } else {
            u128::from(u32::MAX)
        };
        self.network | (!self.mask() & all)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addr = if self.v6 {
            IpAddr::V6(Ipv6Addr::from(self.network))
        } else {
            // The network of an IPv4 Cidr always fits 32 bits.
            IpAddr::V4(Ipv4Addr::from(
                u32::try_from(self.network).unwrap_or_default(),
            ))
        };
        write!(f, "{addr}/{}", self.prefix)
    }
}

/// The subnets of size `node_prefix` in one cluster CIDR.
#[derive(Debug)]
pub(crate) struct CidrSet {
    cluster: Cidr,
    node_prefix: u8,
    count: u32,
    /// Taken subnets by index, with the node holding each (empty: reserved, e.g. the service
    /// range).
    used: HashMap<u32, String>,
    /// Where the next search starts: allocation goes round the range, as Kubernetes' does, so
    /// a CIDR just released is not handed straight to the next node.
    next: u32,
}

/// Kubernetes' limit: at most 2^16 node subnets per cluster CIDR.
pub(crate) const MAX_SUBNET_BITS: u8 = 16;

impl CidrSet {
    /// The set of `/node_prefix` subnets of `cluster`; `None` when `node_prefix` is shorter
    /// than the cluster's prefix, longer than the family allows, or more than 16 bits longer.
    pub(crate) fn new(cluster: Cidr, node_prefix: u8) -> Option<CidrSet> {
        if node_prefix < cluster.prefix
            || node_prefix > cluster.bits()
            || node_prefix - cluster.prefix > MAX_SUBNET_BITS
        {
            return None;
        }
        Some(CidrSet {
            cluster,
            node_prefix,
            count: 1u32 << (node_prefix - cluster.prefix),
            used: HashMap::new(),
            next: 0,
        })
    }

    /// Whether this set hands out IPv6 subnets.
    pub(crate) fn is_v6(&self) -> bool {
        self.cluster.v6
    }

    /// The cluster CIDR.
    pub(crate) fn cluster(&self) -> Cidr {
        self.cluster
    }

    fn subnet(&self, index: u32) -> Cidr {
        let shift = u32::from(self.cluster.bits() - self.node_prefix);
        Cidr {
            network: self.cluster.network + (u128::from(index) << shift),
            prefix: self.node_prefix,
            v6: self.cluster.v6,
        }
    }

    /// The subnet indexes `cidr` covers within the cluster CIDR (a node's CIDR may be larger
    /// or smaller than a subnet); `None` when it lies outside or is of the other family.
    fn indexes(&self, cidr: &Cidr) -> Option<std::ops::RangeInclusive<u32>> {
        if cidr.v6 != self.cluster.v6 {
            return None;
        }
        let start = cidr.network.max(self.cluster.network);
        let end = cidr.last().min(self.cluster.last());
        if start > end {
            return None;
        }
        let shift = u32::from(self.cluster.bits() - self.node_prefix);
        let index = |addr: u128| u32::try_from((addr - self.cluster.network) >> shift).ok();
        Some(index(start)?..=index(end)?)
    }

    /// Marks the subnets `cidr` covers as `owner`'s (those already taken stay with their
    /// holder); false when `cidr` is outside this set.
    pub(crate) fn occupy(&mut self, cidr: &Cidr, owner: &str) -> bool {
        let Some(range) = self.indexes(cidr) else {
            return false;
        };
        for i in range {
            self.used.entry(i).or_insert_with(|| owner.to_string());
        }
        true
    }

    /// The next free subnet, now `owner`'s; `None` when all are taken.
    pub(crate) fn allocate(&mut self, owner: &str) -> Option<Cidr> {
        for step in 0..self.count {
            let candidate = (self.next + step) % self.count;
            if let std::collections::hash_map::Entry::Vacant(slot) = self.used.entry(candidate) {
                slot.insert(owner.to_string());
                self.next = (candidate + 1) % self.count;
                return Some(self.subnet(candidate));
            }
        }
        None
    }

    /// Frees every subnet `owner` holds.
    pub(crate) fn release_owner(&mut self, owner: &str) {
        self.used.retain(|_, o| o != owner);
    }

    /// Frees the subnets of owners `keep` rejects (reserved ones stay).
    pub(crate) fn retain_owners(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.used.retain(|_, o| o.is_empty() || keep(o));
    }

    /// How many subnets are taken.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    #[test]
    fn parses_and_prints_both_families() {
        assert_eq!(cidr("10.244.3.7/16").to_string(), "10.244.0.0/16");
        assert_eq!(cidr("fd00:10:244::1/56").to_string(), "fd00:10:244::/56");
        assert_eq!(cidr("0.0.0.0/0").to_string(), "0.0.0.0/0");
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "::/129", "10.0.0.0/-1"] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn allocates_in_order_round_the_range() {
        let mut set = CidrSet::new(cidr("10.244.0.0/22"), 24).unwrap();
        let got: Vec<String> = (0..4)
            .map(|i| set.allocate(&format!("n{i}")).unwrap().to_string())
            .collect();
        assert_eq!(
            got,
            [
                "10.244.0.0/24",
                "10.244.1.0/24",
                "10.244.2.0/24",
                "10.244.3.0/24"
            ]
        );
        assert!(set.allocate("n4").is_none());
        set.release_owner("n1");
        assert_eq!(set.allocate("n4").unwrap().to_string(), "10.244.1.0/24");
        assert_eq!(set.used(), 4);
    }

    #[test]
    fn occupies_what_a_cidr_covers_and_rejects_outsiders() {
        let mut set = CidrSet::new(cidr("10.244.0.0/16"), 24).unwrap();
        assert!(set.occupy(&cidr("10.244.0.0/23"), "big"));
        assert!(set.occupy(&cidr("10.244.2.128/25"), "small"));
        assert_eq!(set.used(), 3);
        assert_eq!(set.allocate("n").unwrap().to_string(), "10.244.3.0/24");
        assert!(!set.occupy(&cidr("10.245.0.0/24"), "x"));
        assert!(!set.occupy(&cidr("fd00::/64"), "x"));
        // The service range inside the cluster CIDR is reserved for no one.
        assert!(set.occupy(&cidr("10.244.128.0/17"), ""));
        set.retain_owners(|_| false);
        assert_eq!(set.used(), 128);
    }

    #[test]
    fn ipv6_subnets_and_size_limits() {
        let mut set = CidrSet::new(cidr("fd00:10:244::/56"), 64).unwrap();
        assert_eq!(set.allocate("a").unwrap().to_string(), "fd00:10:244::/64");
        assert_eq!(set.allocate("b").unwrap().to_string(), "fd00:10:244:1::/64");
        assert!(CidrSet::new(cidr("10.0.0.0/8"), 25).is_none());
        assert!(CidrSet::new(cidr("10.0.0.0/24"), 16).is_none());
        assert!(CidrSet::new(cidr("10.0.0.0/24"), 33).is_none());
        assert!(CidrSet::new(cidr("fd00::/48"), 64).is_some());
    }
}
