//! NetworkPolicy enforced on real traffic. Each test builds a "node": a network namespace of
//! its own standing for the host (so the machine's own forward chain is never touched), with
//! "pods" as further namespaces joined to it by routed veths, Calico-style (the pod address
//! as /32, a default route out of `eth0`, proxy ARP on the host end, a /32 route per pod), and
//! python TCP servers inside. The enforcer runs on a MemStore holding Pods, Namespaces and
//! policies, programming its table inside the node's namespace; clients connect from the
//! pods' namespaces.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::orchestrator::{Orchestrator, RunningOrchestrator};
use kube_core::store::{Preconditions, Store};
use kube_net::{NetworkPolicyConfig, NetworkPolicyEnforcer, NetworkPolicyStatsHandle};
use kube_store::MemStore;
use serde_json::{Value, json};

use crate::netns::{Netns, tools_present};
use crate::pods::Pod;

const NODE: &str = "node-a";

/// The node namespace, its pods' namespaces and the enforcer's store.
struct Node {
    host: Netns,
    pods: Vec<(Netns, IpAddr)>,
    store: Arc<dyn Store>,
    table: String,
}

impl Node {
    fn new() -> Node {
        let host = Netns::new();
        host.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let table = format!("kn-policy-{}", host.name);
        Node {
            host,
            pods: Vec::new(),
            store: Arc::new(MemStore::new()),
            table,
        }
    }

    /// A namespace wired to the node like a pod (whether or not a Pod object names it).
    fn attach(&mut self, ip: &str) -> usize {
        let ns = Netns::new();
        let index = self.pods.len();
        let host_end = format!("h{index}");
        self.host.ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", "default", "dev", "eth0"]);
        // Proxy ARP answers at once (by default it waits up to 0.8 s).
        self.host.exec(&[
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{host_end}.proxy_arp=1"),
            &format!("net.ipv4.neigh.{host_end}.proxy_delay=0"),
        ]);
        self.host.ip(&["link", "set", &host_end, "up"]);
        self.host
            .ip(&["route", "add", &format!("{ip}/32"), "dev", &host_end]);
        self.pods.push((ns, ip.parse().expect("an address")));
        index
    }

    fn netns(&self, index: usize) -> &Netns {
        &self.pods[index].0
    }

    fn enforcer(&self) -> NetworkPolicyEnforcer {
        NetworkPolicyEnforcer::new(NetworkPolicyConfig {
            table: self.table.clone(),
            netns: Some(self.host.name.clone()),
            node_name: Some(NODE.into()),
            min_sync_interval: Duration::from_millis(10),
            ..NetworkPolicyConfig::default()
        })
    }

    fn start(&self, enforcer: NetworkPolicyEnforcer) -> RunningOrchestrator {
        Orchestrator::builder()
            .store(self.store.clone())
            .component(enforcer)
            .build()
            .expect("an orchestrator")
            .start()
    }

    async fn create(&self, object: Value) {
        let object: DynamicObject = serde_json::from_value(object).expect("an object");
        self.store.create(object).await.expect("created");
    }

    async fn replace(&self, object: Value) {
        let mut object: DynamicObject = serde_json::from_value(object).expect("an object");
        let current = self
            .store
            .get(&object.group_kind(), &object.key())
            .await
            .expect("stored");
        object.metadata.resource_version = current.metadata.resource_version;
        self.store.update(object).await.expect("updated");
    }

    async fn delete_policy(&self, namespace: &str, name: &str) {
        self.store
            .delete(
                &GroupKind::from_static("networking.k8s.io", "NetworkPolicy"),
                &ObjectKey::namespaced(namespace, name),
                &Preconditions::default(),
            )
            .await
            .expect("deleted");
    }

