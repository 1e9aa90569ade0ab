//! [`Cidr`]: an address range such as the pod network.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::error::Error;

/// An IPv4 or IPv6 address range, `address/prefix` (e.g. `10.244.0.0/16`, `fd00:10:244::/56`).
///
/// ```
/// use kube_net::Cidr;
/// let pods: Cidr = "10.244.0.0/16".parse().unwrap();
/// assert_eq!(pods.to_string(), "10.244.0.0/16");
/// assert!("10.244.0.0/33".parse::<Cidr>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// The range of `prefix_len` leading bits of `addr` (`None` when longer than the address).
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix_len <= max).then_some(Self { addr, prefix_len })
    }

    /// The address as given.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || Error::Cidr(s.to_owned());
        let (addr, len) = s.split_once('/').ok_or_else(invalid)?;
        let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
        let len: u8 = len.parse().map_err(|_| invalid())?;
        Self::new(addr, len).ok_or_else(invalid)
    }
}
