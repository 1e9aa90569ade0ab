//! [`DnsServer`]: the cluster's DNS, as the Kubernetes DNS specification
//! (kubernetes/dns, docs/specification.md) defines it, answering from the shared informers and
//! forwarding other names upstream.
//!
//! - `records`: the records one Service (with its EndpointSlices) stands for;
//! - `zone`: those records indexed by name, with the zone's SOA and pod names;
//! - `feed`: informer events into the zone;
//! - `answer`: one query decoded, looked up and encoded (hickory-proto), with truncation;
//! - `upstream`: forwarding to the resolv.conf nameservers;
//! - `serve`: what the listeners share, and the TCP listener;
//! - `udp`: the UDP listener, on threads of its own.

mod answer;
mod feed;
mod records;
mod serve;
mod udp;
mod upstream;
mod zone;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_core::object::GroupKind;
use kube_core::orchestrator::{BoxError, Component, ComponentContext};
use kube_core::proxy::Protocol;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// Which `<a-b-c-d>.<namespace>.pod.<domain>` names resolve (CoreDNS's `pods` option).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PodRecords {
    /// Only the addresses of pods that exist in that namespace (follows the Pod informer).
    #[default]
    Verified,
    /// Any well-formed address in any namespace, as the specification's deprecated record
    /// says (section 2.6); needs no Pod informer.
    Insecure,
    /// No pod names.
    Disabled,
}

/// How a [`DnsServer`] runs.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Address to answer on, UDP and TCP. Default `127.0.0.1:53`; port 0 picks a free port
    /// (see [`DnsServer::bind`] to learn it).
    pub listen: SocketAddr,
    /// The cluster domain. Default `cluster.local`.
    pub domain: String,
    /// TTL of answers (and the SOA's negative-caching time), in seconds. Default 5.
    pub ttl: u32,
    /// Servers that answer names outside the cluster domain and the cluster's reverse names,
    /// tried in order. Default: the `nameserver`s of the host's `/etc/resolv.conf`. Empty:
    /// such queries are REFUSED.
    pub upstream: Vec<SocketAddr>,
    /// How long each upstream server gets to answer before the next is tried (SERVFAIL when
    /// none answers). Default 2 s.
    pub upstream_timeout: Duration,
    /// Which pod names resolve. Default [`PodRecords::Verified`].
    pub pods: PodRecords,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 53)),
            domain: "cluster.local".into(),
            ttl: 5,
            upstream: upstream::host_nameservers(),
            upstream_timeout: Duration::from_secs(2),
            pods: PodRecords::default(),
        }
    }
}

/// The cluster's DNS server, as a [`Component`]. On one address, over UDP (answers cut to 512
/// bytes or the client's EDNS size, with TC set) and TCP (several queries per connection), it
/// answers as the Kubernetes DNS specification says:
///
/// - `<svc>.<ns>.svc.<domain>`: A/AAAA with the ClusterIPs; for a headless Service, the ready
///   endpoint addresses of its EndpointSlices; for an ExternalName, a CNAME (and its target's
///   records, asked upstream);
/// - `<hostname>.<svc>.<ns>.svc.<domain>` for each ready endpoint of a headless Service (its
///   `hostname`, else its dashed address): how StatefulSet pods resolve;
/// - `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV for named ports, targets' addresses in
///   the additional section;
/// - PTR for ClusterIPs and headless endpoint addresses (in-addr.arpa, ip6.arpa);
/// - `<a-b-c-d>.<ns>.pod.<domain>` per [`DnsConfig::pods`], and `dns-version.<domain>` TXT;
/// - NXDOMAIN for names of the domain that do not exist, NODATA (with the SOA) for names that
///   do; other names go to [`DnsConfig::upstream`] (SERVFAIL if it fails, REFUSED if none).
///
/// Names are matched without regard to case; cluster answers are authoritative. Answers come
/// from an index the shared Service, EndpointSlice and Pod informers keep current, so they
/// follow the store with no sync of their own, and a query is a hash lookup. It starts
/// answering once those informers have synced.
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
    sockets: Option<(UdpSocket, TcpListener)>,
}

impl DnsServer {
    /// A server with `config`; it binds when the orchestrator starts it.
    pub fn new(config: DnsConfig) -> Self {
        Self {
            config,
            sockets: None,
        }
    }

