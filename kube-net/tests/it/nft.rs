//! `NftProxy` behind a `ProxyLoop`, DNATing real traffic inside a network namespace the test
//! creates (never the host's ruleset).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use kube_core::proxy::Proxy;
use kube_core::store::Preconditions;
use kube_net::{NftConfig, NftProxy};
use serde_json::json;

use crate::netns::{Netns, tools_present};
use crate::pods::{Pod, ask_blocking, ask_udp_blocking};
use crate::support::{Cluster, endpoints, eventually, service_spec};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Greetings from `n` connections to `to`, made from inside `ns`.
async fn names(ns: &Netns, to: SocketAddr, n: usize) -> BTreeSet<String> {
    ns.run(move || {
        (0..n)
            .map(|_| ask_blocking(to).unwrap_or_else(|e| format!("error: {e}")))
            .collect()
    })
    .await
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn nftables_dnats_real_traffic_in_a_network_namespace() {
    if !tools_present("nftables_dnats_real_traffic_in_a_network_namespace") {
        return;
    }
    let ns = Netns::new();
    // Pods and the node address live on a veth end (this kernel has no dummy driver); ClusterIPs are routed to it so
    // that the output hook sees the packets (DNAT happens after the route lookup).
    ns.ip(&[
        "link", "add", "pods0", "type", "veth", "peer", "name", "pods1",
    ]);
    ns.ip(&["link", "set", "pods1", "up"]);
    for a in ["10.244.0.2/32", "10.244.0.3/32", "192.168.77.1/32"] {
        ns.ip(&["addr", "add", a, "dev", "pods0"]);
    }
    ns.ip(&["link", "set", "pods0", "up"]);
    ns.ip(&["route", "add", "10.96.0.0/12", "dev", "pods0"]);
    let pod_a = Pod::start_in(Some(&ns.name), "pod-a", "10.244.0.2", 8080).await;
    let pod_b = Pod::start_in(Some(&ns.name), "pod-b", "10.244.0.3", 8080).await;

    let cluster = Cluster::new();
    let proxy = Arc::new(NftProxy::new(NftConfig {
        table: "kube-net-test".into(),
        netns: Some(ns.name.clone()),
        node_name: Some("node-a".into()),
        ..NftConfig::default()
    }));
    let running = cluster.start_with(proxy.clone());
    cluster
        .services
        .create(&service_spec(
            "web",
            json!({"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}
            ]}),
        ))
        .await
        .unwrap();
    cluster
        .services
        .create(&service_spec(
            "sticky",
            json!({"clusterIP": "10.96.0.11", "sessionAffinity": "ClientIP",
                   "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}),
        ))
        .await
        .unwrap();
    cluster
        .services
        .create(&service_spec(
            "empty",
            json!({"clusterIP": "10.96.0.12", "ports": [{"name": "http", "port": 80}]}),
        ))
        .await
        .unwrap();
    let both = [["10.244.0.2", "node-a"], ["10.244.0.3", "node-a"]];
    let web = cluster.endpoints.create(&dual("web", &both)).await.unwrap();
    cluster
        .endpoints
        .create(&endpoints("sticky", &both, &[]))
        .await
        .unwrap();
    eventually("three services programmed", || async {
        proxy.applied().await.unwrap().services.len() >= 3
            && proxy.stats().await.rules > 0
            && proxy
                .applied()
                .await
                .unwrap()
                .services
                .values()
                .all(|e| e.ports.is_empty() || e.ports.iter().all(|p| p.port == 80 || p.port == 53))
    })
    .await;
    eventually("endpoints programmed", || async {
        proxy
            .applied()
            .await
            .unwrap()
            .services
            .values()
            .filter(|e| e.ports.iter().any(|p| p.endpoints.len() == 2))
            .count()
            == 2
    })
    .await;
    assert!(
        ns.nft(&["list", "table", "ip", "kube-net-test"])
            .contains("dnat ip"),
        "the table holds DNAT rules"
    );

    // ClusterIP and NodePort reach both pods.
    assert_eq!(
        names(&ns, addr("10.96.0.10:80"), 24).await,
        set(&["pod-a", "pod-b"])
    );
    assert_eq!(
        names(&ns, addr("192.168.77.1:30080"), 24).await,
        set(&["pod-a", "pod-b"])
    );
    // UDP too: the pods answer datagrams on 8080; the service maps 53 to 5353, so re-point it.
    let udp = ns
        .run(|| ask_udp_blocking("10.244.0.2:8080".parse().unwrap()))
        .await;
    assert_eq!(udp.as_deref(), Ok("pod-a"), "pod answers UDP directly");
    let udp = ns
        .run(|| ask_udp_blocking("10.96.0.10:53".parse().unwrap()))
        .await
        .unwrap();
    assert!(udp == "pod-a" || udp == "pod-b", "{udp}");
    // Affinity: one client address keeps one pod.
    let sticky = names(&ns, addr("10.96.0.11:80"), 12).await;
    assert_eq!(sticky.len(), 1, "{sticky:?}");
    // No endpoints: refused at once rather than hanging.
    let empty = names(&ns, addr("10.96.0.12:80"), 1).await;
    assert!(empty.iter().all(|e| e.contains("refused")), "{empty:?}");

    // A new service whose shape already exists (TCP, two endpoints) is an increment: a few
    // map elements in one small transaction, not a rewrite of the table.
    cluster
        .services
        .create(&service_spec(
            "api",
            json!({"clusterIP": "10.96.0.13", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}),
        ))
        .await
        .unwrap();
    cluster
        .endpoints
        .create(&endpoints("api", &both, &[]))
        .await
        .unwrap();
    eventually("api programmed", || async {
        proxy.applied().await.unwrap().services.values().any(|e| {
            e.cluster_ip == Some("10.96.0.13".parse().unwrap()) && e.ports[0].endpoints.len() == 2
        })
    })
    .await;
    let stats = proxy.stats().await;
    assert!(stats.script_bytes < 1000, "an increment: {stats:?}");
    assert_eq!(
        names(&ns, addr("10.96.0.13:80"), 24).await,
        set(&["pod-a", "pod-b"])
    );

    // pod-a leaves the endpoints: traffic moves to pod-b only.
    let mut next = dual("web", &[["10.244.0.3", "node-a"]]);
    next.metadata.resource_version = web.metadata.resource_version;
    cluster.endpoints.replace(&next).await.unwrap();
    eventually("pod-a removed", || async {
        proxy.applied().await.unwrap().services.values().any(|e| {
            e.ports
                .iter()
                .any(|p| p.port == 80 && p.endpoints.len() == 1)
        })
    })
    .await;
    assert_eq!(names(&ns, addr("10.96.0.10:80"), 12).await, set(&["pod-b"]));
    cluster
        .services
        .delete("web", &Preconditions::default())
        .await
        .unwrap();
    eventually("web removed", || async {
        proxy.applied().await.unwrap().services.len() == 3
    })
    .await;

    // Shutdown removes the table: nothing of ours is left in the namespace.
    running.shutdown().await.unwrap();
    let tables = ns.nft(&["list", "tables"]);
    assert!(!tables.contains("kube-net-test"), "{tables}");
    drop((pod_a, pod_b));
}

/// Endpoints with `http` on 8080 and `dns` on 8080/UDP (the test pods serve both on 8080).
fn dual(name: &str, ready: &[[&str; 2]]) -> k8s_openapi::api::core::v1::Endpoints {
    let addresses: Vec<serde_json::Value> = ready
        .iter()
        .map(|[ip, node]| json!({"ip": ip, "nodeName": node}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "subsets": [{"addresses": addresses, "ports": [
            {"name": "http", "port": 8080, "protocol": "TCP"},
            {"name": "dns", "port": 8080, "protocol": "UDP"}
        ]}]
    }))
    .unwrap()
}
