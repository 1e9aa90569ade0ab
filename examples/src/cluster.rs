//! An all-in-one cluster: the API server over a store, the scheduler, the controllers, N local
//! node agents and the proxy, composed with the orchestrator builder. The quickstart example
//! runs it from the command line; tests start it in-process.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kube_apiserver::authz::{CONTROLLER_MANAGER_USER, PROXY_USER, SCHEDULER_USER};
use kube_apiserver::{
    ApiServer, ApiServerComponent, ApiServerConfig, KubernetesService, Pki, Security, TokenSigner,
};
use kube_core::Orchestrator;
use kube_core::orchestrator::{OnStore, RunningOrchestrator};
use kube_core::runtime::Runtime;
use kube_core::store::Store;
use kube_ctrl::node_ipam::{NodeIpamConfig, NodeIpamController};
use kube_ctrl::service_lb::ServiceLbController;
use kube_ctrl::volume::{LocalPathProvisioner, local_path_storage_class};
use kube_ctrl::{ControllerManager, NodeLifecycleConfig};
use kube_net::{
    ClusterIpBinding, DnsConfig, DnsServer, NetworkPolicyConfig, NetworkPolicyEnforcer, NftConfig,
    NftProxy, NodeRoutes, ProxyLoop, RoutesConfig, UserspaceConfig, UserspaceProxy, VxlanConfig,
};
use kube_node::{FakeRuntime, NodeAgent, OciRuntime, PodNetwork, ProcessRuntime, RoutedConfig};
use kube_parts::remote::{ApiBinder, RemoteKubeletAuth, RemoteTokenSource};
use kube_sched::framework::Framework;
use kube_sched::{SchedulingConfig, SchedulingLoop};
use kube_store::{DurableStore, MemStore, RemoteAuth, RemoteStore};
use serde_json::json;

use crate::network::{self, CLUSTER_DOMAIN, KUBE_DNS_IP, NetworkPlan, SERVICE_CIDR};

/// Which runtime the local nodes use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeKind {
    /// Host processes (`ProcessRuntime`): the image is not pulled, the command runs on the
    /// host (in its own network namespace with its own IP as root).
    Process,
    /// Containers run by `runc` (`OciRuntime`), needs root: every image reference runs on a
    /// busybox root filesystem built from the host's static busybox (nothing is pulled).
    Oci,
    /// Scripted, nothing runs (`FakeRuntime`).
    Fake,
    /// Containers run by Docker (`DockerRuntime`, over the Engine API's unix socket): Docker
    /// pulls the images (with its own registry mirrors) and runs a sandbox container per pod.
    Docker,
    /// Containers run by containerd over CRI (`CriRuntime`, over its unix socket):
    /// containerd pulls the images (with its own registry configuration) and runs the pod
    /// sandboxes on its own CNI network.
    Cri,
}

/// Where the nodes' images come from.
#[derive(Clone, Debug, Default)]
pub struct ImageOptions {
    /// Registry mirrors and per-registry settings (`--registry-mirror HOST=URL`,
    /// `--registries-config DIR` in containerd's `hosts.toml` layout). With none, the runc
    /// runtime runs `busybox` and `busybox:1.36` on the host's static busybox without a pull,
    /// so the example manifests work offline; every other image is pulled.
    pub registries: kube_node::pull::RegistryConfig,
    /// Whether any registry setting was given (then nothing is served from the host's
    /// busybox: every image is pulled).
    pub configured: bool,
    /// A node credentials file (Docker's `config.json` format) for every pod's pulls.
    pub credentials_file: Option<PathBuf>,
    /// The Docker Engine socket for [`RuntimeKind::Docker`] (default `/var/run/docker.sock`).
    pub docker_socket: Option<PathBuf>,
    /// containerd's CRI socket for [`RuntimeKind::Cri`] (default [`DEFAULT_CRI_SOCKET`]).
    pub cri_socket: Option<PathBuf>,
}

/// Where containerd serves CRI unless `--cri-socket` says otherwise.
pub const DEFAULT_CRI_SOCKET: &str = "/run/containerd/containerd.sock";

