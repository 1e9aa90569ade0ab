//! The nftables ruleset text for a service table: one `inet` table, replaced as a whole.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use kube_core::proxy::{Endpoint, Protocol, ServiceTable};

use super::NftConfig;
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

/// An address family inside the `inet` table: each has its own maps and chains, because
/// nftables addresses (and DNAT targets) are typed by family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    V4 = 0,
    V6 = 1,
}

impl Family {
    const ALL: [Family; 2] = [Family::V4, Family::V6];

    fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() { Self::V4 } else { Self::V6 }
    }

    /// The payload expression's family: `ip daddr`, `ip6 daddr`.
    fn ip(self) -> &'static str {
        match self {
            Self::V4 => "ip",
            Self::V6 => "ip6",
        }
    }

    /// Appended to the names of per-family maps and chains (IPv4 keeps the plain names).
    fn suffix(self) -> &'static str {
        match self {
            Self::V4 => "",
            Self::V6 => "6",
        }
    }

    fn addr_type(self) -> &'static str {
        match self {
            Self::V4 => "ipv4_addr",
            Self::V6 => "ipv6_addr",
        }
    }

    fn nfproto(self) -> &'static str {
        match self {
            Self::V4 => "ipv4",
            Self::V6 => "ipv6",
        }
    }
}

/// One per-service destination chain to write (services with ClientIP affinity).
struct Chain {
    name: String,
    family: Family,
    protocol: &'static str,
    endpoints: Vec<(IpAddr, u16)>,
    timeout: Duration,
    /// A rule marking the connection for masquerading, written first.
    mark: Option<String>,
}

fn proto(p: Protocol) -> Option<&'static str> {
    match p {
        Protocol::Tcp => Some("tcp"),
        Protocol::Udp => Some("udp"),
        // nftables can NAT SCTP, but `th dport` matching is all we need; keep it out for now.
        Protocol::Sctp => None,
    }
}

fn of_family(endpoints: Vec<Endpoint>, family: Family) -> Vec<(IpAddr, u16)> {
    endpoints
        .into_iter()
        .filter(|e| Family::of(e.ip) == family)
        .map(|e| (e.ip, e.port))
        .collect()
}

/// Which frontend a route is for: they differ in slot map and in masquerading.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Frontend {
    /// A ClusterIP on this service port.
    ClusterIp { port: u16 },
    /// A NodePort; `local` for `externalTrafficPolicy: Local` (client address preserved).
    NodePort { local: bool },
    /// An external IP (`spec.externalIPs`, a load balancer's ingress IP) on this service port:
    /// keyed like a ClusterIP, masqueraded like a NodePort (traffic from outside the cluster).
    External { port: u16, local: bool },
}

/// The shape of a load-balancing chain and its endpoint map, shared by every frontend of that
/// shape. Sharing keeps the number of chains small (the kernel's cost grows fast with chains),
/// and the shape carries what would otherwise be repeated in every map element: nftables
/// parses each element component separately, so a ClusterIP's map element is just
/// `address . slot : endpoint address` (three components instead of five), which is what makes
/// a 100,000-endpoint sync fast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Shape {
    family: Family,
    protocol: &'static str,
    /// For ClusterIPs and external IPs, the service port (the map is keyed by address and
    /// slot); `None` for NodePorts (keyed by node port and slot).
    port: Option<u16>,
    /// An external-IP shape: its chains mark as NodePorts do, so it cannot share a ClusterIP's.
    external: bool,
    /// The port every endpoint listens on, written once in the DNAT rule; `None` when they
    /// differ (then the map's values are `address . port`).
    target: Option<u16>,
    /// Number of endpoints: the slot is `numgen … mod n`.
    n: usize,
}

impl Shape {
    /// The name of its chain and (with `_eps`) of its endpoint map, e.g. `cluster_tcp_80_8080_2`
    /// or `node_port6_udp_any_3`.
    fn name(&self) -> String {
        let sfx = self.family.suffix();
        let target = self
            .target
            .map_or_else(|| "any".to_owned(), |t| t.to_string());
        match self.port {
            Some(port) if self.external => {
                format!("external{sfx}_{}_{port}_{target}_{}", self.protocol, self.n)
            }
            Some(port) => format!("cluster{sfx}_{}_{port}_{target}_{}", self.protocol, self.n),
            None => format!("node_port{sfx}_{}_{target}_{}", self.protocol, self.n),
        }
    }
}

/// A map's or set's elements as the script lists them (`a, b, c`), written straight into one
/// buffer: a 10,000-service table has 100,000 of them.
#[derive(Debug, Default)]
struct Elements {
    list: String,
    len: usize,
}