    async fn namespace(&self, name: &str, labels: Value) {
        self.create(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels}}))
            .await;
    }

    /// A Pod object for attached namespace `index`, on `node`.
    async fn pod(&self, index: usize, namespace: &str, name: &str, labels: Value, node: &str) {
        self.create(pod_object(
            namespace,
            name,
            labels,
            node,
            self.pods[index].1,
            &[],
        ))
        .await;
    }

    /// Connects from attached namespace `from` to `to:port`: the server's greeting, or why not.
    async fn connect(&self, from: usize, to: usize, port: u16) -> Result<String, String> {
        let addr = SocketAddr::new(self.pods[to].1, port);
        self.netns(from).run(move || ask(addr)).await
    }

    /// Waits (at most 5 s) until connecting from `from` to `to:port` succeeds (`true`) or
    /// fails (`false`).
    async fn expect(&self, from: usize, to: usize, port: u16, allowed: bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let result = self.connect(from, to, port).await;
            if result.is_ok() == allowed {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{from} → {to}:{port} should be {}: {result:?}\n{}",
                if allowed { "allowed" } else { "blocked" },
                self.host.nft(&["list", "table", "inet", &self.table]),
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Checks every `(from, to, port, allowed)` once the first holds.
    async fn expect_all(&self, cases: &[(usize, usize, u16, bool)]) {
        for &(from, to, port, allowed) in cases {
            self.expect(from, to, port, allowed).await;
        }
    }

    async fn shutdown(&self, running: RunningOrchestrator) {
        running.shutdown().await.expect("shut down");
        let tables = self.host.nft(&["list", "tables"]);
        assert!(!tables.contains(&self.table), "table left behind: {tables}");
    }
}

fn pod_object(
    namespace: &str,
    name: &str,
    labels: Value,
    node: &str,
    ip: IpAddr,
    ports: &[(&str, u16)],
) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(name, port)| json!({"name": name, "containerPort": port, "protocol": "TCP"}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x", "ports": ports}]},
        "status": {"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]}})
}

fn policy(namespace: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace}, "spec": spec})
}

/// A TCP connection's greeting, with a short timeout: a dropped SYN fails in 400 ms.
fn ask(addr: SocketAddr) -> Result<String, String> {
    use std::io::BufRead;
    let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(400))
        .map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(line.trim().to_string())
}

