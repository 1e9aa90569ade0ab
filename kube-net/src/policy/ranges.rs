//! Address ranges for `ipBlock` peers: a CIDR minus its `except` ranges, unions of several
//! blocks, as the non-overlapping intervals an nftables interval set takes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address family: nftables types and match keywords differ between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub(crate) fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// The payload keyword (`ip saddr`, `ip6 daddr`).
    pub(crate) fn keyword(self) -> &'static str {
        match self {
            Self::V4 => "ip",
            Self::V6 => "ip6",
        }
    }

    /// The nftables address type.
    pub(crate) fn addr_type(self) -> &'static str {
        match self {
            Self::V4 => "ipv4_addr",
            Self::V6 => "ipv6_addr",
        }
    }

    /// Suffix of set names.
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Self::V4 => "v4",
            Self::V6 => "v6",
        }
    }

    fn bits(self) -> u32 {
        match self {
            Self::V4 => 32,
            Self::V6 => 128,
        }
    }

    fn max(self) -> u128 {
        match self {
            Self::V4 => u128::from(u32::MAX),
            Self::V6 => u128::MAX,
        }
    }

    fn addr(self, value: u128) -> IpAddr {
        match self {
            // Values of the V4 family never exceed u32::MAX (they come from IPv4 addresses).
            Self::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(value).unwrap_or(u32::MAX))),
            Self::V6 => IpAddr::V6(Ipv6Addr::from(value)),
        }
    }
}

fn value(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// An inclusive range of addresses of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Range {
    pub(crate) family: Family,
    start: u128,
    end: u128,
}

impl Range {
    /// The range of `cidr` (`10.0.0.0/8`; host bits are ignored, as Kubernetes' legacy
    /// parsing does). `None` when it does not parse.
    pub(crate) fn parse_cidr(cidr: &str) -> Option<Range> {
        let (addr, len) = cidr.trim().split_once('/')?;
        let addr: IpAddr = addr.parse().ok()?;
        let len: u32 = len.parse().ok()?;
        let family = Family::of(addr);
        if len > family.bits() {
            return None;
        }
        let host_bits = family.bits() - len;
        let host_mask = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let start = value(addr) & !host_mask & family.max();
        Some(Range {
            family,
            start,
            end: start | (host_mask & family.max()),
        })
    }

    /// The element as nftables writes it: `a` or `a-b`.
    pub(crate) fn element(&self) -> String {
        let start = self.family.addr(self.start);
        if self.start == self.end {
            start.to_string()
        } else {
            format!("{start}-{}", self.family.addr(self.end))
        }
    }
}

/// `block` minus each of `except` (ranges of another family are ignored).
pub(crate) fn subtract(block: Range, except: &[Range]) -> Vec<Range> {
    let mut holes: Vec<Range> = except
        .iter()
        .filter(|e| e.family == block.family)
        .copied()
        .collect();
    holes.sort();
    let mut out = Vec::new();
    let mut next = block.start;
    let mut done = false;
    for hole in holes {
        if done || hole.end < next || hole.start > block.end {
            continue;
        }
        if hole.start > next {
            out.push(Range {
                family: block.family,
                start: next,
                end: hole.start - 1,
            });
        }
        match hole.end.checked_add(1) {
            Some(after) if hole.end < block.end => next = next.max(after),
            _ => done = true,
        }
    }
    if !done && next <= block.end {
        out.push(Range {
            family: block.family,
            start: next,
            end: block.end,
        });
    }
    out
}

/// The union of `ranges`, as sorted, non-overlapping, non-adjacent ranges (an interval set
/// refuses overlapping elements).
pub(crate) fn union(mut ranges: Vec<Range>) -> Vec<Range> {
    ranges.sort();
    let mut out: Vec<Range> = Vec::with_capacity(ranges.len());
    for range in ranges {
        if let Some(last) = out.last_mut() {
            if last.family == range.family && range.start <= last.end.saturating_add(1) {
                last.end = last.end.max(range.end);
                continue;
            }
        }
        out.push(range);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(cidr: &str) -> Range {
        Range::parse_cidr(cidr).unwrap()
    }

    fn elements(ranges: &[Range]) -> Vec<String> {
        ranges.iter().map(Range::element).collect()
    }

    #[test]
    fn cidrs_parse_to_ranges() {
        assert_eq!(r("10.1.2.3/16").element(), "10.1.0.0-10.1.255.255");
        assert_eq!(r("10.1.2.3/32").element(), "10.1.2.3");
        assert_eq!(r("0.0.0.0/0").element(), "0.0.0.0-255.255.255.255");
        assert_eq!(
            r("::/0").element(),
            "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        assert_eq!(r("fd00::/120").element(), "fd00::-fd00::ff");
        assert!(Range::parse_cidr("10.0.0.0/33").is_none());
        assert!(Range::parse_cidr("10.0.0.0").is_none());
    }

    #[test]
    fn except_ranges_are_cut_out() {
        let cut = subtract(r("10.0.0.0/8"), &[r("10.1.0.0/16"), r("10.0.0.0/16")]);
        assert_eq!(elements(&cut), ["10.2.0.0-10.255.255.255"]);
        let cut = subtract(r("10.0.0.0/24"), &[r("10.0.0.128/25"), r("10.0.0.16/28")]);
        assert_eq!(
            elements(&cut),
            ["10.0.0.0-10.0.0.15", "10.0.0.32-10.0.0.127"]
        );
        assert!(subtract(r("10.0.0.0/24"), &[r("10.0.0.0/8")]).is_empty());
        let all = subtract(r("0.0.0.0/0"), &[r("255.255.255.255/32")]);
        assert_eq!(elements(&all), ["0.0.0.0-255.255.255.254"]);
        let v6 = subtract(r("::/0"), &[r("10.0.0.0/8")]);
        assert_eq!(v6, vec![r("::/0")], "another family's except is ignored");
    }

    #[test]
    fn unions_merge_overlapping_and_adjacent_ranges() {
        let merged = union(vec![
            r("10.0.1.0/24"),
            r("10.0.0.0/24"),
            r("10.0.0.5/32"),
            r("10.9.0.0/16"),
            r("fd00::/64"),
        ]);
        assert_eq!(
            elements(&merged),
            [
                "10.0.0.0-10.0.1.255",
                "10.9.0.0-10.9.255.255",
                "fd00::-fd00::ffff:ffff:ffff:ffff"
            ]
        );
    }
}
