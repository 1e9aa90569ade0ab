//! The `kubernetes` Service: how pods find the API server.
//!
//! While it serves, kube-apiserver keeps Service `default/kubernetes` (the first address of
//! the service range, port 443 `https` to the server's own port), and its Endpoints and
//! EndpointSlice naming the server's advertised addresses: created when missing, put back
//! when changed, checked every 10 s (Kubernetes' `kubernetesservice` controller and its
//! endpoint reconciler). Pods reach it as `https://kubernetes.default.svc`, or through the
//! `KUBERNETES_SERVICE_HOST`/`_PORT` variables the node agent sets from this Service, and
//! verify it with the cluster CA: the serving certificate must name the Service, see
//! [`KubernetesService::serving_hosts`].
//!
//! One API server per store: the Endpoints list exactly this server's addresses (Kubernetes'
//! lease reconciler, which merges several servers' addresses, is not implemented).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_core::store::{Store, StoreError};
use kube_core::typed::Api;
use tokio_util::sync::CancellationToken;

/// The Service's name, in namespace [`NAMESPACE`].
pub const NAME: &str = "kubernetes";
/// The namespace of the Service, its Endpoints and its EndpointSlice.
pub const NAMESPACE: &str = "default";
/// The Service's port (its `https` port; the target is the server's own port).
pub const SERVICE_PORT: i32 = 443;

/// How the `kubernetes` Service is kept: which addresses the API server advertises, on which
/// port, and the Service's ClusterIP. Set [`crate::ApiServerConfig::kubernetes_service`] to
/// it; with no address to advertise nothing is kept.
///
/// ```
/// use kube_apiserver::KubernetesService;
/// let service = KubernetesService::new(["192.168.1.10".parse().unwrap()])
///     .service_cidr("10.96.0.0/12")
///     .unwrap();
/// assert_eq!(service.cluster_ip().to_string(), "10.96.0.1");
/// assert!(service.serving_hosts().contains(&"kubernetes.default.svc".to_string()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesService {
    advertise: Vec<IpAddr>,
    port: Option<u16>,
    cluster_ip: IpAddr,
    cluster_domain: String,
    interval: Duration,
}

/// A service CIDR that has no first address to give.
#[derive(Debug, thiserror::Error)]
#[error("invalid service CIDR {0:?} (want e.g. 10.96.0.0/12)")]
pub struct InvalidServiceCidr(pub String);

/// The first address of a service range (`10.96.0.1` for `10.96.0.0/12`), which Kubernetes
/// reserves for the `kubernetes` Service.
pub fn first_service_ip(cidr: &str) -> Result<IpAddr, InvalidServiceCidr> {
    let bad = || InvalidServiceCidr(cidr.to_string());
    let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u32 = len.parse().map_err(|_| bad())?;
    match addr {
        IpAddr::V4(v4) => {
            // A /31 or /32 has no usable first address after the network's.
            if len > 30 {
                return Err(bad());
            }
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            Ok(IpAddr::V4(Ipv4Addr::from((u32::from(v4) & mask) + 1)))
        }
        IpAddr::V6(v6) => {
            if len > 126 {
                return Err(bad());
            }
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            Ok(IpAddr::V6((u128::from(v6) & mask).wrapping_add(1).into()))
        }
    }
}

impl KubernetesService {
    /// Advertises `addresses` (unspecified ones such as `0.0.0.0` are dropped: no client can
    /// reach them) on the server's listening port, with ClusterIP 10.96.0.1, the first address
    /// of Kubernetes' default range `10.96.0.0/12`, which kube-ctrl's `ServiceAllocator` uses
    /// too.
    pub fn new(addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut advertise: Vec<IpAddr> = addresses
            .into_iter()
            .filter(|ip| !ip.is_unspecified())
            .collect();
        advertise.sort();
        advertise.dedup();
        Self {
            advertise,
            port: None,
            cluster_ip: IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)),
            cluster_domain: "cluster.local".into(),
            interval: Duration::from_secs(10),
        }
    }

    /// The ClusterIP: the first address of `cidr` (the range ClusterIPs are allocated from).
    pub fn service_cidr(mut self, cidr: &str) -> Result<Self, InvalidServiceCidr> {
        self.cluster_ip = first_service_ip(cidr)?;
        Ok(self)
    }

    /// Advertises `port` instead of the port the server listens on (a server behind a port
    /// mapping).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The cluster's DNS domain, for the serving certificate's names (default `cluster.local`).
    pub fn cluster_domain(mut self, domain: impl Into<String>) -> Self {
        self.cluster_domain = domain.into();
        self
    }

    /// How often the objects are checked and repaired (Kubernetes: 10 s).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The addresses advertised.
    pub fn addresses(&self) -> &[IpAddr] {
        &self.advertise
    }

    /// The Service's ClusterIP.
    pub fn cluster_ip(&self) -> IpAddr {
        self.cluster_ip
    }

    /// The names and address a client in the cluster reaches the server by, which the serving
    /// certificate must carry (hand them to [`crate::Pki::serving`] with the others):
    /// `kubernetes`, `kubernetes.default`, `kubernetes.default.svc`,
    /// `kubernetes.default.svc.<domain>`, the ClusterIP and the advertised addresses.
    pub fn serving_hosts(&self) -> Vec<String> {
        let svc = format!("{NAME}.{NAMESPACE}.svc");
        let mut hosts = vec![
            NAME.to_string(),
            format!("{NAME}.{NAMESPACE}"),
            format!("{svc}.{}", self.cluster_domain),
            svc,
            self.cluster_ip.to_string(),
        ];
        hosts.extend(self.advertise.iter().map(ToString::to_string));
        hosts
    }
}

