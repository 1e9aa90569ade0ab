//! The built-in routed pod network ([`RoutedConfig`]): no CNI binary, everything set up over
//! netlink, as Calico and the CNI `ptp` plugin lay it out.
//!
//! Per pod, a veth pair: the pod's end is `eth0` in the pod's network namespace with the
//! pod's address as a /32 and a default route through the gateway (the first address of
//! the node's pod CIDR); the node's end, named from the sandbox ID
//! ([`RoutedConfig::link_prefix`]), carries the gateway address as a /32, answers ARP
//! for others (`proxy_arp`), and the node routes the pod's /32 through it. So every packet
//! of a pod crosses the node's IP stack — to other pods on the node too (no bridge switches
//! it past the `inet` forward hook, where NetworkPolicy filters) — and the node routes it
//! on to ClusterIPs (DNAT in its prerouting), to other nodes' pod CIDRs (their routes are
//! programmed elsewhere) and out.
//!
//! Code map: [`cidr`] parses ranges, [`ipam`] hands out addresses with lease files under the
//! runtime's root, [`link`] speaks netlink, [`nft`] renders the runtime's nftables table
//! (hostPort DNAT, egress masquerade).

mod cidr;
mod ipam;
mod link;
mod nft;

use std::collections::BTreeMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use kube_core::runtime::{PortMapping, RuntimeError};
use serde::{Deserialize, Serialize};

use cidr::Ipv4Net;
use ipam::Ipam;
use link::Netlink;

/// The longest [`RoutedConfig::link_prefix`]: a link name has at most 15 characters, and at
/// least 8 of them come from the sandbox ID.
pub const MAX_LINK_PREFIX: usize = 7;

/// The error a sandbox gets while the node has no pod CIDR (the node agent retries).
const NOT_READY: &str = "network not ready: no pod CIDR assigned to node yet";

/// The pod's end of its veth pair.
const POD_IFNAME: &str = "eth0";

/// The built-in pod network of [`PodNetwork::Routed`](crate::PodNetwork::Routed): a routed
/// veth pair per pod, addresses from the node's pod CIDR, hostPorts and egress masquerading
/// in an nftables table of the runtime's own (needs root, `ip` and `nft`).
///
/// * Addresses come from [`pod_cidr`](Self::pod_cidr) if given, else from the CIDR the node
///   agent passes to [`Runtime::update_runtime_config`](kube_core::runtime::Runtime::update_runtime_config)
///   once the node IPAM controller has set the Node's `spec.podCIDR` (that one wins when
///   both are there). Until one is known, `run_pod_sandbox` fails with "network not ready:
///   no pod CIDR assigned to node yet" and the agent retries. The CIDR's first address is
///   the pods' gateway (on the node's side of every veth); leases are files under the
///   runtime's root (`podnet/leases`), kept across agent restarts, released when the sandbox
///   stops.
/// * Egress from the pod CIDR to destinations outside the pod CIDR,
///   [`cluster_cidr`](Self::cluster_cidr) and [`service_cidr`](Self::service_cidr) is
///   masqueraded to the node's address (unless [`masquerade`](Self::masquerade) is off).
/// * `hostPort`s (`PodSandboxConfig::port_mappings`) are DNATed to the pod on every local
///   address (or the mapping's `hostIP`), from outside, from pods and from the node itself,
///   `127.0.0.1` included.
/// * The table is `inet kube-node-<link_prefix>` ([`table_name`](Self::table_name)),
///   created on first use and deleted, with every veth, when the runtime is dropped.
///
/// ```
/// use kube_node::{PodNetwork, RoutedConfig};
/// let network = PodNetwork::Routed(
///     RoutedConfig::new()
///         .cluster_cidr("10.244.0.0/16")
///         .service_cidr("10.96.0.0/12")
///         .link_prefix("kn"),
/// );
/// # let _ = network;
/// assert_eq!(RoutedConfig::new().link_prefix("kn").table_name(), "kube-node-kn");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoutedConfig {
    /// A pod CIDR to use before (or without) one from the node (`None` by default: wait for
    /// the Node's `spec.podCIDR`).
    pub pod_cidr: Option<String>,
    /// The whole cluster's pod network (e.g. `10.244.0.0/16`): traffic to it keeps the
    /// pod's address. `None`: only this node's pod CIDR does.
    pub cluster_cidr: Option<String>,
    /// The service network (e.g. `10.96.0.0/12`): traffic to it keeps the pod's address.
    pub service_cidr: Option<String>,
    /// Names the node's ends of the veths (`<prefix><sandbox ID…>`, 15 characters) and the
    /// nftables table; at most [`MAX_LINK_PREFIX`] characters of `a-z`, `0-9`, `-`.
    /// Default `kn`. Runtimes sharing a host need distinct prefixes.
    pub link_prefix: String,
    /// Whether egress leaving the cluster is masqueraded (default true).
    pub masquerade: bool,
}