impl ImageOptions {
    /// Takes one of the image flags (`--registry-mirror`, `--registries-config`,
    /// `--credentials-file`, `--docker-socket`, `--cri-socket`) with its value; `false` if
    /// `flag` is none of them.
    pub fn flag(&mut self, flag: &str, value: &str) -> anyhow::Result<bool> {
        match flag {
            "--registry-mirror" => {
                self.registries = std::mem::take(&mut self.registries)
                    .mirror_flag(value)
                    .with_context(|| format!("--registry-mirror {value}"))?;
                self.configured = true;
            }
            "--registries-config" => {
                self.registries = std::mem::take(&mut self.registries)
                    .load_hosts_dir(Path::new(value))
                    .with_context(|| format!("--registries-config {value}"))?;
                self.configured = true;
            }
            "--credentials-file" => self.credentials_file = Some(PathBuf::from(value)),
            "--docker-socket" => self.docker_socket = Some(PathBuf::from(value)),
            "--cri-socket" => self.cri_socket = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The flags [`ImageOptions::flag`] takes, for usage lines.
    pub const USAGE: &str = "[--registry-mirror HOST=URL]... [--registries-config DIR] [--credentials-file FILE] [--docker-socket PATH] [--cri-socket PATH]";
}

/// Where Debian's `busybox-static` puts the binary the OCI image is built from.
const BUSYBOX: &str = kube_node::image::HOST_BUSYBOX;

impl RuntimeKind {
    /// The default for this machine: [`RuntimeKind::Oci`] when running as root with `runc`
    /// on `PATH` and overlayfs in the kernel, else [`RuntimeKind::Process`].
    pub fn detect() -> Self {
        Self::detect_with_reason().0
    }

    /// [`RuntimeKind::detect`], with one line saying what it chose and why (the quickstart
    /// prints it, so a machine missing a part says so instead of leaving pods `Pending`).
    pub fn detect_with_reason() -> (Self, String) {
        let runc = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("runc").is_file()));
        // Pulled images run on overlay mounts.
        let overlayfs = std::fs::read_to_string("/proc/filesystems").is_ok_and(|fs| {
            fs.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        });
        let missing = match (is_root(), runc, overlayfs) {
            (true, true, true) => {
                return (
                    Self::Oci,
                    "runtime: runc containers (root, runc and overlayfs found)".into(),
                );
            }
            (false, _, _) => "not running as root",
            (true, false, _) => "runc not found on PATH (Debian package runc)",
            (true, true, false) => "the kernel has no overlayfs (modprobe overlay)",
        };
        (
            Self::Process,
            format!("runtime: host processes, not runc containers: {missing}"),
        )
    }
}

/// Why pods cannot get their own network namespace and address here, if they cannot: the
/// built-in pod network needs root, and `ip` (iproute2) and `nft` (nftables) for the
/// namespaces and the node's rules; no CNI plugin is needed.
pub fn pod_network_unavailable() -> Option<String> {
    if !is_root() {
        return Some("not running as root".into());
    }
    let on_path = |program: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
    };
    let missing: Vec<&str> = [("ip", "iproute2"), ("nft", "nftables")]
        .into_iter()
        .filter(|(program, _)| !on_path(program))
        .map(|(_, package)| package)
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{} not found on PATH (Debian packages {})",
            if missing.len() == 1 {
                "a program"
            } else {
                "programs"
            },
            missing.join(", ")
        )
    })
}

impl std::str::FromStr for RuntimeKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "process" => Ok(Self::Process),
            "docker" => Ok(Self::Docker),
            "containerd" | "cri" => Ok(Self::Cri),
            "oci" => Ok(Self::Oci),
            "fake" => Ok(Self::Fake),
            other => anyhow::bail!(
                "unknown runtime {other:?} (expected process, oci, docker, containerd or fake)"
            ),
        }
    }
}

/// Where the cluster keeps its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// The durable embedded store in `<data-dir>/store`.
    Durable,
    /// In memory: lost on exit.
    Memory,
    /// etcd v3 at these client URLs (needs the `etcd` cargo feature of this crate).
    Etcd(Vec<String>),
}

