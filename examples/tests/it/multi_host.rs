//! A cluster across three network hosts on one machine: the control plane (API server over
//! TLS, store, scheduler, controllers) on the host, and two node agents — the `node_agent`
//! example, built by the test — as separate processes, each in a network namespace of its own with its own IP, joined to a bridge the test creates
//! (`10.77.N.0/24`), reaching the API server over that network with their own
//! `system:node:<name>` certificates. A Deployment's pods run on both nodes; then one node's
//! link is cut (`ip link set ... down`): the node lifecycle controller taints it
//! `node.kubernetes.io/unreachable`, the pods' one-second toleration runs out, they are
//! evicted, and their replacements run on the other node. With the link back, the taint goes.
//!
//! Needs root (`ip netns`, veth, bridge); skipped otherwise, except under `CI=true` where it
//! fails instead.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use examples::cluster::{ClusterConfig, LocalCluster, RuntimeKind, StoreKind, credentials};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube_core::store::{ListOptions, Preconditions, Store};
use kube_core::typed::Api;
use kube_ctrl::NodeLifecycleConfig;
use kube_store::RemoteStore;
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::process::Child;

/// Builds the `node_agent` example and returns its path.
async fn node_agent_binary() -> PathBuf {
    example_binary("node_agent").await
}

/// Builds the example `name` and returns its path. Built with the features the test binary
/// was (the CI's `--workspace --all-features` when the `etcd` feature is on), cargo reuses
/// every compiled crate and only links. (Under nextest the build lock is free while tests
/// run.)
pub(crate) async fn example_binary(name: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = tokio::process::Command::new(cargo);
    command
        .args(["build", "--quiet", "--example", name])
        .arg("--message-format=json")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if cfg!(feature = "etcd") {
        command.args(["--workspace", "--all-features"]);
    } else {
        command.args(["-p", "examples"]);
    }
    let output = tokio::time::timeout(Duration::from_secs(900), command.output())
        .await
        .expect("building the example within 15 minutes")
        .unwrap();
    assert!(
        output.status.success(),
        "building the {name} example failed"
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo names the {name} executable"))
}

/// One node agent to start: its name, network namespace, IP there, and pod-network index.
struct Agent<'a> {
    name: &'a str,
    ns: &'a str,
    address: &'a str,
    index: usize,
    /// The control plane's cluster CIDR.
    cluster_cidr: &'a str,
}