impl Default for RoutedConfig {
    fn default() -> Self {
        Self {
            pod_cidr: None,
            cluster_cidr: None,
            service_cidr: None,
            link_prefix: "kn".into(),
            masquerade: true,
        }
    }
}

impl RoutedConfig {
    /// The defaults: no static CIDR (wait for the node's), prefix `kn`, masquerading.
    pub fn new() -> Self {
        Self::default()
    }

    /// A static pod CIDR (see [`RoutedConfig::pod_cidr`](#structfield.pod_cidr)).
    pub fn pod_cidr(mut self, cidr: impl Into<String>) -> Self {
        self.pod_cidr = Some(cidr.into());
        self
    }

    /// The cluster's pod network, not masqueraded.
    pub fn cluster_cidr(mut self, cidr: impl Into<String>) -> Self {
        self.cluster_cidr = Some(cidr.into());
        self
    }

    /// The service network, not masqueraded.
    pub fn service_cidr(mut self, cidr: impl Into<String>) -> Self {
        self.service_cidr = Some(cidr.into());
        self
    }

    /// The prefix of link and table names.
    pub fn link_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.link_prefix = prefix.into();
        self
    }

    /// Whether egress leaving the cluster is masqueraded.
    pub fn masquerade(mut self, enabled: bool) -> Self {
        self.masquerade = enabled;
        self
    }

    /// The nftables table (family `inet`) the runtime owns: `kube-node-<link_prefix>`.
    pub fn table_name(&self) -> String {
        format!("kube-node-{}", self.link_prefix)
    }

    /// The name of the node's end of a sandbox's veth: the prefix, then the start of the
    /// sandbox ID, 15 characters in all.
    pub fn host_link_name(&self, sandbox_id: &str) -> String {
        let room = 15usize.saturating_sub(self.link_prefix.len());
        let id: String = sandbox_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(room)
            .collect();
        format!("{}{}", self.link_prefix, id.to_ascii_lowercase())
    }

    fn validate(&self) -> Result<Ranges, RuntimeError> {
        let p = &self.link_prefix;
        if p.is_empty()
            || p.len() > MAX_LINK_PREFIX
            || !p
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(RuntimeError::InvalidArgument(format!(
                "link prefix {p:?}: 1 to {MAX_LINK_PREFIX} characters of a-z, 0-9 and -"
            )));
        }
        let parse = |what: &str, s: &Option<String>| {
            s.as_deref()
                .map(|s| {
                    s.parse::<Ipv4Net>()
                        .map_err(|e| RuntimeError::InvalidArgument(format!("{what}: {e}")))
                })
                .transpose()
        };
        let pod = parse("pod CIDR", &self.pod_cidr)?;
        if pod.is_some_and(|p| p.gateway().is_none() || p.size() < 4) {
            return Err(RuntimeError::InvalidArgument(format!(
                "pod CIDR {:?} has no room for pods",
                self.pod_cidr
            )));
        }
        Ok(Ranges {
            pod,
            cluster: parse("cluster CIDR", &self.cluster_cidr)?,
            service: parse("service CIDR", &self.service_cidr)?,
        })
    }
}

