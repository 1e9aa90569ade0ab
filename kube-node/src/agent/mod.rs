//! [`NodeAgent`]: the kubelet logic. Registers a Node and keeps it Ready, and makes the pods
//! bound to the node run on a [`Runtime`], reporting their status.
//!
//! Code map: [`node_status`] registers the Node and heartbeats; [`pod_sync`] drives the runtime
//! for one pod (sandbox, init and app containers, restarts, teardown); [`pod_status`] turns
//! what the runtime reports into a `PodStatus` and writes it; [`spec`] translates pod spec
//! containers into runtime configs; [`backoff`] is the per-container crash-loop backoff;
//! [`probe`] runs startup, liveness and readiness probes; [`dns`] forms each pod's
//! `/etc/resolv.conf` (per `dnsPolicy`) and `/etc/hosts`.

mod admission;
mod backoff;
mod claims;
mod dns;
mod gc;
mod image_gc;
mod images;
mod lease;
mod node_status;
mod pod_cidr;
mod pod_status;
mod pod_sync;
mod pressure;
mod probe;
mod server;
mod service_env;
mod spec;
mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube_core::events::{EventRecorder, EventType};
use kube_core::informer::{Informer, InformerEvent};
use kube_core::object::{GroupKind, ObjectKey};
use kube_core::orchestrator::{BoxError, Component, ComponentContext};
use kube_core::quantity::Quantity;
use kube_core::runtime::Runtime;
use kube_core::selector::FieldSelector;
use kube_core::store::{ListOptions, Store};
use kube_core::workqueue::{Backoff, WorkQueue};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::kubelet_auth::KubeletAuth;
use crate::tokens::{HeldToken, TokenRequest, TokenSource};
pub use gc::ContainerGcPolicy;
pub use image_gc::ImageGcPolicy;
use pod_sync::PodRecord;

/// Labels the agent puts on sandboxes and containers, so it can recover which pod they belong
/// to from the runtime alone (after an agent restart). The first four are the kubelet's.
pub mod labels {
    /// The pod's name.
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    /// The pod's namespace.
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    /// The pod's UID.
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    /// The container's name within the pod (containers only).
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    /// The node whose agent created it (several agents may share one runtime).
    pub const NODE_NAME: &str = "kube-node/node";
}

