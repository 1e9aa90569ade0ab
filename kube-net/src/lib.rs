//! Service networking: feed a [`Proxy`](kube_core::proxy::Proxy) data plane the cluster's
//! services, and data planes that carry the traffic.
//!
//! - [`ProxyLoop`] implements [`kube_core::orchestrator::Component`]: from the orchestrator's
//!   shared Service, EndpointSlice and Endpoints informers it builds the
//!   [`ServiceTable`](kube_core::proxy::ServiceTable) (ClusterIP and NodePort, TCP and UDP,
//!   ready endpoints with the serving-terminating fallback, ClientIP affinity, traffic
//!   policies), hands it to any `Arc<dyn Proxy>` in full once, then as batched increments at
//!   most every `min_sync_interval`, resyncs in full after a failure, reports
//!   [`ProxyMetrics`], and calls `Proxy::shutdown` when the orchestrator stops.
//! - [`UserspaceProxy`]: a tokio L4 proxy listening on ClusterIPs and NodePorts itself (round
//!   robin or ClientIP affinity, retry on refusal, UDP flows, splice for bulk TCP, draining).
//! - [`NftProxy`]: an nftables data plane (one `inet` table for IPv4 and IPv6, DNAT with
//!   numgen balancing, affinity sets, masquerading as kube-proxy does, each sync one atomic
//!   transaction, removed on shutdown).
//! - [`MemoryProxy`] implements `Proxy` in memory: a reference data plane for tests and
//!   examples, which counts how it was fed and can wait for a table or fail on demand.
//! - [`NetworkPolicyEnforcer`]: a component enforcing Kubernetes NetworkPolicies for the
//!   node's pods in an nftables table of its own (forward hook, conntrack first, sets and
//!   verdict maps keyed by pod address, one atomic transaction per sync, removed on shutdown).
//! - [`DnsServer`]: the cluster DNS as a component (the Kubernetes DNS specification: A/AAAA
//!   for ClusterIP and headless Services, endpoint hostnames, SRV, PTR, ExternalName CNAMEs,
//!   pod names, NXDOMAIN vs NODATA with SOA), over UDP with truncation and TCP, forwarding
//!   other names upstream.
//! - [`NodeRoutes`]: a component beside each node agent routing to the other nodes' pod CIDRs
//!   over netlink, host-gw where the node is on a shared link and a VXLAN overlay elsewhere
//!   (flannel's backends), all removed on shutdown.
//!
//! # Usage
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use kube_core::api::Service;
//! use kube_core::object::ObjectKey;
//! use kube_core::store::Store;
//! use kube_core::typed::Api;
//! use kube_core::Orchestrator;
//! use kube_net::{MemoryProxy, ProxyLoop};
//! use kube_store::MemStore;
//!
//! let store: Arc<dyn Store> = Arc::new(MemStore::new());
//! let proxy = Arc::new(MemoryProxy::new());
//! let running = Orchestrator::builder()
//!     .store(store.clone())
//!     .proxy(ProxyLoop::new(proxy.clone()))
//!     .build()?
//!     .start();
//!
//! let service: Service = serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "web", "namespace": "default"},
//!     "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}
//! }))?;
//! Api::<Service>::namespaced(store, "default").create(&service).await?;
//!
//! let key = ObjectKey::namespaced("default", "web");
//! let table = proxy.wait_for(|t| t.services.contains_key(&key)).await;
//! assert_eq!(table.services[&key].ports[0].port, 80);
//! running.shutdown().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod cmd;
mod desired;
mod dns;
mod error;
mod memory;
mod metrics;
mod nft;
mod policy;
mod proxy_loop;
mod routes;
mod select;
mod slices;
mod userspace;

pub use dns::{DnsConfig, DnsServer, PodRecords};
pub use error::{Error, Result};
pub use memory::{MemoryProxy, ProxyStats};
pub use metrics::ProxyMetrics;
pub use nft::{Balancing, Cidr, NftConfig, NftProxy, NftStats};
pub use policy::{
    NetworkPolicyConfig, NetworkPolicyEnforcer, NetworkPolicyStats, NetworkPolicyStatsHandle,
};
pub use proxy_loop::{ProxyLoop, ProxyLoopConfig, ProxyMetricsHandle};
pub use routes::{
    BACKEND_DATA_ANNOTATION, Backend, DEFAULT_ROUTE_PROTOCOL, NodeRoutes, RouteError, RoutesConfig,
    VxlanConfig,
};
pub use userspace::{ClusterIpBinding, ListenerKey, UserspaceConfig, UserspaceProxy};

#[cfg(test)]
mod assertions {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        send_sync::<MemoryProxy>();
        send_sync::<ProxyLoop>();
        send_sync::<ProxyLoopConfig>();
        send_sync::<UserspaceProxy>();
        send_sync::<NftProxy>();
        send_sync::<DnsServer>();
        send_sync::<Error>();
    }
}