/// A config's ranges, parsed.
#[derive(Debug)]
struct Ranges {
    pod: Option<Ipv4Net>,
    cluster: Option<Ipv4Net>,
    service: Option<Ipv4Net>,
}

/// A published port as recorded with the sandbox's attachment.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RecordedPort {
    protocol: String,
    container_port: u16,
    host_port: u16,
    host_ip: String,
}

impl From<&PortMapping> for RecordedPort {
    fn from(p: &PortMapping) -> Self {
        Self {
            protocol: p.protocol.clone(),
            container_port: p.container_port,
            host_port: p.host_port,
            host_ip: p.host_ip.clone(),
        }
    }
}

/// What a sandbox holds of the network, recorded before its veth exists so that a crash
/// leaves it to be cleaned up.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Attachment {
    ip: Ipv4Addr,
    gateway: Ipv4Addr,
    cidr: String,
    ports: Vec<RecordedPort>,
}

#[derive(Debug, Default)]
struct State {
    /// The CIDR new pods get addresses from.
    pod_cidr: Option<Ipv4Net>,
    attachments: BTreeMap<String, Attachment>,
}

/// A runtime's routed pod network: addresses, veths, routes, and its nftables table.
#[derive(Debug)]
pub(crate) struct Routed {
    config: RoutedConfig,
    cluster_cidr: Option<Ipv4Net>,
    service_cidr: Option<Ipv4Net>,
    dir: PathBuf,
    ipam: Ipam,
    state: Mutex<State>,
    /// Serializes table rewrites, so the last one written reflects the latest state.
    table: tokio::sync::Mutex<()>,
    /// Whether IP forwarding has been switched on.
    forwarding: AtomicBool,
}

fn failed(operation: &'static str, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Failed {
        operation,
        message: message.into(),
    }
}

impl Routed {
    /// The network of a runtime rooted at `root` (state under `root/podnet`). Attachments an
    /// earlier runtime recorded are kept for the sandboxes `live` says still exist (and their
    /// hostPort rules rewritten); the rest are released.
    pub(crate) fn open(
        config: &RoutedConfig,
        root: &Path,
        live: impl Fn(&str) -> bool,
    ) -> Result<Self, RuntimeError> {
        let Ranges {
            pod: pod_cidr,
            cluster: cluster_cidr,
            service: service_cidr,
        } = config.validate()?;
        let dir = root.join("podnet");
        std::fs::create_dir_all(dir.join("attachments"))?;
        let ipam = Ipam::open(&dir.join("leases"))?;
        let mut attachments = BTreeMap::new();
        let mut stale = Vec::new();
        for entry in std::fs::read_dir(dir.join("attachments"))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            let record = std::fs::read(entry.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<Attachment>(&b).ok());
            match record {
                Some(a) if live(id) => {
                    attachments.insert(id.to_string(), a);
                }
                _ => stale.push(id.to_string()),
            }
        }
        for (_, owner) in ipam.leases() {
            if !live(&owner) && !stale.contains(&owner) {
                stale.push(owner);
            }
        }
        let routed = Self {
            config: config.clone(),
            cluster_cidr,
            service_cidr,
            ipam,
            dir,
            state: Mutex::new(State {
                pod_cidr,
                attachments,
            }),
            table: tokio::sync::Mutex::new(()),
            forwarding: AtomicBool::new(false),
        };
        if !stale.is_empty() {
            let links: Vec<String> = stale.iter().map(|id| config.host_link_name(id)).collect();
            link::block_on(delete_links(links));
            for id in &stale {
                routed.forget(id)?;
            }
        }
        if !routed.state().attachments.is_empty() {
            tracing::info!(
                pods = routed.state().attachments.len(),
                "adopted pod network attachments"
            );
            nft::apply_blocking(&routed.script()).map_err(|e| failed("new", e))?;
        }
        Ok(routed)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Plain data replaced in single statements; a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the node's pod CIDR (`spec.podCIDR`; for a comma-separated dual-stack list, its
    /// IPv4 range). An empty or missing one changes nothing.
    pub(crate) async fn set_pod_cidr(&self, cidr: Option<&str>) -> Result<(), RuntimeError> {
        let Some(list) = cidr.map(str::trim).filter(|c| !c.is_empty()) else {
            return Ok(());
        };
        let parsed = list
            .split(',')
            .find_map(|c| c.parse::<Ipv4Net>().ok())
            .ok_or_else(|| {
                RuntimeError::InvalidArgument(format!("pod CIDR {list:?} has no IPv4 range"))
            })?;
        if parsed.gateway().is_none() || parsed.size() < 4 {
            return Err(RuntimeError::InvalidArgument(format!(
                "pod CIDR {parsed} has no room for pods"
            )));
        }
        let changed = {
            let mut state = self.state();
            let changed = state.pod_cidr != Some(parsed);
            state.pod_cidr = Some(parsed);
            changed
        };
        if changed {
            tracing::info!(pod_cidr = %parsed, "pod CIDR set");
            // Its egress is masqueraded from now on.
            self.sync_table("update_runtime_config").await?;
        }
        Ok(())
    }

