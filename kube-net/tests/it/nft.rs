//! `NftProxy` behind a `ProxyLoop`, DNATing real traffic inside a network namespace the test
//! creates (never the host's ruleset).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use kube_core::object::ObjectKey;
use kube_core::proxy::{Endpoint, Protocol, Proxy, ServiceEntry, ServicePort, ServiceTable};
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
        ns.nft(&["list", "table", "inet", "kube-net-test"])
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

/// A one-port TCP service (`port` → endpoints at 8080) with an optional NodePort.
fn entry(cluster_ip: &str, node_port: Option<u16>, endpoints: &[(&str, &str)]) -> ServiceEntry {
    ServiceEntry {
        cluster_ip: Some(cluster_ip.parse().unwrap()),
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port,
            endpoints: endpoints
                .iter()
                .map(|(ip, node)| Endpoint {
                    ip: ip.parse().unwrap(),
                    port: 8080,
                    node_name: Some((*node).into()),
                    terminating: false,
                })
                .collect(),
        }],
        ..ServiceEntry::default()
    }
}

fn services(entries: Vec<(&str, ServiceEntry)>) -> ServiceTable {
    ServiceTable {
        services: entries
            .into_iter()
            .map(|(name, e)| (ObjectKey::namespaced("default", name), e))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// The greeting of `to` asked from inside `ns` (an error string when it fails).
async fn ask_in(ns: &Netns, to: &str) -> String {
    let to = addr(to);
    ns.run(move || ask_blocking(to).unwrap_or_else(|e| format!("error: {e}")))
        .await
}

/// Three namespaces as three machines: a client on 10.1.0.0/24, this node routing between it
/// and the pod network 10.2.0.0/16 (a pod on 10.2.0.0/24, another on 10.2.1.0/24), IPv6 beside
/// IPv4. The pod greets each connection with the source address it sees.
#[tokio::test]
async fn nftables_masquerades_cluster_policy_and_keeps_the_client_address_for_local() {
    if !tools_present("nftables_masquerades_cluster_policy_and_keeps_the_client_address_for_local")
    {
        return;
    }
    let (client, node, pod, other_pod) = (Netns::new(), Netns::new(), Netns::new(), Netns::new());
    node.link(
        "n0",
        &["10.1.0.1/24", "fd00:1::1/64"],
        &client,
        "c0",
        &["10.1.0.2/24", "fd00:1::2/64"],
    );
    node.link(
        "n1",
        &["10.2.0.1/24", "fd00:2::1/64"],
        &pod,
        "p0",
        &["10.2.0.2/24", "fd00:2::2/64"],
    );
    node.link("n2", &["10.2.1.1/24"], &other_pod, "q0", &["10.2.1.2/24"]);
    node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    node.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    client.ip(&["route", "add", "default", "via", "10.1.0.1"]);
    client.ip(&["-6", "route", "add", "default", "via", "fd00:1::1"]);
    pod.ip(&["route", "add", "default", "via", "10.2.0.1"]);
    pod.ip(&["-6", "route", "add", "default", "via", "fd00:2::1"]);
    other_pod.ip(&["route", "add", "default", "via", "10.2.1.1"]);
    let _pod4 = Pod::start_peer_echo(&pod.name, "10.2.0.2", 8080).await;
    let _pod6 = Pod::start_peer_echo(&pod.name, "fd00:2::2", 8080).await;
    // Without the proxy the pod sees the client as it is.
    assert_eq!(ask_in(&client, "10.2.0.2:8080").await, "10.1.0.2");

    let proxy = NftProxy::new(NftConfig {
        table: "kube-net-masq".into(),
        netns: Some(node.name.clone()),
        node_name: Some("node-a".into()),
        pod_cidrs: vec![
            "10.2.0.0/16".parse().unwrap(),
            "fd00:2::/64".parse().unwrap(),
        ],
        ..NftConfig::default()
    });
    let mut local = entry("10.96.0.21", Some(30081), &[("10.2.0.2", "node-a")]);
    local.external_traffic_local = true;
    let table = services(vec![
        // The endpoint counts as on another node: replies must come back through this one.
        (
            "remote",
            entry("10.96.0.20", Some(30080), &[("10.2.0.2", "node-b")]),
        ),
        ("local", local),
        (
            "remote6",
            entry("fd00:96::20", Some(30082), &[("fd00:2::2", "node-b")]),
        ),
    ]);
    let result = proxy.sync(&table).await;
    let cleanup = async {
        proxy.shutdown().await.unwrap();
        let tables = node.nft(&["list", "tables"]);
        assert!(!tables.contains("kube-net-masq"), "{tables}");
    };
    if let Err(e) = result {
        cleanup.await;
        panic!("sync failed: {e} ({:?})", std::error::Error::source(&e));
    }

    // NodePort, Cluster policy: masqueraded to the node's address towards the pod.
    assert_eq!(ask_in(&client, "10.1.0.1:30080").await, "10.2.0.1");
    assert_eq!(ask_in(&client, "[fd00:1::1]:30082").await, "fd00:2::1");
    // NodePort, Local policy: the pod sees the client.
    assert_eq!(ask_in(&client, "10.1.0.1:30081").await, "10.1.0.2");
    // ClusterIP from outside the pod network: masqueraded; from a pod: not.
    assert_eq!(ask_in(&client, "10.96.0.20:80").await, "10.2.0.1");
    assert_eq!(ask_in(&client, "[fd00:96::20]:80").await, "fd00:2::1");
    assert_eq!(ask_in(&other_pod, "10.96.0.20:80").await, "10.2.1.2");
    // A pod reaching itself through a service (hairpin) is masqueraded too, or its reply
    // would come from and go to itself.
    assert_eq!(ask_in(&pod, "10.96.0.21:80").await, "10.2.0.1");
    cleanup.await;
}

/// External IPs and load balancer ingress IPs DNAT like ClusterIPs: an external IP routed to
/// this node, and this node's own address on the service port (ServiceLB's ingress).
/// `externalTrafficPolicy: Cluster` masquerades them, `Local` keeps the client's address.
#[tokio::test]
async fn nftables_dnats_external_and_load_balancer_ips() {
    if !tools_present("nftables_dnats_external_and_load_balancer_ips") {
        return;
    }
    let (client, node, pod) = (Netns::new(), Netns::new(), Netns::new());
    node.link("n0", &["10.1.0.1/24"], &client, "c0", &["10.1.0.2/24"]);
    node.link("n1", &["10.2.0.1/24"], &pod, "p0", &["10.2.0.2/24"]);
    node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    client.ip(&["route", "add", "default", "via", "10.1.0.1"]);
    pod.ip(&["route", "add", "default", "via", "10.2.0.1"]);
    let _pod = Pod::start_peer_echo(&pod.name, "10.2.0.2", 8080).await;

    let proxy = NftProxy::new(NftConfig {
        table: "kube-net-ext".into(),
        netns: Some(node.name.clone()),
        node_name: Some("node-a".into()),
        pod_cidrs: vec!["10.2.0.0/16".parse().unwrap()],
        ..NftConfig::default()
    });
    let mut cluster = entry("10.96.0.30", None, &[("10.2.0.2", "node-b")]);
    cluster.external_ips = vec!["203.0.113.5".parse().unwrap(), "10.1.0.1".parse().unwrap()];
    let mut local = entry("10.96.0.31", None, &[("10.2.0.2", "node-a")]);
    local.ports[0].port = 81;
    local.external_ips = vec!["10.1.0.1".parse().unwrap()];
    local.external_traffic_local = true;
    let mut nobody_here = entry("10.96.0.32", None, &[("10.2.0.2", "node-b")]);
    nobody_here.ports[0].port = 82;
    nobody_here.external_ips = vec!["10.1.0.1".parse().unwrap()];
    nobody_here.external_traffic_local = true;
    let table = services(vec![
        ("cluster", cluster),
        ("local", local),
        ("nobody-here", nobody_here),
    ]);
    let result = proxy.sync(&table).await;
    let cleanup = async {
        proxy.shutdown().await.unwrap();
        let tables = node.nft(&["list", "tables"]);
        assert!(!tables.contains("kube-net-ext"), "{tables}");
    };
    if let Err(e) = result {
        cleanup.await;
        panic!("sync failed: {e} ({:?})", std::error::Error::source(&e));
    }
    // Cluster policy: the pod sees the node's address.
    assert_eq!(ask_in(&client, "203.0.113.5:80").await, "10.2.0.1");
    assert_eq!(ask_in(&client, "10.1.0.1:80").await, "10.2.0.1");
    // Local policy with a local endpoint: the pod sees the client.
    assert_eq!(ask_in(&client, "10.1.0.1:81").await, "10.1.0.2");
    // Local policy without one: refused at once, not sent elsewhere.
    let refused = ask_in(&client, "10.1.0.1:82").await;
    assert!(refused.starts_with("error"), "{refused}");
    cleanup.await;
}

/// IPv6 ClusterIPs and NodePorts DNAT to IPv6 endpoints (ULA addresses inside a namespace),
/// beside an IPv4 service in the same table.
#[tokio::test]
async fn nftables_dnats_ipv6_services() {
    if !tools_present("nftables_dnats_ipv6_services") {
        return;
    }
    let ns = Netns::new();
    ns.ip(&[
        "link", "add", "pods0", "type", "veth", "peer", "name", "pods1",
    ]);
    ns.ip(&["link", "set", "pods1", "up"]);
    for a in ["fd00:244::2/128", "fd00:244::3/128", "fd00:192::1/128"] {
        ns.ip(&["addr", "add", a, "dev", "pods0", "nodad"]);
    }
    ns.ip(&["addr", "add", "10.244.0.2/32", "dev", "pods0"]);
    ns.ip(&["link", "set", "pods0", "up"]);
    ns.ip(&["-6", "route", "add", "fd00:96::/112", "dev", "pods0"]);
    ns.ip(&["route", "add", "10.96.0.0/12", "dev", "pods0"]);
    let _a = Pod::start_in(Some(&ns.name), "pod-a", "fd00:244::2", 8080).await;
    let _b = Pod::start_in(Some(&ns.name), "pod-b", "fd00:244::3", 8080).await;
    let _c = Pod::start_in(Some(&ns.name), "pod-c", "10.244.0.2", 8080).await;

    let proxy = NftProxy::new(NftConfig {
        table: "kube-net-v6".into(),
        netns: Some(ns.name.clone()),
        ..NftConfig::default()
    });
    let mut table = services(vec![
        (
            "web6",
            entry(
                "fd00:96::10",
                Some(30080),
                &[("fd00:244::2", "n"), ("fd00:244::3", "n")],
            ),
        ),
        ("web4", entry("10.96.0.10", None, &[("10.244.0.2", "n")])),
        ("empty6", entry("fd00:96::12", None, &[])),
    ]);
    let result = proxy.sync(&table).await;
    let cleanup = async {
        proxy.shutdown().await.unwrap();
        let tables = ns.nft(&["list", "tables"]);
        assert!(!tables.contains("kube-net-v6"), "{tables}");
    };
    if let Err(e) = result {
        cleanup.await;
        panic!("sync failed: {e} ({:?})", std::error::Error::source(&e));
    }
    let listed = ns.nft(&["list", "table", "inet", "kube-net-v6"]);
    assert!(listed.contains("dnat ip6"), "{listed}");

    assert_eq!(
        names(&ns, addr("[fd00:96::10]:80"), 24).await,
        set(&["pod-a", "pod-b"])
    );
    assert_eq!(
        names(&ns, addr("[fd00:192::1]:30080"), 24).await,
        set(&["pod-a", "pod-b"])
    );
    assert_eq!(names(&ns, addr("10.96.0.10:80"), 4).await, set(&["pod-c"]));
    // No endpoints: refused at once (ICMPv6 port unreachable) rather than hanging.
    let empty = names(&ns, addr("[fd00:96::12]:80"), 1).await;
    assert!(empty.iter().all(|e| e.contains("refused")), "{empty:?}");

    // An endpoint change is an increment of IPv6 elements: pod-a's slot now holds pod-b.
    let key = ObjectKey::namespaced("default", "web6");
    let mut web6 = table.services[&key].clone();
    web6.ports[0].endpoints[0].ip = "fd00:244::3".parse().unwrap();
    table.services.insert(key.clone(), web6.clone());
    proxy
        .apply(&[kube_core::proxy::TableChange::Upsert(key, web6)])
        .await
        .unwrap();
    let stats = proxy.stats().await;
    assert!(stats.script_bytes < 1000, "an increment: {stats:?}");
    assert_eq!(
        names(&ns, addr("[fd00:96::10]:80"), 8).await,
        set(&["pod-b"])
    );
    cleanup.await;
}

/// A table with more shapes than get a chain per slot: the largest shapes get them, the
/// others balance through one concatenated map, and both carry real traffic.
#[tokio::test]
async fn nftables_dnats_through_both_map_layouts_of_a_large_table() {
    if !tools_present("nftables_dnats_through_both_map_layouts_of_a_large_table") {
        return;
    }
    let ns = Netns::new();
    ns.ip(&[
        "link", "add", "pods0", "type", "veth", "peer", "name", "pods1",
    ]);
    ns.ip(&["link", "set", "pods1", "up"]);
    for a in ["10.244.0.2/32", "10.244.0.3/32", "192.168.77.1/32"] {
        ns.ip(&["addr", "add", a, "dev", "pods0"]);
    }
    ns.ip(&["link", "set", "pods0", "up"]);
    ns.ip(&["route", "add", "10.96.0.0/12", "dev", "pods0"]);
    let _a = Pod::start_in(Some(&ns.name), "pod-a", "10.244.0.2", 8080).await;
    let _b = Pod::start_in(Some(&ns.name), "pod-b", "10.244.0.3", 8080).await;

    // Nine shapes of 30 endpoints and one of 16 (addresses nobody answers on) use up the
    // budget of per-slot chains, so `web` (two endpoints) is balanced through a
    // concatenated map, and `solo` (one) too.
    let mut entries = Vec::new();
    let fake: Vec<String> = (0..30).map(|i| format!("10.245.0.{i}")).collect();
    for (i, n) in [30usize, 30, 30, 30, 30, 30, 30, 30, 30, 16]
        .into_iter()
        .enumerate()
    {
        let eps: Vec<(&str, &str)> = fake[..n].iter().map(|ip| (ip.as_str(), "n")).collect();
        let mut filler = entry(&format!("10.96.1.{i}"), None, &eps);
        filler.ports[0].port = 1000 + i as u16;
        entries.push((format!("filler-{i}"), filler));
    }
    let both = [("10.244.0.2", "n"), ("10.244.0.3", "n")];
    entries.push(("web".into(), entry("10.96.0.10", Some(30080), &both)));
    entries.push(("solo".into(), entry("10.96.0.11", None, &both[..1])));
    let table = ServiceTable {
        services: entries
            .into_iter()
            .map(|(name, e)| (ObjectKey::namespaced("default", name), e))
            .collect(),
    };
    let proxy = NftProxy::new(NftConfig {
        table: "kube-net-large".into(),
        netns: Some(ns.name.clone()),
        ..NftConfig::default()
    });
    let result = proxy.sync(&table).await;
    let cleanup = async {
        proxy.shutdown().await.unwrap();
        let tables = ns.nft(&["list", "tables"]);
        assert!(!tables.contains("kube-net-large"), "{tables}");
    };
    if let Err(e) = result {
        cleanup.await;
        panic!("sync failed: {e} ({:?})", std::error::Error::source(&e));
    }
    let listed = ns.nft(&["list", "table", "inet", "kube-net-large"]);
    assert!(listed.contains("map cluster_tcp_80_8080_2_eps"), "{listed}");
    assert!(
        listed.contains("chain cluster_tcp_1000_8080_30_s29"),
        "{listed}"
    );

    assert_eq!(
        names(&ns, addr("10.96.0.10:80"), 24).await,
        set(&["pod-a", "pod-b"])
    );
    assert_eq!(
        names(&ns, addr("192.168.77.1:30080"), 24).await,
        set(&["pod-a", "pod-b"])
    );
    assert_eq!(names(&ns, addr("10.96.0.11:80"), 4).await, set(&["pod-a"]));
    cleanup.await;
}
