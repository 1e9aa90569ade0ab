//! The quickstart's cluster network with real traffic (as root, runc): pods get addresses
//! from their node's pod CIDR, a frontend reaches a backend on the other node by Service name,
//! FQDN, ClusterIP and environment variables, DNS answers per record type, a headless
//! `hostname.subdomain` name resolves, a pod reaches a server outside the cluster
//! masqueraded, NetworkPolicies block and allow, an in-cluster kube-rs client lists pods
//! through the `kubernetes` Service, and nothing the cluster made is left after shutdown.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::{Duration, Instant};

use examples::cluster::{ClusterConfig, RuntimeKind};

use crate::kubectl::{Kubectl, cluster_with_kubectl, kubectl_binary, memory_cluster, runc_or_skip};

/// This test's pod network index: links, tables and the cluster CIDR derive from it.
const BASE: usize = 41;

/// Runs `program args`, failing with its stderr.
fn run(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace outside the cluster, joined to the host by a veth pair, with a TCP
/// server that answers each connection with the peer address it sees.
struct Outside {
    netns: String,
    host_link: String,
    /// The server's address.
    addr: String,
}

impl Outside {
    fn start() -> Self {
        let pid = std::process::id() % 10_000;
        let netns = format!("kpout{pid}");
        let host_link = format!("kpo{pid}h");
        let peer = format!("kpo{pid}p");
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &netns])
            .output();
        run("ip", &["netns", "add", &netns]);
        run(
            "ip",
            &[
                "link", "add", &host_link, "type", "veth", "peer", "name", &peer,
            ],
        );
        run("ip", &["link", "set", &peer, "netns", &netns]);
        run("ip", &["addr", "add", "198.19.41.1/24", "dev", &host_link]);
        run("ip", &["link", "set", &host_link, "up"]);
        for args in [
            vec!["addr", "add", "198.19.41.2/24", "dev", &peer],
            vec!["link", "set", &peer, "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let mut full = vec!["-n", &netns];
            full.extend(args);
            run("ip", &full);
        }
        // The server runs on a thread that entered the namespace: it sees only that network.
        let path = format!("/run/netns/{netns}");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("netns file");
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let listener = std::net::TcpListener::bind("198.19.41.2:9000").expect("bind");
            ready_tx.send(()).expect("ready");
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let peer = stream
                    .peer_addr()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default();
                let mut buf = [0u8; 64];
                let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = stream.read(&mut buf);
                let _ = writeln!(stream, "peer={peer}");
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("outside server up");
        Self {
            netns,
            host_link,
            addr: "198.19.41.2".into(),
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_link])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

/// Runs `script` in `pod` through `kubectl exec`; returns stdout, or stderr on failure.
async fn exec(k: &Kubectl, pod: &str, script: &str) -> Result<String, String> {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        k.command(&["exec", pod, "--", "sh", "-c", script]).output(),
    )
    .await
    .expect("kubectl exec timed out")
    .expect("kubectl exec runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Retries `script` in `pod` until its output satisfies `ok` (a fresh pod's route, DNS and
/// proxy rules appear within moments of each other).
async fn exec_until(k: &Kubectl, pod: &str, script: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let result = exec(k, pod, script).await;
        match &result {
            Ok(out) if ok(out) => return out.clone(),
            _ if Instant::now() > deadline => panic!("{script} in {pod}: {result:?}"),
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// An HTTP GET of `/` at `host port` from inside a pod (busybox `nc`).
fn http(host: &str, port: &str) -> String {
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port}")
}

fn apply(k: &Kubectl, dir: &Path, name: &str, yaml: &str) -> impl Future<Output = String> {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, yaml).expect("manifest written");
    let file = file.display().to_string();
    async move { k.run(&["apply", "-f", &file]).await }
}

/// Names of links, routes and nftables tables on the host that mention `needle`.
fn leftovers(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (what, out) in [
        ("link", run("ip", &["-o", "link", "show"])),
        ("route", run("ip", &["route", "show", "table", "all"])),
        ("nft", run("nft", &["list", "tables"])),
        ("netns", run("ip", &["netns", "list"])),
    ] {
        found.extend(
            out.lines()
                .filter(|l| l.contains(needle))
                .map(|l| format!("{what}: {l}")),
        );
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_services_dns_other_nodes_and_the_outside() {
    if !runc_or_skip() {
        return;
    }
    let Some(binary) = kubectl_binary() else {
        return;
    };
    let in_cluster = crate::multi_host::example_binary("in_cluster").await;
    let outside = Outside::start();
    let dir = tempfile::tempdir().unwrap();
    let config = memory_cluster(dir.path(), "127.0.0.41:0", 2, BASE);
    let cluster_cidr = config.cluster_cidr();
    let (cluster, k) = cluster_with_kubectl(binary, config).await;
    k.wait_for(
        "both nodes Ready with a pod CIDR",
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.spec.podCIDR} {.status.conditions[-1].type}{\"\\n\"}{end}",
        ],
        |out| {
            out.lines()
                .filter(|l| l.starts_with("10.") && l.ends_with("Ready"))
                .count()
                == 2
        },
    )
    .await;

    apply(
        &k,
        dir.path(),
        "apps",
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: backend}
spec:
  replicas: 2
  selector: {matchLabels: {app: backend}}
  template:
    metadata: {labels: {app: backend}}
    spec:
      nodeSelector: {kubernetes.io/hostname: node-2}
      containers:
      - name: httpd
        image: busybox
        command: ["sh", "-c", "echo hello-from-backend > /www/index.html && exec httpd -f -p 8080 -h /www"]
        ports: [{name: http, containerPort: 8080}]
        volumeMounts: [{name: www, mountPath: /www}]
      volumes: [{name: www, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: backend}
spec:
  selector: {app: backend}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: tcp, port: 5432}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, labels: {app: db}}
spec:
  hostname: db-0
  subdomain: db
  nodeSelector: {kubernetes.io/hostname: node-2}
  containers: [{name: c, image: busybox, command: ["sleep", "3600"]}]
---
apiVersion: v1
kind: Service
metadata: {name: docs}
spec: {type: ExternalName, externalName: docs.example.org}
---
apiVersion: v1
kind: Pod
metadata: {name: frontend, labels: {role: frontend}}
spec:
  nodeSelector: {kubernetes.io/hostname: node-1}
  containers: [{name: c, image: busybox, command: ["sleep", "3600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: other, labels: {role: other}}
spec:
  nodeSelector: {kubernetes.io/hostname: node-1}
  containers: [{name: c, image: busybox, command: ["sleep", "3600"]}]
"#,
    )
    .await;
    k.wait_for(
        "every pod Running",
        &["get", "pods", "--no-headers"],
        |out| out.lines().count() == 5 && out.lines().all(|l| l.contains("Running")),
    )
    .await;
    k.wait_for(
        "both backends ready behind the Service",
        &[
            "get",
            "endpoints",
            "backend",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ],
        |out| out.split_whitespace().count() == 2,
    )
    .await;

    // Addresses from the nodes' pod CIDRs.
    let backend_ips = k
        .run(&[
            "get",
            "pods",
            "-l",
            "app=backend",
            "-o",
            "jsonpath={.items[*].status.podIP}",
        ])
        .await;
    let backend_ip = backend_ips.split_whitespace().next().unwrap().to_string();
    let prefix = cluster_cidr
        .split('.')
        .take(2)
        .collect::<Vec<_>>()
        .join(".");
    assert!(
        backend_ip.starts_with(&prefix),
        "{backend_ip} is from {cluster_cidr}"
    );
    let cluster_ip = k
        .run(&["get", "svc", "backend", "-o", "jsonpath={.spec.clusterIP}"])
        .await;

    // The frontend on node-1 reaches the backends on node-2 every way a program does.
    let hello = |out: &str| out.contains("hello-from-backend");
    exec_until(&k, "frontend", &http("backend", "80"), hello).await;
    exec_until(
        &k,
        "frontend",
        &http("backend.default.svc.cluster.local", "80"),
        hello,
    )
    .await;
    exec_until(&k, "frontend", &http(&cluster_ip, "80"), hello).await;
    exec_until(
        &k,
        "frontend",
        &http("$BACKEND_SERVICE_HOST", "$BACKEND_SERVICE_PORT"),
        hello,
    )
    .await;
    exec_until(&k, "frontend", &http(&backend_ip, "8080"), hello).await;
    let env = exec(&k, "frontend", "env").await.unwrap();
    for var in [
        format!("BACKEND_SERVICE_HOST={cluster_ip}"),
        "BACKEND_SERVICE_PORT=80".into(),
        "BACKEND_SERVICE_PORT_HTTP=80".into(),
        format!("BACKEND_PORT=tcp://{cluster_ip}:80"),
        format!("BACKEND_PORT_80_TCP_ADDR={cluster_ip}"),
        "KUBERNETES_SERVICE_PORT=443".into(),
    ] {
        assert!(env.lines().any(|l| l == var), "{var} in\n{env}");
    }

    // DNS, per record type, from a pod (busybox nslookup against the kube-dns Service).
    let resolv = exec(&k, "frontend", "cat /etc/resolv.conf").await.unwrap();
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    let a = exec_until(
        &k,
        "frontend",
        "nslookup backend.default.svc.cluster.local",
        |o| o.contains(cluster_ip.as_str()),
    )
    .await;
    assert!(a.contains("Address"), "{a}");
    let db_ip = k
        .run(&["get", "pod", "db-0", "-o", "jsonpath={.status.podIP}"])
        .await;
    exec_until(
        &k,
        "frontend",
        "nslookup db-0.db.default.svc.cluster.local",
        |o| o.contains(db_ip.as_str()),
    )
    .await;
    exec_until(
        &k,
        "frontend",
        "nslookup -type=srv _http._tcp.backend.default.svc.cluster.local",
        |o| o.contains("80") && o.contains("backend.default.svc.cluster.local"),
    )
    .await;
    exec_until(&k, "frontend", &format!("nslookup {cluster_ip}"), |o| {
        o.contains("backend.default.svc.cluster.local")
    })
    .await;
    exec_until(
        &k,
        "frontend",
        "nslookup -type=cname docs.default.svc.cluster.local",
        |o| o.contains("docs.example.org"),
    )
    .await;
    let missing = exec(&k, "frontend", "nslookup nope.default.svc.cluster.local").await;
    let missing = missing.unwrap_or_else(|e| e);
    assert!(missing.contains("NXDOMAIN"), "{missing}");

    // Outside the cluster, masqueraded: the server sees the node's address, not the pod's.
    let seen = exec_until(&k, "frontend", &http(&outside.addr, "9000"), |o| {
        o.contains("peer=")
    })
    .await;
    assert!(seen.contains("peer=198.19.41.1"), "masqueraded: {seen}");

    // NetworkPolicy: default deny for the backends, then one client allowed.
    apply(
        &k,
        dir.path(),
        "deny",
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: backend-deny}
spec:
  podSelector: {matchLabels: {app: backend}}
  policyTypes: [Ingress]
"#,
    )
    .await;
    exec_until(
        &k,
        "frontend",
        &format!("{} || echo blocked", http("backend", "80")),
        |o| o.contains("blocked"),
    )
    .await;
    apply(
        &k,
        dir.path(),
        "allow",
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: backend-from-frontend}
spec:
  podSelector: {matchLabels: {app: backend}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: frontend}}}]
    ports: [{port: 8080}]
"#,
    )
    .await;
    exec_until(&k, "frontend", &http("backend", "80"), hello).await;
    let other = exec(
        &k,
        "other",
        &format!("{} || echo blocked", http("backend", "80")),
    )
    .await
    .unwrap();
    assert!(other.contains("blocked"), "{other}");

    // An in-cluster client (kube-rs's Client::try_default) inside a pod, through the
    // `kubernetes` Service with the pod's token.
    k.run(&[
        "create",
        "rolebinding",
        "default-view",
        "--clusterrole=view",
        "--serviceaccount=default:default",
    ])
    .await;
    let bin_dir = in_cluster.parent().unwrap().display().to_string();
    apply(
        &k,
        dir.path(),
        "client",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: lister}}
