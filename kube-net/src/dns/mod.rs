//! [`DnsServer`]: answers `<service>.<namespace>.svc.<domain>` from the cluster's Services.

mod wire;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube_core::informer::Informer;
use kube_core::object::{GroupKind, ObjectKey};
use kube_core::orchestrator::{BoxError, Component, ComponentContext};
use tokio::net::UdpSocket;

use wire::{CLASS_IN, Rcode, TYPE_A};

/// How a [`DnsServer`] runs.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// UDP address to answer on. Default `127.0.0.1:53`.
    pub listen: SocketAddr,
    /// The cluster domain. Default `cluster.local`.
    pub domain: String,
    /// TTL of answers, in seconds. Default 5.
    pub ttl: u32,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 53)),
            domain: "cluster.local".into(),
            ttl: 5,
        }
    }
}

/// A small authoritative DNS server for Services, as a [`Component`]: an A query for
/// `<service>.<namespace>.svc.<domain>` is answered with the ClusterIP, or for a headless
/// service with its ready endpoint addresses; other names under the domain get NXDOMAIN, names
/// outside it NOTIMP (it does not recurse). Answers come from the shared informers,
/// so they follow the store without any sync of their own. IPv4 (A) only: AAAA queries for
/// existing services get an empty answer.
///
/// ```no_run
/// # fn demo(builder: kube_core::orchestrator::OrchestratorBuilder) {
/// use kube_net::{DnsConfig, DnsServer};
/// let builder = builder.component(DnsServer::new(DnsConfig {
///     listen: "127.0.0.53:53".parse().unwrap(),
///     ..DnsConfig::default()
/// }));
/// # }
/// ```
#[derive(Debug)]
pub struct DnsServer {
    config: DnsConfig,
}

impl DnsServer {
    /// A server with `config`; it binds when the orchestrator starts it.
    pub fn new(config: DnsConfig) -> Self {
        Self { config }
    }
}

struct Lookup {
    services: Informer,
    endpoints: Informer,
    /// `.svc.<domain>`, lower case.
    suffix: String,
    /// `<domain>`, lower case.
    domain: String,
}

impl Lookup {
    /// The rcode and addresses for a name.
    fn resolve(&self, name: &str, qtype: u16, qclass: u16) -> (Rcode, Vec<Ipv4Addr>) {
        if name != self.domain && !name.ends_with(&format!(".{}", self.domain)) {
            return (Rcode::NotImp, Vec::new());
        }
        let Some(rest) = name.strip_suffix(&self.suffix) else {
            return (Rcode::NxDomain, Vec::new());
        };
        let mut parts = rest.split('.');
        let (Some(service), Some(namespace), None) = (parts.next(), parts.next(), parts.next())
        else {
            return (Rcode::NxDomain, Vec::new());
        };
        let key = ObjectKey::namespaced(namespace, service);
        let Some(svc) = self.services.get(&key) else {
            return (Rcode::NxDomain, Vec::new());
        };
        if qclass != CLASS_IN || qtype != TYPE_A {
            // The name exists; there is no record of that type.
            return (Rcode::NoError, Vec::new());
        }
        let Ok(svc) = svc.to_typed::<Service>() else {
            return (Rcode::NxDomain, Vec::new());
        };
        let cluster_ip = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
        let addresses = match cluster_ip {
            Some("None") | None => self.ready_addresses(&key),
            Some(ip) => match ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(v4)) => vec![v4],
                _ => Vec::new(),
            },
        };
        (Rcode::NoError, addresses)
    }

    /// A headless service's ready endpoint addresses.
    fn ready_addresses(&self, key: &ObjectKey) -> Vec<Ipv4Addr> {
        let Some(endpoints) = self.endpoints.get(key) else {
            return Vec::new();
        };
        let Ok(endpoints) = endpoints.to_typed::<Endpoints>() else {
            return Vec::new();
        };
        let mut out: Vec<Ipv4Addr> = endpoints
            .subsets
            .iter()
            .flatten()
            .flat_map(|s| s.addresses.iter().flatten())
            .filter_map(|a| a.ip.parse().ok())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    fn answer(&self, packet: &[u8], ttl: u32) -> Option<Vec<u8>> {
        let Some(query) = wire::parse(packet) else {
            return wire::format_error(packet);
        };
        let (rcode, addresses) = self.resolve(&query.name, query.qtype, query.qclass);
        Some(wire::respond(&query, rcode, &addresses, ttl))
    }
}

#[async_trait::async_trait]
impl Component for DnsServer {
    fn name(&self) -> String {
        "dns".into()
    }

    async fn run(self: Box<Self>, ctx: ComponentContext) -> Result<(), BoxError> {
        let socket = UdpSocket::bind(self.config.listen).await?;
        let domain = self
            .config
            .domain
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let lookup = Lookup {
            services: ctx.informers.informer(&GroupKind::SERVICE),
            endpoints: ctx.informers.informer(&GroupKind::ENDPOINTS),
            suffix: format!(".svc.{domain}"),
            domain,
        };
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, from) = tokio::select! {
                () = ctx.shutdown.cancelled() => break,
                received = socket.recv_from(&mut buf) => match received {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(error = %e, "dns receive failed");
                        continue;
                    }
                },
            };
            if let Some(reply) = lookup.answer(&buf[..n], self.config.ttl) {
                if let Err(e) = socket.send_to(&reply, from).await {
                    tracing::debug!(%from, error = %e, "dns reply failed");
                }
            }
        }
        Ok(())
    }
}
