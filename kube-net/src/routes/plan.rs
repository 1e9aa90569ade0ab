//! What the routes to other nodes should be, from the Nodes alone: which node is reached
//! directly (host-gw), which through the VXLAN overlay, and which is this host itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::Node;

use super::{BACKEND_DATA_ANNOTATION, Backend};

/// A MAC address.
pub(crate) type Mac = [u8; 6];

/// An address range, as its (host bits cleared) network address and prefix length.
pub(crate) type Prefix = (IpAddr, u8);

/// What the routing component needs from one Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NodeView {
    pub(crate) name: String,
    pub(crate) internal_ips: Vec<IpAddr>,
    pub(crate) pod_cidrs: Vec<Prefix>,
    /// The node's VTEP MAC, from its backend-data annotation.
    pub(crate) vtep_mac: Option<Mac>,
}

impl NodeView {
    pub(crate) fn of(node: &Node) -> NodeView {
        let name = node.metadata.name.clone().unwrap_or_default();
        let internal_ips = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .filter_map(|a| a.address.parse().ok())
            .collect();
        let spec = node.spec.as_ref();
        let mut cidrs: Vec<String> = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
        if cidrs.is_empty() {
            cidrs.extend(spec.and_then(|s| s.pod_cidr.clone()));
        }
        let pod_cidrs = cidrs.iter().filter_map(|c| parse_prefix(c)).collect();
        let vtep_mac = node
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(BACKEND_DATA_ANNOTATION))
            .and_then(|data| serde_json::from_str::<serde_json::Value>(data).ok())
            .and_then(|v| v.get("VtepMAC")?.as_str().and_then(parse_mac));
        NodeView {
            name,
            internal_ips,
            pod_cidrs,
            vtep_mac,
        }
    }

    /// The first InternalIP of the family of `like`.
    fn ip_like(&self, like: &IpAddr) -> Option<IpAddr> {
        self.internal_ips
            .iter()
            .copied()
            .find(|ip| ip.is_ipv4() == like.is_ipv4())
    }

    /// The first IPv4 InternalIP.
    pub(crate) fn ipv4(&self) -> Option<Ipv4Addr> {
        self.internal_ips.iter().find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
    }

    /// The first IPv4 pod CIDR.
    pub(crate) fn pod_cidr_v4(&self) -> Option<(Ipv4Addr, u8)> {
        self.pod_cidrs.iter().find_map(|(ip, len)| match ip {
            IpAddr::V4(v4) => Some((*v4, *len)),
            IpAddr::V6(_) => None,
        })
    }
}

/// Parses `address/prefix` into its network address.
pub(crate) fn parse_prefix(text: &str) -> Option<Prefix> {
    let (addr, len) = text.trim().split_once('/')?;
    let len: u8 = len.parse().ok()?;
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(a) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            Some((IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask)), len))
        }
        IpAddr::V6(a) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            Some((IpAddr::V6((u128::from(a) & mask).into()), len))
        }
        _ => None,
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub(crate) fn parse_mac(text: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub(crate) fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A stable, locally administered unicast MAC for this node's VTEP (FNV-1a of the name), so a
/// restart keeps the address the other nodes already know.
pub(crate) fn vtep_mac(node_name: &str) -> Mac {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node_name.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let bytes = hash.to_be_bytes();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&bytes[2..]);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// How this host reaches a node's address, from a route lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reach {
    /// The address is this host's own.
    Local,
    /// On a directly connected subnet, out of this interface.
    Direct { oif: u32 },
    /// Only through a gateway, or not at all.
    Remote,
}

/// Where a pod CIDR's route points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// host-gw: the node itself, on a shared link.
    Host { gateway: IpAddr, oif: u32 },
    /// VXLAN: the node's gateway address behind the overlay device, on-link.
    Vxlan { gateway: IpAddr },
}

/// The routes, neighbours and forwarding entries this host should have.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) routes: BTreeMap<Prefix, Via>,
    /// Remote gateway → remote VTEP MAC, on the VXLAN device.
    pub(crate) neighbours: BTreeMap<IpAddr, Mac>,
    /// Remote VTEP MAC → remote node address, on the VXLAN device.
    pub(crate) fdb: BTreeMap<Mac, Ipv4Addr>,
    /// Whether some node is reached only over VXLAN (the device is needed).
    pub(crate) needs_vxlan: bool,
    /// Nodes that could not be routed, with why (logged by the caller).
    pub(crate) skipped: Vec<(String, &'static str)>,
}