spec:
  restartPolicy: Never
  nodeSelector: {{kubernetes.io/hostname: node-1}}
  containers:
  - name: c
    image: busybox
    command: ["/app/in_cluster"]
    volumeMounts:
    - {{name: app, mountPath: /app}}
    - {{name: lib, mountPath: /lib}}
    - {{name: lib, mountPath: /usr/lib}}
    - {{name: lib64, mountPath: /lib64}}
  volumes:
  - {{name: app, hostPath: {{path: {bin_dir}}}}}
  - {{name: lib, hostPath: {{path: /usr/lib}}}}
  - {{name: lib64, hostPath: {{path: /usr/lib64}}}}
"#
        ),
    )
    .await;
    k.wait_for(
        "the in-cluster client to finish",
        &["get", "pod", "lister", "-o", "jsonpath={.status.phase}"],
        |out| out == "Succeeded" || out == "Failed",
    )
    .await;
    let log = k.run(&["logs", "lister"]).await;
    assert!(log.contains("pod frontend"), "{log}");
    assert!(log.contains("pods="), "{log}");

    cluster.shutdown().await.unwrap();
    drop(outside);
    let needle = format!("kp{BASE}");
    // The runtimes remove their links and tables as they are dropped, moments after the
    // shutdown returns.
    let deadline = Instant::now() + Duration::from_secs(10);
    let left = loop {
        let left = leftovers(&needle);
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(left.is_empty(), "left after shutdown: {left:#?}");
    let routes = run("ip", &["route", "show", "table", "all"]);
    assert!(
        !routes.contains(&format!("{prefix}.")),
        "pod routes left: {routes}"
    );
}