/// Starts the `node_agent` example for `agent` in its network namespace (`nsenter --net`
/// changes only the network namespace: the agent still sees the host's /sys/fs/cgroup and
/// /run/netns), joining `server` with a client certificate for `system:node:<name>` issued
/// from the control plane's PKI in `cp_dir` and written to files in `dir`; returns once it has
/// joined.
async fn start_node_agent(
    binary: &Path,
    agent: Agent<'_>,
    server: &str,
    cp_dir: &Path,
    dir: &Path,
) -> Child {
    let Agent {
        name,
        ns,
        address,
        index,
        cluster_cidr,
    } = agent;
    std::fs::create_dir_all(dir).unwrap();
    let auth = credentials(
        cp_dir,
        &format!("node-{name}"),
        &format!("system:node:{name}"),
        &["system:nodes"],
    )
    .unwrap();
    let (cert, key) = auth.client_cert.unwrap();
    let file = |what: &str, pem: &str| {
        let path = dir.join(what);
        std::fs::write(&path, pem).unwrap();
        path.to_str().unwrap().to_string()
    };
    let (ca, cert, key) = (
        file("ca.crt", &auth.ca_pem.unwrap()),
        file("node.crt", &cert),
        file("node.key", &key),
    );
    let mut child = tokio::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg(binary)
        .args([
            "--server", server, "--name", name, "--ca", &ca, "--cert", &cert,
        ])
        .args(["--key", &key, "--node-ip", address, "--runtime", "process"])
        // The kube-dns ClusterIP: the control plane's DNS server answers behind it.
        .args([
            "--cluster-dns",
            "10.96.0.10",
            "--cluster-cidr",
            cluster_cidr,
        ])
        .args([
            "--index",
            &index.to_string(),
            "--heartbeat-interval-ms",
            "500",
        ])
        .arg("--root-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("joined") {
                return;
            }
        }
        panic!("node_agent {name} exited before it joined");
    })
    .await
    .unwrap_or_else(|_| panic!("node_agent {name} did not join within 60 s"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

/// Stops a node agent with SIGTERM (as Ctrl-C would) and checks it exits cleanly.
async fn stop_node_agent(mut child: Child) {
    if let Some(pid) = child.id() {
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the node agent stops within 60 s")
        .unwrap();
    assert!(status.success(), "node_agent exited with {status}");
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A bridge on the host and network namespaces attached to it by veth pairs; all removed on
/// drop.
struct Network {
    bridge: String,
    namespaces: Vec<String>,
    host_ends: Vec<String>,
}

impl Network {
    /// Creates the bridge `name` with `gateway/24` on the host.
    fn new(name: &str, gateway: &str) -> Self {
        ip(&["link", "add", name, "type", "bridge"]);
        let network = Self {
            bridge: name.into(),
            namespaces: Vec::new(),
            host_ends: Vec::new(),
        };
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", name]);
        ip(&["link", "set", name, "up"]);
        network
    }

    /// A network namespace `ns` whose `eth0` has `address/24` on the bridge; returns the
    /// host end of its link.
    fn host(&mut self, ns: &str, address: &str) -> String {
        ip(&["netns", "add", ns]);
        self.namespaces.push(ns.into());
        let host_end = format!("{ns}h");
        let inner = format!("{ns}n");
        ip(&[
            "link", "add", &host_end, "type", "veth", "peer", "name", &inner,
        ]);
        self.host_ends.push(host_end.clone());
        ip(&["link", "set", &inner, "netns", ns]);
        ip(&["link", "set", &host_end, "master", &self.bridge]);
        ip(&["link", "set", &host_end, "up"]);
        ip(&["-n", ns, "link", "set", &inner, "name", "eth0"]);
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        host_end
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        for link in &self.host_ends {
            let _ = Command::new("ip")
                .args(["link", "del", link])
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// An HTTP GET of `/debian_version` at `addr`; the whole answer, if one came.
async fn http_get(addr: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = tokio::net::TcpStream::connect(addr);
    let mut stream = tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .ok()?
        .ok()?;
    stream
        .write_all(b"GET /debian_version HTTP/1.0\r\n\r\n")
        .await
        .ok()?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut answer))
        .await
        .ok()?
        .ok()?;
    Some(answer)
}

/// A client pod on node-a that succeeds once `target:port` answers an HTTP GET (busybox `nc`
/// from the host, as the process runtime runs it).
fn client_pod(name: &str, target: &str, port: u16) -> Pod {
    let script = format!(
        "for i in $(seq 60); do printf 'GET /debian_version HTTP/1.0\\r\\n\\r\\n' | \
         busybox nc -w 2 {target} {port} | grep -q 'HTTP/1.[01] 200' && exit 0; sleep 1; done; exit 1"
    );
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "net"},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"kubernetes.io/hostname": "node-a"},
            "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", script]}],
        },
    }))
    .expect("a client pod")
}