impl Elements {
    fn push(&mut self, element: std::fmt::Arguments<'_>) {
        if self.len > 0 {
            self.list.push_str(", ");
        }
        let _ = self.list.write_fmt(element);
        self.len += 1;
    }
}

/// Where a frontend's traffic is sent: endpoints chosen by a shared chain and map of its
/// [`Shape`], or a chain of its own (with affinity). Lists are indexed by [`Family`].
#[derive(Default)]
struct Plan {
    /// `ip . proto . port : goto chain` for ClusterIPs.
    cluster_ips: [Elements; 2],
    /// `proto . port : goto chain` for NodePorts.
    node_ports: [Elements; 2],
    no_endpoints: [Elements; 2],
    no_endpoint_node_ports: [Elements; 2],
    /// Shape of a ClusterIP chain → per slot, `ip : endpoint` elements.
    cluster_slots: BTreeMap<Shape, Vec<Elements>>,
    /// Shape of a NodePort chain → per slot, `node port : endpoint` elements.
    node_port_slots: BTreeMap<Shape, Vec<Elements>>,
    /// Shape of an external-IP chain → per slot, `ip : endpoint` elements.
    external_slots: BTreeMap<Shape, Vec<Elements>>,
    /// Per-service chains, for affinity.
    chains: Vec<Chain>,
    /// `ip . ip` for each endpoint on this node: a pod reaching itself through a service
    /// ("hairpin") must be masqueraded, or its reply would come from and go to itself.
    hairpin: [BTreeSet<String>; 2],
}

/// The masquerading rules of a configuration.
struct Masquerade<'a> {
    config: &'a NftConfig,
}

impl Masquerade<'_> {
    fn set_mark(&self) -> String {
        format!(
            "meta mark set meta mark | {:#x}",
            self.config.masquerade_mark
        )
    }

    /// The rule that marks ClusterIP traffic of `family` for masquerading: everything with
    /// `masquerade_all`, else traffic from outside the pod network (none when the pod network
    /// of that family is not configured), as kube-proxy does.
    fn cluster_ip(&self, family: Family) -> Option<String> {
        if self.config.masquerade_all {
            return Some(self.set_mark());
        }
        let cidrs: Vec<String> = self
            .config
            .pod_cidrs
            .iter()
            .filter(|c| Family::of(c.addr()) == family)
            .map(ToString::to_string)
            .collect();
        if cidrs.is_empty() {
            return None;
        }
        Some(format!(
            "{} saddr != {{ {} }} {}",
            family.ip(),
            cidrs.join(", "),
            self.set_mark()
        ))
    }

    /// NodePort traffic with the `Cluster` policy may go to another node: always marked, so
    /// replies come back through this node. `Local` keeps the client's address.
    fn node_port(&self, local: bool) -> Option<String> {
        (!local).then(|| self.set_mark())
    }
}

impl Plan {
    /// The verdict for a frontend: with affinity a chain of its own; otherwise the shared chain
    /// of its [`Shape`], with its endpoints added to that shape's map under `key` (the
    /// ClusterIP, or the node port).
    #[allow(clippy::too_many_arguments)]
    fn route(
        &mut self,
        family: Family,
        frontend: Frontend,
        key: &str,
        protocol: &'static str,
        endpoints: Vec<(IpAddr, u16)>,
        affinity: Option<Duration>,
        masquerade: &Masquerade<'_>,
    ) -> String {
        if let Some(timeout) = affinity {
            let name = format!("svc_{}_", self.chains.len());
            let mark = match frontend {
                Frontend::ClusterIp { .. } => masquerade.cluster_ip(family),
                Frontend::NodePort { local } | Frontend::External { local, .. } => {
                    masquerade.node_port(local)
                }
            };
            self.chains.push(Chain {
                name: name.clone(),
                family,
                protocol,
                endpoints,
                timeout,
                mark,
            });
            return name;
        }
        let first = endpoints.first().map(|(_, port)| *port);
        let target = first.filter(|t| endpoints.iter().all(|(_, port)| port == t));
        let shape = Shape {
            family,
            protocol,
            port: match frontend {
                Frontend::ClusterIp { port } | Frontend::External { port, .. } => Some(port),
                Frontend::NodePort { .. } => None,
            },
            external: matches!(frontend, Frontend::External { .. }),
            target,
            n: endpoints.len(),
        };
        let slots = match frontend {
            Frontend::ClusterIp { .. } => &mut self.cluster_slots,
            Frontend::NodePort { .. } => &mut self.node_port_slots,
            Frontend::External { .. } => &mut self.external_slots,
        }
        .entry(shape)
        .or_insert_with(|| (0..shape.n).map(|_| Elements::default()).collect());
        for (slot, (ip, port)) in slots.iter_mut().zip(&endpoints) {
            match target {
                Some(_) => slot.push(format_args!("{key} : {ip}")),
                None => slot.push(format_args!("{key} : {ip} . {port}")),
            }
        }
        match frontend {
            Frontend::NodePort { local: true } | Frontend::External { local: true, .. } => {
                format!("{}_local", shape.name())
            }
            _ => shape.name(),
        }
    }
}