    /// A server bound now (UDP and TCP on the same port), so [`DnsServer::local_addr`] tells
    /// the port when `config.listen` asks for port 0 (tests, benchmarks). Fails as
    /// [`Error::Bind`] when the address is taken or not local.
    pub async fn bind(config: DnsConfig) -> Result<Self> {
        let sockets = bind(config.listen).await?;
        Ok(Self {
            config,
            sockets: Some(sockets),
        })
    }

    /// The address the server answers on: `Some` once bound by [`DnsServer::bind`].
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.sockets
            .as_ref()
            .and_then(|(udp, _)| udp.local_addr().ok())
    }
}

/// UDP on `listen`, then TCP on the port UDP got (retrying a few ports when it was 0 and the
/// TCP port turned out taken).
async fn bind(listen: SocketAddr) -> Result<(UdpSocket, TcpListener)> {
    let mut attempts = if listen.port() == 0 { 8 } else { 1 };
    loop {
        attempts -= 1;
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|source| Error::Bind {
                protocol: Protocol::Udp,
                addr: listen,
                source,
            })?;
        let addr = udp.local_addr().map_err(|source| Error::Bind {
            protocol: Protocol::Udp,
            addr: listen,
            source,
        })?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => {
                big_receive_buffer(&udp);
                return Ok((udp, tcp));
            }
            Err(_) if attempts > 0 => continue,
            Err(source) => {
                return Err(Error::Bind {
                    protocol: Protocol::Tcp,
                    addr,
                    source,
                });
            }
        }
    }
}

/// Room for bursts of queries (the default, ~200 KiB, holds a few hundred): a pause of a few
/// milliseconds under load must not drop them. Best effort: the kernel may cap it.
fn big_receive_buffer(socket: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    const SIZE: usize = 4 << 20;
    // Forcing past `net.core.rmem_max` needs CAP_NET_ADMIN; without it take what is allowed.
    if setsockopt(socket, sockopt::RcvBufForce, &SIZE).is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &SIZE);
    }
}

/// UDP threads sharing the socket. One keeps up with a core's worth of queries (batched system
/// calls, no hand-overs); a second takes the next queries while the first is descheduled, as
/// it is now and then on a node whose cores every other process competes for (in the bench,
/// two had the lower tail latency).
fn udp_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
}

#[async_trait::async_trait]
impl Component for DnsServer {
    fn name(&self) -> String {
        "dns".into()
    }

    async fn run(self: Box<Self>, ctx: ComponentContext) -> Result<(), BoxError> {
        let Self { config, sockets } = *self;
        let (udp, tcp) = match sockets {
            Some(sockets) => sockets,
            None => bind(config.listen).await?,
        };
        let own = udp.local_addr()?;
        let zone = zone::Zone::new(&config.domain, config.ttl, config.pods)
            .ok_or_else(|| format!("invalid cluster domain {:?}", config.domain))?;
        let zone = Arc::new(RwLock::new(zone));
        let sources = feed::Sources {
            services: ctx.informers.informer(&GroupKind::SERVICE),
            slices: ctx.informers.informer(&GroupKind::of::<EndpointSlice>()),
            pods: (config.pods == PodRecords::Verified)
                .then(|| ctx.informers.informer(&GroupKind::POD)),
        };
        let (ready_tx, ready) = oneshot::channel();
        let feeding = tokio::spawn(feed::run(
            sources,
            zone.clone(),
            ready_tx,
            ctx.shutdown.clone(),
        ));
        tokio::select! {
            () = ctx.shutdown.cancelled() => return Ok(()),
            synced = ready => if synced.is_err() { return Ok(()) },
        }
        let shared = Arc::new(serve::Shared {
            zone,
            // Forwarding to ourselves would loop.
            upstream: config.upstream.into_iter().filter(|u| *u != own).collect(),
            upstream_timeout: config.upstream_timeout,
        });
        // The threads stop with the server, also when this future is dropped unfinished.
        let stop = ctx.shutdown.child_token();
        let _stop = stop.clone().drop_guard();
        let udp = udp::spawn(shared.clone(), udp.into_std()?, udp_threads(), stop)?;
        let tcp = tokio::spawn(serve::tcp(shared, tcp, ctx.shutdown.clone()));
        for thread in udp {
            let _ = thread.await;
        }
        let _ = tcp.await;
        let _ = feeding.await;
        Ok(())
    }
}
