//! [`Ipam`]: pod addresses handed out from the node's pod CIDR, one lease file per address
//! (as the CNI host-local plugin keeps them), so a restarted agent never hands out an address
//! a live pod holds.

use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::cidr::Ipv4Net;

/// Where the round-robin search resumes: addresses are not reused at once, so a connection
/// to a pod just removed does not reach its successor.
const LAST_RESERVED: &str = "last_reserved";

/// Leases under one directory: a file named by the address, holding its owner (a sandbox ID).
#[derive(Debug)]
pub(crate) struct Ipam {
    dir: PathBuf,
}

impl Ipam {
    /// Leases kept under `dir` (created if missing).
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// An address of `cidr` for `owner`: the one it already holds there (a retried call),
    /// else the next free one after the last handed out. The network address, the gateway
    /// (the first address) and the broadcast address are never handed out.
    pub(crate) fn allocate(&self, cidr: &Ipv4Net, owner: &str) -> io::Result<Ipv4Addr> {
        if let Some(ip) = self
            .leases()
            .into_iter()
            .find(|(ip, o)| o == owner && cidr.contains(*ip))
            .map(|(ip, _)| ip)
        {
            return Ok(ip);
        }
        let size = cidr.size();
        if size < 4 {
            return Err(io::Error::other(format!(
                "pod CIDR {cidr} has no room for pods (a gateway, network and broadcast address are reserved)"
            )));
        }
        // Offsets 2 ..= size - 2: after the network address and the gateway, before broadcast.
        let (first, last) = (2u64, size - 2);
        let start = self
            .last_reserved()
            .and_then(|ip| cidr.offset(ip))
            .filter(|o| (first..=last).contains(o))
            .map_or(first, |o| if o == last { first } else { o + 1 });
        let span = last - first + 1;
        for i in 0..span {
            let offset = first + (start - first + i) % span;
            let Some(ip) = cidr.nth(offset) else { continue };
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.dir.join(ip.to_string()))
            {
                Ok(mut file) => {
                    file.write_all(owner.as_bytes())?;
                    file.sync_all()?;
                    self.set_last_reserved(ip);
                    return Ok(ip);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(format!(
            "no free address left in pod CIDR {cidr}"
        )))
    }

    /// Releases every address `owner` holds (fine if it holds none).
    pub(crate) fn release(&self, owner: &str) -> io::Result<()> {
        for (ip, o) in self.leases() {
            if o == owner {
                match std::fs::remove_file(self.dir.join(ip.to_string())) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Every lease: address and owner.
    pub(crate) fn leases(&self) -> Vec<(Ipv4Addr, String)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut leases: Vec<(Ipv4Addr, String)> = entries
            .flatten()
            .filter_map(|e| {
                let ip: Ipv4Addr = e.file_name().to_str()?.parse().ok()?;
                let owner = std::fs::read_to_string(e.path()).ok()?;
                Some((ip, owner.trim().to_string()))
            })
            .collect();
        leases.sort();
        leases
    }

    fn last_reserved(&self) -> Option<Ipv4Addr> {
        let bytes = std::fs::read(self.dir.join(LAST_RESERVED)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn set_last_reserved(&self, ip: Ipv4Addr) {
        // Only a hint for the next search: losing it costs nothing but an earlier reuse.
        if let Err(e) = crate::persist::write_atomic(&self.dir.join(LAST_RESERVED), &ip) {
            tracing::debug!(error = %e, "recording the last pod address failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("valid CIDR")
    }

    fn ipam(dir: &Path) -> Ipam {
        Ipam::open(&dir.join("leases")).expect("ipam opens")
    }

    #[test]
    fn hands_out_distinct_addresses_past_the_gateway() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = ipam(dir.path());
        let cidr = net("10.1.0.0/29");
        let ips: Vec<Ipv4Addr> = (0..5)
            .map(|i| {
                ipam.allocate(&cidr, &format!("s{i}"))
                    .expect("free address")
            })
            .collect();
        let want: Vec<Ipv4Addr> = (2..=6).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect();
        assert_eq!(ips, want);
        // .0 is the network, .1 the gateway, .7 broadcast: nothing is left.
        let err = ipam.allocate(&cidr, "s5").expect_err("exhausted");
        assert!(err.to_string().contains("no free address"), "{err}");
    }

    #[test]
    fn a_retried_allocation_returns_the_same_address() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = ipam(dir.path());
        let cidr = net("10.1.0.0/24");
        let a = ipam.allocate(&cidr, "a").expect("address");
        assert_eq!(ipam.allocate(&cidr, "a").expect("address"), a);
        assert_eq!(ipam.leases(), vec![(a, "a".to_string())]);
    }

    #[test]
    fn released_addresses_come_back_after_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = ipam(dir.path());
        let cidr = net("10.1.0.0/29");
        let a = ipam.allocate(&cidr, "a").expect("address");
        let b = ipam.allocate(&cidr, "b").expect("address");
        ipam.release("a").expect("released");
        ipam.release("a").expect("releasing twice is fine");
        // Round robin: the next address is after b, not a's just freed one.
        let c = ipam.allocate(&cidr, "c").expect("address");
        assert_eq!(c, Ipv4Addr::new(10, 1, 0, 4));
        assert_ne!(c, a);
        for owner in ["d", "e"] {
            ipam.allocate(&cidr, owner).expect("address");
        }
        // Wrapped around: only a's old address is free.
        assert_eq!(ipam.allocate(&cidr, "f").expect("address"), a);
        assert!(ipam.leases().iter().any(|(ip, o)| *ip == b && o == "b"));
    }

    #[test]
    fn leases_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cidr = net("10.1.0.0/24");
        let a = ipam(dir.path()).allocate(&cidr, "a").expect("address");
        // A new IPAM over the same directory (a restarted agent) skips the live lease.
        let again = ipam(dir.path());
        let b = again.allocate(&cidr, "b").expect("address");
        assert_ne!(a, b);
        assert_eq!(again.leases(), vec![(a, "a".into()), (b, "b".into())]);
    }

    #[test]
    fn a_cidr_without_room_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = ipam(dir.path())
            .allocate(&net("10.1.0.0/31"), "a")
            .expect_err("no room");
        assert!(err.to_string().contains("no room"), "{err}");
    }
}
