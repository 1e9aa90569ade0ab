//! [`NodeRoutes`]: routes from this host to the other nodes' pod CIDRs, as flannel's daemon
//! programs them with its host-gw and vxlan backends, natively over rtnetlink.
//!
//! For every other Node with a pod CIDR and an InternalIP:
//! - **host-gw**, when the node's address is on a directly connected subnet: a route
//!   `podCIDR via <node IP>`;
//! - **VXLAN**, when it is not: one VXLAN device for the host (VNI, UDP port 8472, local =
//!   this node's IPv4 InternalIP, learning off, the pod CIDR's network address as `/32`) and
//!   per remote node a forwarding entry (its VTEP MAC → its node IP), a neighbour entry (its
//!   gateway, the network address of its pod CIDR → its VTEP MAC) and a route
//!   `podCIDR via <gateway> dev <vxlan> onlink`. Each node publishes its VTEP MAC in the
//!   [`BACKEND_DATA_ANNOTATION`] of its Node, which is how the others learn it.
//!
//! Nodes whose InternalIP is an address of this host (several nodes on one host) are left
//! alone: their pods are on local routes already. Routes carry a protocol number of their own
//! ([`RoutesConfig::protocol`]), so the component finds and removes exactly its own: ones no
//! longer wanted on every sync (also those a crashed earlier run left), all of them and the
//! VXLAN device on shutdown. Run one per host (network namespace); forwarding
//! (`net.ipv4.ip_forward`) must be on for traffic to pass through the host.

mod netlink;
mod plan;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube_core::informer::Informer;
use kube_core::object::GroupKind;
use kube_core::orchestrator::{BoxError, Component, ComponentContext};
use kube_core::store::{Store, StoreError};
use kube_core::typed::Api;

use netlink::{Netlink, VxlanSpec};
use plan::{NodeView, Via};

/// The Node annotation holding a node's VXLAN backend data, as flannel's
/// `flannel.alpha.coreos.com/backend-data`: `{"VNI":1,"VtepMAC":"02:…"}`.
pub const BACKEND_DATA_ANNOTATION: &str = "kube-parts.io/backend-data";

/// The routing protocol number marking our routes (`ip route show proto 75`); unused by the
/// kernel and the well-known routing daemons.
pub const DEFAULT_ROUTE_PROTOCOL: u8 = 75;

/// How pod traffic reaches another node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// Routes via the node's address; nodes not on a shared link are not reached.
    HostGw,
    /// The VXLAN overlay for every node (IPv6 pod CIDRs still go host-gw).
    Vxlan,
    /// host-gw where the node is on a directly connected subnet, VXLAN elsewhere (flannel's
    /// vxlan with `DirectRouting`).
    #[default]
    Auto,
}

impl std::str::FromStr for Backend {
    type Err = RouteError;

    /// `host-gw`, `vxlan` or `auto`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "host-gw" => Ok(Backend::HostGw),
            "vxlan" => Ok(Backend::Vxlan),
            "auto" => Ok(Backend::Auto),
            other => Err(RouteError::Invalid(format!(
                "unknown backend {other:?} (want host-gw, vxlan or auto)"
            ))),
        }
    }
}

/// The VXLAN device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanConfig {
    /// The device name (at most 15 bytes). Default `kube-vxlan.1`.
    pub device: String,
    /// The VXLAN network identifier. Default 1.
    pub vni: u32,
    /// The UDP port. Default 8472 (Linux's and flannel's).
    pub port: u16,
}

impl Default for VxlanConfig {
    fn default() -> Self {
        Self {
            device: "kube-vxlan.1".into(),
            vni: 1,
            port: 8472,
        }
    }
}