/// Everything a [`NodeAgent`] is configured with. Built with [`NodeAgent::builder`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeAgentConfig {
    /// The Node's name.
    pub node_name: String,
    /// Node capacity by resource name (`cpu`, `memory`, `pods`, extended resources), as
    /// quantities. Default: 4 CPUs, 8Gi memory, 110 pods.
    pub capacity: BTreeMap<String, String>,
    /// Allocatable resources; a resource missing here is as allocatable as its capacity.
    pub allocatable: BTreeMap<String, String>,
    /// Node labels, on top of `kubernetes.io/hostname`, `kubernetes.io/os` and
    /// `kubernetes.io/arch`, which are always set.
    pub labels: BTreeMap<String, String>,
    /// The node's InternalIP (default `127.0.0.1`), reported as the pods' `hostIP`.
    pub node_ip: String,
    /// How often the Node's `lastHeartbeatTime` is renewed (default 10 s).
    pub heartbeat_interval: Duration,
    /// How often every pod is synced even without a change, which is how container exits are
    /// noticed (default 1 s).
    pub resync_interval: Duration,
    /// How many pods are synced concurrently (default 8).
    pub workers: usize,
    /// First crash-loop back-off delay (default 10 s), doubled per restart.
    pub crash_backoff_base: Duration,
    /// Largest crash-loop back-off delay (default 5 min).
    pub crash_backoff_max: Duration,
    /// Grace period for stopping containers when the pod does not say (default 30 s).
    pub default_grace_period: Duration,
    /// Where pod volumes live (`<root>/<pod uid>/volumes/<name>`). Default: a temporary
    /// directory removed with the agent; set it for volumes to survive an agent restart.
    pub root_dir: Option<std::path::PathBuf>,
    /// Whether the MemoryPressure, DiskPressure and PIDPressure conditions are measured on
    /// the host (default false: always False, as for simulated nodes).
    pub host_pressure: bool,
    /// Where the kubelet HTTP server listens (`/containerLogs`, `/healthz`); `None` (the
    /// default) serves nothing. Port 0 picks a free port.
    pub kubelet_addr: Option<SocketAddr>,
    /// Which dead containers are removed, and how often the node is swept (the kubelet's
    /// defaults: one dead instance kept per container, no node limit, every minute).
    pub container_gc: ContainerGcPolicy,
    /// Whether core/v1 Events about pods are recorded (`Created`, `Started`, `Failed`,
    /// `BackOff`, `Killing`, as the kubelet's; `kubectl describe pod` shows them). Default true.
    pub record_events: bool,
    /// Pull one image at a time (the kubelet's `serializeImagePulls`, default true).
    pub serialize_image_pulls: bool,
    /// With `serialize_image_pulls` off, at most this many pulls at once (the kubelet's
    /// `maxParallelImagePulls`; `None`: no limit).
    pub max_parallel_image_pulls: Option<usize>,
    /// When unused images are removed (the kubelet's image GC thresholds).
    pub image_gc: ImageGcPolicy,
    /// A node-level registry credentials file (Docker's `config.json` format, as the
    /// kubelet reads `/var/lib/kubelet/config.json`), used for every pod's pulls after the
    /// pod's own `imagePullSecrets`.
    pub credentials_file: Option<std::path::PathBuf>,
    /// The cluster DNS servers (the kubelet's `clusterDNS`): the only nameservers of pods
    /// with `dnsPolicy: ClusterFirst`. Empty (the default): such pods get the node's DNS
    /// (`Default`), and the node a `MissingClusterDNS` warning Event, as from the kubelet.
    pub cluster_dns: Vec<IpAddr>,
    /// The cluster's DNS domain (the kubelet's `clusterDomain`, default `cluster.local`):
    /// `ClusterFirst` pods search `<ns>.svc.<domain> svc.<domain> <domain>` first, and a
    /// pod with a `subdomain` is `<hostname>.<subdomain>.<ns>.svc.<domain>` in its
    /// `/etc/hosts`.
    pub cluster_domain: String,
    /// The node's resolver configuration (the kubelet's `resolvConf`, default
    /// `/etc/resolv.conf`): what `dnsPolicy: Default` pods get, and the search domains
    /// `ClusterFirst` pods add after the cluster's. `None`: none (the kubelet's `""`), so
    /// `Default` pods ask the local machine (`nameserver 127.0.0.1`, `search .`).
    pub resolv_conf: Option<std::path::PathBuf>,
}

impl NodeAgentConfig {
    fn new(node_name: String) -> Self {
        let capacity = [("cpu", "4"), ("memory", "8Gi"), ("pods", "110")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self {
            node_name,
            capacity,
            allocatable: BTreeMap::new(),
            labels: BTreeMap::new(),
            node_ip: "127.0.0.1".to_string(),
            heartbeat_interval: Duration::from_secs(10),
            resync_interval: Duration::from_secs(1),
            workers: 8,
            crash_backoff_base: Duration::from_secs(10),
            crash_backoff_max: Duration::from_secs(300),
            default_grace_period: Duration::from_secs(30),
            root_dir: None,
            host_pressure: false,
            kubelet_addr: None,
            container_gc: ContainerGcPolicy::default(),
            record_events: true,
            serialize_image_pulls: true,
            max_parallel_image_pulls: None,
            image_gc: ImageGcPolicy::default(),
            credentials_file: None,
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".to_string(),
            resolv_conf: Some("/etc/resolv.conf".into()),
        }
    }

    fn validate(&self) -> Result<()> {
        let invalid = |m: String| Err(Error::InvalidConfig(m));
        if self.node_name.is_empty() {
            return invalid("the node name is empty".into());
        }
        for (name, value) in self.capacity.iter().chain(&self.allocatable) {
            if let Err(e) = Quantity::parse(value) {
                return invalid(format!("resource {name}={value:?}: {e}"));
            }
        }
        if self.heartbeat_interval.is_zero() || self.resync_interval.is_zero() {
            return invalid("heartbeat and resync intervals must be positive".into());
        }
        if self.container_gc.period.is_zero() {
            return invalid("the container GC period must be positive".into());
        }
        if self.image_gc.period.is_zero() {
            return invalid("the image GC period must be positive".into());
        }
        if self.image_gc.low_threshold_percent > self.image_gc.high_threshold_percent {
            return invalid(format!(
                "imageGCLowThresholdPercent ({}) must not exceed imageGCHighThresholdPercent ({})",
                self.image_gc.low_threshold_percent, self.image_gc.high_threshold_percent
            ));
        }
        if self.workers == 0 {
            return invalid("at least one worker is needed".into());
        }
        Ok(())
    }
}

/// Configures a [`NodeAgent`]. See [`NodeAgent::builder`].
#[derive(Debug)]
pub struct NodeAgentBuilder {
    config: NodeAgentConfig,
    runtime: Arc<dyn Runtime>,
    token_source: Option<Arc<dyn TokenSource>>,
    kubelet_auth: Option<Arc<dyn KubeletAuth>>,
}

impl NodeAgentBuilder {
    /// Sets the capacity of one resource, e.g. `("cpu", "8")`, `("example.com/gpu", "2")`.
    pub fn capacity(mut self, resource: impl Into<String>, quantity: impl Into<String>) -> Self {
        self.config
            .capacity
            .insert(resource.into(), quantity.into());
        self
    }