/// The commands that replace table `inet <config.table>` with the rules for `table`, as one
/// `nft -f` script (one transaction: either all of it applies or none).
///
/// The rule count does not grow with the number of services: a verdict map sends each
/// ClusterIP (or NodePort) to the chain of its [`Shape`] (family, protocol, service port,
/// target port, number of endpoints `n`), which picks a slot with `numgen … mod n` and DNATs
/// through that slot's map keyed by the address (or node port), to the target port the chain
/// names ([`Layout`]). Only services with ClientIP affinity get chains of their own. This keeps a
/// 10,000-service sync to a few large element lists with few components each, which nftables
/// parses and loads fast, instead of tens of thousands of chains.
///
/// Masquerading as kube-proxy does it: service chains set a mark bit on connections that need
/// SNAT (NodePort traffic with the `Cluster` policy; ClusterIP traffic from outside the pod
/// network), and a postrouting chain masquerades marked packets, clearing the bit.
pub(crate) fn render(table: &ServiceTable, config: &NftConfig) -> Rendered {
    let node = config.node_name.as_deref();
    let masquerade = Masquerade { config };
    let mut plan = Plan::default();
    let mut externals = Externals::new(table);
    for entry in table.services.values() {
        // A service is single-stack here (one ClusterIP): its NodePorts serve that family.
        let family = entry.cluster_ip.map_or(Family::V4, Family::of);
        let f = family as usize;
        for port in &entry.ports {
            let Some(protocol) = proto(port.protocol) else {
                continue;
            };
            if node.is_some() {
                for e in port
                    .endpoints
                    .iter()
                    .filter(|e| e.node_name.as_deref() == node)
                {
                    plan.hairpin[Family::of(e.ip) as usize].insert(format!("{0} . {0}", e.ip));
                }
            }
            if let Some(ip) = entry.cluster_ip {
                let internal = of_family(
                    usable(&port.endpoints, entry.internal_traffic_local, node),
                    family,
                );
                let key = format!("{ip} . {protocol} . {}", port.port);
                if internal.is_empty() {
                    plan.no_endpoints[f].push(format_args!("{key}"));
                } else {
                    let chain = plan.route(
                        family,
                        Frontend::ClusterIp { port: port.port },
                        &ip.to_string(),
                        protocol,
                        internal,
                        entry.session_affinity,
                        &masquerade,
                    );
                    plan.cluster_ips[f].push(format_args!("{key} : goto {chain}"));
                }
            }
            if let Some(node_port) = port.node_port {
                let local = entry.external_traffic_local;
                let external = of_family(usable(&port.endpoints, local, node), family);
                let key = format!("{protocol} . {node_port}");
                if external.is_empty() {
                    plan.no_endpoint_node_ports[f].push(format_args!("{key}"));
                } else {
                    let chain = plan.route(
                        family,
                        Frontend::NodePort { local },
                        &node_port.to_string(),
                        protocol,
                        external,
                        entry.session_affinity,
                        &masquerade,
                    );
                    plan.node_ports[f].push(format_args!("{key} : goto {chain}"));
                }
            }
            let local = entry.external_traffic_local;
            let mut external = None;
            for ip in &entry.external_ips {
                if Family::of(*ip) != family || !externals.claim(*ip, protocol, port.port) {
                    continue;
                }
                let endpoints = external
                    .get_or_insert_with(|| of_family(usable(&port.endpoints, local, node), family));
                let key = format!("{ip} . {protocol} . {}", port.port);
                if endpoints.is_empty() {
                    plan.no_endpoints[f].push(format_args!("{key}"));
                } else {
                    let chain = plan.route(
                        family,
                        Frontend::External {
                            port: port.port,
                            local,
                        },
                        &ip.to_string(),
                        protocol,
                        endpoints.clone(),
                        entry.session_affinity,
                        &masquerade,
                    );
                    plan.cluster_ips[f].push(format_args!("{key} : goto {chain}"));
                }
            }
        }
    }
    write(&plan, config, &masquerade)
}

