//! ClusterIPs on a local interface (a dummy one it creates, or e.g. `lo`), so the proxy can bind
//! them (needs CAP_NET_ADMIN).

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::cmd::run;
use crate::error::{Error, Result};

/// The interface and the addresses this proxy put on it.
#[derive(Debug)]
pub(crate) struct DummyAddresses {
    interface: String,
    /// Whether the interface exists (made by us or found).
    ready: bool,
    /// Whether we made it, and so must delete it on shutdown.
    created: bool,
    present: BTreeSet<IpAddr>,
}

fn prefix(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{ip}/32"),
        IpAddr::V6(_) => format!("{ip}/128"),
    }
}

fn already(e: &Error) -> bool {
    matches!(e, Error::Command { stderr, .. } if stderr.contains("File exists"))
}

impl DummyAddresses {
    pub(crate) fn new(interface: String) -> Self {
        Self {
            interface,
            ready: false,
            created: false,
            present: BTreeSet::new(),
        }
    }

    /// Makes the set of addresses on the interface exactly `wanted` (creating it on first use).
    pub(crate) async fn reconcile(&mut self, wanted: &BTreeSet<IpAddr>) -> Result<()> {
        let mut errors = Vec::new();
        let stale: Vec<IpAddr> = self.present.difference(wanted).copied().collect();
        for ip in stale {
            match self.ip(&["addr", "del", &prefix(&ip), "dev"]).await {
                Ok(_) => {
                    self.present.remove(&ip);
                }
                Err(e) => errors.push(e),
            }
        }
        let missing: Vec<IpAddr> = wanted.difference(&self.present).copied().collect();
        if !missing.is_empty() {
            self.ensure_interface().await?;
        }
        for ip in missing {
            match self.ip(&["addr", "add", &prefix(&ip), "dev"]).await {
                Ok(_) => {
                    self.present.insert(ip);
                }
                Err(e) if already(&e) => {
                    self.present.insert(ip);
                }
                Err(e) => errors.push(e),
            }
        }
        Error::collect(errors).map_or(Ok(()), Err)
    }

    /// Whether this proxy put `ip` on the interface.
    pub(crate) fn has(&self, ip: &IpAddr) -> bool {
        self.present.contains(ip)
    }

    /// Removes every address we added, and the interface if we created it.
    pub(crate) async fn clear(&mut self) -> Result<()> {
        self.reconcile(&BTreeSet::new()).await?;
        if self.created {
            let name = self.interface.clone();
            run(None, "ip", &["link", "del", &name], None).await?;
            self.created = false;
            self.ready = false;
        }
        Ok(())
    }

    async fn ensure_interface(&mut self) -> Result<()> {
        if self.ready {
            return Ok(());
        }
        let name = self.interface.clone();
        // An existing interface (e.g. `lo`) is used as is, and never deleted.
        if run(None, "ip", &["link", "show", "dev", &name], None)
            .await
            .is_err()
        {
            match run(None, "ip", &["link", "add", &name, "type", "dummy"], None).await {
                Ok(_) => self.created = true,
                Err(e) if already(&e) => {}
                Err(e) => return Err(e),
            }
        }
        run(None, "ip", &["link", "set", &name, "up"], None).await?;
        self.ready = true;
        Ok(())
    }

    /// `ip ARGS… <interface>`.
    async fn ip(&self, args: &[&str]) -> Result<String> {
        let mut argv = args.to_vec();
        argv.push(&self.interface);
        run(None, "ip", &argv, None).await
    }
}
