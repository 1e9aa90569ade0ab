//! Service and Endpoints builders, and a running orchestrator with a proxy loop.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_core::orchestrator::{Orchestrator, RunningOrchestrator};
use kube_core::proxy::{Proxy, ServiceTable};
use kube_core::store::Store;
use kube_core::typed::Api;
use kube_core::workqueue::Backoff;
use kube_net::{MemoryProxy, ProxyLoop, ProxyLoopConfig};
use kube_store::MemStore;
use serde_json::{Value, json};

/// The store, the typed APIs the tests write with, and the proxy the loop feeds.
pub(crate) struct Cluster {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) services: Api<Service>,
    pub(crate) endpoints: Api<Endpoints>,
    pub(crate) proxy: Arc<MemoryProxy>,
}

impl Cluster {
    pub(crate) fn new() -> Self {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        Self {
            services: Api::namespaced(store.clone(), "default"),
            endpoints: Api::namespaced(store.clone(), "default"),
            store,
            proxy: Arc::new(MemoryProxy::new()),
        }
    }

    /// Starts an orchestrator with only the proxy loop (fast backoff, for tests).
    pub(crate) fn start(&self) -> RunningOrchestrator {
        self.start_with(self.proxy.clone())
    }

    /// Starts an orchestrator with only a proxy loop feeding `proxy`.
    pub(crate) fn start_with(&self, proxy: Arc<dyn Proxy>) -> RunningOrchestrator {
        let config = ProxyLoopConfig {
            backoff: Backoff {
                base: Duration::from_millis(10),
                max: Duration::from_millis(100),
            },
            min_sync_interval: Duration::from_millis(10),
        };
        Orchestrator::builder()
            .store(self.store.clone())
            .proxy(ProxyLoop::with_config(proxy, config))
            .build()
            .unwrap()
            .start()
    }

    /// Waits (at most 5 s) until the proxy's table satisfies `predicate`.
    pub(crate) async fn applied(
        &self,
        predicate: impl FnMut(&ServiceTable) -> bool,
    ) -> ServiceTable {
        tokio::time::timeout(Duration::from_secs(5), self.proxy.wait_for(predicate))
            .await
            .unwrap_or_else(|_| panic!("timed out; applied table is {:?}", self.proxy.table()))
    }
}

/// A ClusterIP service with an `http` (80 → 8080) and a `dns` (53/UDP) port.
pub(crate) fn service(name: &str, cluster_ip: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "clusterIP": cluster_ip,
            "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"}
            ]
        }
    }))
    .unwrap()
}

/// Endpoints with these ready and not-ready addresses (`[ip, node]` pairs) behind the `http`
/// (8080) and `dns` (5353) ports.
pub(crate) fn endpoints(name: &str, ready: &[[&str; 2]], not_ready: &[[&str; 2]]) -> Endpoints {
    let addresses = |list: &[[&str; 2]]| -> Value {
        list.iter()
            .map(|[ip, node]| json!({"ip": ip, "nodeName": node}))
            .collect()
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "subsets": [{
            "addresses": addresses(ready),
            "notReadyAddresses": addresses(not_ready),
            "ports": [
                {"name": "http", "port": 8080, "protocol": "TCP"},
                {"name": "dns", "port": 5353, "protocol": "UDP"}
            ]
        }]
    }))
    .unwrap()
}

/// A service from raw JSON `spec` in namespace `default`.
pub(crate) fn service_spec(name: &str, spec: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec
    }))
    .unwrap()
}

/// An EndpointSlice of service `service` with `(ip, node, ready, terminating)` endpoints behind
/// one port named `port_name` (`protocol`) at `port`.
pub(crate) fn slice(
    name: &str,
    service: &str,
    port_name: &str,
    protocol: &str,
    port: u16,
    endpoints: &[(&str, &str, bool, bool)],
) -> EndpointSlice {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, node, ready, terminating)| {
            json!({
                "addresses": [ip],
                "nodeName": node,
                "conditions": {"ready": ready, "serving": *ready || *terminating, "terminating": terminating}
            })
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": service}
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": port_name, "port": port, "protocol": protocol}]
    }))
    .unwrap()
}

/// Endpoints with these ready addresses behind one port `port_name` at `port`.
pub(crate) fn endpoints_on(
    name: &str,
    ready: &[[&str; 2]],
    port_name: &str,
    port: u16,
) -> Endpoints {
    let addresses: Vec<Value> = ready
        .iter()
        .map(|[ip, node]| json!({"ip": ip, "nodeName": node}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "subsets": [{"addresses": addresses, "ports": [{"name": port_name, "port": port}]}]
    }))
    .unwrap()
}

/// Retries `check` every 50 ms for up to 5 s until it returns true.
pub(crate) async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}