    /// The CIDR new pods get addresses from, or the "network not ready" error.
    pub(crate) fn ready(&self) -> Result<(), RuntimeError> {
        match self.state().pod_cidr {
            Some(_) => Ok(()),
            None => Err(failed("run_pod_sandbox", NOT_READY)),
        }
    }

    /// Gives the sandbox an address and wires its namespace `netns` to the node; returns the
    /// address. A failure leaves what was made to [`detach`](Self::detach).
    pub(crate) async fn attach(
        &self,
        sandbox: &str,
        netns: &Path,
        ports: &[PortMapping],
    ) -> Result<Ipv4Addr, RuntimeError> {
        const OP: &str = "run_pod_sandbox";
        let cidr = self.state().pod_cidr.ok_or_else(|| failed(OP, NOT_READY))?;
        let gateway = cidr
            .gateway()
            .ok_or_else(|| failed(OP, format!("pod CIDR {cidr} has no gateway address")))?;
        if !self.forwarding.load(Ordering::SeqCst) {
            link::sysctl("net/ipv4/ip_forward", "1").map_err(|e| failed(OP, e))?;
            self.forwarding.store(true, Ordering::SeqCst);
        }
        let ip = self
            .ipam
            .allocate(&cidr, sandbox)
            .map_err(|e| failed(OP, e.to_string()))?;
        let attachment = Attachment {
            ip,
            gateway,
            cidr: cidr.to_string(),
            ports: ports.iter().map(RecordedPort::from).collect(),
        };
        crate::persist::write_atomic(&self.record_path(sandbox), &attachment)?;
        self.state()
            .attachments
            .insert(sandbox.to_string(), attachment);

        let fail = |e: String| failed(OP, e);
        let host_name = self.config.host_link_name(sandbox);
        let host = Netlink::here().map_err(fail)?;
        // A link of that name is a leftover of this very sandbox (the name is its ID's).
        host.delete(&host_name).await.map_err(fail)?;
        let ns =
            File::open(netns).map_err(|e| fail(format!("opening {}: {e}", netns.display())))?;
        let host_index = host
            .add_veth(&host_name, POD_IFNAME, &ns)
            .await
            .map_err(fail)?;
        for key in ["proxy_arp", "route_localnet"] {
            link::sysctl(&format!("net/ipv4/conf/{host_name}/{key}"), "1").map_err(fail)?;
        }
        host.add_address(host_index, gateway, 32)
            .await
            .map_err(fail)?;
        host.up(host_index).await.map_err(fail)?;
        host.add_route(ip, 32, host_index, None)
            .await
            .map_err(fail)?;

        let pod = Netlink::inside(netns).map_err(fail)?;
        if let Some(lo) = pod.index("lo").await.map_err(fail)? {
            pod.up(lo).await.map_err(fail)?;
        }
        let eth0 = pod
            .index(POD_IFNAME)
            .await
            .map_err(fail)?
            .ok_or_else(|| fail(format!("{POD_IFNAME} is missing in {}", netns.display())))?;
        pod.add_address(eth0, ip, 32).await.map_err(fail)?;
        pod.up(eth0).await.map_err(fail)?;
        pod.add_route(gateway, 32, eth0, None).await.map_err(fail)?;
        pod.add_route(Ipv4Addr::UNSPECIFIED, 0, eth0, Some(gateway))
            .await
            .map_err(fail)?;
        self.sync_table(OP).await?;
        tracing::debug!(sandbox, %ip, link = %host_name, "pod network attached");
        Ok(ip)
    }

