//! The built-in routed pod network ([`RoutedConfig`]) on real runtimes: runc containers (and
//! host processes) in network namespaces, wired to this host by routed veths over netlink,
//! with hostPorts and egress masquerading in the runtime's nftables table.
//!
//! Everything a test makes carries a per-test prefix (links, the nftables table) and a
//! per-test pod CIDR in 10.123.0.0/16; the "outside" server lives in a network namespace the
//! test creates, on 198.18.x.0/30, reachable only through a veth of the test's. No packet
//! leaves the machine.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_core::api::Node;
use kube_core::runtime::{
    ContainerConfig, PodSandboxConfig, PodSandboxMetadata, PortMapping, Runtime, RuntimeConfig,
};
use kube_core::typed::Api;
use kube_node::{OciRuntime, PodNetwork, ProcessRuntime, RoutedConfig};

use crate::common::{Cluster, NODE, agent, busybox, eventually, pod, require};

const WAIT: Duration = Duration::from_secs(15);
const CLUSTER_CIDR: &str = "10.123.0.0/16";

/// A link prefix unique to this test and process (at most 7 characters).
fn prefix(tag: char) -> String {
    format!("pn{tag}{}", std::process::id() % 10_000)
}

fn run(program: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(program)
        .args(args)
        .output()
        .expect("the command runs")
}

