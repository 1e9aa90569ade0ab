//! The nftables ruleset text for a service table: one table, replaced as a whole.

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

/// The commands that replace table `name` with the rules for `table`, as one `nft -f` script
/// (one transaction: either all of it applies or none).
pub(crate) fn render(
    name: &str,
    table: &ServiceTable,
    node: Option<&str>,
    balancing: Balancing,
) -> Rendered {
    let mut cluster_ips = Vec::new(); // "ip . proto . port : goto chain"
    let mut node_ports = Vec::new(); // "proto . port : goto chain"
    let mut no_endpoints = Vec::new(); // "ip . proto . port"
    let mut no_endpoint_node_ports = Vec::new(); // "proto . port"
    let mut chains: Vec<Chain> = Vec::new();
    for entry in table.services.values() {
        // The data plane is IPv4 (`table ip`); IPv6 services are left to another table.
        let cluster_ip = entry.cluster_ip.filter(IpAddr::is_ipv4);
        for port in &entry.ports {
            let Some(protocol) = proto(port.protocol) else {
                continue;
            };
            let internal = v4(usable(&port.endpoints, entry.internal_traffic_local, node));
            let external = v4(usable(&port.endpoints, entry.external_traffic_local, node));
            let mut push = |endpoints: Vec<(IpAddr, u16)>| -> String {
                let name = format!("svc_{}_", chains.len());
                chains.push(Chain {
                    name: name.clone(),
                    protocol,
                    endpoints,
                    affinity: entry.session_affinity,
                });
                name
            };
            let mut internal_chain = None;
            if let Some(ip) = cluster_ip {
                if internal.is_empty() {
                    no_endpoints.push(format!("{ip} . {protocol} . {}", port.port));
                } else {
                    let chain = push(internal.clone());
                    cluster_ips.push(format!("{ip} . {protocol} . {} : goto {chain}", port.port));
                    internal_chain = Some(chain);
                }
            }
            if let Some(node_port) = port.node_port {
                if external.is_empty() {
                    no_endpoint_node_ports.push(format!("{protocol} . {node_port}"));
                } else {
                    // Share the ClusterIP's chain when both policies pick the same endpoints.
                    let chain = match internal_chain {
                        Some(chain) if internal == external => chain,
                        _ => push(external),
                    };
                    node_ports.push(format!("{protocol} . {node_port} : goto {chain}"));
                }
            }
        }
    }

    let mut out = String::with_capacity(256 + chains.len() * 200);
    let mut rules = 0usize;
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
        &cluster_ips,
    );
    map(
        &mut out,
        "node_ports",
        "type inet_proto . inet_service : verdict",
        &node_ports,
    );
    map(
        &mut out,
        "no_endpoints",
        "type ipv4_addr . inet_proto . inet_service",
        &no_endpoints,
    );
    map(
        &mut out,
        "no_endpoint_node_ports",
        "type inet_proto . inet_service",
        &no_endpoint_node_ports,
    );
    rules +=
        cluster_ips.len() + node_ports.len() + no_endpoints.len() + no_endpoint_node_ports.len();
    out.push_str(concat!(
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
    ));
    rules += 10;
    for chain in &chains {
        rules += write_chain(&mut out, chain, balancing);
    }
    out.push_str("}\n");
    Rendered { script: out, rules }
}

fn map(out: &mut String, name: &str, ty: &str, elements: &[String]) {
    let _ = write!(
        out,
        "  {} {name} {{\n    {ty};\n",
        if ty.contains(": verdict") {
            "map"
        } else {
            "set"
        }
    );
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