/// The objects as the server wants them, for a server listening on `port`.
struct Desired {
    service: Service,
    endpoints: Endpoints,
    slices: Vec<EndpointSlice>,
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

impl Desired {
    fn new(config: &KubernetesService, port: u16) -> Self {
        let port = i32::from(port);
        let mut service = Service {
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                cluster_ip: Some(config.cluster_ip.to_string()),
                cluster_ips: Some(vec![config.cluster_ip.to_string()]),
                ip_families: Some(vec![family(&config.cluster_ip).into()]),
                ip_family_policy: Some("SingleStack".into()),
                internal_traffic_policy: Some("Cluster".into()),
                session_affinity: Some("None".into()),
                ports: Some(vec![ServicePort {
                    name: Some("https".into()),
                    protocol: Some("TCP".into()),
                    port: SERVICE_PORT,
                    target_port: Some(IntOrString::Int(port)),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        service.metadata.labels = Some(labels(&[
            ("component", "apiserver"),
            ("provider", "kubernetes"),
        ]));
        let mut endpoints = Endpoints {
            subsets: Some(vec![EndpointSubset {
                addresses: Some(
                    config
                        .advertise
                        .iter()
                        .map(|ip| EndpointAddress {
                            ip: ip.to_string(),
                            ..EndpointAddress::default()
                        })
                        .collect(),
                ),
                ports: Some(vec![EndpointPort {
                    name: Some("https".into()),
                    port,
                    protocol: Some("TCP".into()),
                    ..EndpointPort::default()
                }]),
                ..EndpointSubset::default()
            }]),
            ..Endpoints::default()
        };
        // As Kubernetes marks it: its slice is written here, not mirrored from the Endpoints.
        endpoints.metadata.labels = Some(labels(&[(
            "endpointslice.kubernetes.io/skip-mirror",
            "true",
        )]));
        // One slice per family, named as Kubernetes names them (`kubernetes` for the
        // Service's family).
        let families: Vec<&str> = {
            let mut f: Vec<&str> = config.advertise.iter().map(family).collect();
            f.sort_by_key(|fam| *fam != family(&config.cluster_ip));
            f.dedup();
            f
        };
        let slices = families
            .iter()
            .enumerate()
            .map(|(i, fam)| {
                let mut slice = EndpointSlice {
                    address_type: (*fam).into(),
                    endpoints: config
                        .advertise
                        .iter()
                        .filter(|ip| family(ip) == *fam)
                        .map(|ip| Endpoint {
                            addresses: vec![ip.to_string()],
                            conditions: Some(EndpointConditions {
                                ready: Some(true),
                                ..EndpointConditions::default()
                            }),
                            ..Endpoint::default()
                        })
                        .collect(),
                    ports: Some(vec![SlicePort {
                        name: Some("https".into()),
                        port: Some(port),
                        protocol: Some("TCP".into()),
                        ..SlicePort::default()
                    }]),
                    ..EndpointSlice::default()
                };
                slice.metadata.name = Some(if i == 0 {
                    NAME.to_string()
                } else {
                    format!("{NAME}-{}", fam.to_ascii_lowercase())
                });
                slice.metadata.labels = Some(labels(&[("kubernetes.io/service-name", NAME)]));
                slice
            })
            .collect();
        for meta in [&mut service.metadata, &mut endpoints.metadata] {
            meta.name = Some(NAME.into());
            meta.namespace = Some(NAMESPACE.into());
        }
        Self {
            service,
            endpoints,
            slices,
        }
    }
}

/// Adds `want`'s labels to `have`'s, reporting whether any was missing or different.
fn merge_labels(
    have: &mut Option<BTreeMap<String, String>>,
    want: &Option<BTreeMap<String, String>>,
) -> bool {
    let mut changed = false;
    let have = have.get_or_insert_with(BTreeMap::new);
    for (k, v) in want.iter().flatten() {
        if have.get(k) != Some(v) {
            have.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    changed
}

/// What the Service needs changed, if anything: its ports, type, selector (none) and session
/// affinity, and its labels. The ClusterIP is left as it is (immutable, as in Kubernetes).
fn repaired_service(have: &Service, want: &Service) -> Option<Service> {
    let mut fixed = have.clone();
    let spec = fixed.spec.get_or_insert_with(ServiceSpec::default);
    let want_spec = want.spec.clone().unwrap_or_default();
    let mut changed = merge_labels(&mut fixed.metadata.labels, &want.metadata.labels);
    if spec.ports != want_spec.ports {
        spec.ports = want_spec.ports;
        changed = true;
    }
    if spec.type_ != want_spec.type_ {
        spec.type_ = want_spec.type_;
        changed = true;
    }
    if spec.selector.as_ref().is_some_and(|s| !s.is_empty()) {
        spec.selector = None;
        changed = true;
    }
    if spec.session_affinity != want_spec.session_affinity {
        spec.session_affinity = want_spec.session_affinity;
        spec.session_affinity_config = None;
        changed = true;
    }
    if spec.cluster_ip.as_deref().is_none_or(str::is_empty) {
        spec.cluster_ip = want_spec.cluster_ip;
        spec.cluster_ips = want_spec.cluster_ips;
        changed = true;
    }
    changed.then_some(fixed)
}

/// Creates `want` if missing; otherwise lets `repair` say what to write instead of `have`.
async fn ensure<K>(
    api: &Api<K>,
    want: &K,
    name: &str,
    repair: impl FnOnce(&K) -> Option<K>,
) -> Result<(), StoreError>
where
    K: kube_core::typed::Resource,
{
    match api.get_opt(name).await? {
        None => match api.create(want).await {
            Ok(_) => Ok(()),
            // Created meanwhile: the next round looks at it.
            Err(e) if e.is_already_exists() => Ok(()),
            Err(e) => Err(e),
        },
        Some(have) => match repair(&have) {
            Some(fixed) => match api.replace(&fixed).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_conflict() || e.is_not_found() => Ok(()),
                Err(e) => Err(e),
            },
            None => Ok(()),
        },
    }
}

/// Brings the Service, its Endpoints and its EndpointSlices to what `config` says, for a
/// server listening on `port`, once.
pub async fn reconcile(
    store: &Arc<dyn Store>,
    config: &KubernetesService,
    port: u16,
) -> Result<(), StoreError> {
    let want = Desired::new(config, config.port.unwrap_or(port));
    let services: Api<Service> = Api::namespaced(store.clone(), NAMESPACE);
    ensure(&services, &want.service, NAME, |have| {
        repaired_service(have, &want.service)
    })
    .await?;
    let endpoints: Api<Endpoints> = Api::namespaced(store.clone(), NAMESPACE);
    ensure(&endpoints, &want.endpoints, NAME, |have| {
        let mut fixed = have.clone();
        let labels = merge_labels(&mut fixed.metadata.labels, &want.endpoints.metadata.labels);
        let subsets = fixed.subsets != want.endpoints.subsets;
        fixed.subsets.clone_from(&want.endpoints.subsets);
        (labels || subsets).then_some(fixed)
    })
    .await?;
    let slices: Api<EndpointSlice> = Api::namespaced(store.clone(), NAMESPACE);
    for slice in &want.slices {
        let name = slice.metadata.name.clone().unwrap_or_default();
        ensure(&slices, slice, &name, |have| {
            let mut fixed = have.clone();
            let labels = merge_labels(&mut fixed.metadata.labels, &slice.metadata.labels);
            // The address type is immutable: a slice of another type is replaced whole, by a
            // delete here and a create next round.
            if fixed.address_type != slice.address_type {
                return None;
            }
            let body = fixed.endpoints != slice.endpoints || fixed.ports != slice.ports;
            fixed.endpoints.clone_from(&slice.endpoints);
            fixed.ports.clone_from(&slice.ports);
            (labels || body).then_some(fixed)
        })
        .await?;
        if let Some(have) = slices.get_opt(&name).await? {
            if have.address_type != slice.address_type {
                let pre = kube_core::store::Preconditions::default();
                match slices.delete(&name, &pre).await {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

/// Keeps the objects until `shutdown`: at once, then every interval. Failures are logged and
/// tried again next round (the store may be briefly unavailable).
pub(crate) async fn run(
    store: Arc<dyn Store>,
    config: KubernetesService,
    port: u16,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(error) = reconcile(&store, &config, port).await {
            tracing::warn!(%error, "keeping the kubernetes Service");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_address_of_a_range() {
        let first = |c: &str| first_service_ip(c).map(|ip| ip.to_string()).ok();
        assert_eq!(first("10.96.0.0/12").as_deref(), Some("10.96.0.1"));
        assert_eq!(first("10.100.7.9/16").as_deref(), Some("10.100.0.1"));
        assert_eq!(first("fd00:96::/108").as_deref(), Some("fd00:96::1"));
        assert_eq!(first("10.0.0.0/31"), None);
        assert_eq!(first("10.0.0.0"), None);
        assert_eq!(first("nonsense/8"), None);
    }

    #[test]
    fn unspecified_addresses_are_not_advertised() {
        let config = KubernetesService::new(["0.0.0.0".parse().unwrap()]);
        assert!(config.addresses().is_empty());
    }
}
