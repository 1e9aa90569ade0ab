//! `ProxyLoop` over a `MemStore`, feeding a `MemoryProxy`.

use std::net::IpAddr;

use kube_core::object::ObjectKey;
use kube_core::proxy::{Endpoint, Protocol, ServiceEntry, ServicePort};
use kube_core::store::Preconditions;
use kube_net::ProxyStats;

use crate::support::{Cluster, endpoints, service};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn backend(address: &str, port: u16, node: &str) -> Endpoint {
    Endpoint {
        ip: ip(address),
        port,
        node_name: Some(node.into()),
        terminating: false,
    }
}

fn web() -> ObjectKey {
    ObjectKey::namespaced("default", "web")
}

#[tokio::test]
async fn service_and_ready_endpoints_are_applied() {
    let cluster = Cluster::new();
    let running = cluster.start();
    // The loop starts with a full sync of the (empty) cluster.
    cluster
        .applied(|_| cluster.proxy.stats().full_syncs == 1)
        .await;

    cluster
        .services
        .create(&service("web", "10.96.0.10"))
        .await
        .unwrap();
    let ready = [["10.0.0.2", "n2"], ["10.0.0.1", "n1"]];
    let not_ready = [["10.0.0.3", "n1"]];
    cluster
        .endpoints
        .create(&endpoints("web", &ready, &not_ready))
        .await
        .unwrap();

    let table = cluster
        .applied(|t| {
            t.services
                .get(&web())
                .is_some_and(|e| !e.ports[0].endpoints.is_empty())
        })
        .await;
    assert_eq!(
        table.services[&web()],
        ServiceEntry {
            cluster_ip: Some(ip("10.96.0.10")),
            ports: vec![
                ServicePort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                    node_port: None,
                    endpoints: vec![
                        backend("10.0.0.1", 8080, "n1"),
                        backend("10.0.0.2", 8080, "n2")
                    ],
                },
                ServicePort {
                    name: "dns".into(),
                    protocol: Protocol::Udp,
                    port: 53,
                    node_port: None,
                    endpoints: vec![
                        backend("10.0.0.1", 5353, "n1"),
                        backend("10.0.0.2", 5353, "n2")
                    ],
                },
            ],
            ..ServiceEntry::default()
        }
    );
    let stats = cluster.proxy.stats();
    assert_eq!(
        stats.full_syncs, 1,
        "changes after the first sync are increments"
    );
    assert!(stats.increments >= 1);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn endpoint_updates_and_service_deletion_are_increments() {
    let cluster = Cluster::new();
    // Objects that exist before the loop starts arrive in its first, full sync.
    cluster
        .services
        .create(&service("web", "10.96.0.10"))
        .await
        .unwrap();
    cluster
        .services
        .create(&service("api", "10.96.0.11"))
        .await
        .unwrap();
    let created = cluster
        .endpoints
        .create(&endpoints("web", &[["10.0.0.1", "n1"]], &[]))
        .await
        .unwrap();
    let running = cluster.start();
    let table = cluster.applied(|t| t.services.len() == 2).await;
    assert_eq!(table.services[&web()].ports[0].endpoints.len(), 1);
    assert_eq!(cluster.proxy.stats().full_syncs, 1);
    assert_eq!(cluster.proxy.stats().increments, 0);

    // A second backend becomes ready.
    let mut updated = endpoints("web", &[["10.0.0.1", "n1"], ["10.0.0.9", "n2"]], &[]);
    updated.metadata.resource_version = created.metadata.resource_version;
    cluster.endpoints.replace(&updated).await.unwrap();
    cluster
        .applied(|t| {
            t.services
                .get(&web())
                .is_some_and(|e| e.ports[0].endpoints.len() == 2)
        })
        .await;

    cluster
        .services
        .delete("web", &Preconditions::default())
        .await
        .unwrap();
    let table = cluster.applied(|t| !t.services.contains_key(&web())).await;
    assert!(
        table
            .services
            .contains_key(&ObjectKey::namespaced("default", "api"))
    );

    let stats = cluster.proxy.stats();
    assert_eq!(stats.full_syncs, 1, "no resync without a failure");
    assert!(stats.increments >= 2, "{stats:?}");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_failing_proxy_is_resynced_in_full() {
    let cluster = Cluster::new();
    cluster
        .services
        .create(&service("web", "10.96.0.10"))
        .await
        .unwrap();
    // The very first sync fails: the loop backs off and syncs again.
    cluster.proxy.fail_next(1);
    let running = cluster.start();
    cluster.applied(|t| t.services.contains_key(&web())).await;
    assert_eq!(
        cluster.proxy.stats(),
        ProxyStats {
            full_syncs: 1,
            increments: 0,
            changes: 0,
            failures: 1
        }
    );

    // An increment fails: the proxy's state is unknown, so the loop syncs everything.
    cluster.proxy.fail_next(1);
    cluster
        .endpoints
        .create(&endpoints("web", &[["10.0.0.1", "n1"]], &[]))
        .await
        .unwrap();
    cluster
        .applied(|t| {
            t.services
                .get(&web())
                .is_some_and(|e| !e.ports[0].endpoints.is_empty())
        })
        .await;
    assert_eq!(
        cluster.proxy.stats(),
        ProxyStats {
            full_syncs: 2,
            increments: 0,
            changes: 0,
            failures: 2
        }
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn endpoint_slices_take_precedence_over_endpoints_and_fall_back() {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube_core::typed::Api;

    use crate::support::slice;

    let cluster = Cluster::new();
    let running = cluster.start();
    cluster
        .services
        .create(&service("web", "10.96.0.10"))
        .await
        .unwrap();
    cluster
        .endpoints
        .create(&endpoints("web", &[["10.0.0.1", "n1"]], &[]))
        .await
        .unwrap();
    let http = |t: &kube_core::proxy::ServiceTable| -> Vec<Endpoint> {
        t.services
            .get(&web())
            .map(|e| e.ports[0].endpoints.clone())
            .unwrap_or_default()
    };
    cluster
        .applied(|t| http(t) == vec![backend("10.0.0.1", 8080, "n1")])
        .await;

    // Slices win over Endpoints; a not-ready but terminating (serving) endpoint is kept,
    // flagged, for the data plane's fallback; a not-ready, not-terminating one is left out.
    let slices: Api<EndpointSlice> = Api::namespaced(cluster.store.clone(), "default");
    slices
        .create(&slice(
            "web-a",
            "web",
            "http",
            "TCP",
            9090,
            &[
                ("10.0.1.1", "n1", true, false),
                ("10.0.1.2", "n2", false, true),
                ("10.0.1.3", "n2", false, false),
            ],
        ))
        .await
        .unwrap();
    let mut terminating = backend("10.0.1.2", 9090, "n2");
    terminating.terminating = true;
    cluster
        .applied(|t| http(t) == vec![backend("10.0.1.1", 9090, "n1"), terminating.clone()])
        .await;

    // Without slices, the Endpoints are used again.
    slices
        .delete("web-a", &Preconditions::default())
        .await
        .unwrap();
    cluster
        .applied(|t| http(t) == vec![backend("10.0.0.1", 8080, "n1")])
        .await;
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn changes_are_batched_by_the_minimum_sync_interval_and_measured() {
    use std::time::Duration;

    use kube_core::orchestrator::Orchestrator;
    use kube_core::workqueue::Backoff;
    use kube_net::{ProxyLoop, ProxyLoopConfig};

    let cluster = Cluster::new();
    let proxy_loop = ProxyLoop::with_config(
        cluster.proxy.clone(),
        ProxyLoopConfig {
            backoff: Backoff {
                base: Duration::from_millis(10),
                max: Duration::from_millis(100),
            },
            min_sync_interval: Duration::from_millis(300),
        },
    );
    let metrics = proxy_loop.metrics();
    let running = Orchestrator::builder()
        .store(cluster.store.clone())
        .proxy(proxy_loop)
        .build()
        .unwrap()
        .start();
    cluster
        .applied(|_| cluster.proxy.stats().full_syncs == 1)
        .await;
    for i in 0..20 {
        cluster
            .services
            .create(&service(&format!("svc-{i}"), &format!("10.96.1.{i}")))
            .await
            .unwrap();
    }
    cluster.applied(|t| t.services.len() == 20).await;
    let stats = cluster.proxy.stats();
    assert!(
        stats.increments <= 3,
        "20 quick changes arrive in a few batches, not 20 calls: {stats:?}"
    );
    let m = metrics.get();
    assert_eq!((m.services, m.service_ports, m.endpoints), (20, 40, 0));
    assert_eq!(m.full_syncs, 1);
    assert_eq!(m.increments, stats.increments);
    assert!(m.max_sync_latency >= m.last_sync_latency);
    running.shutdown().await.unwrap();
}