fn run_ok(program: &str, args: &[&str]) {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stdout(program: &str, args: &[&str]) -> String {
    String::from_utf8_lossy(&run(program, args).stdout).into_owned()
}

/// What a runtime may have left on the host: links named with `prefix`, routes into
/// `cidr_start` (e.g. `10.123.1.`), its nftables table, the network namespaces named.
fn leftovers(prefix: &str, cidr_start: &str, netns: &[String]) -> Vec<String> {
    let mut left: Vec<String> = stdout("ip", &["-o", "link", "show"])
        .lines()
        .filter(|l| {
            l.split(": ")
                .nth(1)
                .is_some_and(|name| name.starts_with(prefix))
        })
        .map(|l| format!("link {l}"))
        .collect();
    left.extend(
        stdout("ip", &["-4", "route", "show", "table", "all"])
            .lines()
            .filter(|l| l.contains(cidr_start))
            .map(|l| format!("route {l}")),
    );
    let table = format!("kube-node-{prefix}");
    if run("nft", &["list", "table", "inet", &table])
        .status
        .success()
    {
        left.push(format!("nft table inet {table}"));
    }
    let namespaces = stdout("ip", &["netns", "list"]);
    for ns in netns {
        if namespaces
            .lines()
            .any(|l| l.split_whitespace().next() == Some(ns))
        {
            left.push(format!("netns {ns}"));
        }
    }
    left
}

/// An "outside" host: a network namespace reached from this host through a veth of its own,
/// `198.18.<n>.1` here and `198.18.<n>.2` there. Removed on drop.
struct Outside {
    netns: String,
    link: String,
    here: Ipv4Addr,
    there: Ipv4Addr,
}

impl Outside {
    fn new(tag: char, n: u8) -> Self {
        let netns = format!("pn-out-{tag}-{}", std::process::id());
        let link = format!("pno{tag}{}", std::process::id() % 100_000);
        let peer = format!("{link}p");
        let here = Ipv4Addr::new(198, 18, n, 1);
        let there = Ipv4Addr::new(198, 18, n, 2);
        let outside = Self {
            netns: netns.clone(),
            link: link.clone(),
            here,
            there,
        };
        run_ok("ip", &["netns", "add", &netns]);
        run_ok(
            "ip",
            &["link", "add", &link, "type", "veth", "peer", "name", &peer],
        );
        run_ok("ip", &["link", "set", &peer, "netns", &netns]);
        run_ok("ip", &["addr", "add", &format!("{here}/30"), "dev", &link]);
        run_ok("ip", &["link", "set", &link, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["-n", netns.as_str()];
            all.extend_from_slice(args);
            run_ok("ip", &all);
        };
        inside(&["addr", "add", &format!("{there}/30"), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["link", "set", "lo", "up"]);
        outside
    }

    /// Accepts one TCP connection on `there:port` inside the namespace, writes the peer's
    /// address to it and returns that address (`None` if nobody came within [`WAIT`]).
    fn serve_peer_once(&self, port: u16) -> std::thread::JoinHandle<Option<SocketAddr>> {
        let path = format!("/run/netns/{}", self.netns);
        let addr = SocketAddr::from((self.there, port));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let server = std::thread::spawn(move || {
            let ns = File::open(&path).expect("outside netns");
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let listener = TcpListener::bind(addr).expect("bind outside");
            listener.set_nonblocking(true).expect("nonblocking");
            ready_tx.send(()).expect("ready");
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline {
                match listener.accept() {
                    Ok((mut stream, peer)) => {
                        let _ = writeln!(stream, "peer={}", peer.ip());
                        return Some(peer);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            None
        });
        ready_rx.recv().expect("server ready");
        server
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.link]);
        let _ = run("ip", &["netns", "del", &self.netns]);
    }
}

fn sandbox_config(name: &str, ports: Vec<PortMapping>) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: PodSandboxMetadata {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        },
        hostname: name.into(),
        port_mappings: ports,
        ..Default::default()
    }
}

fn tcp_port(container_port: u16, host_port: u16) -> PortMapping {
    PortMapping {
        protocol: "TCP".into(),
        container_port,
        host_port,
        host_ip: String::new(),
    }
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts a container running `script` (busybox `sh -c`) in the sandbox.
async fn start(runtime: &dyn Runtime, sandbox: &str, name: &str, script: &str) -> String {
    let config = ContainerConfig {
        name: name.into(),
        image: "busybox".into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    };
    let id = runtime
        .create_container(sandbox, &config)
        .await
        .expect("container created");
    runtime
        .start_container(&id)
        .await
        .expect("container started");
    id
}

/// Runs `script` in the container; exit code and output.
async fn exec(runtime: &dyn Runtime, container: &str, script: &str) -> (i32, String) {
    let cmd = ["sh".to_string(), "-c".to_string(), script.to_string()];
    let result = runtime
        .exec_sync(container, &cmd, Duration::from_secs(10))
        .await
        .expect("exec runs");
    (
        result.exit_code,
        String::from_utf8_lossy(&result.output).into_owned(),
    )
}

/// A TCP server answering `hello-from-<name>` on port 80, forever.
fn hello_server(name: &str) -> String {
    format!("while true; do echo hello-from-{name} | nc -l -p 80; done")
}

/// Reads what a TCP server at `addr` says (from this host), retrying until it answers.
async fn read_from(addr: SocketAddr) -> String {
    eventually(WAIT, &format!("an answer from {addr}"), || async move {
        tokio::task::spawn_blocking(move || {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let mut out = String::new();
            stream.read_to_string(&mut out).ok()?;
            (!out.is_empty()).then_some(out)
        })
        .await
        .ok()
        .flatten()
    })
    .await
}

async fn sandbox_ip(runtime: &dyn Runtime, sandbox: &str) -> Ipv4Addr {
    runtime
        .pod_sandbox_status(sandbox)
        .await
        .expect("sandbox status")
        .ip
        .expect("the sandbox has an IP")
        .parse()
        .expect("an IPv4 address")
}

fn oci(dir: &Path, network: RoutedConfig) -> kube_node::OciRuntimeBuilder {
    OciRuntime::builder()
        .root_dir(dir.join("oci"))
        .image("busybox", busybox(dir))
        .routed(network)
}

fn netns_of(sandbox: &str) -> String {
    format!("kn-{}", &sandbox[..16])
}

#[tokio::test]
async fn routed_pods_reach_each_other_the_host_hostports_and_the_outside_masqueraded() {
    if !require("runc") || !require("nft") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = prefix('a');
    let runtime = oci(
        dir.path(),
        RoutedConfig::new()
            .pod_cidr("10.123.1.0/24")
            .cluster_cidr(CLUSTER_CIDR)
            .link_prefix(&prefix),
    )
    .build()
    .expect("runc runtime");
    let rt: &dyn Runtime = &runtime;
    let host_port = free_port();
    let a = rt
        .run_pod_sandbox(&sandbox_config("a", vec![tcp_port(80, host_port)]))
        .await
        .expect("sandbox a");
    let b = rt
        .run_pod_sandbox(&sandbox_config("b", Vec::new()))
        .await
        .expect("sandbox b");
    let (ip_a, ip_b) = (sandbox_ip(rt, &a).await, sandbox_ip(rt, &b).await);
    let gateway = Ipv4Addr::new(10, 123, 1, 1);
    for ip in [ip_a, ip_b] {
        assert_eq!(ip.octets()[..3], [10, 123, 1], "{ip} is from the pod CIDR");
        assert!(
            ip.octets()[3] > 1,
            "{ip} is neither the network nor the gateway"
        );
    }
    assert_ne!(ip_a, ip_b);
    start(rt, &a, "server", &hello_server("a")).await;
    let client = start(rt, &b, "client", "sleep 3600").await;

    // Pod to pod on this node: ICMP and TCP, through the node's routes.
    let (code, out) = exec(rt, &client, &format!("ping -c 1 -W 2 {ip_a}")).await;
    assert_eq!(code, 0, "ping a from b: {out}");
    let answer = eventually(WAIT, "a's server from b", || async {
        let (code, out) = exec(rt, &client, &format!("nc -w 2 {ip_a} 80 </dev/null")).await;
        (code == 0 && out.contains("hello-from-a")).then_some(out)
    })
    .await;
    assert_eq!(answer.trim(), "hello-from-a");

    // The pod's routes: its /32 and a default route through the gateway.
    let (_, routes) = exec(rt, &client, "ip route; ip -4 addr show eth0").await;
    assert!(
        routes.contains(&format!("default via {gateway} dev eth0")),
        "{routes}"
    );
    assert!(routes.contains(&format!("inet {ip_b}/32")), "{routes}");

    // Pod to host: a server on the host, reached at the gateway (the node's address on
    // every pod's veth), sees the pod's own address.
    let host_server = TcpListener::bind("0.0.0.0:0").expect("host server");
    let host_server_port = host_server.local_addr().expect("addr").port();
    let seen = std::thread::spawn(move || host_server.accept().map(|(_, peer)| peer));
    let (code, out) = exec(
        rt,
        &client,
        &format!("echo hi | nc -w 2 {gateway} {host_server_port}"),
    )
    .await;
    assert_eq!(code, 0, "pod to host: {out}");
    let peer = seen.join().expect("host server thread").expect("accepted");
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::V4(ip_b),
        "no masquerade to the node"
    );

    // hostPort: from the node on loopback and on its gateway address.
    for host in [Ipv4Addr::LOCALHOST, gateway] {
        let answer = read_from(SocketAddr::from((host, host_port))).await;
        assert_eq!(answer.trim(), "hello-from-a", "hostPort on {host}");
    }
    // And from another pod, to the node's address (hairpin through the node).
    let answer = eventually(WAIT, "a's hostPort from b", || async {
        let (_, out) = exec(
            rt,
            &client,
            &format!("nc -w 2 {gateway} {host_port} </dev/null"),
        )
        .await;
        out.contains("hello-from-a").then_some(out)
    })
    .await;
    assert_eq!(answer.trim(), "hello-from-a");

    // Egress beyond the cluster is masqueraded: the outside sees this host's address.
    let outside = Outside::new('a', 101);
    let server = outside.serve_peer_once(9000);
    let (code, out) = exec(
        rt,
        &client,
        &format!("nc -w 3 {} 9000 </dev/null", outside.there),
    )
    .await;
    let peer = server
        .join()
        .expect("outside server")
        .expect("a connection");
    assert_eq!(code, 0, "pod to outside: {out}");
    assert_eq!(peer.ip(), std::net::IpAddr::V4(outside.here), "masqueraded");
    assert_eq!(out.trim(), format!("peer={}", outside.here));

    // Removing a sandbox takes its veth, route, lease and hostPort rules with it.
    rt.remove_pod_sandbox(&a).await.expect("a removed");
    let links = stdout("ip", &["-o", "link", "show"]);
    assert!(!links.contains(&prefix_link(&prefix, &a)), "{links}");
    let table = stdout(
        "nft",
        &["list", "table", "inet", &format!("kube-node-{prefix}")],
    );
    assert!(!table.contains(&format!("dport {host_port}")), "{table}");
    assert!(!stdout("ip", &["route"]).contains(&format!("{ip_a} ")));
    assert!(!Path::new(&format!("/run/netns/{}", netns_of(&a))).exists());
    // A new pod may take a's address later, not at once.
    let c = rt
        .run_pod_sandbox(&sandbox_config("c", Vec::new()))
        .await
        .expect("sandbox c");
    assert_ne!(sandbox_ip(rt, &c).await, ip_a);

    rt.remove_pod_sandbox(&b).await.expect("b removed");
    drop(runtime);
    let netns = [netns_of(&a), netns_of(&b), netns_of(&c)];
    let left = leftovers(&prefix, "10.123.1.", &netns);
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn prefix_link(prefix: &str, sandbox: &str) -> String {
    RoutedConfig::new()
        .link_prefix(prefix)
        .host_link_name(sandbox)
}

#[tokio::test]
async fn pods_wait_for_a_pod_cidr_and_host_network_pods_share_the_node() {
    if !require("runc") || !require("nft") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = prefix('b');
    let runtime = oci(dir.path(), RoutedConfig::new().link_prefix(&prefix))
        .host_ip("127.0.0.1")
        .build()
        .expect("runc runtime");
    let rt: &dyn Runtime = &runtime;
    let err = rt
        .run_pod_sandbox(&sandbox_config("early", Vec::new()))
        .await
        .expect_err("no pod CIDR yet");
    assert!(
        err.to_string()
            .contains("network not ready: no pod CIDR assigned to node yet"),
        "{err}"
    );
    assert!(rt.list_pod_sandboxes().await.expect("list").is_empty());

    // hostNetwork needs no CIDR: the node's network and IP.
    let mut host = sandbox_config("host", Vec::new());
    host.host_network = true;
    let h = rt.run_pod_sandbox(&host).await.expect("host sandbox");
    assert_eq!(
        rt.pod_sandbox_status(&h)
            .await
            .expect("status")
            .ip
            .as_deref(),
        Some("127.0.0.1")
    );
    let c = start(rt, &h, "c", "sleep 3600").await;
    let (_, netns) = exec(rt, &c, "readlink /proc/self/ns/net").await;
    let ours = std::fs::read_link("/proc/self/ns/net").expect("our netns");
    assert_eq!(netns.trim(), ours.display().to_string());

    rt.update_runtime_config(&RuntimeConfig::with_pod_cidr("10.123.2.0/24"))
        .await
        .expect("pod CIDR taken");
    let p = rt
        .run_pod_sandbox(&sandbox_config("late", Vec::new()))
        .await
        .expect("sandbox once the CIDR is known");
    assert_eq!(sandbox_ip(rt, &p).await.octets()[..3], [10, 123, 2]);
    // A changed CIDR applies to new pods.
    rt.update_runtime_config(&RuntimeConfig::with_pod_cidr("10.123.12.0/24"))
        .await
        .expect("pod CIDR changed");
    let q = rt
        .run_pod_sandbox(&sandbox_config("later", Vec::new()))
        .await
        .expect("sandbox in the new CIDR");
    assert_eq!(sandbox_ip(rt, &q).await.octets()[..3], [10, 123, 12]);
    drop(runtime);
    let netns = [netns_of(&p), netns_of(&q)];
    assert!(leftovers(&prefix, "10.123.2.", &netns).is_empty());
    assert!(leftovers(&prefix, "10.123.12.", &[]).is_empty());
}

#[tokio::test]
async fn the_agent_passes_its_nodes_pod_cidr_and_reports_host_network_pods_at_the_node_ip() {
    if !require("runc") || !require("nft") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = prefix('c');
    // The node's own address as the agent and the runtime know it.
    let node_ip = "127.0.0.1";
    let runtime = oci(dir.path(), RoutedConfig::new().link_prefix(&prefix))
        .host_ip(node_ip)
        .build()
        .expect("runc runtime");
    let cluster = Cluster::start(
        agent(Arc::new(runtime.clone()))
            .node_ip(node_ip)
            .build()
            .expect("agent"),
    );
    let pods = cluster.pods();
    let sleeper =
        serde_json::json!([{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]);
    pods.create(&pod("web", "Always", sleeper.clone()))
        .await
        .expect("pod created");
    let mut host: kube_core::api::Pod = pod("host", "Always", sleeper);
    if let Some(spec) = host.spec.as_mut() {
        spec.host_network = Some(true);
    }
    pods.create(&host).await.expect("host pod created");

    // No pod CIDR yet: the hostNetwork pod runs, the other waits.
    let running = cluster.wait_phase("host", "Running", WAIT).await;
    let status = running.status.expect("status");
    assert_eq!(status.pod_ip.as_deref(), Some(node_ip));
    assert_eq!(status.host_ip.as_deref(), Some(node_ip));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = pods.get("web").await.expect("web");
    assert!(waiting.status.and_then(|s| s.pod_ip).is_none());

    // The node IPAM controller's part: the Node gets its pod CIDR.
    let nodes: Api<Node> = cluster.nodes();
    let assigned = Instant::now();
    nodes
        .patch_merge(
            NODE,
            &serde_json::json!({"spec": {"podCIDR": "10.123.3.0/24"}}),
        )
        .await
        .expect("podCIDR set");
    let web = cluster.wait_phase("web", "Running", WAIT).await;
    let took = assigned.elapsed();
    let ip: Ipv4Addr = web
        .status
        .and_then(|s| s.pod_ip)
        .expect("web has an IP")
        .parse()
        .expect("IPv4");
    assert_eq!(ip.octets()[..3], [10, 123, 3]);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    eprintln!("pod running with an address {took:?} after the node got its pod CIDR");

    cluster.shutdown().await;
    let sandboxes = runtime.list_pod_sandboxes().await.expect("list");
    for s in &sandboxes {
        runtime.remove_pod_sandbox(&s.id).await.expect("removed");
    }
    let netns: Vec<String> = sandboxes.iter().map(|s| netns_of(&s.id)).collect();
    drop(runtime);
    let left = leftovers(&prefix, "10.123.3.", &netns);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn a_restarted_runtime_keeps_addresses_and_hostports() {
    if !require("runc") || !require("nft") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = prefix('d');
    let config = RoutedConfig::new()
        .pod_cidr("10.123.4.0/24")
        .cluster_cidr(CLUSTER_CIDR)
        .link_prefix(&prefix);
    let host_port = free_port();
    let first = oci(dir.path(), config.clone())
        .keep_on_drop(true)
        .build()
        .expect("runc runtime");
    let a = first
        .run_pod_sandbox(&sandbox_config("a", vec![tcp_port(80, host_port)]))
        .await
        .expect("sandbox a");
    let ip_a = sandbox_ip(&first, &a).await;
    start(&first, &a, "server", &hello_server("a")).await;
    assert_eq!(
        read_from(SocketAddr::from((Ipv4Addr::LOCALHOST, host_port)))
            .await
            .trim(),
        "hello-from-a"
    );
    // The agent restarts: its runtime goes, leaving the pod running.
    drop(first);

    let second = oci(dir.path(), config).build().expect("runc runtime again");
    assert_eq!(sandbox_ip(&second, &a).await, ip_a, "the address is kept");
    assert_eq!(
        read_from(SocketAddr::from((Ipv4Addr::LOCALHOST, host_port)))
            .await
            .trim(),
        "hello-from-a",
        "the hostPort still leads to the pod"
    );
    let b = second
        .run_pod_sandbox(&sandbox_config("b", Vec::new()))
        .await
        .expect("sandbox b");
    let ip_b = sandbox_ip(&second, &b).await;
    assert_ne!(ip_b, ip_a, "a live address is not handed out twice");
    let client = start(&second, &b, "client", "sleep 3600").await;
    let answer = eventually(WAIT, "a's server from b", || async {
        let (_, out) = exec(&second, &client, &format!("nc -w 2 {ip_a} 80 </dev/null")).await;
        out.contains("hello-from-a").then_some(out)
    })
    .await;
    assert_eq!(answer.trim(), "hello-from-a");

    drop(second);
    let netns = [netns_of(&a), netns_of(&b)];
    let left = leftovers(&prefix, "10.123.4.", &netns);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn process_pods_get_routed_addresses() {
    if !require("nft") {
        return;
    }
    let prefix = prefix('e');
    let runtime = ProcessRuntime::builder()
        .network(PodNetwork::Routed(
            RoutedConfig::new()
                .pod_cidr("10.123.5.0/24")
                .link_prefix(&prefix),
        ))
        .build()
        .expect("process runtime");
    let rt: &dyn Runtime = &runtime;
    let a = rt
        .run_pod_sandbox(&sandbox_config("a", Vec::new()))
        .await
        .expect("sandbox a");
    let b = rt
        .run_pod_sandbox(&sandbox_config("b", Vec::new()))
        .await
        .expect("sandbox b");
    let ip_a = sandbox_ip(rt, &a).await;
    let server = ContainerConfig {
        name: "server".into(),
        command: vec![
            "sh".into(),
            "-c".into(),
            "while true; do echo hello-from-a | busybox nc -l -p 80; done".into(),
        ],
        ..Default::default()
    };
    let id = rt.create_container(&a, &server).await.expect("created");
    rt.start_container(&id).await.expect("started");
    let client = ContainerConfig {
        name: "client".into(),
        command: vec!["sleep".into(), "3600".into()],
        ..Default::default()
    };
    let client = rt.create_container(&b, &client).await.expect("created");
    rt.start_container(&client).await.expect("started");
    let answer = eventually(WAIT, "a's server from b", || async {
        let (_, out) = exec(
            rt,
            &client,
            &format!("busybox nc -w 2 {ip_a} 80 </dev/null"),
        )
        .await;
        out.contains("hello-from-a").then_some(out)
    })
    .await;
    assert_eq!(answer.trim(), "hello-from-a");
    // A hostNetwork pod shares the node's network and reports its IP.
    let mut host = sandbox_config("host", Vec::new());
    host.host_network = true;
    let h = rt.run_pod_sandbox(&host).await.expect("host sandbox");
    assert_eq!(
        rt.pod_sandbox_status(&h)
            .await
            .expect("status")
            .ip
            .as_deref(),
        Some("127.0.0.1")
    );
    drop(runtime);
    let netns = [format!("kp-{}", &a[..16]), format!("kp-{}", &b[..16])];
    let left = leftovers(&prefix, "10.123.5.", &netns);
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// An nftables table and a route of the test's, removed on drop.
struct HostRules {
    table: String,
    blackhole: String,
}

impl Drop for HostRules {
    fn drop(&mut self) {
        let _ = run("nft", &["delete", "table", "inet", &self.table]);
        let _ = run("ip", &["route", "del", "blackhole", &self.blackhole]);
    }
}

fn nft(script: &str) {
    use std::process::Stdio;
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nft runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("script written");
    let out = child.wait_with_output().expect("nft ends");
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn pod_traffic_meets_cluster_ip_dnat_and_forward_filters_of_the_node() {
    if !require("runc") || !require("nft") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = prefix('f');
    let runtime = oci(
        dir.path(),
        RoutedConfig::new()
            .pod_cidr("10.123.6.0/24")
            .cluster_cidr(CLUSTER_CIDR)
            .service_cidr("10.124.6.0/24")
            .link_prefix(&prefix),
    )
    .build()
    .expect("runc runtime");
    let rt: &dyn Runtime = &runtime;
    let a = rt
        .run_pod_sandbox(&sandbox_config("a", Vec::new()))
        .await
        .expect("sandbox a");
    let b = rt
        .run_pod_sandbox(&sandbox_config("b", Vec::new()))
        .await
        .expect("sandbox b");
    let (ip_a, ip_b) = (sandbox_ip(rt, &a).await, sandbox_ip(rt, &b).await);
    start(rt, &a, "server", &hello_server("a")).await;
    let client = start(rt, &b, "client", "sleep 3600").await;

    // A proxy's part, as kube-net's nft plane does it: the ClusterIP DNATed in the node's
    // prerouting. The service range is blackholed, so nothing un-DNATed leaves the host.
    let rules = HostRules {
        table: format!("pn-test-{prefix}"),
        blackhole: "10.124.6.0/24".into(),
    };
    run_ok("ip", &["route", "add", "blackhole", &rules.blackhole]);
    let cluster_ip = "10.124.6.10";
    nft(&format!(
        "table inet {t} {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    ip daddr {cluster_ip} tcp dport 80 dnat ip to {ip_a}:80\n  }}\n}}\n",
        t = rules.table
    ));
    let answer = eventually(WAIT, "a through its ClusterIP", || async {
        let (_, out) = exec(rt, &client, &format!("nc -w 2 {cluster_ip} 80 </dev/null")).await;
        out.contains("hello-from-a").then_some(out)
    })
    .await;
    assert_eq!(answer.trim(), "hello-from-a");

    // NetworkPolicy's part: a filter in the node's inet forward hook sees pod-to-pod traffic
    // on one node (no bridge switches it past the hook), with the pods' own addresses.
    nft(&format!(
        "table inet {t} {{\n  chain forward {{\n    type filter hook forward priority filter; policy accept;\n    ip saddr {ip_b} ip daddr {ip_a} tcp dport 80 reject with tcp reset\n  }}\n}}\n",
        t = rules.table
    ));
    for target in [ip_a.to_string(), cluster_ip.to_string()] {
        let (code, out) = exec(rt, &client, &format!("nc -w 2 {target} 80 </dev/null")).await;
        assert!(
            code != 0 && !out.contains("hello-from-a"),
            "b reached a at {target} past the filter: {out}"
        );
    }
    drop(rules);
    drop(runtime);
    let netns = [netns_of(&a), netns_of(&b)];
    let left = leftovers(&prefix, "10.123.6.", &netns);
    assert!(left.is_empty(), "left behind: {left:?}");
}