impl StoreKind {
    /// Parses `durable`, `memory` or `etcd`; `etcd` takes the endpoints given.
    pub fn parse(name: &str, etcd_endpoints: Vec<String>) -> anyhow::Result<Self> {
        match name {
            "durable" => Ok(Self::Durable),
            "memory" => Ok(Self::Memory),
            "etcd" if etcd_endpoints.is_empty() => {
                anyhow::bail!("--store etcd needs --etcd-endpoints URL[,URL...]")
            }
            "etcd" => Ok(Self::Etcd(etcd_endpoints)),
            other => anyhow::bail!("unknown store {other:?} (expected durable, memory or etcd)"),
        }
    }
}

/// Connects to etcd.
#[cfg(feature = "etcd")]
async fn etcd_store(endpoints: &[String]) -> anyhow::Result<Arc<dyn Store>> {
    let store = kube_store::EtcdStore::connect(kube_store::EtcdConfig::new(endpoints.to_vec()))
        .await
        .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))?;
    // Connecting may be lazy: ask for something so an unreachable etcd is named here.
    store
        .current_revision()
        .await
        .with_context(|| format!("reaching etcd at {}", endpoints.join(",")))?;
    Ok(Arc::new(store))
}

/// Without the `etcd` feature there is no etcd client to connect with.
#[cfg(not(feature = "etcd"))]
async fn etcd_store(_endpoints: &[String]) -> anyhow::Result<Arc<dyn Store>> {
    anyhow::bail!(
        "this build has no etcd client: rebuild with `--features etcd` (needs protoc), e.g. \
         cargo run --release --features etcd --example quickstart -- --store etcd --etcd-endpoints URL"
    )
}

/// How to run a local cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Address of the API server (port 0 picks one).
    pub listen: SocketAddr,
    /// Directory for the store, node state and the kubeconfig.
    pub data_dir: PathBuf,
    /// Number of node agents.
    pub nodes: usize,
    /// Their runtime.
    pub runtime: RuntimeKind,
    /// The store.
    pub store: StoreKind,
    /// When silent nodes are tainted unreachable and their pods evicted.
    pub node_lifecycle: NodeLifecycleConfig,
    /// The pod network of the first node, as root: node `i` (from 1) gets bridge
    /// `kp<base+i-1>` and subnet `10.88.<base+i-1>.0/24` (default 1). Clusters running side
    /// by side on one host need distinct ranges.
    pub pod_network_base: usize,
    /// Where images come from.
    pub images: ImageOptions,
}

impl ClusterConfig {
    /// The range pod addresses come from (each node gets a /24 of it), which
    /// [`ClusterConfig::pod_network_base`] chooses: `10.244.0.0/16` for 1.
    pub fn cluster_cidr(&self) -> String {
        NetworkPlan::new(self.pod_network_base).cluster_cidr
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 6443)),
            data_dir: PathBuf::from("kube-parts-data"),
            nodes: 2,
            runtime: RuntimeKind::detect(),
            store: StoreKind::Durable,
            node_lifecycle: NodeLifecycleConfig::default(),
            pod_network_base: 1,
            images: ImageOptions::default(),
        }
    }
}

/// A running local cluster.
#[derive(Debug)]
pub struct LocalCluster {
    /// The API server's address.
    pub addr: SocketAddr,
    /// The kubeconfig written for kubectl.
    pub kubeconfig: PathBuf,
    /// The store behind the API server.
    pub store: Arc<dyn Store>,
    running: RunningOrchestrator,
}

/// The namespaces every cluster has.
const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

async fn ensure_namespaces(store: &Arc<dyn Store>) -> anyhow::Result<()> {
    for name in SYSTEM_NAMESPACES {
        let namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"},
        }))?;
        match store.create(namespace).await {
            Ok(_) => {}
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(e).context("creating the system namespaces"),
        }
    }
    Ok(())
}

