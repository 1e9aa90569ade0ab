//! `UserspaceProxy` behind a `ProxyLoop`, carrying real traffic to real pod processes on
//! loopback addresses. Each test uses its own 127.N.0.0/16 so tests can run in parallel.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kube_core::proxy::Protocol;
use kube_core::store::Preconditions;
use kube_core::typed::Api;
use kube_net::{ClusterIpBinding, UserspaceConfig, UserspaceProxy};
use serde_json::json;
use tokio::net::UdpSocket;

use crate::pods::{Pod, Session, ask, ask_from, ask_udp};
use crate::support::{Cluster, endpoints, eventually, service_spec, slice};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn proxy(net: u8) -> Arc<UserspaceProxy> {
    Arc::new(UserspaceProxy::new(UserspaceConfig {
        node_name: Some("node-a".into()),
        node_addresses: vec![format!("127.{net}.0.1").parse().unwrap()],
        cluster_ips: ClusterIpBinding::Local,
        drain_timeout: Duration::from_secs(30),
        udp_idle_timeout: Duration::from_secs(5),
        ..UserspaceConfig::default()
    }))
}

/// Names answering `n` connections to `to`.
async fn names(to: SocketAddr, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        seen.insert(ask(to).await.unwrap_or_else(|e| format!("error: {e}")));
    }
    seen
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn clusterip_and_nodeport_traffic_reaches_the_pods() {
    let cluster = Cluster::new();
    let proxy = proxy(21);
    let running = cluster.start_with(proxy.clone());
    let a = Pod::start("pod-a", "127.21.0.2", 8080).await;
    let b = Pod::start("pod-b", "127.21.0.3", 8080).await;
    cluster
        .services
        .create(&service_spec(
            "web",
            json!({"type": "NodePort", "clusterIP": "127.21.0.10", "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080}
            ]}),
        ))
        .await
        .unwrap();
    // Endpoints (not slices): the fallback source. Named target port "http" resolved to 8080.
    cluster
        .endpoints
        .create(&crate::support::endpoints_on(
            "web",
            &[["127.21.0.2", "node-a"], ["127.21.0.3", "node-b"]],
            "http",
            8080,
        ))
        .await
        .unwrap();
    let cluster_ip = addr("127.21.0.10:80");
    let node_port = addr("127.21.0.1:30080");
    eventually("ClusterIP balances over both pods", || async {
        names(cluster_ip, 4).await == set(&[&a.name, &b.name])
    })
    .await;
    eventually("NodePort balances over both pods", || async {
        names(node_port, 4).await == set(&[&a.name, &b.name])
    })
    .await;
    running.shutdown().await.unwrap();
    drop((a, b));
}

#[tokio::test]
async fn traffic_moves_off_endpoints_that_turn_not_ready_die_or_are_deleted() {
    let cluster = Cluster::new();
    let proxy = proxy(22);
    let running = cluster.start_with(proxy.clone());
    let a = Pod::start("pod-a", "127.22.0.2", 8080).await;
    let b = Pod::start("pod-b", "127.22.0.3", 8080).await;
    let c = Pod::start("pod-c", "127.22.0.4", 8080).await;
    cluster
        .services
        .create(&service_spec(
            "web",
            json!({"clusterIP": "127.22.0.10", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}),
        ))
        .await
        .unwrap();
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(cluster.store.clone(), "default");
    let all = [
        ("127.22.0.2", "node-a", true, false),
        ("127.22.0.3", "node-a", true, false),
        ("127.22.0.4", "node-a", true, false),
    ];
    let created = slices
        .create(&slice("web-1", "web", "http", "TCP", 8080, &all))
        .await
        .unwrap();
    let vip = addr("127.22.0.10:80");
    eventually("all three pods serve", || async {
        names(vip, 6).await == set(&["pod-a", "pod-b", "pod-c"])
    })
    .await;

    // A long-lived connection to pod-a survives pod-a leaving the endpoints (drain).
    let mut session = loop {
        let s = Session::open(vip).await;
        if s.name == "pod-a" {
            break s;
        }
    };
    // pod-a turns not ready: new connections avoid it.
    let mut next = slice(
        "web-1",
        "web",
        "http",
        "TCP",
        8080,
        &[
            ("127.22.0.2", "node-a", false, false),
            ("127.22.0.3", "node-a", true, false),
            ("127.22.0.4", "node-a", true, false),
        ],
    );
    next.metadata.resource_version = created.metadata.resource_version.clone();
    let created = slices.replace(&next).await.unwrap();
    eventually("not-ready pod-a gets no new connections", || async {
        names(vip, 6).await == set(&["pod-b", "pod-c"])
    })
    .await;
    session.echo("still there").await.unwrap();

    // pod-c dies while still listed: its refused connects are retried on pod-b.
    c.kill().await;
    assert_eq!(names(vip, 6).await, set(&["pod-b"]));

    // pod-c's endpoint is deleted, pod-b is terminating (but serving): with no ready endpoint
    // left, the serving-terminating one is used.
    let mut next = slice(
        "web-1",
        "web",
        "http",
        "TCP",
        8080,
        &[("127.22.0.3", "node-a", false, true)],
    );
    next.metadata.resource_version = created.metadata.resource_version;
    slices.replace(&next).await.unwrap();
    eventually("only pod-c's endpoint is gone", || async {
        proxy.endpoints((Protocol::Tcp, vip)).await == vec![addr("127.22.0.3:8080")]
    })
    .await;
    assert_eq!(names(vip, 4).await, set(&["pod-b"]));
    session.echo("drained, not cut").await.unwrap();

    // The slice goes away: no endpoints, connections are closed at once.
    slices
        .delete("web-1", &Preconditions::default())
        .await
        .unwrap();
    eventually("no endpoints", || async {
        proxy.endpoints((Protocol::Tcp, vip)).await.is_empty()
    })
    .await;
    assert!(ask(vip).await.is_err());
    running.shutdown().await.unwrap();
    assert!(session.closed().await, "shutdown cuts drained connections");
    drop((a, b));
}