/// The Python client's `load_incluster_config()` in a pod (a host process in its own network
/// namespace): it finds the API server through the `kubernetes` Service's environment
/// variables and ClusterIP, and authenticates with the projected token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_lists_pods_from_inside_a_pod() {
    let python = std::env::var("KUBE_PARTS_PYTHON").ok().filter(|p| {
        std::process::Command::new(p)
            .args(["-c", "import kubernetes"])
            .status()
            .is_ok_and(|s| s.success())
    });
    let (true, Some(python)) = (nix::unistd::geteuid().is_root(), python) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: this test needs root and KUBE_PARTS_PYTHON (a Python with the kubernetes \
             package; scripts/test.sh makes one)"
        );
        eprintln!("skipping: needs root and KUBE_PARTS_PYTHON");
        return;
    };
    let Some(binary) = kubectl_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = ClusterConfig {
        runtime: RuntimeKind::Process,
        ..memory_cluster(dir.path(), "127.0.0.42:0", 1, 42)
    };
    let (cluster, k) = cluster_with_kubectl(binary, config).await;
    k.run(&[
        "create",
        "rolebinding",
        "default-view",
        "--clusterrole=view",
        "--serviceaccount=default:default",
    ])
    .await;
    let script = "from kubernetes import client, config\n\
                  config.load_incluster_config()\n\
                  pods = client.CoreV1Api().list_namespaced_pod('default').items\n\
                  print('pods=' + ','.join(p.metadata.name for p in pods))\n";
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "py"},
        "spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "python", "command": [python, "-c", script]}]},
    });
    let file = dir.path().join("py.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    k.run(&["apply", "-f", file.to_str().unwrap()]).await;
    k.wait_for(
        "the Python client to finish",
        &["get", "pod", "py", "-o", "jsonpath={.status.phase}"],
        |out| out == "Succeeded" || out == "Failed",
    )
    .await;
    let log = k.run(&["logs", "py"]).await;
    assert!(log.contains("pods=py"), "{log}");
    cluster.shutdown().await.unwrap();
}
