//! NodeRoutes between "hosts" that are network namespaces: host-gw across one link, VXLAN
//! across a router that knows nothing of pod addresses. Each host runs the component on a
//! thread inside its namespace; each host has a "pod" namespace with an address from its pod
//! CIDR, and pods talk over real TCP.

use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Node;
use kube_core::orchestrator::Orchestrator;
use kube_core::store::{Preconditions, Store};
use kube_core::typed::Api;
use kube_net::{
    BACKEND_DATA_ANNOTATION, Backend, DEFAULT_ROUTE_PROTOCOL, NodeRoutes, RoutesConfig, VxlanConfig,
};
use kube_store::MemStore;
use nix::sched::{CloneFlags, setns};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteFlags};
use serde_json::json;

use crate::netns::{Netns, tools_present};
use crate::pods::{Pod, ask_blocking};

/// Runs `f` with an rtnetlink handle opened inside `ns`, on a thread of its own.
fn netlink_in<T, F, Fut>(ns: &Netns, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: Future<Output = T>,
{
    let path = format!("/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let file = File::open(&path).expect("netns file");
        setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let (connection, handle, _) = rtnetlink::new_connection().expect("netlink");
            tokio::spawn(connection);
            f(handle).await
        })
    })
    .join()
    .expect("netlink thread")
}

/// A route of the main IPv4 table, as `ip route` would show it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    dst: String,
    via: Option<String>,
    oif: Option<u32>,
    onlink: bool,
    proto: u8,
}

fn routes(ns: &Netns) -> Vec<Route> {
    netlink_in(ns, |handle| async move {
        let query = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build();
        let mut list = handle.route().get(query).execute();
        let mut out = Vec::new();
        while let Some(r) = list.try_next().await.expect("route dump") {
            if r.header.table != 254 {
                continue;
            }
            let mut route = Route {
                dst: "default".into(),
                via: None,
                oif: None,
                onlink: r.header.flags.contains(RouteFlags::Onlink),
                proto: u8::from(r.header.protocol),
            };
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => {
                        route.dst = format!("{d}/{}", r.header.destination_prefix_length);
                    }
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => {
                        route.via = Some(g.to_string());
                    }
                    RouteAttribute::Oif(i) => route.oif = Some(*i),
                    _ => {}
                }
            }
            out.push(route);
        }
        out
    })
}

fn ours(ns: &Netns) -> Vec<Route> {
    let mut list: Vec<Route> = routes(ns)
        .into_iter()
        .filter(|r| r.proto == DEFAULT_ROUTE_PROTOCOL)
        .collect();
    list.sort_by(|a, b| a.dst.cmp(&b.dst));
    list
}

/// The link named `name` in `ns`: its index and MAC.
fn link(ns: &Netns, name: &str) -> Option<(u32, String)> {
    let name = name.to_string();
    netlink_in(ns, |handle| async move {
        let mut links = handle.link().get().match_name(name).execute();
        let link = links.try_next().await.ok()??;
        let mac = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(bytes) => Some(
                bytes
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            ),
            _ => None,
        })?;
        Some((link.header.index, mac))
    })
}

/// NodeRoutes running in an orchestrator on a thread inside a host's namespace.
struct Agent {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Agent {
    fn start(ns: &Netns, store: Arc<dyn Store>, config: RoutesConfig) -> Agent {
        let path = format!("/run/netns/{}", ns.name);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let file = File::open(&path).expect("netns file");
            setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let running = Orchestrator::builder()
                    .store(store)
                    .component(NodeRoutes::new(config))
                    .build()
                    .expect("orchestrator")
                    .start();
                let _ = stopped.await;
                running.shutdown().await.map_err(|e| e.to_string())
            })
        });
        Agent {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Shuts the orchestrator down (the component cleans up) and waits for it.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let thread = self.thread.take().expect("running");
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("join task")
            .expect("agent thread")
            .expect("clean shutdown");
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // On a failed test: stop it, so its clean-up runs before the namespaces go.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn config(node: &str, backend: Backend) -> RoutesConfig {
    RoutesConfig {
        backend,
        vxlan: VxlanConfig {
            device: "kp-vx-test".into(),
            ..VxlanConfig::default()
        },
        resync_interval: Duration::from_millis(500),
        retry_interval: Duration::from_millis(100),
        ..RoutesConfig::new(node)
    }
}

fn node(name: &str, ip: &str, pod_cidr: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                 {"type": "Hostname", "address": name}]}
    }))
    .expect("a node")
}

/// A pod namespace behind `host`: `gateway/24` on the host side, `pod/24` inside with a
/// default route.
fn pod_netns(host: &Netns, gateway: &str, pod: &str) -> Netns {
    let ns = Netns::new();
    host.link(
        "pod0",
        &[&format!("{gateway}/24")],
        &ns,
        "eth0",
        &[&format!("{pod}/24")],
    );
    ns.ip(&["route", "add", "default", "via", gateway]);
    ns
}

fn forwarding(ns: &Netns) {
    ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
}

