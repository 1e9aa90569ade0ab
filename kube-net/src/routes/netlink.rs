//! The kernel side of the routes: lookups, routes marked with our protocol number, the VXLAN
//! device and its neighbour and forwarding entries, over rtnetlink.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use rtnetlink::{Handle, IpVersion, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use super::RouteError;
use super::plan::{Mac, Prefix, Reach};

/// Linux errno values netlink reports (negated).
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;
const ENODEV: i32 = 19;

/// What one netlink request was for, for errors.
fn failed(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> RouteError {
    let what = what.into();
    move |source| RouteError::Netlink {
        what,
        source: Box::new(source),
    }
}

/// Whether `e` says the thing is already gone.
fn is_gone(e: &rtnetlink::Error) -> bool {
    match e {
        rtnetlink::Error::NetlinkError(m) => m
            .code
            .is_some_and(|c| [ENOENT, ESRCH, ENODEV].contains(&-c.get())),
        _ => false,
    }
}

/// A route this host has with our protocol number, in the main table.
#[derive(Clone, Debug)]
pub(crate) struct OwnedRoute {
    pub(crate) prefix: Prefix,
    pub(crate) gateway: Option<IpAddr>,
    pub(crate) oif: Option<u32>,
    message: RouteMessage,
}

/// The VXLAN device to create.
#[derive(Clone, Debug)]
pub(crate) struct VxlanSpec<'a> {
    pub(crate) name: &'a str,
    pub(crate) vni: u32,
    pub(crate) port: u16,
    pub(crate) local: Ipv4Addr,
    pub(crate) mac: Mac,
    /// The interface holding `local`, and its MTU.
    pub(crate) underlay: Option<(u32, u32)>,
}

/// One rtnetlink connection (its socket lives in the network namespace of the thread that
/// opened it).
#[derive(Clone, Debug)]
pub(crate) struct Netlink {
    handle: Handle,
    protocol: u8,
}