    /// Sets `cpu` and `memory` capacity from the host (CPUs this process may use, and
    /// `MemTotal` from `/proc/meminfo`); values the host does not give keep their defaults.
    pub fn detect_capacity(mut self) -> Self {
        if let Ok(cpus) = std::thread::available_parallelism() {
            self.config
                .capacity
                .insert("cpu".into(), cpus.get().to_string());
        }
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let total_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(kib) = total_kib {
            self.config
                .capacity
                .insert("memory".into(), format!("{kib}Ki"));
        }
        self
    }

    /// Sets the allocatable amount of one resource (default: its capacity).
    pub fn allocatable(mut self, resource: impl Into<String>, quantity: impl Into<String>) -> Self {
        self.config
            .allocatable
            .insert(resource.into(), quantity.into());
        self
    }

    /// Adds a Node label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.labels.insert(key.into(), value.into());
        self
    }

    /// The node's IP (default `127.0.0.1`).
    pub fn node_ip(mut self, ip: impl Into<String>) -> Self {
        self.config.node_ip = ip.into();
        self
    }

    /// How often the Node heartbeats (default 10 s).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.heartbeat_interval = interval;
        self
    }

    /// How often every pod is re-synced (default 1 s).
    pub fn resync_interval(mut self, interval: Duration) -> Self {
        self.config.resync_interval = interval;
        self
    }

    /// How many pods are synced concurrently (default 8).
    pub fn workers(mut self, workers: usize) -> Self {
        self.config.workers = workers;
        self
    }

    /// Crash-loop back-off: first delay and cap (default 10 s and 5 min).
    pub fn crash_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.config.crash_backoff_base = base;
        self.config.crash_backoff_max = max;
        self
    }

    /// Grace period when a pod does not set `terminationGracePeriodSeconds` (default 30 s).
    pub fn default_grace_period(mut self, grace: Duration) -> Self {
        self.config.default_grace_period = grace;
        self
    }

    /// Where pod volumes live (default: a temporary directory removed with the agent).
    pub fn root_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.config.root_dir = Some(dir.into());
        self
    }

    /// Measures MemoryPressure, DiskPressure and PIDPressure on the host at each heartbeat
    /// (kubelet default thresholds: memory available < 100Mi, filesystem available < 10%;
    /// and PIDs in use > 90%). Default off.
    pub fn host_pressure(mut self, enabled: bool) -> Self {
        self.config.host_pressure = enabled;
        self
    }

    /// The dead-container garbage collection policy (see [`ContainerGcPolicy`]).
    pub fn container_gc(mut self, policy: ContainerGcPolicy) -> Self {
        self.config.container_gc = policy;
        self
    }

    /// Whether to record core/v1 Events about pods (default true; simulated nodes at scale may
    /// turn them off to spare the store).
    pub fn record_events(mut self, enabled: bool) -> Self {
        self.config.record_events = enabled;
        self
    }

    /// When unused images are removed (default: the kubelet's 85 % / 80 % thresholds, checked
    /// every 5 min, images younger than 2 min kept).
    pub fn image_gc(mut self, policy: ImageGcPolicy) -> Self {
        self.config.image_gc = policy;
        self
    }

    /// Reads registry credentials for every pod's pulls from `path` (Docker's `config.json`
    /// format: `{"auths": {"HOST": {"auth": "…"}}}`), when the agent is built.
    pub fn credentials_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.config.credentials_file = Some(path.into());
        self
    }

    /// The cluster DNS servers and domain (the kubelet's `clusterDNS` and `clusterDomain`,
    /// e.g. `(vec![kube_dns_ip], "cluster.local")`): each pod gets an `/etc/resolv.conf`
    /// per its `dnsPolicy` (`ClusterFirst`: these servers, `search <ns>.svc.<domain>
    /// svc.<domain> <domain>` and the node's search domains, `options ndots:5`), merged
    /// with its `dnsConfig`. Without servers `ClusterFirst` pods get the node's DNS.
    pub fn cluster_dns(mut self, servers: Vec<IpAddr>, domain: impl Into<String>) -> Self {
        self.config.cluster_dns = servers;
        self.config.cluster_domain = domain.into();
        self
    }

    /// The node's resolv.conf (default `/etc/resolv.conf`; the kubelet's `resolvConf`),
    /// which `dnsPolicy: Default` pods get; `None` for none (they then ask the local
    /// machine).
    pub fn resolv_conf(mut self, path: Option<std::path::PathBuf>) -> Self {
        self.config.resolv_conf = path;
        self
    }

    /// How many image pulls may run at once: `Some(1)` serializes them (the kubelet's default,
    /// `serializeImagePulls: true`), `Some(n)` is `maxParallelImagePulls: n`, `None` no limit.
    pub fn parallel_image_pulls(mut self, limit: Option<usize>) -> Self {
        self.config.serialize_image_pulls = limit == Some(1);
        self.config.max_parallel_image_pulls = limit.filter(|&n| n != 1);
        self
    }

    /// Serves the kubelet's HTTP API on `addr` (port 0 picks a free port): container logs at
    /// `GET /containerLogs/{namespace}/{pod}/{container}` (`follow`, `tailLines`, `previous`,
    /// `limitBytes`; `timestamps=false`: lines carry no times) and `GET /healthz`. The socket is bound by
    /// [`build`](Self::build), so [`NodeAgent::kubelet_addr`] is known before the agent runs;
    /// the Node then reports the port in `status.daemonEndpoints.kubeletEndpoint.Port`, next to
    /// its `InternalIP` ([`node_ip`](Self::node_ip)), which is where the API server connects:
    /// bind an unspecified address (`0.0.0.0`) or the node IP itself.
    ///
    /// The server is plain HTTP without authentication, like the kubelet's read-only port:
    /// bind it where only the API server can reach it.
    pub fn serve(mut self, addr: SocketAddr) -> Self {
        self.config.kubelet_addr = Some(addr);
        self
    }

    /// Where the ServiceAccount tokens of projected volumes come from (see [`TokenSource`]).
    /// Without one, projected volumes get their other files (`ca.crt`, `namespace`, ...) but
    /// no token, and a warning is logged once.
    pub fn token_source(mut self, source: Arc<dyn TokenSource>) -> Self {
        self.token_source = Some(source);
        self
    }

    /// Who may call the kubelet server (see [`KubeletAuth`]): every request but `/healthz`
    /// needs a bearer token the check accepts (401 without one, 403 for a user who may not).
    /// Without it, the server answers anyone who reaches it.
    pub fn kubelet_auth(mut self, auth: Arc<dyn KubeletAuth>) -> Self {
        self.kubelet_auth = Some(auth);
        self
    }

    /// Checks the configuration, binds the kubelet server's socket (if
    /// [`serve`](Self::serve) was asked for) and returns the agent.
    pub fn build(self) -> Result<NodeAgent> {
        self.config.validate()?;
        let kubelet = match self.config.kubelet_addr {
            None => None,
            Some(addr) => {
                let bind = || {
                    let listener = std::net::TcpListener::bind(addr)?;
                    listener.set_nonblocking(true)?;
                    let local = listener.local_addr()?;
                    Ok::<_, std::io::Error>((listener, local))
                };
                Some(bind().map_err(|source| Error::Bind { addr, source })?)
            }
        };
        let node_keyring = match &self.config.credentials_file {
            None => None,
            Some(path) => {
                let mut keyring = crate::pull::credentials::Keyring::new();
                keyring.add_file(path).map_err(|e| {
                    Error::InvalidConfig(format!("credentials file {}: {e}", path.display()))
                })?;
                Some(Arc::new(keyring))
            }
        };
        Ok(NodeAgent {
            config: self.config,
            runtime: self.runtime,
            kubelet,
            token_source: self.token_source,
            kubelet_auth: self.kubelet_auth,
            node_keyring,
        })
    }
}

