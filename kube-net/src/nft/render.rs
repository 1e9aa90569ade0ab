//! The nftables ruleset text for a service table: one table, replaced as a whole.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use kube_core::proxy::{Endpoint, Protocol, ServiceTable};

use crate::select::usable;

/// How a service chain spreads new connections over its endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Balancing {
    /// `numgen random`: each new connection picks an endpoint at random.
    #[default]
    Random,
    /// `numgen inc`: round robin (one counter per service chain).
    RoundRobin,
}

/// What a render produced: the script and how many rules and map/set elements it holds.
#[derive(Debug, Default)]
pub(crate) struct Rendered {
    pub(crate) script: String,
    pub(crate) rules: usize,
}

/// One DNAT destination chain to write.
struct Chain {
    name: String,
    protocol: &'static str,
    endpoints: Vec<(IpAddr, u16)>,
    affinity: Option<Duration>,
}

fn proto(p: Protocol) -> Option<&'static str> {
    match p {
        Protocol::Tcp => Some("tcp"),
        Protocol::Udp => Some("udp"),
        // nftables can NAT SCTP, but `th dport` matching is all we need; keep it out for now.
        Protocol::Sctp => None,
    }
}

fn v4(endpoints: Vec<Endpoint>) -> Vec<(IpAddr, u16)> {
    endpoints
        .into_iter()
        .filter(|e| e.ip.is_ipv4())
        .map(|e| (e.ip, e.port))
        .collect()
}

