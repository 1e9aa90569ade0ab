//! [`UserspaceProxy`]: a [`Proxy`] that carries service traffic itself, in tokio.

mod addr;
mod frontend;
mod splice;
mod tcp;
mod udp;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use kube_core::proxy::{Protocol, Proxy, ProxyError, ServiceTable, TableChange};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{Error, Result};
use crate::select::usable;
use addr::DummyAddresses;
use frontend::Frontend;
use tcp::TcpSettings;

/// Where a [`UserspaceProxy`] listens for a service's ClusterIP traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterIpBinding {
    /// Bind the ClusterIP itself; it must already be local (e.g. ClusterIPs from 127.0.0.0/8,
    /// or addresses some other agent manages).
    Local,
    /// Add each ClusterIP (/32 or /128) to this interface and bind it; the addresses are removed
    /// when no longer needed and on shutdown. A missing interface is created as a `dummy` one
    /// (and deleted on shutdown); where the kernel lacks the dummy driver, `lo` works too.
    /// Needs CAP_NET_ADMIN.
    Interface(String),
    /// Unprivileged: listen on the service's port at these local addresses instead.
    Addresses(Vec<IpAddr>),
    /// Do not serve ClusterIPs (NodePorts only).
    Off,
}

/// How a [`UserspaceProxy`] runs.
#[derive(Clone, Debug)]
pub struct UserspaceConfig {
    /// This node's name: endpoints on it are the local ones for `Local` traffic policies.
    pub node_name: Option<String>,
    /// Addresses NodePorts listen on. Default: `0.0.0.0`.
    pub node_addresses: Vec<IpAddr>,
    /// Where ClusterIP traffic is received. Default: [`ClusterIpBinding::Local`].
    pub cluster_ips: ClusterIpBinding,
    /// How long to wait for an endpoint to accept before trying the next. Default 1 s.
    pub connect_timeout: Duration,
    /// How long connections to an endpoint that went away may go on before they are cut.
    /// Default 30 s.
    pub drain_timeout: Duration,
    /// A UDP flow with no datagram either way for this long is closed. Default 30 s.
    pub udp_idle_timeout: Duration,
    /// Switch bulk TCP transfers to `splice(2)` (zero copy). Default true.
    pub zero_copy: bool,
    /// Buffer per direction for plain copying (short exchanges, and everything when not
    /// splicing). Default 16 KiB.
    pub buffer_size: usize,
    /// Listening sockets (and accept loops) per TCP frontend. With more than one they share
    /// the address through `SO_REUSEPORT` and the kernel spreads new connections over them,
    /// so that on a multi-threaded runtime accepting is not one task's job. Default 1.
    pub accept_loops: usize,
}

impl Default for UserspaceConfig {
    fn default() -> Self {
        Self {
            node_name: None,
            node_addresses: vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
            cluster_ips: ClusterIpBinding::Local,
            connect_timeout: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(30),
            udp_idle_timeout: Duration::from_secs(30),
            zero_copy: true,
            buffer_size: 16 * 1024,
            accept_loops: 1,
        }
    }
}

/// A listening address: protocol and socket address.
pub type ListenerKey = (Protocol, SocketAddr);

/// What one listener should forward to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FrontendSpec {
    endpoints: Vec<SocketAddr>,
    affinity: Option<Duration>,
    /// An external IP's listener: its address goes on the interface only when no other
    /// interface of the host has it (a load balancer's ingress IP is often the node's own).
    external: bool,
}

#[derive(Debug)]
struct Listener {
    frontend: Arc<Frontend>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct State {
    table: ServiceTable,
    listeners: BTreeMap<ListenerKey, Listener>,
    dummy: Option<DummyAddresses>,
}

/// A userspace L4 proxy: it listens on every ClusterIP:port, external IP:port and NodePort
/// itself and relays each TCP connection or UDP flow to an endpoint.
///
/// - New connections are balanced round robin, or stick to one endpoint per client IP with
///   `sessionAffinity: ClientIP` (for the configured timeout since last use).
/// - A refused or timed-out connect is retried on the next endpoint.
/// - TCP is relayed with `splice(2)` (zero copy) where possible.
/// - UDP keeps one flow per client address, closed after an idle timeout.
/// - Connections to an endpoint that goes away are drained: they go on for
///   [`UserspaceConfig::drain_timeout`], while new ones go elsewhere.
/// - [`Proxy::shutdown`] closes every listener and connection and removes the addresses it added;
///   the proxy serves nothing afterwards (make a new one to start again).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use kube_net::{ClusterIpBinding, ProxyLoop, UserspaceConfig, UserspaceProxy};
///
/// let proxy = Arc::new(UserspaceProxy::new(UserspaceConfig {
///     node_name: Some("node-1".into()),
///     cluster_ips: ClusterIpBinding::Interface("kube-svc0".into()),
///     ..UserspaceConfig::default()
/// }));
/// let component = ProxyLoop::new(proxy); // give it to Orchestrator::builder().proxy(..)
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct UserspaceProxy {
    config: UserspaceConfig,
    state: Mutex<State>,
    /// Cancelled on shutdown: cuts every connection.
    root: CancellationToken,
    /// Connections, UDP flows and drain timers.
    tasks: TaskTracker,
    /// Pipes for splicing, reused across connections.
    pipes: Arc<splice::PipePool>,
}

impl UserspaceProxy {
    /// A proxy with nothing to serve yet.
    pub fn new(config: UserspaceConfig) -> Self {
        let dummy = match &config.cluster_ips {
            ClusterIpBinding::Interface(name) => Some(DummyAddresses::new(name.clone())),
            _ => None,
        };
        Self {
            config,
            state: Mutex::new(State {
                table: ServiceTable::default(),
                listeners: BTreeMap::new(),
                dummy,
            }),
            root: CancellationToken::new(),
            tasks: TaskTracker::new(),
            pipes: Arc::default(),
        }
    }