#[tokio::test]
async fn client_ip_affinity_keeps_a_client_on_one_endpoint() {
    let cluster = Cluster::new();
    let proxy = proxy(23);
    let running = cluster.start_with(proxy.clone());
    let _a = Pod::start("pod-a", "127.23.0.2", 8080).await;
    let _b = Pod::start("pod-b", "127.23.0.3", 8080).await;
    cluster
        .services
        .create(&service_spec(
            "web",
            json!({
                "clusterIP": "127.23.0.10",
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}]
            }),
        ))
        .await
        .unwrap();
    cluster
        .endpoints
        .create(&endpoints(
            "web",
            &[["127.23.0.2", "node-a"], ["127.23.0.3", "node-a"]],
            &[],
        ))
        .await
        .unwrap();
    let vip = addr("127.23.0.10:80");
    eventually("both endpoints programmed", || async {
        proxy.endpoints((Protocol::Tcp, vip)).await.len() == 2
    })
    .await;
    let mut seen_by_client = Vec::new();
    for client in ["127.23.0.100", "127.23.0.101", "127.23.0.102"] {
        let from = client.parse().unwrap();
        let first = ask_from(vip, from).await.unwrap();
        for _ in 0..8 {
            assert_eq!(ask_from(vip, from).await.unwrap(), first, "client {client}");
        }
        seen_by_client.push(first);
    }
    // Three clients over two pods round robin: both pods got a client.
    let distinct: BTreeSet<_> = seen_by_client.into_iter().collect();
    assert_eq!(distinct.len(), 2);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn udp_flows_reach_the_pods_and_local_traffic_policy_applies() {
    let cluster = Cluster::new();
    let proxy = proxy(24);
    let running = cluster.start_with(proxy.clone());
    let _a = Pod::start("pod-a", "127.24.0.2", 5353).await;
    let _b = Pod::start("pod-b", "127.24.0.3", 5353).await;
    cluster
        .services
        .create(&service_spec(
            "dns",
            json!({
                "type": "NodePort",
                "clusterIP": "127.24.0.10",
                "externalTrafficPolicy": "Local",
                "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}]
            }),
        ))
        .await
        .unwrap();
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(cluster.store.clone(), "default");
    slices
        .create(&slice(
            "dns-1",
            "dns",
            "dns",
            "UDP",
            5353,
            &[
                ("127.24.0.2", "node-a", true, false),
                ("127.24.0.3", "node-b", true, false),
            ],
        ))
        .await
        .unwrap();
    let vip = addr("127.24.0.10:53");
    eventually("udp listener programmed", || async {
        proxy.endpoints((Protocol::Udp, vip)).await.len() == 2
    })
    .await;
    // Each client socket is one flow; flows are balanced round robin.
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let first = ask_udp(&client, vip).await.unwrap();
        // A flow sticks to its endpoint.
        assert_eq!(ask_udp(&client, vip).await.unwrap(), first);
        seen.insert(first);
    }
    assert_eq!(seen, set(&["pod-a", "pod-b"]));
    // externalTrafficPolicy: Local — the NodePort only reaches this node's pod.
    let node_port = addr("127.24.0.1:30053");
    for _ in 0..4 {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(ask_udp(&client, node_port).await.unwrap(), "pod-a");
    }
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_leaves_no_listener_or_connection() {
    let cluster = Cluster::new();
    let proxy = proxy(25);
    let running = cluster.start_with(proxy.clone());
    let _a = Pod::start("pod-a", "127.25.0.2", 8080).await;
    cluster
        .services
        .create(&service_spec(
            "web",
            json!({"type": "NodePort", "clusterIP": "127.25.0.10", "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 8080}
            ]}),
        ))
        .await
        .unwrap();
    cluster
        .endpoints
        .create(&crate::support::endpoints_on(
            "web",
            &[["127.25.0.2", "node-a"]],
            "http",
            8080,
        ))
        .await
        .unwrap();
    let vip = addr("127.25.0.10:80");
    eventually("serving", || async { ask(vip).await.is_ok() }).await;
    assert_eq!(
        proxy.listening().await.len(),
        3,
        "{:?}",
        proxy.listening().await
    );
    let session = Session::open(vip).await;
    assert!(proxy.active_tasks() >= 1);

    running.shutdown().await.unwrap();
    assert!(proxy.listening().await.is_empty());
    assert_eq!(proxy.active_tasks(), 0);
    assert!(session.closed().await);
    for to in [vip, addr("127.25.0.1:30080")] {
        let refused = tokio::net::TcpStream::connect(to).await;
        assert!(refused.is_err(), "{to} still accepts");
    }
    // The UDP port can be bound again: nobody holds it.
    std::net::UdpSocket::bind("127.25.0.10:53").unwrap();
}