/// Creates the `local-path` StorageClass, the cluster's default, unless it exists.
async fn ensure_default_storage_class(store: &Arc<dyn Store>) -> anyhow::Result<()> {
    let class = kube_core::object::DynamicObject::from_typed(&local_path_storage_class())
        .context("the local-path StorageClass")?;
    match store.create(class).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_already_exists() => Ok(()),
        Err(e) => Err(e).context("creating the local-path StorageClass"),
    }
}

/// A kubeconfig for `server` that trusts the cluster CA and authenticates with a client
/// certificate (files in the PKI directory).
fn kubeconfig_yaml(server: &str, pki: &Path, user: &str) -> String {
    // kubectl reads relative paths from the kubeconfig's own directory, not the working one:
    // with the default data dir (`./kube-parts-data`) they would point nowhere.
    let pki = std::path::absolute(pki).unwrap_or_else(|_| pki.to_path_buf());
    let ca = pki.join("ca.crt");
    let cert = pki.join(format!("{user}.crt"));
    let key = pki.join(format!("{user}.key"));
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-parts\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: {user}\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: kube-parts\n  context:\n    cluster: kube-parts\n    user: {user}\n    namespace: default\ncurrent-context: kube-parts\n",
        ca.display(),
        cert.display(),
        key.display()
    )
}

/// The cluster's PKI directory under a data directory.
pub fn pki_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pki")
}

/// Credentials for a component or user of the cluster whose data directory is `data_dir`:
/// the CA, and a client certificate for `user` in `groups` (issued at first use).
pub fn credentials(
    data_dir: &Path,
    file: &str,
    user: &str,
    groups: &[&str],
) -> anyhow::Result<RemoteAuth> {
    let pki = Pki::load_or_create(pki_dir(data_dir))?;
    let pair = pki.client(file, user, groups)?;
    Ok(RemoteAuth {
        ca_pem: Some(pki.ca_pem().to_string()),
        client_cert: Some((pair.cert_pem, pair.key_pem)),
        token: None,
    })
}

/// Whether this process runs as root (pods then get their own network namespace and IP, and
/// cgroup limits).
fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The pod network of node `node` (1-based) of the cluster planned by `plan`, as root: the
/// built-in routed network, pods taking addresses from the pod CIDR the node IPAM controller
/// gives the node, links and the node's nftables table named `kp<index>n<node>…`. Without
/// root or its programs, pods share the host's network ([`pod_network_unavailable`] says
/// why).
fn pod_network(plan: &NetworkPlan, node: usize) -> PodNetwork {
    if pod_network_unavailable().is_some() {
        return PodNetwork::Host;
    }
    PodNetwork::Routed(
        RoutedConfig::new()
            .cluster_cidr(plan.cluster_cidr.clone())
            .service_cidr(SERVICE_CIDR)
            .link_prefix(format!("{}n{node}", plan.prefix())),
    )
}

/// The root filesystem every image runs on with [`RuntimeKind::Oci`]: busybox with its
/// applets, built once under `images`.
fn busybox_image(images: &Path) -> anyhow::Result<PathBuf> {
    let rootfs = images.join("busybox");
    kube_node::image::busybox_rootfs(&rootfs, Path::new(BUSYBOX)).with_context(|| {
        format!(
            "building the busybox image in {} from {BUSYBOX} (Debian package busybox-static)",
            rootfs.display()
        )
    })
}

/// Image references the OCI runtime answers with the busybox root filesystem: those of the
/// example manifests.
const OCI_IMAGES: [&str; 3] = ["busybox", "busybox:1.36", "docker.io/library/busybox:1.36"];