impl Netlink {
    /// Opens a connection, driven by a task on the current runtime, that marks routes with
    /// `protocol`.
    pub(crate) fn connect(protocol: u8) -> Result<Netlink, RouteError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(RouteError::Socket)?;
        tokio::spawn(connection);
        Ok(Netlink { handle, protocol })
    }

    /// How this host reaches `ip`, by asking the kernel for its route.
    pub(crate) async fn reach(&self, ip: IpAddr) -> Reach {
        let message = match RouteMessageBuilder::<IpAddr>::new().destination_prefix(ip, full(ip)) {
            Ok(b) => b.build(),
            Err(_) => return Reach::Remote,
        };
        let mut replies = self.handle.route().get(message).execute();
        // Unreachable (no route) is an error reply: reached by nothing we could use.
        let Ok(Some(route)) = replies.try_next().await else {
            return Reach::Remote;
        };
        if route.header.kind == RouteType::Local {
            return Reach::Local;
        }
        let gateway = route
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Gateway(_) | RouteAttribute::Via(_)));
        let oif = route.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        });
        match (gateway, oif) {
            (false, Some(oif)) => Reach::Direct { oif },
            _ => Reach::Remote,
        }
    }

    /// The routes of the main table marked with our protocol, both families.
    pub(crate) async fn owned_routes(&self) -> Result<Vec<OwnedRoute>, RouteError> {
        let mut owned = Vec::new();
        for family in [IpVersion::V4, IpVersion::V6] {
            let query = match family {
                IpVersion::V4 => RouteMessageBuilder::<Ipv4Addr>::new().build(),
                IpVersion::V6 => RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
            };
            let v6 = family == IpVersion::V6;
            let mut routes = self.handle.route().get(query).execute();
            loop {
                let route = match routes.try_next().await {
                    Ok(Some(route)) => route,
                    Ok(None) => break,
                    // A kernel without IPv6 has no IPv6 routes of ours either.
                    Err(e) if v6 => {
                        tracing::debug!(error = %e, "cannot list IPv6 routes");
                        break;
                    }
                    Err(e) => return Err(failed("list routes")(e)),
                };
                if u8::from(route.header.protocol) != self.protocol || table(&route) != MAIN {
                    continue;
                }
                let mut destination = None;
                let mut gateway = None;
                let mut oif = None;
                for a in &route.attributes {
                    match a {
                        RouteAttribute::Destination(d) => destination = ip_of(d),
                        RouteAttribute::Gateway(g) => gateway = ip_of(g),
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        _ => {}
                    }
                }
                let Some(destination) = destination else {
                    continue;
                };
                owned.push(OwnedRoute {
                    prefix: (destination, route.header.destination_prefix_length),
                    gateway,
                    oif,
                    message: route,
                });
            }
        }
        Ok(owned)
    }

    /// Adds or replaces `prefix via gateway dev oif` (on-link when asked), marked ours.
    pub(crate) async fn replace_route(
        &self,
        prefix: Prefix,
        gateway: IpAddr,
        oif: u32,
        onlink: bool,
    ) -> Result<(), RouteError> {
        let what = format!("route {}/{} via {gateway}", prefix.0, prefix.1);
        let invalid = |_| RouteError::Invalid(what.clone());
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(prefix.0, prefix.1)
            .map_err(invalid)?
            .gateway(gateway)
            .map_err(invalid)?
            .output_interface(oif)
            .protocol(RouteProtocol::from(self.protocol));
        if onlink {
            builder = builder.onlink();
        }
        self.handle
            .route()
            .add(builder.build())
            .replace()
            .execute()
            .await
            .map_err(failed(what))
    }

    /// Deletes a route of ours; one already gone is fine.
    pub(crate) async fn delete_route(&self, route: &OwnedRoute) -> Result<(), RouteError> {
        match self
            .handle
            .route()
            .del(route.message.clone())
            .execute()
            .await
        {
            Err(e) if !is_gone(&e) => Err(failed(format!(
                "delete route {}/{}",
                route.prefix.0, route.prefix.1
            ))(e)),
            _ => Ok(()),
        }
    }

    /// The link named `name`, if any.
    pub(crate) async fn link(&self, name: &str) -> Result<Option<LinkMessage>, RouteError> {
        let mut links = self.handle.link().get().match_name(name).execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if is_gone(&e) => Ok(None),
            Err(e) => Err(failed(format!("look up link {name}"))(e)),
        }
    }

    /// Whether the link named `name` is a VXLAN device.
    pub(crate) fn is_vxlan(link: &LinkMessage) -> bool {
        link.attributes.iter().any(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().any(|i| {
                matches!(
                    i,
                    LinkInfo::Kind(InfoKind::Vxlan) | LinkInfo::Data(InfoData::Vxlan(_))
                )
            }),
            _ => false,
        })
    }

    /// Deletes the link with index `index`; one already gone is fine.
    pub(crate) async fn delete_link(&self, index: u32) -> Result<(), RouteError> {
        match self.handle.link().del(index).execute().await {
            Err(e) if !is_gone(&e) => Err(failed(format!("delete link {index}"))(e)),
            _ => Ok(()),
        }
    }

    /// The interface holding address `ip`, and its MTU.
    pub(crate) async fn interface_of(&self, ip: IpAddr) -> Result<Option<(u32, u32)>, RouteError> {
        let mut addresses = self.handle.address().get().execute();
        let mut index = None;
        while let Some(a) = addresses
            .try_next()
            .await
            .map_err(failed("list addresses"))?
        {
            let holds = a
                .attributes
                .iter()
                .any(|attr| matches!(attr, AddressAttribute::Address(x) | AddressAttribute::Local(x) if *x == ip));
            if holds {
                index = Some(a.header.index);
            }
        }
        let Some(index) = index else {
            return Ok(None);
        };
        let mut links = self.handle.link().get().match_index(index).execute();
        let link = links
            .try_next()
            .await
            .map_err(failed("look up underlay link"))?;
        let mtu = link
            .iter()
            .flat_map(|l| &l.attributes)
            .find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
            .unwrap_or(1500);
        Ok(Some((index, mtu)))
    }

    /// Creates the VXLAN device (learning off: every remote is programmed), up, with
    /// `address/32` on it when given; returns its index.
    pub(crate) async fn create_vxlan(
        &self,
        spec: &VxlanSpec<'_>,
        address: Option<Ipv4Addr>,
    ) -> Result<u32, RouteError> {
        let mut builder = LinkVxlan::new(spec.name, spec.vni)
            .port(spec.port)
            .local(spec.local)
            .learning(false)
            .address(spec.mac.to_vec());
        if let Some((index, mtu)) = spec.underlay {
            // The overlay's 50 bytes of headers come out of the underlay's MTU.
            builder = builder.dev(index).mtu(mtu.saturating_sub(50));
        }
        self.handle
            .link()
            .add(builder.build())
            .execute()
            .await
            .map_err(failed(format!("create VXLAN device {}", spec.name)))?;
        let link = self
            .link(spec.name)
            .await?
            .ok_or_else(|| RouteError::Invalid(format!("VXLAN device {} vanished", spec.name)))?;
        let index = link.header.index;
        if let Some(address) = address {
            self.handle
                .address()
                .add(index, IpAddr::V4(address), 32)
                .replace()
                .execute()
                .await
                .map_err(failed(format!("add {address}/32 to {}", spec.name)))?;
        }
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(failed(format!("set {} up", spec.name)))?;
        Ok(index)
    }

    /// The permanent neighbour entries (IPv4) on interface `index`.
    pub(crate) async fn neighbours(
        &self,
        index: u32,
    ) -> Result<Vec<(IpAddr, Mac, NeighbourMessage)>, RouteError> {
        let mut found = Vec::new();
        let mut entries = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute();
        while let Some(n) = entries
            .try_next()
            .await
            .map_err(failed("list neighbours"))?
        {
            if n.header.ifindex != index || n.header.state != NeighbourState::Permanent {
                continue;
            }
            let ip = n.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                    Some(IpAddr::V4(*v4))
                }
                _ => None,
            });
            if let (Some(ip), Some(mac)) = (ip, lladdr(&n)) {
                found.push((ip, mac, n));
            }
        }
        Ok(found)
    }

    /// Sets `ip`'s link-layer address on interface `index` for good.
    pub(crate) async fn replace_neighbour(
        &self,
        index: u32,
        ip: IpAddr,
        mac: &Mac,
    ) -> Result<(), RouteError> {
        self.handle
            .neighbours()
            .add(index, ip)
            .link_layer_address(mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(failed(format!("neighbour {ip}")))
    }

    /// The forwarding entries (MAC → remote address) of VXLAN device `index`.
    pub(crate) async fn fdb(
        &self,
        index: u32,
    ) -> Result<Vec<(Mac, IpAddr, NeighbourMessage)>, RouteError> {
        let mut found = Vec::new();
        let mut entries = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute();
        while let Some(n) = entries.try_next().await.map_err(failed("list fdb"))? {
            if n.header.ifindex != index {
                continue;
            }
            let dst = n.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                    Some(IpAddr::V4(*v4))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                    Some(IpAddr::V6(*v6))
                }
                _ => None,
            });
            if let (Some(mac), Some(dst)) = (lladdr(&n), dst) {
                found.push((mac, dst, n));
            }
        }
        Ok(found)
    }

    /// Sends frames for `mac` on VXLAN device `index` to `remote` (`bridge fdb replace`).
    pub(crate) async fn replace_fdb(
        &self,
        index: u32,
        mac: &Mac,
        remote: Ipv4Addr,
    ) -> Result<(), RouteError> {
        self.handle
            .neighbours()
            .add_bridge(index, mac)
            .destination(IpAddr::V4(remote))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(failed(format!("fdb entry for {remote}")))
    }

    /// Deletes a neighbour or forwarding entry; one already gone is fine.
    pub(crate) async fn delete_neighbour(&self, entry: NeighbourMessage) -> Result<(), RouteError> {
        match self.handle.neighbours().del(entry).execute().await {
            Err(e) if !is_gone(&e) => Err(failed("delete neighbour")(e)),
            _ => Ok(()),
        }
    }
}

const MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// The route's table (the attribute holds ids above 255).
fn table(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

fn ip_of(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn full(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn lladdr(n: &NeighbourMessage) -> Option<Mac> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(bytes) => Mac::try_from(bytes.as_slice()).ok(),
        _ => None,
    })
}

/// Whether a route of ours already is `via`: same gateway and interface (on-link is implied
/// by how we add them).
pub(crate) fn same(route: &OwnedRoute, gateway: IpAddr, oif: u32) -> bool {
    route.gateway == Some(gateway) && route.oif == Some(oif)
}
