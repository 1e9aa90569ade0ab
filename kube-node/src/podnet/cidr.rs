//! [`Ipv4Net`]: an IPv4 address range (`10.244.1.0/24`), what pod addresses come from.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 range: its network address (host bits cleared) and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Ipv4Net {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Net {
    /// The range of the `prefix_len` leading bits of `addr` (`None` past 32).
    pub(crate) fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        (prefix_len <= 32).then(|| Self {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix_len)),
            prefix_len,
        })
    }

    /// How many addresses the range holds (2^(32 - prefix)).
    pub(crate) fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_len))
    }

    /// The `n`th address of the range (0 is the network address), if inside it.
    pub(crate) fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| {
            // n < 2^32 here, so it fits.
            Ipv4Addr::from(u32::from(self.network).wrapping_add(n as u32))
        })
    }

    /// The offset of `addr` in the range, if inside it.
    pub(crate) fn offset(&self, addr: Ipv4Addr) -> Option<u64> {
        self.contains(addr)
            .then(|| u64::from(u32::from(addr) - u32::from(self.network)))
    }

    pub(crate) fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix_len) == u32::from(self.network)
    }

    /// Whether `other` lies wholly inside this range.
    pub(crate) fn covers(&self, other: &Ipv4Net) -> bool {
        other.prefix_len >= self.prefix_len && self.contains(other.network)
    }

    /// The gateway: the range's first address after the network address (as kubenet and the
    /// CNI host-local plugin choose it).
    pub(crate) fn gateway(&self) -> Option<Ipv4Addr> {
        (self.prefix_len <= 30).then(|| self.nth(1)).flatten()
    }
}

fn mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n.min(32))),
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;

    /// `a.b.c.d/len`; host bits are cleared (`10.0.0.5/24` is `10.0.0.0/24`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("{s:?} is not an IPv4 CIDR (a.b.c.d/len)");
        let (addr, len) = s.trim().split_once('/').ok_or_else(invalid)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| invalid())?;
        let len: u8 = len.parse().map_err(|_| invalid())?;
        Self::new(addr, len).ok_or_else(invalid)
    }
}

/// Drops ranges that another in the list covers (nftables refuses overlapping intervals in
/// one set), keeping the list sorted.
pub(crate) fn without_covered(mut nets: Vec<Ipv4Net>) -> Vec<Ipv4Net> {
    nets.sort_by_key(|n| (n.prefix_len, n.network));
    let mut kept: Vec<Ipv4Net> = Vec::new();
    for net in nets {
        if !kept.iter().any(|k| k.covers(&net)) {
            kept.push(net);
        }
    }
    kept.sort();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("valid CIDR")
    }

    #[test]
    fn parses_and_clears_host_bits() {
        assert_eq!(net("10.244.1.7/24").to_string(), "10.244.1.0/24");
        assert_eq!(net("0.0.0.0/0").size(), 1 << 32);
        assert!("10.0.0.0/33".parse::<Ipv4Net>().is_err());
        assert!("10.0.0.0".parse::<Ipv4Net>().is_err());
        assert!("fd00::/64".parse::<Ipv4Net>().is_err());
    }

    #[test]
    fn addresses_in_the_range() {
        let n = net("10.244.1.0/24");
        assert_eq!(n.gateway(), Some(Ipv4Addr::new(10, 244, 1, 1)));
        assert_eq!(n.nth(255), Some(Ipv4Addr::new(10, 244, 1, 255)));
        assert_eq!(n.nth(256), None);
        assert_eq!(n.offset(Ipv4Addr::new(10, 244, 1, 9)), Some(9));
        assert_eq!(n.offset(Ipv4Addr::new(10, 244, 2, 9)), None);
        assert_eq!(net("10.0.0.0/31").gateway(), None);
    }

    #[test]
    fn covered_ranges_are_dropped() {
        let kept = without_covered(vec![
            net("10.244.1.0/24"),
            net("10.96.0.0/12"),
            net("10.244.0.0/16"),
            net("10.244.1.0/24"),
        ]);
        assert_eq!(kept, vec![net("10.96.0.0/12"), net("10.244.0.0/16")]);
    }
}