/// A node's runtime, keeping its state in `dir`; `images` holds the OCI runtime's busybox
/// image. As root, pods are on `network` ([`pod_network`]); `hostNetwork` pods report
/// `node_ip`.
async fn node_runtime(
    kind: RuntimeKind,
    network: PodNetwork,
    node_ip: std::net::IpAddr,
    dir: &Path,
    images: &Path,
    options: &ImageOptions,
) -> anyhow::Result<Arc<dyn Runtime>> {
    Ok(match kind {
        RuntimeKind::Process => {
            let mut builder = ProcessRuntime::builder()
                .root_dir(dir)
                .ip(node_ip.to_string());
            if is_root() {
                builder = builder.cgroups(true).network(network);
            }
            if options.configured {
                // Host processes ignore images unless asked to pull them.
                builder = builder.registries(options.registries.clone());
            }
            Arc::new(
                builder
                    .build()
                    .with_context(|| format!("runtime in {}", dir.display()))?,
            )
        }
        RuntimeKind::Oci => {
            anyhow::ensure!(
                is_root(),
                "--runtime oci needs root (runc, network namespaces, cgroups)"
            );
            let mut builder = OciRuntime::builder()
                .root_dir(dir)
                .network(network)
                .host_ip(node_ip.to_string())
                .registries(options.registries.clone());
            if !options.configured && Path::new(BUSYBOX).is_file() {
                let rootfs = busybox_image(images)?;
                for reference in OCI_IMAGES {
                    builder = builder.image(reference, &rootfs);
                }
            }
            Arc::new(
                builder
                    .build()
                    .with_context(|| format!("the runc runtime in {}", dir.display()))?,
            )
        }
        RuntimeKind::Fake => Arc::new(FakeRuntime::new()),
        RuntimeKind::Docker => {
            let mut builder = kube_node::DockerRuntime::builder();
            if let Some(socket) = &options.docker_socket {
                builder = builder.socket(socket);
            }
            Arc::new(builder.build().await.context("connecting to Docker")?)
        }
        RuntimeKind::Cri => {
            let socket = options
                .cri_socket
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CRI_SOCKET));
            // Container logs go where the agent reads them back: containerd writes them.
            let runtime = kube_node::CriRuntime::connect(&socket, dir.join("pods"))
                .await
                .with_context(|| format!("connecting to containerd at {}", socket.display()))?;
            Arc::new(runtime)
        }
    })
}