/// The cluster network between hosts: a pod on node-a reaches a pod on node-b by its IP
/// (a host-gw route per node CIDR), by the Service's ClusterIP (node-a's nftables plane) and
/// by the Service's name (the control plane's DNS server behind kube-dns). The pods are in
/// their own namespace and gone when this returns.
async fn pods_reach_each_other_across_hosts(
    store: &Arc<dyn Store>,
    pod_prefix: &str,
    node_a_ip: &str,
) {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(store.clone());
    namespaces
        .create(&serde_json::from_value(json!({"metadata": {"name": "net"}})).expect("namespace"))
        .await
        .expect("namespace net");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "net");
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(store.clone(), "net");
    let web: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "net", "labels": {"app": "web"}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": "node-b"},
            "containers": [{"name": "httpd", "image": "busybox",
                "command": ["busybox", "httpd", "-f", "-p", "8080", "-h", "/etc"],
                "ports": [{"containerPort": 8080}]}],
        },
    }))
    .expect("the web pod");
    pods.create(&web).await.expect("web pod created");
    services
        .create(
            &serde_json::from_value(json!({
                "metadata": {"name": "web", "namespace": "net"},
                "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
            }))
            .expect("the web service"),
        )
        .await
        .expect("web service created");
    let web_ip = eventually("the web pod Running", Duration::from_secs(60), async || {
        let pod = pods.get("web").await.ok()?;
        let status = pod.status?;
        (status.phase.as_deref() == Some("Running")).then_some(status.pod_ip?)
    })
    .await;
    assert!(
        web_ip.starts_with(pod_prefix),
        "a pod CIDR address: {web_ip}"
    );
    let cluster_ip = eventually("the web ClusterIP", Duration::from_secs(30), async || {
        services.get("web").await.ok()?.spec?.cluster_ip
    })
    .await;
    for (name, target, port) in [
        ("by-ip", web_ip.as_str(), 8080),
        ("by-cluster-ip", cluster_ip.as_str(), 80),
        ("by-name", "web", 80),
    ] {
        pods.create(&client_pod(name, target, port))
            .await
            .expect("client pod created");
    }
    for name in ["by-ip", "by-cluster-ip", "by-name"] {
        let phase = eventually(
            &format!("client {name} finished"),
            Duration::from_secs(90),
            async || {
                let phase = pods.get(name).await.ok()?.status?.phase?;
                matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
            },
        )
        .await;
        assert_eq!(phase, "Succeeded", "node-a's pod reached node-b's {name}");
    }
    // From another host (this one): node-a's NodePort, served by the pod on node-b.
    let node_port = services
        .get("web")
        .await
        .expect("the web service")
        .spec
        .and_then(|s| s.ports?.first()?.node_port)
        .expect("a node port");
    let answer = eventually(
        "node-a's NodePort answering from the host",
        Duration::from_secs(30),
        async || http_get(&format!("{node_a_ip}:{node_port}")).await,
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    namespaces
        .delete("net", &Preconditions::default())
        .await
        .expect("namespace net deleted");
    eventually("the net pods gone", Duration::from_secs(60), async || {
        let left = pods.list(&ListOptions::default()).await.ok()?.items;
        left.is_empty().then_some(())
    })
    .await;
}