    /// Removes the sandbox's veth (and with it its routes), its hostPort rules and its
    /// lease. Fine if it has none.
    pub(crate) async fn detach(&self, sandbox: &str) -> Result<(), RuntimeError> {
        const OP: &str = "stop_pod_sandbox";
        let host_name = self.config.host_link_name(sandbox);
        let host = Netlink::here().map_err(|e| failed(OP, e))?;
        if host.delete(&host_name).await.map_err(|e| failed(OP, e))? {
            tracing::debug!(sandbox, link = %host_name, "pod network detached");
        }
        let had_ports = self
            .state()
            .attachments
            .get(sandbox)
            .is_some_and(|a| !a.ports.is_empty());
        self.forget(sandbox)?;
        if had_ports {
            self.sync_table(OP).await?;
        }
        Ok(())
    }

    /// Drops the sandbox's lease and record.
    fn forget(&self, sandbox: &str) -> Result<(), RuntimeError> {
        self.ipam.release(sandbox)?;
        match std::fs::remove_file(self.record_path(sandbox)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        self.state().attachments.remove(sandbox);
        Ok(())
    }

    /// Removes every veth the runtime made, its table and its records: nothing is left.
    pub(crate) fn shutdown_blocking(&self) {
        let links: Vec<String> = {
            let state = self.state();
            state
                .attachments
                .keys()
                .map(|id| self.config.host_link_name(id))
                .collect()
        };
        link::block_on(delete_links(links));
        if let Err(e) = nft::apply_blocking(&nft::delete_script(&self.config.table_name())) {
            tracing::warn!(error = %e, "deleting the pod network's nftables table failed");
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(error = %e, "removing the pod network's records failed");
            }
        }
        self.state().attachments.clear();
    }

    fn record_path(&self, sandbox: &str) -> PathBuf {
        self.dir.join("attachments").join(format!("{sandbox}.json"))
    }

    /// The table for the current state.
    fn script(&self) -> String {
        let state = self.state();
        let mut pod_cidrs: Vec<Ipv4Net> = state.pod_cidr.into_iter().collect();
        pod_cidrs.extend(
            state
                .attachments
                .values()
                .filter_map(|a| a.cidr.parse::<Ipv4Net>().ok()),
        );
        let pod_cidrs = cidr::without_covered(pod_cidrs);
        let mut no_masquerade = pod_cidrs.clone();
        no_masquerade.extend(self.cluster_cidr);
        no_masquerade.extend(self.service_cidr);
        let host_ports = state
            .attachments
            .values()
            .flat_map(|a| a.ports.iter().map(move |p| (a.ip, p)))
            .filter_map(|(pod_ip, p)| {
                let protocol = nft::protocol(&p.protocol)?;
                let host_ip = match p.host_ip.as_str() {
                    "" | "0.0.0.0" => None,
                    // An IPv6 host address cannot lead to an IPv4 pod.
                    other => Some(other.parse::<Ipv4Addr>().ok()?),
                };
                Some(nft::HostPort {
                    protocol,
                    host_ip,
                    host_port: p.host_port,
                    pod_ip,
                    container_port: p.container_port,
                })
            })
            .collect();
        let rules = nft::Rules {
            pod_cidrs,
            no_masquerade: cidr::without_covered(no_masquerade),
            masquerade: self.config.masquerade,
            host_ports,
        };
        nft::render(&self.config.table_name(), &self.config.link_prefix, &rules)
    }