    /// The addresses it listens on now.
    pub async fn listening(&self) -> Vec<ListenerKey> {
        self.state.lock().await.listeners.keys().copied().collect()
    }

    /// The endpoints new traffic to `listener` goes to now (empty if it is not listening).
    pub async fn endpoints(&self, listener: ListenerKey) -> Vec<SocketAddr> {
        let state = self.state.lock().await;
        state
            .listeners
            .get(&listener)
            .map(|l| l.frontend.endpoints())
            .unwrap_or_default()
    }

    /// Open connections, UDP flows and pending drain timers.
    pub fn active_tasks(&self) -> usize {
        self.tasks.len()
    }

    /// Every listener the table asks for, with its endpoints.
    fn frontends(&self, table: &ServiceTable) -> BTreeMap<ListenerKey, FrontendSpec> {
        let node = self.config.node_name.as_deref();
        let mut out = BTreeMap::new();
        for (key, entry) in &table.services {
            for port in &entry.ports {
                if port.protocol == Protocol::Sctp {
                    continue;
                }
                let spec = |local: bool| FrontendSpec {
                    endpoints: usable(&port.endpoints, local, node)
                        .into_iter()
                        .map(|e| SocketAddr::new(e.ip, e.port))
                        .collect(),
                    affinity: entry.session_affinity,
                    external: false,
                };
                let cluster_addrs: Vec<IpAddr> = match &self.config.cluster_ips {
                    ClusterIpBinding::Local | ClusterIpBinding::Interface(_) => {
                        entry.cluster_ip.into_iter().collect()
                    }
                    ClusterIpBinding::Addresses(addrs) if entry.cluster_ip.is_some() => {
                        addrs.clone()
                    }
                    ClusterIpBinding::Addresses(_) | ClusterIpBinding::Off => Vec::new(),
                };
                for ip in cluster_addrs {
                    let listener = (port.protocol, SocketAddr::new(ip, port.port));
                    if out
                        .insert(listener, spec(entry.internal_traffic_local))
                        .is_some()
                    {
                        tracing::warn!(service = %key, ?listener, "two services claim one address");
                    }
                }
                for ip in self.external_addrs(&entry.external_ips) {
                    let listener = (port.protocol, SocketAddr::new(ip, port.port));
                    if out.contains_key(&listener) {
                        tracing::warn!(service = %key, ?listener, "external IP already served");
                        continue;
                    }
                    let spec = FrontendSpec {
                        external: true,
                        ..spec(entry.external_traffic_local)
                    };
                    out.insert(listener, spec);
                }
                let Some(node_port) = port.node_port else {
                    continue;
                };
                for ip in &self.config.node_addresses {
                    let listener = (port.protocol, SocketAddr::new(*ip, node_port));
                    if out
                        .insert(listener, spec(entry.external_traffic_local))
                        .is_some()
                    {
                        tracing::warn!(service = %key, ?listener, "two services claim one node port");
                    }
                }
            }
        }
        out
    }

    /// The external IPs of a service this proxy can listen on: all of them when it binds
    /// ClusterIPs itself or on its interface; in the unprivileged modes only those already local
    /// (such as a load balancer ingress that is this node's address).
    fn external_addrs(&self, ips: &[IpAddr]) -> Vec<IpAddr> {
        match &self.config.cluster_ips {
            ClusterIpBinding::Local | ClusterIpBinding::Interface(_) => ips.to_vec(),
            ClusterIpBinding::Addresses(_) | ClusterIpBinding::Off => {
                ips.iter().copied().filter(|ip| is_local(*ip)).collect()
            }
        }
    }