/// The node agent: a [`Component`] that runs the pods bound to one node on a [`Runtime`].
///
/// It registers its Node (Ready, with capacity and addresses) and heartbeats; watches the pods
/// whose `spec.nodeName` is its node; for each, keeps a sandbox and its containers running
/// (init containers first, restarts per `restartPolicy` with crash-loop back-off), writes the
/// pod's status when it changes, and tears everything down when the pod goes away.
///
/// ```
/// use std::sync::Arc;
/// use kube_core::runtime::Runtime;
/// use kube_node::{FakeRuntime, NodeAgent};
///
/// let runtime: Arc<dyn Runtime> = Arc::new(FakeRuntime::new());
/// let agent = NodeAgent::builder("node-1", runtime.clone())
///     .capacity("cpu", "8")
///     .label("topology.kubernetes.io/zone", "a")
///     .build()
///     .unwrap();
/// assert_eq!(agent.node_name(), "node-1");
/// // Orchestrator::builder().store(store).node(agent).build()?.start();
/// ```
#[derive(Debug)]
pub struct NodeAgent {
    config: NodeAgentConfig,
    runtime: Arc<dyn Runtime>,
    /// The kubelet server's socket and the address it is bound to.
    kubelet: Option<(std::net::TcpListener, SocketAddr)>,
    token_source: Option<Arc<dyn TokenSource>>,
    kubelet_auth: Option<Arc<dyn KubeletAuth>>,
    node_keyring: Option<Arc<crate::pull::credentials::Keyring>>,
}