/// Which external `address . protocol . port` keys are taken. They share the ClusterIP
/// verdict map, whose keys must be unique or the whole transaction fails; so an external IP
/// never takes a ClusterIP's address, and of two services naming the same external IP and
/// port the first (in key order) has it, as with two LoadBalancers on one port in k3s.
struct Externals {
    cluster_ips: BTreeSet<IpAddr>,
    taken: BTreeSet<(IpAddr, &'static str, u16)>,
}

impl Externals {
    fn new(table: &ServiceTable) -> Self {
        // Only tables with external IPs pay for the set.
        let any = table.services.values().any(|e| !e.external_ips.is_empty());
        let cluster_ips = if any {
            table
                .services
                .values()
                .filter_map(|e| e.cluster_ip)
                .collect()
        } else {
            BTreeSet::new()
        };
        Self {
            cluster_ips,
            taken: BTreeSet::new(),
        }
    }

    /// Whether `ip . protocol . port` is free (and now taken).
    fn claim(&mut self, ip: IpAddr, protocol: &'static str, port: u16) -> bool {
        !self.cluster_ips.contains(&ip) && self.taken.insert((ip, protocol, port))
    }
}

fn write(plan: &Plan, config: &NftConfig, masquerade: &Masquerade<'_>) -> Rendered {
    let name = &config.table;
    let balancing = config.balancing;
    let bytes: usize = plan
        .cluster_slots
        .values()
        .chain(plan.node_port_slots.values())
        .chain(plan.external_slots.values())
        .flatten()
        .chain(&plan.cluster_ips)
        .map(|e| e.list.len())
        .sum();
    let mut out = String::with_capacity(4096 + bytes + bytes / 8);
    // Create-then-delete makes the delete safe when the table does not exist yet; the whole
    // script is one transaction, so traffic never sees an empty table in between. An `ip`
    // table of the same name (left by an IPv4-only version) goes too.
    let _ = writeln!(
        out,
        "table ip {name} {{}}\ndelete table ip {name}\n\
         table inet {name} {{}}\ndelete table inet {name}\ntable inet {name} {{"
    );
    let mut rules = 0;
    for family in Family::ALL {
        let (f, sfx, addr) = (family as usize, family.suffix(), family.addr_type());
        map(
            &mut out,
            &format!("cluster_ips{sfx}"),
            &format!("type {addr} . inet_proto . inet_service : verdict"),
            &plan.cluster_ips[f],
        );
        map(
            &mut out,
            &format!("node_ports{sfx}"),
            "type inet_proto . inet_service : verdict",
            &plan.node_ports[f],
        );
        map(
            &mut out,
            &format!("no_endpoints{sfx}"),
            &format!("type {addr} . inet_proto . inet_service"),
            &plan.no_endpoints[f],
        );
        map(
            &mut out,
            &format!("no_endpoint_node_ports{sfx}"),
            "type inet_proto . inet_service",
            &plan.no_endpoint_node_ports[f],
        );
        let mut hairpin = Elements::default();
        for pair in &plan.hairpin[f] {
            hairpin.push(format_args!("{pair}"));
        }
        map(
            &mut out,
            &format!("hairpin{sfx}"),
            &format!("type {addr} . {addr}"),
            &hairpin,
        );
        rules += hairpin.len;
        rules += plan.cluster_ips[f].len
            + plan.node_ports[f].len
            + plan.no_endpoints[f].len
            + plan.no_endpoint_node_ports[f].len;
    }
    rules += fixed_chains(&mut out, config.masquerade_mark);
    let per_slot = per_slot_shapes(plan);
    for (shape, slots) in &plan.cluster_slots {
        let mark = masquerade.cluster_ip(shape.family);
        let key = format!("{} daddr", shape.family.ip());
        let entries = [(String::new(), mark)];
        let layout = if per_slot.contains(shape) {
            Layout::PerSlot
        } else {
            Layout::Concatenated
        };
        rules += write_shape(&mut out, shape, slots, &key, &entries, layout, balancing);
    }
    for (shape, slots) in &plan.node_port_slots {
        // Both policies' chains exist for every shape, so switching a service's policy is
        // an element change (its verdict), not a new structure.
        let entries = [
            (String::new(), masquerade.node_port(false)),
            ("_local".to_owned(), masquerade.node_port(true)),
        ];
        let layout = if per_slot.contains(shape) {
            Layout::PerSlot
        } else {
            Layout::Concatenated
        };
        rules += write_shape(
            &mut out, shape, slots, "th dport", &entries, layout, balancing,
        );
    }
    for (shape, slots) in &plan.external_slots {
        // Both policies' chains, as for NodePorts; keyed by the destination address.
        let key = format!("{} daddr", shape.family.ip());
        let entries = [
            (String::new(), masquerade.node_port(false)),
            ("_local".to_owned(), masquerade.node_port(true)),
        ];
        let layout = if per_slot.contains(shape) {
            Layout::PerSlot
        } else {
            Layout::Concatenated
        };
        rules += write_shape(&mut out, shape, slots, &key, &entries, layout, balancing);
    }
    for chain in &plan.chains {
        rules += write_chain(&mut out, chain, balancing);
    }
    out.push_str("}\n");
    Rendered { script: out, rules }
}

/// The hooks and the chains every table has; returns their rule count.
fn fixed_chains(out: &mut String, mark: u32) -> usize {
    let mut services = String::new();
    let mut reject = String::new();
    let mut hairpin = String::new();
    for family in Family::ALL {
        let (ip, sfx, nfproto) = (family.ip(), family.suffix(), family.nfproto());
        let _ = writeln!(
            services,
            "    {ip} daddr . meta l4proto . th dport vmap @cluster_ips{sfx}"
        );
        let _ = writeln!(
            services,
            "    meta nfproto {nfproto} fib daddr type local meta l4proto . th dport vmap @node_ports{sfx}"
        );
        let _ = writeln!(
            reject,
            "    ct state new {ip} daddr . meta l4proto . th dport @no_endpoints{sfx} reject"
        );
        let _ = writeln!(
            hairpin,
            "    ct status dnat {ip} saddr . {ip} daddr @hairpin{sfx} meta mark set meta mark | {mark:#x}"
        );
        let _ = writeln!(
            reject,
            "    ct state new meta nfproto {nfproto} fib daddr type local meta l4proto . th dport @no_endpoint_node_ports{sfx} reject"
        );
    }
    let _ = write!(
        out,
        concat!(
            "  chain services {{\n{services}  }}\n",
            "  chain nat_prerouting {{\n",
            "    type nat hook prerouting priority dstnat; policy accept;\n",
            "    jump services\n",
            "  }}\n",
            "  chain nat_output {{\n",
            "    type nat hook output priority -100; policy accept;\n",
            "    jump services\n",
            "  }}\n",
            // Connections a service chain marked leave with this node's address, so that
            // replies come back through it to be un-DNATed. The bit is cleared first, as
            // kube-proxy does, in case the packet passes this hook again (tunnels).
            "  chain nat_postrouting {{\n",
            "    type nat hook postrouting priority srcnat; policy accept;\n",
            "{hairpin}",
            "    meta mark & {mark:#x} == 0 return\n",
            "    meta mark set meta mark ^ {mark:#x}\n",
            "    masquerade fully-random\n",
            "  }}\n",
            // Services without endpoints refuse at once instead of timing out (as kube-proxy
            // does).
            "  chain reject_no_endpoints {{\n{reject}  }}\n",
            "  chain filter_input {{\n",
            "    type filter hook input priority filter - 1; policy accept;\n",
            "    jump reject_no_endpoints\n",
            "  }}\n",
            "  chain filter_forward {{\n",
            "    type filter hook forward priority filter - 1; policy accept;\n",
            "    jump reject_no_endpoints\n",
            "  }}\n",
            "  chain filter_output {{\n",
            "    type filter hook output priority filter - 1; policy accept;\n",
            "    jump reject_no_endpoints\n",
            "  }}\n",
        ),
        services = services,
        reject = reject,
        hairpin = hairpin,
        mark = mark,
    );
    21
}

fn map(out: &mut String, name: &str, ty: &str, elements: &Elements) {
    let kind = if ty.contains(" : ") { "map" } else { "set" };
    // A size hint lets the kernel pick a fixed-size hash instead of growing one while 100,000
    // elements are inserted; the table is rewritten whole, so it never needs to grow later.
    let size = (elements.len * 2).next_power_of_two().max(64);
    let _ = write!(out, "  {kind} {name} {{\n    {ty};\n    size {size};\n");
    if elements.len > 0 {
        out.push_str("    elements = { ");
        out.push_str(&elements.list);
        out.push_str(" }\n");
    }
    out.push_str("  }\n");
}

fn numgen(balancing: Balancing, n: usize) -> String {
    match balancing {
        Balancing::Random => format!("numgen random mod {n}"),
        Balancing::RoundRobin => format!("numgen inc mod {n}"),
    }
}

/// How many per-slot chains (and maps) a table may have in all: the kernel's cost of loading
/// a table grows faster than linearly with its chains, so only the largest shapes get them.
const SLOT_CHAINS: usize = 256;

/// How a shape's chain finds an endpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `numgen mod n vmap` to one chain per slot, each with its own map keyed by the frontend
    /// alone: elements are `key : endpoint`, which nftables parses and loads about twice as
    /// fast as a concatenation.
    PerSlot,
    /// One map keyed by `key . numgen mod n`: one chain, longer elements.
    Concatenated,
}