    /// Brings listeners (and ClusterIP addresses) to what `table` asks for. Listeners that could
    /// not be opened are reported; the next sync tries them again.
    async fn reconcile(&self, state: &mut State, table: ServiceTable) -> Result<()> {
        let wanted = self.frontends(&table);
        state.table = table;
        let mut errors = Vec::new();

        // Stop listeners no longer wanted, first, so their ports are free for new ones.
        let gone: Vec<ListenerKey> = state
            .listeners
            .keys()
            .filter(|k| !wanted.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            if let Some(listener) = state.listeners.remove(&key) {
                stop(listener).await;
            }
        }
        if let Some(dummy) = state.dummy.as_mut() {
            let ips: BTreeSet<IpAddr> = wanted
                .iter()
                .map(|((_, a), spec)| (a.ip(), spec.external))
                .filter(|(ip, _)| !self.config.node_addresses.contains(ip))
                .filter(|(ip, external)| !external || dummy.has(ip) || !is_local(*ip))
                .map(|(ip, _)| ip)
                .collect();
            if let Err(e) = dummy.reconcile(&ips).await {
                errors.push(e);
            }
        }
        for (key, spec) in wanted {
            if let Some(listener) = state.listeners.get(&key) {
                listener.frontend.update(spec.endpoints, spec.affinity);
                continue;
            }
            match self.listen(key, spec) {
                Ok(listener) => {
                    state.listeners.insert(key, listener);
                }
                Err(e) => errors.push(e),
            }
        }
        Error::collect(errors).map_or(Ok(()), Err)
    }

    fn listen(&self, (protocol, addr): ListenerKey, spec: FrontendSpec) -> Result<Listener> {
        let bind_err = |source| Error::Bind {
            protocol,
            addr,
            source,
        };
        let frontend = Arc::new(Frontend::new(
            spec.endpoints,
            spec.affinity,
            self.root.clone(),
            self.config.drain_timeout,
            self.tasks.clone(),
        ));
        let stop = self.root.child_token();
        let tasks = match protocol {
            Protocol::Udp => {
                let std_socket = std::net::UdpSocket::bind(addr).map_err(bind_err)?;
                std_socket.set_nonblocking(true).map_err(bind_err)?;
                let socket = UdpSocket::from_std(std_socket).map_err(bind_err)?;
                vec![tokio::spawn(udp::serve(
                    socket,
                    frontend.clone(),
                    stop.clone(),
                    self.tasks.clone(),
                    self.config.udp_idle_timeout,
                ))]
            }
            Protocol::Tcp | Protocol::Sctp => {
                let loops = self.config.accept_loops.max(1);
                // Every socket is bound before any accept loop starts: a failure leaves nothing
                // listening.
                let mut listeners = Vec::with_capacity(loops);
                for _ in 0..loops {
                    let socket = if addr.is_ipv4() {
                        TcpSocket::new_v4()
                    } else {
                        TcpSocket::new_v6()
                    }
                    .map_err(bind_err)?;
                    // Rebinding right after a stop must not fail on TIME_WAIT leftovers.
                    socket.set_reuseaddr(true).map_err(bind_err)?;
                    // Only when asked: a port shared this way could be joined by another
                    // process of the same user.
                    if loops > 1 {
                        socket.set_reuseport(true).map_err(bind_err)?;
                    }
                    // Accepted sockets inherit TCP_NODELAY from the listener on Linux: one
                    // syscall per connection saved.
                    socket.set_nodelay(true).map_err(bind_err)?;
                    socket.bind(addr).map_err(bind_err)?;
                    listeners.push(socket.listen(1024).map_err(bind_err)?);
                }
                let settings = TcpSettings {
                    connect_timeout: self.config.connect_timeout,
                    relay: splice::RelayMode {
                        zero_copy: self.config.zero_copy,
                        buffer: self.config.buffer_size,
                    },
                };
                listeners
                    .into_iter()
                    .map(|listener| {
                        tokio::spawn(tcp::serve(
                            listener,
                            frontend.clone(),
                            stop.clone(),
                            self.tasks.clone(),
                            settings,
                            self.pipes.clone(),
                        ))
                    })
                    .collect()
            }
        };
        tracing::debug!(?protocol, %addr, "listening");
        Ok(Listener {
            frontend,
            stop,
            tasks,
        })
    }
}

/// Whether `ip` is an address of this host (network namespace): binding it succeeds.
fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Closes the listening socket (waiting until it is closed) and drains its connections.
async fn stop(listener: Listener) {
    listener.stop.cancel();
    for task in listener.tasks {
        let _ = task.await;
    }
    listener.frontend.close();
}

#[async_trait::async_trait]
impl Proxy for UserspaceProxy {
    async fn sync(&self, table: &ServiceTable) -> Result<(), ProxyError> {
        let mut state = self.state.lock().await;
        self.reconcile(&mut state, table.clone()).await?;
        Ok(())
    }

    async fn apply(&self, changes: &[TableChange]) -> Result<(), ProxyError> {
        let mut state = self.state.lock().await;
        let mut table = state.table.clone();
        table.apply(changes);
        self.reconcile(&mut state, table).await?;
        Ok(())
    }

    async fn applied(&self) -> Result<ServiceTable, ProxyError> {
        Ok(self.state.lock().await.table.clone())
    }

    async fn shutdown(&self) -> Result<(), ProxyError> {
        let mut state = self.state.lock().await;
        for (_, listener) in std::mem::take(&mut state.listeners) {
            stop(listener).await;
        }
        state.table = ServiceTable::default();
        // Cut what is still open, and wait until every socket is closed.
        self.root.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if let Some(dummy) = state.dummy.as_mut() {
            dummy.clear().await?;
        }
        Ok(())
    }
}