/// Where a frontend's traffic is sent: endpoints chosen by a shared per-size chain and map, or
/// a chain of its own (with affinity).
#[derive(Default)]
struct Plan {
    /// `ip . proto . port : goto chain` for ClusterIPs.
    cluster_ips: Vec<String>,
    /// `proto . port : goto chain` for NodePorts.
    node_ports: Vec<String>,
    no_endpoints: Vec<String>,
    no_endpoint_node_ports: Vec<String>,
    /// (protocol, endpoint count) → `ip . port . slot : ip . port` elements (ClusterIPs).
    cluster_slots: BTreeMap<(&'static str, usize), Vec<String>>,
    /// (protocol, endpoint count) → `port . slot : ip . port` elements (NodePorts).
    node_port_slots: BTreeMap<(&'static str, usize), Vec<String>>,
    /// Per-service chains, for affinity.
    chains: Vec<Chain>,
}

impl Plan {
    /// The verdict for a frontend: with affinity a chain of its own; otherwise the shared chain
    /// for its protocol and number of endpoints, with its endpoints added to that chain's map
    /// under `key` (address and port, or node port; the protocol is implied by the map, which
    /// keeps the 100,000-element maps smaller and faster to load).
    fn route(
        &mut self,
        key: &str,
        node_port: bool,
        protocol: &'static str,
        endpoints: Vec<(IpAddr, u16)>,
        affinity: Option<Duration>,
    ) -> String {
        if affinity.is_some() {
            let name = format!("svc_{}_", self.chains.len());
            self.chains.push(Chain {
                name: name.clone(),
                protocol,
                endpoints,
                affinity,
            });
            return name;
        }
        let n = endpoints.len();
        let slots = if node_port {
            self.node_port_slots.entry((protocol, n)).or_default()
        } else {
            self.cluster_slots.entry((protocol, n)).or_default()
        };
        for (slot, (ip, port)) in endpoints.iter().enumerate() {
            slots.push(format!("{key} . {slot} : {ip} . {port}"));
        }
        if node_port {
            format!("node_port_{protocol}_lb_{n}")
        } else {
            format!("cluster_{protocol}_lb_{n}")
        }
    }
}

/// The commands that replace table `name` with the rules for `table`, as one `nft -f` script
/// (one transaction: either all of it applies or none).
///
/// The rule count does not grow with the number of services: a verdict map sends each
/// ClusterIP (or NodePort) to the chain for its number of endpoints `n`, which DNATs through
/// one map per protocol keyed by `address . port . (numgen mod n)`. Only services with ClientIP
/// affinity get chains of their own. This keeps a 10,000-service sync to a few large element
/// lists, which nftables loads fast, instead of tens of thousands of chains.
pub(crate) fn render(
    name: &str,
    table: &ServiceTable,
    node: Option<&str>,
    balancing: Balancing,
) -> Rendered {
    let mut plan = Plan::default();
    for entry in table.services.values() {
        // The data plane is IPv4 (`table ip`); IPv6 services are left to another table.
        let cluster_ip = entry.cluster_ip.filter(IpAddr::is_ipv4);
        for port in &entry.ports {
            let Some(protocol) = proto(port.protocol) else {
                continue;
            };
            if let Some(ip) = cluster_ip {
                let internal = v4(usable(&port.endpoints, entry.internal_traffic_local, node));
                let key = format!("{ip} . {protocol} . {}", port.port);
                if internal.is_empty() {
                    plan.no_endpoints.push(key);
                } else {
                    let slot_key = format!("{ip} . {}", port.port);
                    let chain =
                        plan.route(&slot_key, false, protocol, internal, entry.session_affinity);
                    plan.cluster_ips.push(format!("{key} : goto {chain}"));
                }
            }
            if let Some(node_port) = port.node_port {
                let external = v4(usable(&port.endpoints, entry.external_traffic_local, node));
                let key = format!("{protocol} . {node_port}");
                if external.is_empty() {
                    plan.no_endpoint_node_ports.push(key);
                } else {
                    let slot_key = node_port.to_string();
                    let chain =
                        plan.route(&slot_key, true, protocol, external, entry.session_affinity);
                    plan.node_ports.push(format!("{key} : goto {chain}"));
                }
            }
        }
    }

    let mut out = String::with_capacity(
        4096 + 64
            * (plan.cluster_slots.values().map(Vec::len).sum::<usize>() + plan.cluster_ips.len()),
    );
    // Create-then-delete makes the delete safe when the table does not exist yet; the whole
    // script is one transaction, so traffic never sees an empty table in between.
    let _ = writeln!(
        out,
        "table ip {name} {{}}\ndelete table ip {name}\ntable ip {name} {{"
    );
    map(
        &mut out,
        "cluster_ips",
        "type ipv4_addr . inet_proto . inet_service : verdict",
        &plan.cluster_ips,
    );
    map(
        &mut out,
        "node_ports",
        "type inet_proto . inet_service : verdict",
        &plan.node_ports,
    );
    map(
        &mut out,
        "no_endpoints",
        "type ipv4_addr . inet_proto . inet_service",
        &plan.no_endpoints,
    );
    map(
        &mut out,
        "no_endpoint_node_ports",
        "type inet_proto . inet_service",
        &plan.no_endpoint_node_ports,
    );
    let mut rules = plan.cluster_ips.len()
        + plan.node_ports.len()
        + plan.no_endpoints.len()
        + plan.no_endpoint_node_ports.len();
    out.push_str(FIXED_CHAINS);
    rules += 10;
    for ((protocol, n), slots) in &plan.cluster_slots {
        let ng = numgen(balancing, *n);
        let map_name = format!("cluster_{protocol}_endpoints_{n}");
        map(
            &mut out,
            &map_name,
            &format!("typeof ip daddr . th dport . {ng} : ip daddr . th dport"),
            slots,
        );
        let _ = writeln!(
            out,
            "  chain cluster_{protocol}_lb_{n} {{\n    meta l4proto {protocol} dnat ip addr . port to ip daddr . th dport . {ng} map @{map_name}\n  }}"
        );
        rules += 1 + slots.len();
    }
    for ((protocol, n), slots) in &plan.node_port_slots {
        let ng = numgen(balancing, *n);
        let map_name = format!("node_port_{protocol}_endpoints_{n}");
        map(
            &mut out,
            &map_name,
            &format!("typeof th dport . {ng} : ip daddr . th dport"),
            slots,
        );
        let _ = writeln!(
            out,
            "  chain node_port_{protocol}_lb_{n} {{\n    meta l4proto {protocol} dnat ip addr . port to th dport . {ng} map @{map_name}\n  }}"
        );
        rules += 1 + slots.len();
    }
    for chain in &plan.chains {
        rules += write_chain(&mut out, chain, balancing);
    }
    out.push_str("}\n");
    Rendered { script: out, rules }
}

const FIXED_CHAINS: &str = concat!(
    "  chain services {\n",
    "    ip daddr . meta l4proto . th dport vmap @cluster_ips\n",
    "    fib daddr type local meta l4proto . th dport vmap @node_ports\n",
    "  }\n",
    "  chain nat_prerouting {\n",
    "    type nat hook prerouting priority dstnat; policy accept;\n",
    "    jump services\n",
    "  }\n",
    "  chain nat_output {\n",
    "    type nat hook output priority -100; policy accept;\n",
    "    jump services\n",
    "  }\n",
    // Services without endpoints refuse at once instead of timing out (as kube-proxy does).
    "  chain reject_no_endpoints {\n",
    "    ct state new ip daddr . meta l4proto . th dport @no_endpoints reject\n",
    "    ct state new fib daddr type local meta l4proto . th dport @no_endpoint_node_ports reject\n",
    "  }\n",
    "  chain filter_input {\n",
    "    type filter hook input priority filter - 1; policy accept;\n",
    "    jump reject_no_endpoints\n",
    "  }\n",
    "  chain filter_forward {\n",
    "    type filter hook forward priority filter - 1; policy accept;\n",
    "    jump reject_no_endpoints\n",
    "  }\n",
    "  chain filter_output {\n",
    "    type filter hook output priority filter - 1; policy accept;\n",
    "    jump reject_no_endpoints\n",
    "  }\n",
);

fn map(out: &mut String, name: &str, ty: &str, elements: &[String]) {
    let kind = if ty.contains(" : ") { "map" } else { "set" };
    // A size hint lets the kernel pick a fixed-size hash instead of growing one while 100,000
    // elements are inserted; the table is rewritten whole, so it never needs to grow later.
    let size = (elements.len() * 2).next_power_of_two().max(64);
    let _ = write!(out, "  {kind} {name} {{\n    {ty};\n    size {size};\n");
    if !elements.is_empty() {
        let _ = writeln!(out, "    elements = {{ {} }}", elements.join(", "));
    }
    out.push_str("  }\n");
}

fn numgen(balancing: Balancing, n: usize) -> String {
    match balancing {
        Balancing::Random => format!("numgen random mod {n}"),
        Balancing::RoundRobin => format!("numgen inc mod {n}"),
    }
}

/// Writes a service chain (and, with affinity, one chain and one set per endpoint); returns
/// the number of rules written.
fn write_chain(out: &mut String, chain: &Chain, balancing: Balancing) -> usize {
    let Chain {
        name,
        protocol,
        endpoints,
        affinity,
    } = chain;
    let n = endpoints.len();
    let Some(timeout) = affinity else {
        let _ = writeln!(out, "  chain {name} {{");
        if let [(ip, port)] = endpoints.as_slice() {
            let _ = writeln!(out, "    meta l4proto {protocol} dnat ip to {ip}:{port}");
        } else {
            let targets: Vec<String> = endpoints
                .iter()
                .enumerate()
                .map(|(i, (ip, port))| format!("{i} : {ip} . {port}"))
                .collect();
            let _ = writeln!(
                out,
                "    meta l4proto {protocol} dnat ip addr . port to {} map {{ {} }}",
                numgen(balancing, n),
                targets.join(", ")
            );
        }
        out.push_str("  }\n");
        return 1;
    };
    // ClientIP affinity the way kube-proxy's nftables mode does it: a dynamic set of client
    // addresses per endpoint, refreshed by every new connection, checked before balancing.
    let secs = timeout.as_secs().max(1);
    for i in 0..n {
        let _ = writeln!(
            out,
            "  set {name}aff{i} {{\n    type ipv4_addr; flags dynamic,timeout; timeout {secs}s;\n  }}"
        );
    }
    let _ = writeln!(out, "  chain {name} {{");
    for i in 0..n {
        let _ = writeln!(out, "    ip saddr @{name}aff{i} goto {name}ep{i}");
    }
    let targets: Vec<String> = (0..n).map(|i| format!("{i} : goto {name}ep{i}")).collect();
    let _ = writeln!(
        out,
        "    {} vmap {{ {} }}",
        numgen(balancing, n),
        targets.join(", ")
    );
    out.push_str("  }\n");
    for (i, (ip, port)) in endpoints.iter().enumerate() {
        let _ = writeln!(
            out,
            "  chain {name}ep{i} {{\n    update @{name}aff{i} {{ ip saddr }}\n    meta l4proto {protocol} dnat ip to {ip}:{port}\n  }}"
        );
    }
    1 + 3 * n
}