/// Pods of the Deployment, Running and not being deleted, by node.
async fn running_by_node(pods: &Api<Pod>) -> Vec<(String, String)> {
    let mut placed: Vec<(String, String)> = pods
        .list(&ListOptions::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter_map(|p| Some((p.spec?.node_name?, p.metadata.name?)))
        .collect();
    placed.sort();
    placed
}

async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn has_unreachable_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|taints| {
            taints
                .iter()
                .any(|t| t.key == "node.kubernetes.io/unreachable")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_agents_in_their_own_network_namespaces_and_pods_moving_off_a_cut_node() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the multi-host test runs as root under CI=true"
        );
        eprintln!("skipping: needs root for network namespaces");
        return;
    }
    // Names and subnet of this run's own (interface names are at most 15 bytes).
    let id = std::process::id() % 100_000;
    let subnet = format!("10.77.{}", id % 200 + 20);
    let gateway = format!("{subnet}.1");
    let mut network = Network::new(&format!("kmh{id}"), &gateway);
    let nodes = [
        ("node-a", format!("kmh{id}a"), format!("{subnet}.10")),
        ("node-b", format!("kmh{id}b"), format!("{subnet}.11")),
    ];
    let mut links = Vec::new();
    for (_, ns, address) in &nodes {
        links.push(network.host(ns, address));
    }

    // The control plane on the host, listening on the bridge's address only.
    let dir = tempfile::tempdir().unwrap();
    let cp_dir = dir.path().join("cp");
    let cluster = LocalCluster::start(ClusterConfig {
        listen: format!("{gateway}:0").parse().unwrap(),
        data_dir: cp_dir.clone(),
        nodes: 0,
        runtime: RuntimeKind::Fake,
        store: StoreKind::Memory,
        node_lifecycle: NodeLifecycleConfig {
            grace_period: Duration::from_secs(4),
            ..NodeLifecycleConfig::default()
        },
        ..ClusterConfig::default()
    })
    .await
    .unwrap();
    let server = format!("https://{}", cluster.addr);

    // Each node agent is the `node_agent` example, a process of its own in its namespace.
    let binary = node_agent_binary().await;
    let mut children = Vec::new();
    for (index, (name, ns, address)) in nodes.iter().enumerate() {
        children.push(
            start_node_agent(
                &binary,
                Agent {
                    name,
                    ns,
                    address,
                    index: index + 1,
                    cluster_cidr: "10.244.0.0/16",
                },
                &server,
                &cp_dir,
                &dir.path().join(name),
            )
            .await,
        );
    }

    let admin = credentials(&cp_dir, "admin", "kubernetes-admin", &["system:masters"]).unwrap();
    let store: Arc<dyn Store> = Arc::new(RemoteStore::with_auth(&server, admin).unwrap());
    let node_api: Api<Node> = Api::all(store.clone());
    let ready_nodes = eventually("both nodes Ready", Duration::from_secs(60), async || {
        let nodes = node_api.list(&ListOptions::default()).await.ok()?.items;
        let ready: Vec<(String, String)> = nodes
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .filter_map(|n| {
                let address = n
                    .status
                    .as_ref()?
                    .addresses
                    .as_ref()?
                    .iter()
                    .find(|a| a.type_ == "InternalIP")?
                    .address
                    .clone();
                Some((n.metadata.name.clone()?, address))
            })
            .collect();
        (ready.len() == 2).then_some(ready)
    })
    .await;
    let mut expected: Vec<(String, String)> = nodes
        .iter()
        .map(|(name, _, address)| (name.to_string(), address.clone()))
        .collect();
    expected.sort();
    let mut ready_nodes = ready_nodes;
    ready_nodes.sort();
    assert_eq!(ready_nodes, expected, "each node reports its own IP");

    let deployments: Api<Deployment> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let toleration = |key: &str| json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 1});
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "movers"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "movers"}},
            "template": {
                "metadata": {"labels": {"app": "movers"}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "tolerations": [
                        toleration("node.kubernetes.io/unreachable"),
                        toleration("node.kubernetes.io/not-ready"),
                    ],
                    "containers": [{"name": "sleep", "image": "busybox", "command": ["sleep", "600"]}],
                },
            },
        },
    }))
    .unwrap();
    deployments.create(&deployment).await.unwrap();
    let placed = eventually(
        "2 pods Running on both nodes",
        Duration::from_secs(60),
        async || {
            let placed = running_by_node(&pods).await;
            (placed.len() == 2).then_some(placed)
        },
    )
    .await;
    assert_eq!(
        placed
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["node-a", "node-b"]),
        "the scheduler spreads the pods over both nodes: {placed:?}"
    );

    pods_reach_each_other_across_hosts(&store, "10.244.", &nodes[0].2).await;

    // Cut node-a off the network.
    let cut = Instant::now();
    ip(&["link", "set", &links[0], "down"]);
    let tainted = eventually(
        "node-a tainted unreachable",
        Duration::from_secs(60),
        async || {
            let node = node_api.get("node-a").await.ok()?;
            has_unreachable_taint(&node).then_some(cut.elapsed())
        },
    )
    .await;
    let moved = eventually(
        "both pods Running on node-b",
        Duration::from_secs(90),
        async || {
            let placed = running_by_node(&pods).await;
            (placed.len() == 2 && placed.iter().all(|(node, _)| node == "node-b")).then_some(placed)
        },
    )
    .await;
    eprintln!(
        "node-a unreachable after {tainted:?}; pods on node-b after {:?}: {moved:?}",
        cut.elapsed()
    );
    let node_b = node_api.get("node-b").await.unwrap();
    assert!(!has_unreachable_taint(&node_b), "node-b stays reachable");

    // The link comes back: node-a heartbeats again and loses the taint.
    ip(&["link", "set", &links[0], "up"]);
    eventually(
        "node-a's taint removed",
        Duration::from_secs(60),
        async || {
            let node = node_api.get("node-a").await.ok()?;
            (!has_unreachable_taint(&node)).then_some(())
        },
    )
    .await;

    deployments
        .delete("movers", &Preconditions::default())
        .await
        .unwrap();
    eventually("the pods deleted", Duration::from_secs(60), async || {
        pods.list(&ListOptions::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    for child in children {
        stop_node_agent(child).await;
    }
    cluster.shutdown().await.unwrap();
    drop(network);
}

/// Hosts in different subnets share no link: the host between them routes, and the nodes'
/// routes component reaches the other node's pods through a VXLAN overlay (flannel's vxlan
/// backend), learning its VTEP from the Node annotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_hosts_in_different_subnets_reach_each_other_over_vxlan() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the multi-host test runs as root under CI=true"
        );
        eprintln!("skipping: needs root for network namespaces");
        return;
    }
    let id = std::process::id() % 100_000;
    let (left_net, right_net) = (
        format!("10.78.{}", id % 200 + 20),
        format!("10.79.{}", id % 200 + 20),
    );
    let mut left = Network::new(&format!("kmv{id}x"), &format!("{left_net}.1"));
    let mut right = Network::new(&format!("kmv{id}y"), &format!("{right_net}.1"));
    let nodes = [
        ("node-a", format!("kmv{id}a"), format!("{left_net}.10")),
        ("node-b", format!("kmv{id}b"), format!("{right_net}.10")),
    ];
    left.host(&nodes[0].1, &nodes[0].2);
    right.host(&nodes[1].1, &nodes[1].2);
    // The host routes between the two subnets; each node's way out is its bridge.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
    ip(&[
        "-n",
        &nodes[0].1,
        "route",
        "add",
        "default",
        "via",
        &format!("{left_net}.1"),
    ]);
    ip(&[
        "-n",
        &nodes[1].1,
        "route",
        "add",
        "default",
        "via",
        &format!("{right_net}.1"),
    ]);

    // A network index of its own: the control plane's nftables tables and pod range.
    let plan = examples::network::NetworkPlan::new(26);
    let dir = tempfile::tempdir().unwrap();
    let cp_dir = dir.path().join("cp");
    let cluster = LocalCluster::start(ClusterConfig {
        listen: format!("{left_net}.1:0").parse().unwrap(),
        data_dir: cp_dir.clone(),
        nodes: 0,
        runtime: RuntimeKind::Fake,
        store: StoreKind::Memory,
        pod_network_base: plan.index,
        ..ClusterConfig::default()
    })
    .await
    .unwrap();
    let server = format!("https://{}", cluster.addr);
    let binary = node_agent_binary().await;
    let mut children = Vec::new();
    for (index, (name, ns, address)) in nodes.iter().enumerate() {
        children.push(
            start_node_agent(
                &binary,
                Agent {
                    name,
                    ns,
                    address,
                    index: index + 1,
                    cluster_cidr: &plan.cluster_cidr,
                },
                &server,
                &cp_dir,
                &dir.path().join(name),
            )
            .await,
        );
    }
    let admin = credentials(&cp_dir, "admin", "kubernetes-admin", &["system:masters"]).unwrap();
    let store: Arc<dyn Store> = Arc::new(RemoteStore::with_auth(&server, admin).unwrap());
    let node_api: Api<Node> = Api::all(store.clone());
    eventually(
        "both nodes Ready with VTEPs",
        Duration::from_secs(60),
        async || {
            let nodes = node_api.list(&ListOptions::default()).await.ok()?.items;
            let ready = nodes
                .iter()
                .filter(|n| {
                    let annotated = n
                        .metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key(kube_net::BACKEND_DATA_ANNOTATION));
                    let ready = n
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    annotated && ready
                })
                .count();
            (ready == 2).then_some(())
        },
    )
    .await;
    let prefix = plan
        .cluster_cidr
        .split('.')
        .take(2)
        .collect::<Vec<_>>()
        .join(".")
        + ".";
    pods_reach_each_other_across_hosts(&store, &prefix, &nodes[0].2).await;
    // The overlay carried it: node-a has the VXLAN device and an onlink route through it.
    let device = format!("{}-vxlan", examples::network::NetworkPlan::new(1).prefix());
    let routes = Command::new("ip")
        .args(["-n", &nodes[0].1, "route", "show", "proto", "75"])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    assert!(
        routes.contains(&device) && routes.contains("onlink"),
        "a route to node-b's pod CIDR over {device}: {routes}"
    );

    for child in children {
        stop_node_agent(child).await;
    }
    for (_, ns, _) in &nodes {
        let links = Command::new("ip")
            .args(["-n", ns, "-o", "link", "show"])
            .output()
            .unwrap();
        let links = String::from_utf8_lossy(&links.stdout).into_owned();
        assert!(
            !links.contains("vxlan"),
            "no VXLAN device left in {ns}: {links}"
        );
        let routes = Command::new("ip")
            .args(["-n", ns, "route", "show", "proto", "75"])
            .output()
            .unwrap();
        assert!(
            routes.stdout.is_empty(),
            "no route of ours left in {ns}: {}",
            String::from_utf8_lossy(&routes.stdout)
        );
    }
    cluster.shutdown().await.unwrap();
    drop((left, right));
}