impl NodeAgent {
    /// Starts configuring an agent for `node_name` driving `runtime`.
    pub fn builder(node_name: impl Into<String>, runtime: Arc<dyn Runtime>) -> NodeAgentBuilder {
        NodeAgentBuilder {
            config: NodeAgentConfig::new(node_name.into()),
            runtime,
            token_source: None,
            kubelet_auth: None,
        }
    }

    /// The node's name.
    pub fn node_name(&self) -> &str {
        &self.config.node_name
    }

    /// The configuration.
    pub fn config(&self) -> &NodeAgentConfig {
        &self.config
    }

    /// The runtime the agent drives (clone it before handing the agent to the orchestrator to
    /// observe containers).
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    /// The address the kubelet HTTP server is bound to (with the port picked when
    /// [`NodeAgentBuilder::serve`] was given port 0), or `None` when it does not serve.
    /// Connections are accepted once the agent runs.
    pub fn kubelet_addr(&self) -> Option<SocketAddr> {
        self.kubelet.as_ref().map(|(_, addr)| *addr)
    }
}

#[async_trait::async_trait]
impl Component for NodeAgent {
    fn name(&self) -> String {
        format!("node-agent/{}", self.config.node_name)
    }

    async fn run(mut self: Box<Self>, ctx: ComponentContext) -> Result<(), BoxError> {
        let shutdown = ctx.shutdown.clone();
        let listener = self.kubelet.take();
        let kubelet = server::Kubelet {
            runtime: self.runtime.clone(),
            node_name: self.config.node_name.clone(),
            auth: self.kubelet_auth.clone(),
        };
        let kubelet_port = listener.as_ref().map(|(_, addr)| addr.port());
        let agent = Arc::new(Agent::new(*self, ctx.store.clone(), kubelet_port));
        let serve = async {
            if let Some((listener, addr)) = listener {
                tracing::info!(%addr, "kubelet server listening");
                server::serve(listener, kubelet, shutdown.clone()).await;
            }
            shutdown.cancelled().await;
        };
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = agent.run(shutdown.clone()) => {}
            () = serve => {}
        }
        Ok(())
    }
}