/// The shapes that get [`Layout::PerSlot`]: the ones with the most elements, within
/// [`SLOT_CHAINS`].
fn per_slot_shapes(plan: &Plan) -> BTreeSet<Shape> {
    let mut shapes: Vec<(usize, Shape)> = plan
        .cluster_slots
        .iter()
        .chain(&plan.node_port_slots)
        .chain(&plan.external_slots)
        .map(|(shape, slots)| (slots.iter().map(|e| e.len).sum(), *shape))
        .collect();
    shapes.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut budget = SLOT_CHAINS;
    let mut out = BTreeSet::new();
    for (_, shape) in shapes {
        if shape.n <= budget {
            budget -= shape.n;
            out.insert(shape);
        }
    }
    out
}

/// Writes a shape's maps and chains: one entry chain per `(name suffix, mark rule)` in
/// `entries`, all balancing over the same endpoints, whose elements are keyed by `key` (the
/// destination address or port); returns the number of rules and elements.
fn write_shape(
    out: &mut String,
    shape: &Shape,
    slots: &[Elements],
    key: &str,
    entries: &[(String, Option<String>)],
    layout: Layout,
    balancing: Balancing,
) -> usize {
    let (ip, protocol, n) = (shape.family.ip(), shape.protocol, shape.n);
    let name = shape.name();
    let ng = numgen(balancing, n);
    let value = match shape.target {
        Some(_) => format!("{ip} daddr"),
        None => format!("{ip} daddr . th dport"),
    };
    let dnat = |out: &mut String, map: &str, key: &str| {
        let _ = match shape.target {
            Some(target) => writeln!(
                out,
                "    meta l4proto {protocol} dnat {ip} to {key} map @{map} : {target}"
            ),
            None => writeln!(
                out,
                "    meta l4proto {protocol} dnat {ip} addr . port to {key} map @{map}"
            ),
        };
    };
    let mut rules = slots.iter().map(|e| e.len).sum::<usize>();
    match layout {
        Layout::PerSlot => {
            for (k, elements) in slots.iter().enumerate() {
                let map_name = format!("{name}_s{k}_eps");
                map(out, &map_name, &format!("typeof {key} : {value}"), elements);
                let _ = writeln!(out, "  chain {name}_s{k} {{");
                dnat(out, &map_name, key);
                out.push_str("  }\n");
            }
            rules += n;
        }
        Layout::Concatenated => {
            let mut elements = Elements::default();
            for (k, slot) in slots.iter().enumerate() {
                for element in slot.list.split(", ").filter(|e| !e.is_empty()) {
                    let (from, to) = element.split_once(" : ").unwrap_or((element, ""));
                    elements.push(format_args!("{from} . {k} : {to}"));
                }
            }
            let map_name = format!("{name}_eps");
            map(
                out,
                &map_name,
                &format!("typeof {key} . {ng} : {value}"),
                &elements,
            );
        }
    }
    for (suffix, mark) in entries {
        let _ = writeln!(out, "  chain {name}{suffix} {{");
        if let Some(mark) = mark {
            let _ = writeln!(out, "    {mark}");
            rules += 1;
        }
        match layout {
            Layout::PerSlot => {
                let targets: Vec<String> =
                    (0..n).map(|k| format!("{k} : goto {name}_s{k}")).collect();
                let _ = writeln!(out, "    {ng} vmap {{ {} }}", targets.join(", "));
            }
            Layout::Concatenated => dnat(out, &format!("{name}_eps"), &format!("{key} . {ng}")),
        }
        out.push_str("  }\n");
        rules += 1;
    }
    rules
}