/// Every other node's address that [`plan`] asks about.
pub(crate) fn addresses_to_look_up(own: &str, nodes: &[NodeView]) -> BTreeSet<IpAddr> {
    nodes
        .iter()
        .filter(|n| n.name != own)
        .flat_map(|n| n.pod_cidrs.iter().filter_map(|c| n.ip_like(&c.0)))
        .collect()
}

/// The plan for the host of node `own` with `backend`; `reach` holds the lookups of
/// [`addresses_to_look_up`] (an address missing from it counts as remote).
pub(crate) fn plan(
    own: &str,
    backend: Backend,
    nodes: &[NodeView],
    reach: &HashMap<IpAddr, Reach>,
) -> Plan {
    let mut plan = Plan::default();
    let local = nodes.iter().find(|n| n.name == own);
    // The overlay runs over IPv4 between the nodes' IPv4 InternalIPs.
    let local_vtep = local.and_then(NodeView::ipv4);
    for node in nodes.iter().filter(|n| n.name != own) {
        if node.pod_cidrs.is_empty() {
            continue;
        }
        let is_local = node
            .internal_ips
            .iter()
            .any(|ip| reach.get(ip) == Some(&Reach::Local));
        if is_local {
            // Another node on this very host: its pods are on local routes already.
            continue;
        }
        for cidr in &node.pod_cidrs {
            let Some(node_ip) = node.ip_like(&cidr.0) else {
                plan.skipped
                    .push((node.name.clone(), "no InternalIP of its pod CIDR's family"));
                continue;
            };
            let direct = match reach.get(&node_ip) {
                Some(Reach::Direct { oif }) => Some(*oif),
                _ => None,
            };
            let use_host_gw = match backend {
                Backend::HostGw => true,
                Backend::Vxlan => false,
                Backend::Auto => direct.is_some(),
            };
            // IPv6 pod CIDRs are not carried over the overlay: direct only.
            let use_host_gw = use_host_gw || cidr.0.is_ipv6();
            if use_host_gw {
                match direct {
                    Some(oif) => {
                        plan.routes.insert(
                            *cidr,
                            Via::Host {
                                gateway: node_ip,
                                oif,
                            },
                        );
                    }
                    None => plan
                        .skipped
                        .push((node.name.clone(), "not on a directly connected subnet")),
                }
                continue;
            }
            plan.needs_vxlan = true;
            let (Some(mac), Some(IpAddr::V4(remote)), Some(_)) =
                (node.vtep_mac, node.ipv4().map(IpAddr::V4), local_vtep)
            else {
                plan.skipped.push((
                    node.name.clone(),
                    "VXLAN needs both nodes' IPv4 InternalIPs and the node's VTEP MAC",
                ));
                continue;
            };
            // Flannel's layout: the remote pod CIDR's network address stands for the remote
            // VTEP.
            let gateway = cidr.0;
            plan.routes.insert(*cidr, Via::Vxlan { gateway });
            plan.neighbours.insert(gateway, mac);
            plan.fdb.insert(mac, remote);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, ips: &[&str], cidrs: &[&str], mac: Option<Mac>) -> NodeView {
        NodeView {
            name: name.into(),
            internal_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            pod_cidrs: cidrs.iter().map(|c| parse_prefix(c).unwrap()).collect(),
            vtep_mac: mac,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reads_a_node() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b", "annotations": {
                BACKEND_DATA_ANNOTATION: "{\"VNI\":1,\"VtepMAC\":\"02:00:00:00:00:0b\"}"}},
            "spec": {"podCIDR": "10.244.1.7/24"},
            "status": {"addresses": [{"type": "Hostname", "address": "b"},
                {"type": "InternalIP", "address": "192.0.2.2"}]}
        }))
        .unwrap();
        assert_eq!(
            NodeView::of(&node),
            view(
                "b",
                &["192.0.2.2"],
                &["10.244.1.0/24"],
                Some([2, 0, 0, 0, 0, 0x0b])
            )
        );
        assert_eq!(parse_prefix("fd00:1::5/64"), Some((ip("fd00:1::"), 64)));
        assert_eq!(parse_prefix("10.0.0.0/33"), None);
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(format_mac(&[2, 0xab, 0, 0, 0, 1]), "02:ab:00:00:00:01");
        let mac = vtep_mac("node-a");
        assert_eq!(mac, vtep_mac("node-a"));
        assert_ne!(mac, vtep_mac("node-b"));
        assert_eq!(mac[0] & 0x03, 0x02, "locally administered unicast");
    }

    #[test]
    fn auto_picks_host_gw_when_direct_and_vxlan_otherwise() {
        let mac_c = [2, 0, 0, 0, 0, 0xc];
        let nodes = [
            view("a", &["192.0.2.1"], &["10.244.0.0/24"], None),
            view("b", &["192.0.2.2"], &["10.244.1.0/24"], None),
            view("c", &["198.51.100.3"], &["10.244.2.0/24"], Some(mac_c)),
            // On this host: skipped.
            view("a2", &["192.0.2.1"], &["10.244.3.0/24"], None),
            // Not allocated yet.
            view("d", &["192.0.2.4"], &[], None),
        ];
        assert_eq!(
            addresses_to_look_up("a", &nodes),
            [ip("192.0.2.1"), ip("192.0.2.2"), ip("198.51.100.3")]
                .into_iter()
                .collect()
        );
        let reach = HashMap::from([
            (ip("192.0.2.1"), Reach::Local),
            (ip("192.0.2.2"), Reach::Direct { oif: 7 }),
            (ip("198.51.100.3"), Reach::Remote),
        ]);
        let auto = plan("a", Backend::Auto, &nodes, &reach);
        assert_eq!(
            auto.routes,
            BTreeMap::from([
                (
                    (ip("10.244.1.0"), 24),
                    Via::Host {
                        gateway: ip("192.0.2.2"),
                        oif: 7
                    }
                ),
                (
                    (ip("10.244.2.0"), 24),
                    Via::Vxlan {
                        gateway: ip("10.244.2.0")
                    }
                ),
            ])
        );
        assert_eq!(auto.neighbours, BTreeMap::from([(ip("10.244.2.0"), mac_c)]));
        assert_eq!(
            auto.fdb,
            BTreeMap::from([(mac_c, "198.51.100.3".parse().unwrap())])
        );
        assert!(auto.needs_vxlan);

        let host_gw = plan("a", Backend::HostGw, &nodes, &reach);
        assert_eq!(host_gw.routes.len(), 1);
        assert!(!host_gw.needs_vxlan);
        assert_eq!(host_gw.skipped.len(), 1, "{:?}", host_gw.skipped);

        let vxlan = plan("a", Backend::Vxlan, &nodes, &reach);
        // b publishes no VTEP MAC yet: skipped until it does.
        assert_eq!(vxlan.routes.len(), 1);
        assert_eq!(vxlan.skipped[0].0, "b");
    }

    #[test]
    fn ipv6_pod_cidrs_go_direct_only() {
        let nodes = [
            view("a", &["192.0.2.1", "2001:db8::1"], &["10.244.0.0/24"], None),
            view(
                "b",
                &["192.0.2.2", "2001:db8::2"],
                &["10.244.1.0/24", "fd00:10:244:1::/64"],
                Some([2, 0, 0, 0, 0, 0xb]),
            ),
        ];
        let reach = HashMap::from([
            (ip("192.0.2.2"), Reach::Remote),
            (ip("2001:db8::2"), Reach::Direct { oif: 3 }),
        ]);
        let got = plan("a", Backend::Vxlan, &nodes, &reach);
        assert_eq!(
            got.routes.get(&(ip("fd00:10:244:1::"), 64)),
            Some(&Via::Host {
                gateway: ip("2001:db8::2"),
                oif: 3
            })
        );
        assert!(matches!(
            got.routes.get(&(ip("10.244.1.0"), 24)),
            Some(Via::Vxlan { .. })
        ));
    }
}