/// The running agent, shared by its tasks.
#[derive(Debug)]
pub(crate) struct Agent {
    config: NodeAgentConfig,
    runtime: Arc<dyn Runtime>,
    /// `fake`, `process`, …: the prefix of container IDs in pod status (`fake://<id>`).
    runtime_type: String,
    store: Arc<dyn Store>,
    pods: Informer,
    queue: WorkQueue<ObjectKey>,
    /// What the agent remembers per pod key between syncs. Each key is synced by one worker
    /// at a time (the work queue guarantees it), so a worker may take a record, await, and put
    /// it back.
    records: Mutex<HashMap<ObjectKey, PodRecord>>,
    /// Probe tasks of running containers.
    prober: probe::Prober,
    /// Pods admitted to run here, with what they hold (resources, host ports).
    admitted: Mutex<HashMap<ObjectKey, admission::Admitted>>,
    /// Per-pod directories (volumes) live under here.
    pods_dir: std::path::PathBuf,
    /// Keeps a default temporary `pods_dir` alive.
    _temp: Option<tempfile::TempDir>,
    boot_id: String,
    /// The kubelet server's port, published in the Node's `daemonEndpoints`.
    kubelet_port: Option<u16>,
    /// Where projected volumes' tokens come from.
    token_source: Option<Arc<dyn TokenSource>>,
    /// Tokens fetched for pods, renewed when due; dropped with their pod.
    tokens: Mutex<HashMap<TokenRequest, HeldToken>>,
    /// Whether the missing token source has been warned about.
    warned_no_tokens: std::sync::atomic::AtomicBool,
    /// Whether the missing cluster DNS has been warned about (`MissingClusterDNS`).
    warned_no_cluster_dns: std::sync::atomic::AtomicBool,
    /// Events about pods, from `kubelet` on this node (`None` when not recorded).
    events: Option<EventRecorder>,
    /// Image pulls that may run at once.
    pull_slots: tokio::sync::Semaphore,
    /// Credentials from the node's credentials file.
    node_keyring: Option<Arc<crate::pull::credentials::Keyring>>,
    /// When each image was first seen and last used, for image GC.
    image_records: Mutex<HashMap<String, image_gc::ImageRecord>>,
}

impl Agent {
    /// Records an Event about `pod` without waiting for the store.
    pub(crate) fn event(&self, pod: &Pod, type_: EventType, reason: &str, message: String) {
        if let Some(events) = &self.events {
            events.record_detached(&self.store, pod, type_, reason, message);
        }
    }