/// Writes a service chain with ClientIP affinity (one chain and one set per endpoint); returns
/// the number of rules written.
fn write_chain(out: &mut String, chain: &Chain, balancing: Balancing) -> usize {
    let Chain {
        name,
        family,
        protocol,
        endpoints,
        timeout,
        mark,
    } = chain;
    let (ip, addr) = (family.ip(), family.addr_type());
    let n = endpoints.len();
    // The way kube-proxy's nftables mode does it: a dynamic set of client addresses per
    // endpoint, refreshed by every new connection, checked before balancing.
    let secs = timeout.as_secs().max(1);
    for i in 0..n {
        let _ = writeln!(
            out,
            "  set {name}aff{i} {{\n    type {addr}; flags dynamic,timeout; timeout {secs}s;\n  }}"
        );
    }
    let _ = writeln!(out, "  chain {name} {{");
    if let Some(mark) = mark {
        let _ = writeln!(out, "    {mark}");
    }
    for i in 0..n {
        let _ = writeln!(out, "    {ip} saddr @{name}aff{i} goto {name}ep{i}");
    }
    let targets: Vec<String> = (0..n).map(|i| format!("{i} : goto {name}ep{i}")).collect();
    let _ = writeln!(
        out,
        "    {} vmap {{ {} }}",
        numgen(balancing, n),
        targets.join(", ")
    );
    out.push_str("  }\n");
    for (i, (addr, port)) in endpoints.iter().enumerate() {
        let target = SocketAddr::new(*addr, *port);
        let _ = writeln!(
            out,
            "  chain {name}ep{i} {{\n    update @{name}aff{i} {{ {ip} saddr }}\n    meta l4proto {protocol} dnat {ip} to {target}\n  }}"
        );
    }
    1 + usize::from(mark.is_some()) + 3 * n
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_core::object::ObjectKey;
    use kube_core::proxy::{ServiceEntry, ServicePort};

    fn service(ip: &str, eps: &[(&str, &str)], node_port: u16, local: bool) -> ServiceEntry {
        ServiceEntry {
            cluster_ip: Some(ip.parse().unwrap()),
            ports: vec![ServicePort {
                name: String::new(),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: Some(node_port),
                endpoints: eps
                    .iter()
                    .map(|(ip, node)| Endpoint {
                        ip: ip.parse().unwrap(),
                        port: 8080,
                        node_name: Some((*node).into()),
                        terminating: false,
                    })
                    .collect(),
            }],
            external_traffic_local: local,
            ..ServiceEntry::default()
        }
    }

    fn table(entries: Vec<ServiceEntry>) -> ServiceTable {
        let mut t = ServiceTable::default();
        for (i, e) in entries.into_iter().enumerate() {
            t.services
                .insert(ObjectKey::namespaced("default", format!("s{i}")), e);
        }
        t
    }

    #[test]
    fn ipv6_services_get_ip6_maps_and_chains() {
        let t = table(vec![service(
            "fd00:96::10",
            &[("fd00:244::2", "a"), ("10.244.0.9", "a")],
            30080,
            false,
        )]);
        let script = render(&t, &NftConfig::default()).script;
        assert!(script.contains("table inet kube-net {"), "{script}");
        assert!(
            script.contains("elements = { fd00:96::10 . tcp . 80 : goto cluster6_tcp_80_8080_1 }"),
            "{script}"
        );
        assert!(
            script.contains("elements = { fd00:96::10 : fd00:244::2 }"),
            "{script}"
        );
        // The IPv4 endpoint of an IPv6 service is not used.
        assert!(!script.contains("10.244.0.9"), "{script}");
        assert!(
            script.contains("dnat ip6 to ip6 daddr map @cluster6_tcp_80_8080_1_s0_eps : 8080"),
            "{script}"
        );
        assert!(script.contains("tcp . 30080 : goto node_port6_tcp_8080_1"));
    }

    #[test]
    fn cluster_policy_node_ports_are_marked_local_ones_are_not() {
        let t = table(vec![
            service("10.96.0.10", &[("10.244.1.2", "b")], 30080, false),
            service("10.96.0.11", &[("10.244.0.2", "a")], 30081, true),
        ]);
        let config = NftConfig {
            node_name: Some("a".into()),
            pod_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            ..NftConfig::default()
        };
        let script = render(&t, &config).script;
        assert!(script.contains("tcp . 30080 : goto node_port_tcp_8080_1,"));
        assert!(script.contains("tcp . 30081 : goto node_port_tcp_8080_1_local"));
        assert!(script.contains(
            "chain node_port_tcp_8080_1 {\n    meta mark set meta mark | 0x4000\n    numgen random mod 1 vmap { 0 : goto node_port_tcp_8080_1_s0 }"
        ));
        assert!(script.contains("chain node_port_tcp_8080_1_local {\n    numgen"));
        assert!(script.contains(
            "chain cluster_tcp_80_8080_1 {\n    ip saddr != { 10.244.0.0/16 } meta mark set meta mark | 0x4000\n"
        ));
        assert!(script.contains("masquerade fully-random"));
        // Without a pod network, ClusterIP traffic is not marked.
        let script = render(&t, &NftConfig::default()).script;
        assert!(script.contains("chain cluster_tcp_80_8080_1 {\n    numgen"));
    }

    #[test]
    fn external_ips_dnat_like_cluster_ips_and_mark_like_node_ports() {
        let mut cluster = service("10.96.0.10", &[("10.244.1.2", "b")], 30080, false);
        cluster.external_ips = vec!["192.0.2.7".parse().unwrap(), "fd00::7".parse().unwrap()];
        let mut local = service("10.96.0.11", &[("10.244.0.2", "a")], 30081, true);
        // The same address and port as the first service (it keeps it), and another
        // service's ClusterIP (never taken).
        local.external_ips = vec!["192.0.2.7".parse().unwrap(), "10.96.0.10".parse().unwrap()];
        let mut other_port = local.clone();
        other_port.cluster_ip = Some("10.96.0.12".parse().unwrap());
        other_port.ports[0].port = 81;
        other_port.ports[0].node_port = None;
        other_port.external_ips = vec!["192.0.2.7".parse().unwrap()];
        let mut empty = service("10.96.0.13", &[("10.244.1.2", "b")], 30083, true);
        empty.external_ips = vec!["192.0.2.8".parse().unwrap()];
        let t = table(vec![cluster, local, other_port, empty]);
        let config = NftConfig {
            node_name: Some("a".into()),
            pod_cidrs: vec!["10.244.0.0/16".parse().unwrap()],
            ..NftConfig::default()
        };
        let script = render(&t, &config).script;
        assert!(
            script.contains("192.0.2.7 . tcp . 80 : goto external_tcp_80_8080_1,"),
            "{script}"
        );
        assert_eq!(
            script.matches("192.0.2.7 . tcp . 80 :").count(),
            1,
            "{script}"
        );
        assert!(
            !script.contains("10.96.0.10 . tcp . 80 : goto external"),
            "{script}"
        );
        // Local policy on another port: the local chain, no mark.
        assert!(
            script.contains("192.0.2.7 . tcp . 81 : goto external_tcp_81_8080_1_local"),
            "{script}"
        );
        assert!(
            script
                .contains("chain external_tcp_80_8080_1 {\n    meta mark set meta mark | 0x4000\n")
        );
        assert!(script.contains("chain external_tcp_81_8080_1_local {\n    numgen"));
        // The IPv6 external IP of an IPv4 service is not served.
        assert!(!script.contains("fd00::7"), "{script}");
        // Local policy without a local endpoint: refused.
        assert!(script.contains("192.0.2.8 . tcp . 80"), "{script}");
        assert!(!script.contains("192.0.2.8 . tcp . 80 : goto"), "{script}");
    }

    #[test]
    fn endpoints_on_different_ports_get_address_and_port_values() {
        let mut mixed = service(
            "10.96.0.10",
            &[("10.244.0.2", "a"), ("10.244.0.3", "a")],
            30080,
            false,
        );
        mixed.ports[0].endpoints[1].port = 9090;
        let t = table(vec![mixed]);
        let script = render(&t, &NftConfig::default()).script;
        assert!(
            script.contains("10.96.0.10 . tcp . 80 : goto cluster_tcp_80_any_2"),
            "{script}"
        );
        assert!(
            script.contains("elements = { 10.96.0.10 : 10.244.0.3 . 9090 }"),
            "{script}"
        );
        assert!(
            script.contains("dnat ip addr . port to ip daddr map @cluster_tcp_80_any_2_s1_eps\n"),
            "{script}"
        );
        assert!(
            script.contains("elements = { 30080 : 10.244.0.3 . 9090 }"),
            "{script}"
        );
    }

    #[test]
    fn only_the_largest_shapes_get_a_chain_per_slot() {
        // Shapes with 1..=30 endpoints need 465 slot chains; the budget is 256, given to the
        // shapes with the most elements (30 down to 21, then 1).
        let entries = (1..=30u8)
            .map(|n| {
                let eps: Vec<(String, &str)> =
                    (0..n).map(|e| (format!("10.244.{n}.{e}"), "a")).collect();
                let eps: Vec<(&str, &str)> =
                    eps.iter().map(|(ip, node)| (ip.as_str(), *node)).collect();
                let mut s = service(&format!("10.96.0.{n}"), &eps, 30000 + u16::from(n), false);
                s.ports[0].node_port = None;
                s
            })
            .collect();
        let script = render(&table(entries), &NftConfig::default()).script;
        assert!(
            script.contains("chain cluster_tcp_80_8080_30_s29 {"),
            "{script}"
        );
        assert!(script.contains("chain cluster_tcp_80_8080_21_s20 {"));
        assert!(script.contains("chain cluster_tcp_80_8080_1_s0 {"));
        assert!(!script.contains("chain cluster_tcp_80_8080_20_s0 {"));
        assert!(script.contains(
            "dnat ip to ip daddr . numgen random mod 20 map @cluster_tcp_80_8080_20_eps : 8080"
        ));
        assert!(script.contains("10.96.0.20 . 19 : 10.244.20.19"));
        let slot_chains = script.matches("  chain cluster_tcp_80_8080_").count() - 30;
        assert_eq!(slot_chains, 256);
    }
}