#[tokio::test]
async fn cluster_ips_are_added_to_an_interface_and_removed_on_shutdown() {
    let test = "cluster_ips_are_added_to_an_interface_and_removed_on_shutdown";
    if !crate::netns::tools_present(test) {
        return;
    }
    let ns = crate::netns::Netns::new();
    let name = ns.name.clone();
    // The whole scenario runs on a thread inside the namespace: the proxy's sockets, the `ip`
    // commands it runs and the pods it talks to all live there.
    let addresses_after = ns
        .run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let _pod = Pod::start("pod-a", "127.0.0.2", 8080).await;
                let cluster = Cluster::new();
                let proxy = Arc::new(UserspaceProxy::new(UserspaceConfig {
                    node_addresses: vec!["127.0.0.1".parse().unwrap()],
                    cluster_ips: ClusterIpBinding::Interface("lo".into()),
                    ..UserspaceConfig::default()
                }));
                let running = cluster.start_with(proxy.clone());
                cluster
                    .services
                    .create(&service_spec(
                        "web",
                        json!({"clusterIP": "10.96.0.20", "ports": [
                            {"name": "http", "port": 80, "targetPort": 8080}
                        ]}),
                    ))
                    .await
                    .unwrap();
                cluster
                    .endpoints
                    .create(&crate::support::endpoints_on(
                        "web",
                        &[["127.0.0.2", "node-a"]],
                        "http",
                        8080,
                    ))
                    .await
                    .unwrap();
                let vip = addr("10.96.0.20:80");
                eventually("ClusterIP served from lo", || async {
                    ask(vip).await.as_deref() == Ok("pod-a")
                })
                .await;
                let during = show_lo(&name);
                assert!(during.contains("10.96.0.20/32"), "{during}");
                running.shutdown().await.unwrap();
                assert!(ask(vip).await.is_err());
                show_lo(&name)
            })
        })
        .await;
    assert!(!addresses_after.contains("10.96.0.20"), "{addresses_after}");
}