/// How [`NodeRoutes`] runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutesConfig {
    /// The Node this host runs (its routes are not programmed; its IP is the VXLAN local).
    pub node_name: String,
    /// host-gw, VXLAN, or either as fits (default).
    pub backend: Backend,
    /// The VXLAN device.
    pub vxlan: VxlanConfig,
    /// The protocol number marking our routes. Default [`DEFAULT_ROUTE_PROTOCOL`].
    pub protocol: u8,
    /// How often the kernel state is brought back to the plan without a Node change (routes
    /// someone removed come back). Default 30 s.
    pub resync_interval: Duration,
    /// How soon a failed sync is tried again. Default 1 s.
    pub retry_interval: Duration,
}

impl RoutesConfig {
    /// The defaults, for the host of `node_name`.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            backend: Backend::default(),
            vxlan: VxlanConfig::default(),
            protocol: DEFAULT_ROUTE_PROTOCOL,
            resync_interval: Duration::from_secs(30),
            retry_interval: Duration::from_secs(1),
        }
    }
}

/// What can go wrong programming routes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket")]
    Socket(#[source] std::io::Error),
    /// A netlink request failed.
    #[error("netlink: {what} failed")]
    Netlink {
        /// What was asked.
        what: String,
        /// The kernel's answer.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The VTEP annotation could not be written.
    #[error("cannot publish the VTEP MAC on the Node")]
    Store(#[source] StoreError),
    /// A value that cannot be used.
    #[error("{0}")]
    Invalid(String),
}

/// Programs routes to the other nodes' pod CIDRs, as a [`Component`]; see the module docs.
///
/// ```no_run
/// # fn demo(builder: kube_core::orchestrator::OrchestratorBuilder) {
/// use kube_net::{Backend, NodeRoutes, RoutesConfig};
/// let builder = builder.component(NodeRoutes::new(RoutesConfig {
///     backend: Backend::Auto,
///     ..RoutesConfig::new("node-1")
/// }));
/// # }
/// ```
#[derive(Debug)]
pub struct NodeRoutes {
    config: RoutesConfig,
}

impl NodeRoutes {
    /// A component with `config`; it opens its netlink socket when the orchestrator starts it,
    /// in the network namespace of the thread that runs it.
    pub fn new(config: RoutesConfig) -> Self {
        Self { config }
    }
}

#[async_trait::async_trait]
impl Component for NodeRoutes {
    fn name(&self) -> String {
        "node-routes".into()
    }

    async fn run(self: Box<Self>, ctx: ComponentContext) -> Result<(), BoxError> {
        let netlink = Netlink::connect(self.config.protocol)?;
        let nodes = ctx.informers.informer(&GroupKind::NODE);
        tokio::select! {
            () = ctx.shutdown.cancelled() => return Ok(()),
            () = nodes.wait_until_synced() => {}
        }
        let mut events = nodes.subscribe();
        let mut agent = Agent {
            config: self.config,
            netlink,
            store: ctx.store.clone(),
            device: None,
            skipped: BTreeSet::new(),
        };
        agent.remove_leftover_device().await;
        loop {
            // A subscription replays the cache, and every sync reads all of it: what is
            // waiting now is covered by the sync below.
            while events.try_recv().is_ok() {}
            let next = match agent.sync(&nodes).await {
                Ok(()) => agent.config.resync_interval,
                Err(e) => {
                    tracing::warn!(error = %e, "route sync failed; retrying");
                    agent.config.retry_interval
                }
            };
            tokio::select! {
                () = ctx.shutdown.cancelled() => break,
                event = events.recv() => if event.is_none() { break },
                () = tokio::time::sleep(next) => {}
            }
        }
        agent.clean_up().await;
        tracing::info!("node routes removed");
        Ok(())
    }
}

/// The VXLAN device this run made.
#[derive(Debug)]
struct Device {
    index: u32,
    local: Ipv4Addr,
    address: Option<Ipv4Addr>,
}

struct Agent {
    config: RoutesConfig,
    netlink: Netlink,
    store: std::sync::Arc<dyn Store>,
    device: Option<Device>,
    /// What was last logged as unroutable, to log changes only.
    skipped: BTreeSet<(String, &'static str)>,
}

impl Agent {
    /// Brings routes, the VXLAN device and its entries in line with the Nodes.
    async fn sync(&mut self, nodes: &Informer) -> Result<(), RouteError> {
        let views: Vec<NodeView> = nodes
            .list_typed::<Node>()
            .iter()
            .map(NodeView::of)
            .collect();
        let own = &self.config.node_name;
        let mut reach = HashMap::new();
        for ip in plan::addresses_to_look_up(own, &views) {
            reach.insert(ip, self.netlink.reach(ip).await);
        }
        let plan = plan::plan(own, self.config.backend, &views, &reach);
        let skipped: BTreeSet<_> = plan.skipped.iter().cloned().collect();
        for (node, why) in skipped.difference(&self.skipped) {
            tracing::warn!(node = %node, reason = why, "no route to node's pod CIDR");
        }
        self.skipped = skipped;

        let own_view = views.iter().find(|v| &v.name == own);
        let device = if plan.needs_vxlan || self.config.backend == Backend::Vxlan {
            match own_view {
                Some(view) => self.ensure_vxlan(view).await?,
                None => None,
            }
        } else {
            self.device.as_ref().map(|d| d.index)
        };
        let mut errors = Vec::new();
        if let Some(index) = device {
            if let Err(e) = self.sync_entries(index, &plan).await {
                errors.push(e);
            }
        }
        let wanted: HashMap<_, _> = plan
            .routes
            .iter()
            .filter_map(|(prefix, via)| {
                let target = match *via {
                    Via::Host { gateway, oif } => (gateway, oif, false),
                    Via::Vxlan { gateway } => (gateway, device?, true),
                };
                Some((*prefix, target))
            })
            .collect();
        let owned = self.netlink.owned_routes().await?;
        for route in &owned {
            let keep = wanted
                .get(&route.prefix)
                .is_some_and(|(gw, oif, _)| netlink::same(route, *gw, *oif));
            if !keep {
                if let Err(e) = self.netlink.delete_route(route).await {
                    errors.push(e);
                }
            }
        }
        for (prefix, (gateway, oif, onlink)) in &wanted {
            let present = owned
                .iter()
                .any(|r| r.prefix == *prefix && netlink::same(r, *gateway, *oif));
            if !present {
                tracing::debug!(cidr = %format!("{}/{}", prefix.0, prefix.1), %gateway, oif, "route to pod CIDR");
                if let Err(e) = self
                    .netlink
                    .replace_route(*prefix, *gateway, *oif, *onlink)
                    .await
                {
                    errors.push(e);
                }
            }
        }
        match errors.len() {
            0 => Ok(()),
            n => {
                for e in &errors[1..] {
                    tracing::warn!(error = %e, "route sync step failed");
                }
                let first = errors.swap_remove(0);
                tracing::debug!(failures = n, "route sync incomplete");
                Err(first)
            }
        }
    }

    /// Forwarding and neighbour entries of the VXLAN device, as planned.
    async fn sync_entries(&self, index: u32, plan: &plan::Plan) -> Result<(), RouteError> {
        let fdb = self.netlink.fdb(index).await?;
        for (mac, remote) in &plan.fdb {
            if !fdb
                .iter()
                .any(|(m, d, _)| m == mac && *d == IpAddr::V4(*remote))
            {
                self.netlink.replace_fdb(index, mac, *remote).await?;
            }
        }
        for (mac, dst, entry) in fdb {
            let wanted = plan.fdb.get(&mac).is_some_and(|r| IpAddr::V4(*r) == dst);
            if !wanted {
                self.netlink.delete_neighbour(entry).await?;
            }
        }
        let neighbours = self.netlink.neighbours(index).await?;
        for (ip, mac) in &plan.neighbours {
            if !neighbours.iter().any(|(i, m, _)| i == ip && m == mac) {
                self.netlink.replace_neighbour(index, *ip, mac).await?;
            }
        }
        for (ip, mac, entry) in neighbours {
            if plan.neighbours.get(&ip) != Some(&mac) {
                self.netlink.delete_neighbour(entry).await?;
            }
        }
        Ok(())
    }

    /// The VXLAN device's index, made (again) if missing or if this node's address or pod
    /// CIDR changed; publishes the VTEP MAC on the Node. `None` without an IPv4 InternalIP.
    async fn ensure_vxlan(&mut self, own: &NodeView) -> Result<Option<u32>, RouteError> {
        let Some(local) = own.ipv4() else {
            return Ok(None);
        };
        let address = own.pod_cidr_v4().map(|(network, _)| network);
        let current = self
            .device
            .as_ref()
            .filter(|d| d.local == local && d.address == address)
            .map(|d| d.index);
        let index = match current {
            // Still there (someone may have deleted it)?
            Some(index)
                if self
                    .netlink
                    .link(&self.config.vxlan.device)
                    .await?
                    .is_some() =>
            {
                index
            }
            _ => {
                if let Some(old) = self.device.take() {
                    self.netlink.delete_link(old.index).await?;
                }
                self.remove_leftover_device().await;
                let underlay = self.netlink.interface_of(IpAddr::V4(local)).await?;
                if underlay.is_none() {
                    tracing::warn!(%local, "the node's InternalIP is not an address of this host");
                }
                let spec = VxlanSpec {
                    name: &self.config.vxlan.device,
                    vni: self.config.vxlan.vni,
                    port: self.config.vxlan.port,
                    local,
                    mac: plan::vtep_mac(&own.name),
                    underlay,
                };
                let index = self.netlink.create_vxlan(&spec, address).await?;
                tracing::info!(device = %self.config.vxlan.device, %local, "VXLAN device created");
                self.device = Some(Device {
                    index,
                    local,
                    address,
                });
                index
            }
        };
        let mac = plan::vtep_mac(&own.name);
        if own.vtep_mac != Some(mac) {
            let data = serde_json::json!({"VNI": self.config.vxlan.vni, "VtepMAC": plan::format_mac(&mac)});
            let patch = serde_json::json!({"metadata": {"annotations": {
                BACKEND_DATA_ANNOTATION: data.to_string()}}});
            Api::<Node>::all(self.store.clone())
                .patch_merge(&own.name, &patch)
                .await
                .map_err(RouteError::Store)?;
        }
        Ok(Some(index))
    }

    /// Deletes a VXLAN device of our name that this run did not make (a crashed run's).
    async fn remove_leftover_device(&self) {
        let name = &self.config.vxlan.device;
        match self.netlink.link(name).await {
            Ok(Some(link)) if Netlink::is_vxlan(&link) => {
                tracing::info!(device = %name, "removing a VXLAN device left by an earlier run");
                if let Err(e) = self.netlink.delete_link(link.header.index).await {
                    tracing::warn!(error = %e, "cannot remove leftover VXLAN device");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot look for a leftover VXLAN device"),
        }
    }

    /// Removes every route of ours and the VXLAN device.
    async fn clean_up(&mut self) {
        match self.netlink.owned_routes().await {
            Ok(routes) => {
                for route in &routes {
                    if let Err(e) = self.netlink.delete_route(route).await {
                        tracing::warn!(error = %e, "cannot remove route");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list routes to remove"),
        }
        if let Some(device) = self.device.take() {
            if let Err(e) = self.netlink.delete_link(device.index).await {
                tracing::warn!(error = %e, "cannot remove VXLAN device");
            }
        }
        self.remove_leftover_device().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse() {
        assert_eq!("host-gw".parse::<Backend>().unwrap(), Backend::HostGw);
        assert_eq!("vxlan".parse::<Backend>().unwrap(), Backend::Vxlan);
        assert_eq!("auto".parse::<Backend>().unwrap(), Backend::Auto);
        assert!("udp".parse::<Backend>().is_err());
        let config = RoutesConfig::new("n");
        assert_eq!(config.protocol, DEFAULT_ROUTE_PROTOCOL);
        assert!(config.vxlan.device.len() <= 15);
    }
}