impl LocalCluster {
    /// Starts every component and returns once the API server listens.
    pub async fn start(mut config: ClusterConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        // Paths under the data dir end up in places read from elsewhere (the kubeconfig, runc
        // bundles' rootfs): they must not depend on the working directory.
        config.data_dir = std::path::absolute(&config.data_dir)
            .with_context(|| format!("resolving {}", config.data_dir.display()))?;
        let store: Arc<dyn Store> = match &config.store {
            StoreKind::Durable => Arc::new(
                DurableStore::open(config.data_dir.join("store"))
                    .context("opening the durable store")?,
            ),
            StoreKind::Memory => Arc::new(MemStore::new()),
            StoreKind::Etcd(endpoints) => etcd_store(endpoints).await?,
        };
        ensure_namespaces(&store).await?;

        // TLS and authentication: certificates are generated at first start and kept.
        let pki = Pki::load_or_create(pki_dir(&config.data_dir)).context("the cluster PKI")?;
        let plan = NetworkPlan::new(config.pod_network_base);
        // As root, pods have addresses of their own and ClusterIPs are DNATed on the host:
        // the `kubernetes` and `kube-dns` Services then work from pods.
        let routed = pod_network_unavailable().is_none()
            && matches!(config.runtime, RuntimeKind::Process | RuntimeKind::Oci);
        // A control plane without local nodes still serves the cluster network's services
        // (ClusterIPs from this host, the DNS server) to the nodes that join it.
        let network_services = routed || (config.nodes == 0 && pod_network_unavailable().is_none());
        let dns_listen = plan.dns_listen_for(config.listen.ip());
        let kubernetes_service =
            KubernetesService::new([network::advertise_address(config.listen.ip())])
                .service_cidr(SERVICE_CIDR)?;
        let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        hosts.push(config.listen.ip().to_string());
        hosts.extend(kubernetes_service.serving_hosts());
        let serving = pki.serving("apiserver", &hosts)?;
        pki.client("admin", "kubernetes-admin", &["system:masters"])?;
        let security = Security::new(
            pki.server_config(&serving)?,
            TokenSigner::load_or_create(&pki_dir(&config.data_dir).join("sa.key"))?,
        )
        .ca_pem(pki.ca_pem())
        .audit_log(config.data_dir.join("audit.log"));
        let server = ApiServer::secure(
            store.clone(),
            kube_core::kind::Registry::builtin().clone(),
            {
                let mut api_config = ApiServerConfig::default();
                api_config.kubernetes_service = Some(kubernetes_service);
                api_config
            },
            security,
        );
        let (api, addr) = ApiServerComponent::bind(server, config.listen)
            .with_context(|| format!("binding the API server to {}", config.listen))?;
        // How the in-process node agents reach the server (the serving certificate covers
        // `localhost`, `127.0.0.1` and the listen address).
        let local_url = match addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                format!("https://127.0.0.1:{}", addr.port())
            }
            ip if ip.is_unspecified() => format!("https://localhost:{}", addr.port()),
            _ => format!("https://{addr}"),
        };
        // The scheduler, the controller manager and the proxy reach the cluster through the API
        // server under their own identities, as in Kubernetes: RBAC gives each only what its
        // job needs.
        let as_user =
            |file: &str, user: &str, groups: &[&str]| -> anyhow::Result<Arc<RemoteStore>> {
                let pair = pki.client(file, user, groups)?;
                Ok(Arc::new(RemoteStore::with_auth(
                    &local_url,
                    RemoteAuth {
                        ca_pem: Some(pki.ca_pem().to_string()),
                        client_cert: Some((pair.cert_pem, pair.key_pem)),
                        token: None,
                    },
                )?))
            };
        let scheduler_store = as_user("scheduler", SCHEDULER_USER, &[])?;
        let scheduler = OnStore::new(
            scheduler_store.clone(),
            // Kubernetes' scheduling framework with its default plugins, preemption included
            // (a pod of a higher PriorityClass evicts lower ones from a full node).
            SchedulingLoop::with_framework(
                Arc::new(Framework::new()),
                "default-scheduler",
                SchedulingConfig::default(),
            )
            .with_binder(Arc::new(ApiBinder::new(scheduler_store))),
        );
        let controller_manager_store = as_user("controller-manager", CONTROLLER_MANAGER_USER, &[])?;
        let controllers = ControllerManager::new()
            .with_default_controllers(config.node_lifecycle.clone())
            // Pod CIDRs per node (kube-controller-manager's --allocate-node-cidrs), and
            // LoadBalancer addresses as k3s's ServiceLB gives them: the nodes'.
            .with(NodeIpamController::new(NodeIpamConfig {
                cluster_cidrs: vec![plan.cluster_cidr.clone()],
                service_cidrs: vec![SERVICE_CIDR.into()],
                ..NodeIpamConfig::default()
            })?)
            .with(ServiceLbController::new());
        // Claims of the default StorageClass get a directory on the node their pod runs on
        // (k3s's local-path provisioner), under each node's data directory.
        let mut local_path = LocalPathProvisioner::new(config.data_dir.join("storage"));
        for i in 1..=config.nodes {
            let name = format!("node-{i}");
            let root = config.data_dir.join("nodes").join(&name).join("storage");
            local_path = local_path.node_root(name, root);
        }
        let controllers = kube_ctrl::volume::with_provisioner(controllers, Arc::new(local_path));
        ensure_default_storage_class(&store).await?;
        let controllers = OnStore::new(controller_manager_store, controllers);
        let proxy_loop = if network_services {
            ProxyLoop::new(Arc::new(NftProxy::new(NftConfig {
                table: format!("{}-proxy", plan.prefix()),
                pod_cidrs: vec![plan.cluster_cidr.parse()?],
                ..NftConfig::default()
            })))
        } else {
            ProxyLoop::new(Arc::new(UserspaceProxy::new(UserspaceConfig {
                node_addresses: vec![config.listen.ip()],
                cluster_ips: ClusterIpBinding::Off,
                ..UserspaceConfig::default()
            })))
        };
        let mut builder = Orchestrator::builder()
            .store(store.clone())
            .component(api)
            .scheduler(scheduler)
            .controllers(controllers)
            .proxy(OnStore::new(as_user("proxy", PROXY_USER, &[])?, proxy_loop))
            .shutdown_timeout(Duration::from_secs(40));
        if network_services {
            // The cluster DNS server answers from the store's Services, EndpointSlices and
            // Pods, behind the kube-dns Service.
            network::ensure_kube_dns(&store, dns_listen).await?;
            builder = builder
                .component(DnsServer::new(DnsConfig {
                    listen: dns_listen,
                    domain: CLUSTER_DOMAIN.into(),
                    ..DnsConfig::default()
                }))
                // The nodes share this host: one enforcer sees every pod's traffic.
                .component(NetworkPolicyEnforcer::new(NetworkPolicyConfig {
                    table: format!("{}-policy", plan.prefix()),
                    ..NetworkPolicyConfig::default()
                }));
        }
        for i in 1..=config.nodes {
            let name = format!("node-{i}");
            let dir = config.data_dir.join("nodes").join(&name);
            let runtime = node_runtime(
                config.runtime,
                pod_network(&plan, i),
                config.listen.ip(),
                &dir.join("runtime"),
                &config.data_dir.join("images"),
                &config.images,
            )
            .await?;
            // Tokens for pods' projected volumes come from the API server's TokenRequest,
            // asked with the node's own identity (as a kubelet asks).
            let pair = pki.client(
                &format!("kubelet-{name}"),
                &format!("system:node:{name}"),
                &["system:nodes"],
            )?;
            let to_server = Arc::new(RemoteStore::with_auth(
                &local_url,
                RemoteAuth {
                    ca_pem: Some(pki.ca_pem().to_string()),
                    client_cert: Some((pair.cert_pem, pair.key_pem)),
                    token: None,
                },
            )?);
            let agent = NodeAgent::builder(name, runtime)
                .token_source(Arc::new(RemoteTokenSource::new(to_server.clone())))
                // Its kubelet server answers only callers the API server vouches for.
                .kubelet_auth(Arc::new(RemoteKubeletAuth::new(to_server)))
                .root_dir(dir.join("agent"))
                .node_ip(config.listen.ip().to_string())
                .serve(SocketAddr::new(config.listen.ip(), 0))
                .detect_capacity();
            let agent = if routed {
                agent.cluster_dns(vec![KUBE_DNS_IP.into()], CLUSTER_DOMAIN)
            } else {
                agent
            };
            let agent = match &config.images.credentials_file {
                Some(file) => agent.credentials_file(file),
                None => agent,
            }
            .build()
            .context("configuring a node agent")?;
            builder = builder.node(agent);
        }
        let running = builder.build()?.start();
        let kubeconfig = config.data_dir.join("kubeconfig");
        let kubeconfig = std::path::absolute(&kubeconfig).unwrap_or(kubeconfig);
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(
                &format!("https://{addr}"),
                &pki_dir(&config.data_dir),
                "admin",
            ),
        )
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
        Ok(Self {
            addr,
            kubeconfig,
            store,
            running,
        })
    }

    /// Stops every component: pods are stopped, the store is closed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.running.shutdown().await?;
        Ok(())
    }
}