/// Sends a line on an open connection and reads its echo.
async fn echo(stream: &std::net::TcpStream, text: &str) -> Result<(), String> {
    let stream = stream.try_clone().map_err(|e| e.to_string())?;
    let text = format!("{text}\n");
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = stream;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(text.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut back = vec![0u8; text.len()];
        stream.read_exact(&mut back).map_err(|e| e.to_string())?;
        if back != text.as_bytes() {
            return Err(format!("echoed {:?}", String::from_utf8_lossy(&back)));
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn wait_synced(stats: &NetworkPolicyStatsHandle) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.get().full_syncs == 0 {
        assert!(
            Instant::now() < deadline,
            "never programmed: {:?}",
            stats.get()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_isolation_pod_and_namespace_selectors() {
    if !tools_present("ingress_isolation_pod_and_namespace_selectors") {
        return;
    }
    let mut node = Node::new();
    let server = node.attach("10.77.0.10");
    let api = node.attach("10.77.0.11");
    let other = node.attach("10.77.0.12");
    let monitor = node.attach("10.77.0.13");
    let remote = node.attach("10.77.1.10");
    node.namespace("web", json!({})).await;
    node.namespace("ops", json!({"team": "ops"})).await;
    node.pod(server, "web", "db", json!({"app": "db"}), NODE)
        .await;
    node.pod(api, "web", "api", json!({"role": "api"}), NODE)
        .await;
    node.pod(other, "web", "other", json!({"role": "other"}), NODE)
        .await;
    node.pod(monitor, "ops", "monitor", json!({"role": "monitor"}), NODE)
        .await;
    // On another node: its ingress is that node's business, not this one's.
    node.pod(remote, "web", "remote", json!({"app": "db"}), "node-b")
        .await;
    let _db = Pod::start_in(Some(&node.netns(server).name), "db", "10.77.0.10", 5432).await;
    let _remote = Pod::start_in(Some(&node.netns(remote).name), "remote", "10.77.1.10", 5432).await;
    let enforcer = node.enforcer();
    let stats = enforcer.stats();
    let running = node.start(enforcer);
    wait_synced(&stats).await;

    // No policy: everything passes.
    assert_eq!(node.connect(api, server, 5432).await.as_deref(), Ok("db"));
    node.expect_all(&[(other, server, 5432, true), (monitor, server, 5432, true)])
        .await;

    // Default deny for every pod of `web`.
    node.create(policy("web", "deny", json!({"podSelector": {}})))
        .await;
    node.expect_all(&[
        (api, server, 5432, false),
        (other, server, 5432, false),
        (monitor, server, 5432, false),
        // The remote pod is selected too, but this node does not police it.
        (api, remote, 5432, true),
    ])
    .await;

    // Allow `role=api` of the same namespace: exactly that client gets through.
    node.create(policy(
        "web",
        "from-api",
        json!({
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "api"}}}]}]}),
    ))
    .await;
    node.expect_all(&[
        (api, server, 5432, true),
        (other, server, 5432, false),
        (monitor, server, 5432, false),
    ])
    .await;

    // A namespaceSelector lets the ops namespace in; combined with a podSelector only the
    // matching pods of matching namespaces.
    node.create(policy(
        "web",
        "from-ops",
        json!({
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}},
                               "podSelector": {"matchLabels": {"role": "nobody"}}}]}]}),
    ))
    .await;
    node.expect(monitor, server, 5432, false).await;
    node.replace(policy(
        "web",
        "from-ops",
        json!({
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}},
                               "podSelector": {"matchLabels": {"role": "monitor"}}}]}]}),
    ))
    .await;
    node.expect_all(&[(monitor, server, 5432, true), (other, server, 5432, false)])
        .await;

    // Relabelling a pod is an element update, and takes effect at once.
    let before = stats.get();
    node.replace(pod_object(
        "web",
        "other",
        json!({"role": "api"}),
        NODE,
        "10.77.0.12".parse().unwrap(),
        &[],
    ))
    .await;
    node.expect(other, server, 5432, true).await;
    let after = stats.get();
    assert_eq!(after.full_syncs, before.full_syncs, "{after:?}");
    assert!(
        after.incremental_syncs > before.incremental_syncs,
        "{after:?}"
    );

    // `ingress: [{}]` allows everything.
    node.create(policy(
        "web",
        "all",
        json!({"podSelector": {}, "ingress": [{}]}),
    ))
    .await;
    node.expect(monitor, server, 5432, true).await;
    node.delete_policy("web", "all").await;
    node.delete_policy("web", "from-api").await;
    node.delete_policy("web", "from-ops").await;
    node.expect_all(&[(monitor, server, 5432, false), (api, server, 5432, false)])
        .await;
    node.delete_policy("web", "deny").await;
    node.expect(monitor, server, 5432, true).await;
    node.shutdown(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_blocks_port_ranges_and_named_ports() {
    if !tools_present("ip_blocks_port_ranges_and_named_ports") {
        return;
    }
    let mut node = Node::new();
    let server = node.attach("10.77.0.10");
    // Clients outside the pod network (no Pod objects): only ipBlock can name them.
    let inside = node.attach("192.168.50.5");
    let excepted = node.attach("192.168.50.130");
    let outside = node.attach("172.31.0.5");
    node.namespace("web", json!({})).await;
    node.create(pod_object(
        "web",
        "srv",
        json!({"app": "srv"}),
        NODE,
        "10.77.0.10".parse().unwrap(),
        &[("metrics", 9100)],
    ))
    .await;
    let netns = node.netns(server).name.clone();
    let mut servers = Vec::new();
    for port in [8080, 8081, 8090, 9100] {
        servers.push(Pod::start_in(Some(&netns), "srv", "10.77.0.10", port).await);
    }
    let enforcer = node.enforcer();
    let stats = enforcer.stats();
    let running = node.start(enforcer);
    wait_synced(&stats).await;
    node.expect_all(&[
        (outside, server, 8080, true),
        (excepted, server, 9100, true),
    ])
    .await;

    node.create(policy(
        "web",
        "blocks",
        json!({
        "podSelector": {"matchLabels": {"app": "srv"}},
        "ingress": [{
            "from": [{"ipBlock": {"cidr": "192.168.50.0/24", "except": ["192.168.50.128/25"]}}],
            "ports": [{"port": 8080, "endPort": 8085, "protocol": "TCP"}]}]}),
    ))
    .await;
    node.expect_all(&[
        (inside, server, 8080, true),
        (inside, server, 8081, true),
        (inside, server, 8090, false),
        (excepted, server, 8080, false),
        (outside, server, 8080, false),
        (inside, server, 9100, false),
    ])
    .await;

    // A named port resolves against the pod's container ports (metrics → 9100).
    node.create(policy(
        "web",
        "metrics",
        json!({
        "podSelector": {"matchLabels": {"app": "srv"}},
        "ingress": [{"ports": [{"port": "metrics"}]}]}),
    ))
    .await;
    node.expect_all(&[
        (outside, server, 9100, true),
        (excepted, server, 9100, true),
        (outside, server, 8080, false),
    ])
    .await;
    // Renaming the container port moves what the name allows.
    node.replace(pod_object(
        "web",
        "srv",
        json!({"app": "srv"}),
        NODE,
        "10.77.0.10".parse().unwrap(),
        &[("metrics", 8090)],
    ))
    .await;
    node.expect_all(&[
        (outside, server, 8090, true),
        (outside, server, 9100, false),
    ])
    .await;
    node.shutdown(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_isolation_and_established_connections() {
    if !tools_present("egress_isolation_and_established_connections") {
        return;
    }
    let mut node = Node::new();
    let a = node.attach("10.77.0.10");
    let b = node.attach("10.77.0.11");
    let c = node.attach("10.77.0.12");
    node.namespace("web", json!({})).await;
    node.pod(a, "web", "a", json!({"app": "a"}), NODE).await;
    node.pod(b, "web", "b", json!({"app": "b"}), NODE).await;
    node.pod(c, "web", "c", json!({"app": "c"}), NODE).await;
    let _b = Pod::start_in(Some(&node.netns(b).name), "b", "10.77.0.11", 80).await;
    let _c = Pod::start_in(Some(&node.netns(c).name), "c", "10.77.0.12", 80).await;
    let _c2 = Pod::start_in(Some(&node.netns(c).name), "c", "10.77.0.12", 81).await;
    let enforcer = node.enforcer();
    let stats = enforcer.stats();
    let running = node.start(enforcer);
    wait_synced(&stats).await;

    // An open connection from a to b.
    let addr = SocketAddr::new("10.77.0.11".parse().unwrap(), 80);
    let session = node
        .netns(a)
        .run(move || {
            let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .expect("connected");
            let mut greeting = [0u8; 2];
            std::io::Read::read_exact(&mut &stream, &mut greeting).expect("greeted");
            stream
        })
        .await;
    echo(&session, "before").await.expect("echo before");

    // Egress deny for a: new connections fail, the established one carries on.
    node.create(policy(
        "web",
        "a-no-egress",
        json!({
        "podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Egress"]}),
    ))
    .await;
    node.expect_all(&[(a, b, 80, false), (a, c, 80, false), (b, c, 80, true)])
        .await;
    echo(&session, "during")
        .await
        .expect("an established connection survives");

    // Allow a to reach c on port 80 only.
    node.create(policy("web", "a-to-c", json!({
        "podSelector": {"matchLabels": {"app": "a"}},
        "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "c"}}}], "ports": [{"port": 80}]}]})))
        .await;
    node.expect_all(&[(a, c, 80, true), (a, c, 81, false), (a, b, 80, false)])
        .await;

    // Both ends must allow: c isolated for ingress from everyone but b.
    node.create(policy(
        "web",
        "c-from-b",
        json!({
        "podSelector": {"matchLabels": {"app": "c"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}]}),
    ))
    .await;
    node.expect_all(&[(a, c, 80, false), (b, c, 80, true)])
        .await;

    // Removing the policies: new connections pass again at once.
    for name in ["a-no-egress", "a-to-c", "c-from-b"] {
        node.delete_policy("web", name).await;
    }
    node.expect_all(&[(a, b, 80, true), (a, c, 81, true)]).await;
    echo(&session, "after").await.expect("echo after");
    node.shutdown(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_pods_load_at_once_and_churn_is_a_few_elements() {
    if !tools_present("thousands_of_pods_load_at_once_and_churn_is_a_few_elements") {
        return;
    }
    let node = Node::new();
    // 2,000 pods in 20 namespaces, 200 of them on this node; 100 policies, each selecting
    // one app of one namespace and allowing two others, one of them by namespace.
    for n in 0..20 {
        node.namespace(&format!("ns{n}"), json!({"team": format!("t{}", n % 5)}))
            .await;
    }
    for i in 0..2000u32 {
        let ip: IpAddr = format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256)
            .parse()
            .unwrap();
        let node_name = if i % 10 == 0 { NODE } else { "elsewhere" };
        node.create(pod_object(
            &format!("ns{}", i % 20),
            &format!("p{i}"),
            json!({"app": format!("a{}", i % 50)}),
            node_name,
            ip,
            &[("http", 8080)],
        ))
        .await;
    }
    for k in 0..100 {
        node.create(policy(&format!("ns{}", k % 20), &format!("pol{k}"), json!({
            "podSelector": {"matchLabels": {"app": format!("a{}", k % 50)}},
            "ingress": [{"from": [
                {"podSelector": {"matchLabels": {"app": format!("a{}", (k + 1) % 50)}}},
                {"namespaceSelector": {"matchLabels": {"team": format!("t{}", k % 5)}}}],
                "ports": [{"port": "http"}, {"port": 9000, "endPort": 9100}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.200.0.0/16"]}}]}]})))
            .await;
    }
    let enforcer = node.enforcer();
    let stats = enforcer.stats();
    let started = Instant::now();
    let running = node.start(enforcer);
    wait_synced(&stats).await;
    let loaded = stats.get();
    eprintln!(
        "first sync after {:?}: {} rules, {} elements, render {:?}, nft {:?}",
        started.elapsed(),
        loaded.rules,
        loaded.elements,
        loaded.last_render,
        loaded.last_apply
    );
    assert!(loaded.rules < 2000, "{loaded:?}");
    assert!(loaded.last_apply < Duration::from_secs(5), "{loaded:?}");

    // A pod no local policy reads changes: nothing is programmed.
    node.replace(pod_object(
        "ns3",
        "p3",
        json!({"app": "a49"}),
        "elsewhere",
        "10.100.0.3".parse().unwrap(),
        &[("http", 8080)],
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let idle = stats.get();
    assert_eq!(
        (idle.full_syncs, idle.incremental_syncs),
        (loaded.full_syncs, loaded.incremental_syncs),
        "{idle:?}"
    );

    // A local pod relabelled: a few element updates, no rewrite.
    node.replace(pod_object(
        "ns0",
        "p0",
        json!({"app": "a49"}),
        NODE,
        "10.100.0.0".parse().unwrap(),
        &[("http", 8080)],
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.get().incremental_syncs == loaded.incremental_syncs {
        assert!(Instant::now() < deadline, "{:?}", stats.get());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let churn = stats.get();
    eprintln!(
        "relabel: {} elements changed, render {:?}, nft {:?}",
        churn.last_changed_elements, churn.last_render, churn.last_apply
    );
    assert_eq!(churn.full_syncs, loaded.full_syncs, "{churn:?}");
    assert!(churn.last_changed_elements <= 10, "{churn:?}");
    node.shutdown(running).await;
}