/// External IPs and a load balancer's ingress IP are served like the ClusterIP: one not on the
/// host goes on the interface (and away on shutdown), one the host already has (a node address,
/// as ServiceLB hands out) is bound where it is and left alone; an ingress that goes away stops
/// being served.
#[tokio::test]
async fn external_ips_and_load_balancer_ingress_are_served_and_released() {
    let test = "external_ips_and_load_balancer_ingress_are_served_and_released";
    if !crate::netns::tools_present(test) {
        return;
    }
    let ns = crate::netns::Netns::new();
    // The "node address" the ingress names, already on the host.
    ns.ip(&["addr", "add", "192.168.50.1/32", "dev", "lo"]);
    let name = ns.name.clone();
    let (during, after) = ns
        .run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let _pod = Pod::start("pod-a", "127.0.0.2", 8080).await;
                let cluster = Cluster::new();
                let proxy = Arc::new(UserspaceProxy::new(UserspaceConfig {
                    node_addresses: vec!["127.0.0.1".parse().unwrap()],
                    cluster_ips: ClusterIpBinding::Interface("lo".into()),
                    ..UserspaceConfig::default()
                }));
                let running = cluster.start_with(proxy.clone());
                let mut service = service_spec(
                    "web",
                    json!({"type": "LoadBalancer", "clusterIP": "10.96.0.40",
                        "externalIPs": ["198.51.100.7"],
                        "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}),
                );
                service.status = Some(
                    serde_json::from_value(json!({"loadBalancer": {"ingress": [
                        {"ip": "192.168.50.1", "ipMode": "VIP"}
                    ]}}))
                    .unwrap(),
                );
                let created = cluster.services.create(&service).await.unwrap();
                cluster
                    .endpoints
                    .create(&crate::support::endpoints_on(
                        "web",
                        &[["127.0.0.2", "node-a"]],
                        "http",
                        8080,
                    ))
                    .await
                    .unwrap();
                for to in ["198.51.100.7:80", "192.168.50.1:80", "10.96.0.40:80"] {
                    eventually(to, || async {
                        ask(addr(to)).await.as_deref() == Ok("pod-a")
                    })
                    .await;
                }
                let during = show_lo(&name);
                // The ingress leaves: its listener closes.
                let mut next = created.clone();
                next.status = None;
                cluster.services.replace(&next).await.unwrap();
                eventually("ingress no longer served", || async {
                    ask(addr("192.168.50.1:80")).await.is_err()
                })
                .await;
                assert_eq!(ask(addr("198.51.100.7:80")).await.as_deref(), Ok("pod-a"));
                running.shutdown().await.unwrap();
                (during, show_lo(&name))
            })
        })
        .await;
    assert!(during.contains("198.51.100.7/32"), "{during}");
    assert!(!after.contains("198.51.100.7"), "{after}");
    assert!(
        after.contains("192.168.50.1/32"),
        "not ours to remove: {after}"
    );
}

fn show_lo(netns: &str) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", netns, "addr", "show", "dev", "lo"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn unprivileged_mode_serves_cluster_ips_on_configured_local_addresses() {
    let cluster = Cluster::new();
    let proxy = Arc::new(UserspaceProxy::new(UserspaceConfig {
        node_addresses: vec![],
        cluster_ips: ClusterIpBinding::Addresses(vec!["127.27.0.1".parse().unwrap()]),
        ..UserspaceConfig::default()
    }));
    let running = cluster.start_with(proxy.clone());
    let _a = Pod::start("pod-a", "127.27.0.2", 8080).await;
    // The ClusterIP itself is not local (and need not be): its port is served on 127.27.0.1.
    cluster
        .services
        .create(&service_spec(
            "web",
            json!({"clusterIP": "10.96.0.30", "ports": [{"name": "http", "port": 8081, "targetPort": 8080}]}),
        ))
        .await
        .unwrap();
    cluster
        .endpoints
        .create(&crate::support::endpoints_on(
            "web",
            &[["127.27.0.2", "node-a"]],
            "http",
            8080,
        ))
        .await
        .unwrap();
    let local = addr("127.27.0.1:8081");
    eventually("served on the local address", || async {
        ask(local).await.as_deref() == Ok("pod-a")
    })
    .await;
    assert_eq!(proxy.listening().await, vec![(Protocol::Tcp, local)]);
    running.shutdown().await.unwrap();
}

/// Several accept loops share a frontend through SO_REUSEPORT: every connection is served, and
/// after shutdown no socket of the group is left listening (a leftover would accept
/// connections nobody serves).
#[tokio::test]
async fn several_accept_loops_share_a_frontend_and_all_close() {
    let cluster = Cluster::new();
    let proxy = Arc::new(UserspaceProxy::new(UserspaceConfig {
        node_name: Some("node-a".into()),
        node_addresses: vec![],
        accept_loops: 3,
        ..UserspaceConfig::default()
    }));
    let running = cluster.start_with(proxy.clone());
    let _a = Pod::start("pod-a", "127.26.0.2", 8080).await;
    cluster
        .services
        .create(&service_spec(
            "web",
            json!({"clusterIP": "127.26.0.10", "ports": [
                {"name": "http", "port": 80, "targetPort": 8080}
            ]}),
        ))
        .await
        .unwrap();
    cluster
        .endpoints
        .create(&crate::support::endpoints_on(
            "web",
            &[["127.26.0.2", "node-a"]],
            "http",
            8080,
        ))
        .await
        .unwrap();
    let vip = addr("127.26.0.10:80");
    eventually("serving", || async { ask(vip).await.is_ok() }).await;
    assert_eq!(names(vip, 60).await, BTreeSet::from(["pod-a".to_string()]));

    running.shutdown().await.unwrap();
    for _ in 0..30 {
        let refused = tokio::net::TcpStream::connect(vip).await;
        assert!(refused.is_err(), "a listening socket was left behind");
    }
}