/// How to run a node agent that joins a cluster over the network.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The API server, `https://host:port`.
    pub server: String,
    /// The CA to trust and the node's credentials (a client certificate for
    /// `system:node:<name>` in `system:nodes`, see [`credentials`]).
    pub auth: RemoteAuth,
    /// The node's name.
    pub name: String,
    /// The node's IP, published in its Node object; its kubelet server listens there.
    pub node_ip: std::net::IpAddr,
    /// Where the runtime and agent keep their state.
    pub root_dir: PathBuf,
    /// The runtime.
    pub runtime: RuntimeKind,
    /// The node's index, naming its links and nftables tables as root (`kp<index>n1…`);
    /// nodes sharing a host need distinct ones.
    pub index: usize,
    /// The cluster's pod range (the server's cluster CIDR, default `10.244.0.0/16`): pod
    /// traffic to it is not masqueraded.
    pub cluster_cidr: String,
    /// The cluster DNS server pods are given (the kubelet's `--cluster-dns`, e.g. the
    /// `kube-dns` ClusterIP 10.96.0.10); `None`: pods use the node's resolver.
    pub cluster_dns: Option<std::net::IpAddr>,
    /// How often the node heartbeats (`None`: the agent's default, 10 s).
    pub heartbeat_interval: Option<Duration>,
    /// Where images come from.
    pub images: ImageOptions,
}