    fn new(agent: NodeAgent, store: Arc<dyn Store>, kubelet_port: Option<u16>) -> Self {
        let filter = ListOptions::default().fields(FieldSelector::equals(
            "spec.nodeName",
            agent.config.node_name.clone(),
        ));
        let pods = Informer::with_filter(store.clone(), GroupKind::POD, None, filter);
        let pull_slots = match (
            agent.config.serialize_image_pulls,
            agent.config.max_parallel_image_pulls,
        ) {
            (true, _) => 1,
            (false, Some(n)) => n.max(1),
            (false, None) => tokio::sync::Semaphore::MAX_PERMITS,
        };
        let version = agent.runtime.version();
        let runtime_type = version
            .split_once("://")
            .map_or("runtime", |(t, _)| t)
            .to_string();
        let queue = WorkQueue::new(Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(30),
        });
        let (pods_dir, temp) = match &agent.config.root_dir {
            Some(dir) => (dir.clone(), None),
            None => match tempfile::Builder::new().prefix("kube-node-pods-").tempdir() {
                Ok(t) => (t.path().to_path_buf(), Some(t)),
                Err(e) => {
                    // Volumes will fail to be prepared, with this error in the pod's status.
                    tracing::warn!(error = %e, "no temporary directory for pod volumes");
                    (std::env::temp_dir().join("kube-node-pods"), None)
                }
            },
        };
        let events = agent
            .config
            .record_events
            .then(|| EventRecorder::new("kubelet").host(agent.config.node_name.clone()));
        Self {
            events,
            prober: probe::Prober::new(agent.runtime.clone(), queue.clone()),
            admitted: Mutex::new(HashMap::new()),
            pods_dir,
            _temp: temp,
            config: agent.config,
            runtime: agent.runtime,
            runtime_type,
            store,
            pods,
            queue,
            records: Mutex::new(HashMap::new()),
            boot_id: uuid::Uuid::new_v4().to_string(),
            kubelet_port,
            token_source: agent.token_source,
            tokens: Mutex::new(HashMap::new()),
            warned_no_tokens: std::sync::atomic::AtomicBool::new(false),
            warned_no_cluster_dns: std::sync::atomic::AtomicBool::new(false),
            pull_slots: tokio::sync::Semaphore::new(pull_slots),
            node_keyring: agent.node_keyring,
            image_records: Mutex::new(HashMap::new()),
        }
    }

    fn image_records(&self) -> MutexGuard<'_, HashMap<String, image_gc::ImageRecord>> {
        // Plain data replaced in single statements; a poisoned lock is usable.
        self.image_records.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn admitted(&self) -> MutexGuard<'_, HashMap<ObjectKey, admission::Admitted>> {
        // Plain data replaced in single statements; a poisoned lock is usable.
        self.admitted.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tokens(&self) -> MutexGuard<'_, HashMap<TokenRequest, HeldToken>> {
        // Plain data replaced in single statements; a poisoned lock is usable.
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn records(&self) -> MutexGuard<'_, HashMap<ObjectKey, PodRecord>> {
        // Records are plain data updated in single statements; a poisoned lock is usable.
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs until cancelled (the caller selects on `shutdown`).
    async fn run(self: &Arc<Self>, shutdown: CancellationToken) {
        self.register_until_ok().await;
        let mut tasks = JoinSet::new();
        tasks.spawn(self.clone().heartbeat_loop());
        tasks.spawn(self.clone().pod_cidr_loop());

        self.pods.start(shutdown.clone());
        self.pods.wait_until_synced().await;
        self.recover().await;

        tasks.spawn(self.clone().event_loop());
        tasks.spawn(self.clone().resync_loop());
        tasks.spawn(self.clone().gc_loop());
        tasks.spawn(self.clone().image_gc_loop());
        for _ in 0..self.config.workers {
            tasks.spawn(self.clone().worker());
        }
        tracing::info!(node = %self.config.node_name, "node agent running");
        // The tasks run until the shutdown signal drops this future (and with it the JoinSet,
        // which aborts them); the queue is shut down so no key is left half-handed.
        let _guard = QueueGuard(self.queue.clone());
        std::future::pending::<()>().await;
    }

    /// Rebuilds per-pod records from the runtime's sandboxes (after an agent restart), and
    /// queues their pods so orphans are torn down.
    async fn recover(&self) {
        let sandboxes = loop {
            match self.runtime.list_pod_sandboxes().await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::warn!(error = %e, "listing sandboxes failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let mut keys = Vec::new();
        {
            let mut records = self.records();
            for sandbox in sandboxes {
                let l = &sandbox.labels;
                if l.get(labels::NODE_NAME) != Some(&self.config.node_name) {
                    continue;
                }
                let (Some(ns), Some(name)) =
                    (l.get(labels::POD_NAMESPACE), l.get(labels::POD_NAME))
                else {
                    continue;
                };
                let key = ObjectKey::namespaced(ns.clone(), name.clone());
                records
                    .entry(key.clone())
                    .or_insert_with(|| PodRecord::new(self.config.default_grace_period))
                    .sandboxes
                    .insert(sandbox.id);
                keys.push(key);
            }
        }
        if !keys.is_empty() {
            tracing::info!(pods = keys.len(), "recovered pods from the runtime");
        }
        for key in keys {
            self.queue.add(key);
        }
    }

    /// Queues every pod that changes.
    async fn event_loop(self: Arc<Self>) {
        let mut events = self.pods.subscribe();
        while let Some(event) = events.recv().await {
            let object = event.object();
            let key = object.key();
            if let InformerEvent::Deleted(last) = &event {
                // The pod is gone from the cache: its grace period must come from memory.
                if let Some(grace) = pod_sync::grace_period_of(last) {
                    if let Some(record) = self.records().get_mut(&key) {
                        record.grace = grace;
                    }
                }
            }
            self.queue.add(key);
        }
    }

    /// Queues every known pod periodically: the runtime does not push container exits.
    async fn resync_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.resync_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let remembered: Vec<ObjectKey> = self.records().keys().cloned().collect();
            for key in remembered {
                self.queue.add(key);
            }
            for pod in self.pods.list() {
                self.queue.add(pod.key());
            }
        }
    }

    async fn worker(self: Arc<Self>) {
        while let Some(key) = self.queue.get().await {
            let span = tracing::debug_span!("sync_pod", pod = %key);
            let result = tracing::Instrument::instrument(self.sync(&key), span).await;
            match result {
                Ok(requeue) => {
                    self.queue.forget(&key);
                    if let Some(after) = requeue {
                        self.queue.add_after(key.clone(), after);
                    }
                }
                Err(e) => {
                    tracing::warn!(pod = %key, error = %error_chain(&e), "pod sync failed; retrying");
                    self.queue.add_rate_limited(key.clone());
                }
            }
            self.queue.done(&key);
        }
    }
}

/// Shuts the queue down when the agent's main future is dropped.
struct QueueGuard(WorkQueue<ObjectKey>);

impl Drop for QueueGuard {
    fn drop(&mut self) {
        self.0.shut_down();
    }
}

/// Formats an error with its sources, for logs.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