async fn eventually_sync<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    for _ in 0..100 {
        if let Some(v) = check() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Asserts the pod at `to` cannot be reached from `from` (before any route exists).
async fn unreachable(from: &Netns, to: &str) {
    let to: SocketAddr = to.parse().unwrap();
    let got = from.run(move || ask_blocking(to)).await;
    assert!(got.is_err(), "{to} answered without routes: {got:?}");
}

/// The VTEP MAC `name` publishes, once it does.
async fn vtep_annotation(nodes: &Api<Node>, name: &str) -> String {
    for _ in 0..100 {
        let node = nodes.get(name).await.expect("node");
        let data = node
            .metadata
            .annotations
            .and_then(|a| a.get(BACKEND_DATA_ANNOTATION).cloned());
        if let Some(data) = data {
            let data: serde_json::Value = serde_json::from_str(&data).expect("JSON");
            assert_eq!(data["VNI"], 1);
            return data["VtepMAC"].as_str().expect("VtepMAC").to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} published no VTEP MAC");
}

/// The greeting of the pod server at `to`, asked from inside `from` (retried while routes
/// settle).
async fn greeting(from: &Netns, to: SocketAddr) -> String {
    let mut last = String::new();
    for _ in 0..20 {
        match from.run(move || ask_blocking(to)).await {
            Ok(name) => return name,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no answer from {to}: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_gw_routes_pod_cidrs_via_nodes_on_one_link() {
    if !tools_present("host_gw_routes_pod_cidrs_via_nodes_on_one_link") {
        return;
    }
    let host_a = Netns::new();
    let host_b = Netns::new();
    host_a.link(
        "to-b",
        &["172.30.0.1/24"],
        &host_b,
        "to-a",
        &["172.30.0.2/24", "172.30.0.3/24"],
    );
    forwarding(&host_a);
    forwarding(&host_b);
    let pod_a = pod_netns(&host_a, "10.244.1.1", "10.244.1.2");
    let pod_b = pod_netns(&host_b, "10.244.2.1", "10.244.2.2");
    // Left by a crashed run (ours, to go) and by someone else (to stay).
    host_a.ip(&[
        "route",
        "add",
        "10.244.99.0/24",
        "via",
        "172.30.0.2",
        "proto",
        &DEFAULT_ROUTE_PROTOCOL.to_string(),
    ]);
    host_a.ip(&[
        "route",
        "add",
        "10.244.98.0/24",
        "via",
        "172.30.0.2",
        "proto",
        "static",
    ]);

    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let nodes: Api<Node> = Api::all(store.clone());
    nodes
        .create(&node("node-a", "172.30.0.1", "10.244.1.0/24"))
        .await
        .unwrap();
    nodes
        .create(&node("node-b", "172.30.0.2", "10.244.2.0/24"))
        .await
        .unwrap();
    // A second node on host A: its pods are local there, reached via host A from B.
    nodes
        .create(&node("node-a2", "172.30.0.1", "10.244.3.0/24"))
        .await
        .unwrap();
    let server_b = Pod::start_in(Some(&pod_b.name), "pod-b", "10.244.2.2", 8080).await;
    let server_a = Pod::start_in(Some(&pod_a.name), "pod-a", "10.244.1.2", 8080).await;
    unreachable(&pod_a, "10.244.2.2:8080").await;
    let agent_a = Agent::start(&host_a, store.clone(), config("node-a", Backend::HostGw));
    let agent_b = Agent::start(&host_b, store.clone(), config("node-b", Backend::HostGw));

    let (to_b, _) = link(&host_a, "to-b").expect("to-b");
    let expected = vec![Route {
        dst: "10.244.2.0/24".into(),
        via: Some("172.30.0.2".into()),
        oif: Some(to_b),
        onlink: false,
        proto: DEFAULT_ROUTE_PROTOCOL,
    }];
    // The crashed run's route goes, the one to B comes; none to node-a2, on this host.
    eventually_sync("host A routes to B's pod CIDR only", || {
        (ours(&host_a) == expected).then_some(())
    })
    .await;
    assert!(
        routes(&host_a)
            .iter()
            .any(|r| r.dst == "10.244.98.0/24" && r.proto != DEFAULT_ROUTE_PROTOCOL),
        "another protocol's route stays"
    );
    let on_b = eventually_sync("host B routes to both of host A's pod CIDRs", || {
        let r = ours(&host_b);
        (r.len() == 2).then_some(r)
    })
    .await;
    assert_eq!(
        on_b.iter()
            .map(|r| (r.dst.as_str(), r.via.as_deref()))
            .collect::<Vec<_>>(),
        [
            ("10.244.1.0/24", Some("172.30.0.1")),
            ("10.244.3.0/24", Some("172.30.0.1"))
        ]
    );

    let b_addr: SocketAddr = "10.244.2.2:8080".parse().unwrap();
    assert_eq!(greeting(&pod_a, b_addr).await, "pod-b");
    assert_eq!(
        greeting(&pod_b, "10.244.1.2:8080".parse().unwrap()).await,
        "pod-a"
    );

    // node-b's address changes: the route follows.
    nodes
        .patch_merge(
            "node-b",
            &json!({"status": {"addresses": [{"type": "InternalIP", "address": "172.30.0.3"}]}}),
        )
        .await
        .unwrap();
    eventually_sync("route via node-b's new address", || {
        let r = ours(&host_a);
        (r.len() == 1 && r[0].via.as_deref() == Some("172.30.0.3")).then_some(())
    })
    .await;
    assert_eq!(greeting(&pod_a, b_addr).await, "pod-b");

    // A deleted node's route goes.
    nodes
        .delete("node-b", &Preconditions::default())
        .await
        .unwrap();
    eventually_sync("no route to a deleted node", || {
        ours(&host_a).is_empty().then_some(())
    })
    .await;

    agent_a.stop().await;
    agent_b.stop().await;
    assert_eq!(ours(&host_a), []);
    assert_eq!(ours(&host_b), []);
    assert!(routes(&host_a).iter().any(|r| r.dst == "10.244.98.0/24"));
    server_a.kill().await;
    server_b.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vxlan_carries_pod_traffic_between_hosts_in_different_subnets() {
    if !tools_present("vxlan_carries_pod_traffic_between_hosts_in_different_subnets") {
        return;
    }
    let router = Netns::new();
    let host_a = Netns::new();
    let host_b = Netns::new();
    router.link("a0", &["172.30.1.1/24"], &host_a, "up0", &["172.30.1.2/24"]);
    router.link("b0", &["172.30.2.1/24"], &host_b, "up0", &["172.30.2.2/24"]);
    host_a.ip(&["route", "add", "default", "via", "172.30.1.1"]);
    host_b.ip(&["route", "add", "default", "via", "172.30.2.1"]);
    for ns in [&router, &host_a, &host_b] {
        forwarding(ns);
    }
    let pod_a = pod_netns(&host_a, "10.244.1.1", "10.244.1.2");
    let pod_b = pod_netns(&host_b, "10.244.2.1", "10.244.2.2");
    // A device of our name left by a crashed run: replaced by one of this run.
    host_a.ip(&[
        "link",
        "add",
        "kp-vx-test",
        "type",
        "vxlan",
        "id",
        "9",
        "dstport",
        "4789",
        "local",
        "172.30.1.2",
    ]);

    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let nodes: Api<Node> = Api::all(store.clone());
    nodes
        .create(&node("node-a", "172.30.1.2", "10.244.1.0/24"))
        .await
        .unwrap();
    nodes
        .create(&node("node-b", "172.30.2.2", "10.244.2.0/24"))
        .await
        .unwrap();
    // The router has no route to any pod address: only the overlay gets through.
    let server_b = Pod::start_in(Some(&pod_b.name), "pod-b", "10.244.2.2", 8080).await;
    let server_a = Pod::start_in(Some(&pod_a.name), "pod-a", "10.244.1.2", 8080).await;
    unreachable(&pod_a, "10.244.2.2:8080").await;
    let agent_a = Agent::start(&host_a, store.clone(), config("node-a", Backend::Auto));
    let agent_b = Agent::start(&host_b, store.clone(), config("node-b", Backend::Auto));

    // Each node publishes its VTEP MAC, the MAC of its device.
    for (host, name) in [(&host_a, "node-a"), (&host_b, "node-b")] {
        let mac = vtep_annotation(&nodes, name).await;
        let (_, device_mac) = link(host, "kp-vx-test").expect("VXLAN device");
        assert_eq!(device_mac, mac, "{name}");
    }
    let (vxlan_a, _) = link(&host_a, "kp-vx-test").expect("VXLAN device");
    let on_a = eventually_sync("host A routes B's pod CIDR over VXLAN", || {
        let r = ours(&host_a);
        (r.len() == 1).then_some(r)
    })
    .await;
    assert_eq!(
        on_a,
        [Route {
            dst: "10.244.2.0/24".into(),
            via: Some("10.244.2.0".into()),
            oif: Some(vxlan_a),
            onlink: true,
            proto: DEFAULT_ROUTE_PROTOCOL
        }]
    );

    assert_eq!(
        greeting(&pod_a, "10.244.2.2:8080".parse().unwrap()).await,
        "pod-b"
    );
    assert_eq!(
        greeting(&pod_b, "10.244.1.2:8080".parse().unwrap()).await,
        "pod-a"
    );

    // A deleted node's route goes; the device stays while the component runs.
    nodes
        .delete("node-b", &Preconditions::default())
        .await
        .unwrap();
    eventually_sync("no route to a deleted node", || {
        ours(&host_a).is_empty().then_some(())
    })
    .await;

    agent_a.stop().await;
    agent_b.stop().await;
    for host in [&host_a, &host_b] {
        assert_eq!(ours(host), []);
        assert!(link(host, "kp-vx-test").is_none(), "VXLAN device removed");
    }
    server_a.kill().await;
    server_b.kill().await;
}