/// A node agent joined to a remote API server through [`kube_store::RemoteStore`].
#[derive(Debug)]
pub struct RemoteNode {
    running: RunningOrchestrator,
    /// Where its kubelet server listens (for `kubectl logs`).
    pub kubelet_addr: Option<SocketAddr>,
}

impl RemoteNode {
    /// Connects to the API server and starts the agent.
    pub async fn start(mut config: NodeConfig) -> anyhow::Result<Self> {
        // As for the cluster's data dir: runc bundles name their rootfs by this path.
        config.root_dir = std::path::absolute(&config.root_dir)
            .with_context(|| format!("resolving {}", config.root_dir.display()))?;
        let remote = Arc::new(kube_store::RemoteStore::with_auth(
            &config.server,
            config.auth.clone(),
        )?);
        let store: Arc<dyn Store> = remote.clone();
        store
            .current_revision()
            .await
            .with_context(|| format!("reaching the API server at {}", config.server))?;
        let plan = NetworkPlan {
            index: config.index,
            cluster_cidr: config.cluster_cidr.clone(),
        };
        let network = match config.runtime {
            RuntimeKind::Process | RuntimeKind::Oci => pod_network(&plan, 1),
            _ => PodNetwork::Host,
        };
        let runtime = node_runtime(
            config.runtime,
            network.clone(),
            config.node_ip,
            &config.root_dir.join("runtime"),
            &config.root_dir.join("images"),
            &config.images,
        )
        .await?;
        let mut builder = NodeAgent::builder(config.name.clone(), runtime)
            .token_source(Arc::new(RemoteTokenSource::new(remote.clone())))
            .kubelet_auth(Arc::new(RemoteKubeletAuth::new(remote)))
            .root_dir(config.root_dir.join("agent"))
            .node_ip(config.node_ip.to_string())
            .serve(SocketAddr::new(config.node_ip, 0))
            .detect_capacity();
        if let Some(interval) = config.heartbeat_interval {
            builder = builder.heartbeat_interval(interval);
        }
        if let Some(file) = &config.images.credentials_file {
            builder = builder.credentials_file(file);
        }
        if let Some(dns) = config.cluster_dns {
            builder = builder.cluster_dns(vec![dns], CLUSTER_DOMAIN);
        }
        let agent = builder.build().context("configuring the node agent")?;
        let kubelet_addr = agent.kubelet_addr();
        let mut orchestrator = Orchestrator::builder()
            .store(store)
            .node(agent)
            .shutdown_timeout(Duration::from_secs(40));
        if matches!(network, PodNetwork::Routed(_)) {
            // Like a k3s agent: the node programs ClusterIPs and NodePorts for its pods and its
            // host, and routes to the other nodes' pod CIDRs (host-gw on a shared link, VXLAN
            // elsewhere).
            orchestrator = orchestrator
                .proxy(ProxyLoop::new(Arc::new(NftProxy::new(NftConfig {
                    table: format!("{}-proxy", plan.prefix()),
                    node_name: Some(config.name.clone()),
                    pod_cidrs: vec![plan.cluster_cidr.parse()?],
                    ..NftConfig::default()
                }))))
                .component(NodeRoutes::new(RoutesConfig {
                    vxlan: VxlanConfig {
                        device: format!("{}-vxlan", plan.prefix()),
                        ..VxlanConfig::default()
                    },
                    ..RoutesConfig::new(config.name.clone())
                }));
        }
        let running = orchestrator.build()?.start();
        Ok(Self {
            running,
            kubelet_addr,
        })
    }

    /// Stops the agent and its pods.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.running.shutdown().await?;
        Ok(())
    }
}
