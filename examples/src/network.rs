//! The cluster network of a local cluster: which addresses pods and Services get, where the
//! cluster DNS server answers and the `kube-dns` Service that fronts it, and which service
//! data plane runs.
//!
//! As root every pod gets its own network namespace and an address from its node's pod CIDR
//! (allocated by the node IPAM controller from the cluster CIDR), ClusterIPs are DNATed by
//! nftables on the host (so they work from pods and from the host), and the DNS server runs
//! behind `kube-system/kube-dns` (10.96.0.10, the tenth address of the service range, as
//! kubeadm's). Without root, pods share the host's network and the userspace proxy serves
//! NodePorts only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use kube_core::store::Store;
use serde_json::json;

/// The cluster's DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// The range ClusterIPs come from (Kubernetes' default, which kube-ctrl's allocator uses).
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// The `kube-dns` Service's ClusterIP: the tenth address of [`SERVICE_CIDR`].
pub const KUBE_DNS_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// The network plan of one local cluster, derived from its pod network index so that
/// clusters side by side on one host (tests) use distinct addresses, links and tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkPlan {
    /// The index (`pod_network_base`).
    pub index: usize,
    /// The pods' range: `10.244.0.0/16` for index 1, `10.<245-index>.0.0/16` otherwise.
    pub cluster_cidr: String,
}

impl NetworkPlan {
    /// The plan for pod network index `index` (1 to 100).
    pub fn new(index: usize) -> Self {
        let second = 245usize.saturating_sub(index.clamp(1, 100));
        Self {
            index,
            cluster_cidr: format!("10.{second}.0.0/16"),
        }
    }

    /// A short prefix naming everything this cluster makes on the host (links, the nftables
    /// tables): `kp<index>`.
    pub fn prefix(&self) -> String {
        format!("kp{}", self.index)
    }

    /// Where the DNS server answers on the host: `127.0.<index>.53:53` (a loopback address of
    /// its own, so it clashes with no local resolver), reached from pods through the
    /// `kube-dns` ClusterIP.
    pub fn dns_listen(&self) -> SocketAddr {
        let third = u8::try_from(self.index % 256).unwrap_or(1);
        SocketAddr::from((Ipv4Addr::new(127, 0, third, 53), 53))
    }

    /// Where the DNS server of a control plane listening on `listen` answers: that address
    /// (port 53) when it is a routable one, so nodes on other hosts reach it, else
    /// [`NetworkPlan::dns_listen`].
    pub fn dns_listen_for(&self, listen: IpAddr) -> SocketAddr {
        if listen.is_loopback() || listen.is_unspecified() {
            self.dns_listen()
        } else {
            SocketAddr::new(listen, 53)
        }
    }
}

/// Creates (or puts back) `kube-system/kube-dns` with ClusterIP [`KUBE_DNS_IP`] and, since it
/// selects no pods, its Endpoints and EndpointSlice naming the DNS server at `dns`, as a
/// cluster whose DNS server runs outside pods has them.
pub async fn ensure_kube_dns(store: &Arc<dyn Store>, dns: SocketAddr) -> anyhow::Result<()> {
    let labels = json!({
        "k8s-app": "kube-dns",
        "kubernetes.io/cluster-service": "true",
        "kubernetes.io/name": "KubeDNS",
    });
    let ip = dns.ip().to_string();
    let port = i32::from(dns.port());
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
        "spec": {
            "clusterIP": KUBE_DNS_IP.to_string(), "clusterIPs": [KUBE_DNS_IP.to_string()],
            "type": "ClusterIP", "sessionAffinity": "None",
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": port},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": port},
            ],
        },
        "status": {"loadBalancer": {}},
    });
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
        "subsets": [{
            "addresses": [{"ip": ip}],
            "ports": [
                {"name": "dns", "port": port, "protocol": "UDP"},
                {"name": "dns-tcp", "port": port, "protocol": "TCP"},
            ],
        }],
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {
            "k8s-app": "kube-dns",
            "kubernetes.io/service-name": "kube-dns",
            "endpointslice.kubernetes.io/managed-by": "kube-parts.io/local-cluster",
        }},
        "addressType": if dns.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [
            {"name": "dns", "port": port, "protocol": "UDP"},
            {"name": "dns-tcp", "port": port, "protocol": "TCP"},
        ],
    });
    for object in [service, endpoints, slice] {
        put(store, object).await?;
    }
    Ok(())
}

/// Creates `object`, or replaces the stored one (a restart with another DNS address).
async fn put(store: &Arc<dyn Store>, object: serde_json::Value) -> anyhow::Result<()> {
    let mut object: kube_core::object::DynamicObject =
        serde_json::from_value(object).context("a kube-dns object")?;
    let (kind, key) = (object.group_kind(), object.key());
    match store.create(object.clone()).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_already_exists() => {
            let current = store.get(&kind, &key).await?;
            // The ClusterIP of a stored Service stays; only the rest is brought back.
            object.metadata.resource_version = current.metadata.resource_version.clone();
            object.metadata.uid = current.metadata.uid.clone();
            object.metadata.creation_timestamp = current.metadata.creation_timestamp.clone();
            store
                .update(object)
                .await
                .with_context(|| format!("updating {kind:?} {key:?}"))?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("creating {kind:?} {key:?}")),
    }
}

/// The address pods and remote nodes reach the API server at, for the `kubernetes` Service:
/// the listening address, or loopback when it listens on every address.
pub fn advertise_address(listen: IpAddr) -> IpAddr {
    if listen.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        listen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_side_by_side_do_not_overlap() {
        assert_eq!(NetworkPlan::new(1).cluster_cidr, "10.244.0.0/16");
        assert_eq!(NetworkPlan::new(31).cluster_cidr, "10.214.0.0/16");
        assert_eq!(
            NetworkPlan::new(31).dns_listen(),
            "127.0.31.53:53".parse().unwrap()
        );
        assert_eq!(NetworkPlan::new(7).prefix(), "kp7");
        let plan = NetworkPlan::new(2);
        assert_eq!(
            plan.dns_listen_for("127.0.0.1".parse().unwrap()),
            "127.0.2.53:53".parse().unwrap()
        );
        assert_eq!(
            plan.dns_listen_for("10.1.2.3".parse().unwrap()),
            "10.1.2.3:53".parse().unwrap()
        );
    }
}