    /// Rewrites the table from the current state.
    async fn sync_table(&self, operation: &'static str) -> Result<(), RuntimeError> {
        let _one_at_a_time = self.table.lock().await;
        let script = self.script();
        nft::apply(&script).await.map_err(|e| failed(operation, e))
    }
}

async fn delete_links(names: Vec<String>) {
    let host = match Netlink::here() {
        Ok(host) => host,
        Err(e) => {
            tracing::warn!(error = %e, "no netlink socket to remove pod veths");
            return;
        }
    };
    for name in names {
        if let Err(e) = host.delete(&name).await {
            tracing::warn!(link = %name, error = %e, "removing a pod veth failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_fit_in_fifteen_characters() {
        let config = RoutedConfig::new().link_prefix("kntest1");
        let name = config.host_link_name("0123456789abcdef0123456789abcdef");
        assert_eq!(name, "kntest101234567");
        assert_eq!(name.len(), 15);
        assert_eq!(RoutedConfig::new().host_link_name("ab"), "knab");
    }

    #[test]
    fn configs_are_validated() {
        assert!(RoutedConfig::new().validate().is_ok());
        assert!(RoutedConfig::new().link_prefix("").validate().is_err());
        assert!(
            RoutedConfig::new()
                .link_prefix("toolong1")
                .validate()
                .is_err()
        );
        assert!(RoutedConfig::new().link_prefix("Kn").validate().is_err());
        assert!(
            RoutedConfig::new()
                .pod_cidr("10.0.0.0/31")
                .validate()
                .is_err()
        );
        assert!(RoutedConfig::new().cluster_cidr("nope").validate().is_err());
        let Ranges { pod, cluster, .. } = RoutedConfig::new()
            .pod_cidr("10.244.1.0/24")
            .cluster_cidr("10.244.0.0/16")
            .validate()
            .expect("valid");
        assert_eq!(pod.map(|p| p.to_string()).as_deref(), Some("10.244.1.0/24"));
        assert_eq!(
            cluster.map(|p| p.to_string()).as_deref(),
            Some("10.244.0.0/16")
        );
    }

    #[test]
    fn the_table_masquerades_the_pod_cidr_and_publishes_ports() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = RoutedConfig::new()
            .pod_cidr("10.244.1.0/24")
            .cluster_cidr("10.244.0.0/16")
            .service_cidr("10.96.0.0/12");
        let routed = Routed::open(&config, dir.path(), |_| true).expect("opens");
        routed.state().attachments.insert(
            "s1".into(),
            Attachment {
                ip: Ipv4Addr::new(10, 244, 1, 2),
                gateway: Ipv4Addr::new(10, 244, 1, 1),
                cidr: "10.244.1.0/24".into(),
                ports: vec![RecordedPort {
                    protocol: "TCP".into(),
                    container_port: 80,
                    host_port: 8080,
                    host_ip: String::new(),
                }],
            },
        );
        let script = routed.script();
        assert!(
            script.contains(
                "ip saddr { 10.244.1.0/24 } ip daddr != { 10.96.0.0/12, 10.244.0.0/16 } masquerade"
            ),
            "{script}"
        );
        assert!(script.contains("meta l4proto tcp th dport 8080 dnat ip to 10.244.1.2:80"));
    }

    #[test]
    fn stale_leases_are_released_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipam = Ipam::open(&dir.path().join("podnet").join("leases")).expect("ipam");
        let cidr: Ipv4Net = "10.9.0.0/24".parse().expect("cidr");
        ipam.allocate(&cidr, "gone").expect("lease");
        let kept = ipam.allocate(&cidr, "live").expect("lease");
        drop(ipam);
        let routed =
            Routed::open(&RoutedConfig::new(), dir.path(), |id| id == "live").expect("opens");
        assert_eq!(routed.ipam.leases(), vec![(kept, "live".to_string())]);
        assert_eq!(
            routed.ready().expect_err("no CIDR").to_string(),
            "run_pod_sandbox failed: network not ready: no pod CIDR assigned to node yet"
        );
    }
}
