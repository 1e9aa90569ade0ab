//! One cluster across three OS processes: the control plane (API server, store, scheduler,
//! controllers) in one, and a node agent in each of two others, joined over HTTP through
//! `RemoteStore` over TLS, each node with its own `system:node:<name>` certificate. A
//! Deployment's pods run on both remote nodes as real processes, and go when it is deleted.
//!
//! The child processes are this test binary again, started with `KUBE_PARTS_ROLE` set, running
//! [`role_child`].

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use examples::cluster::{
    ClusterConfig, LocalCluster, NodeConfig, RemoteNode, RuntimeKind, StoreKind, credentials,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube_core::store::{ListOptions, Preconditions, Store};
use kube_core::typed::Api;
use kube_store::RemoteStore;
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// The pod network index of this test's cluster (its pod range), apart from other tests'.
const MULTI_PROCESS_NETWORK: usize = 23;

const ROLE: &str = "KUBE_PARTS_ROLE";

/// The child half: runs the control plane or a node agent until stdin closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let dir = std::env::var("KUBE_PARTS_DIR").unwrap();
    match role.as_str() {
        "control-plane" => {
            let cluster = LocalCluster::start(ClusterConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                data_dir: dir.into(),
                nodes: 0,
                runtime: RuntimeKind::Fake,
                store: StoreKind::Durable,
                pod_network_base: MULTI_PROCESS_NETWORK,
                ..ClusterConfig::default()
            })
            .await
            .unwrap();
            println!("READY https://{}", cluster.addr);
            wait_for_stdin_close().await;
            cluster.shutdown().await.unwrap();
        }
        "node" => {
            let name = std::env::var("KUBE_PARTS_NODE").unwrap();
            let control_plane = std::env::var("KUBE_PARTS_CP_DIR").unwrap();
            let auth = credentials(
                std::path::Path::new(&control_plane),
                &format!("node-{name}"),
                &format!("system:node:{name}"),
                &["system:nodes"],
            )
            .unwrap();
            // As root, each node's links and tables are named apart (`kp21n1…`, `kp22n1…`), and
            // its pods take addresses from the pod CIDR the control plane gives it.
            let index = if name == "remote-a" { 21 } else { 22 };
            let node = RemoteNode::start(NodeConfig {
                server: std::env::var("KUBE_PARTS_SERVER").unwrap(),
                auth,
                name,
                node_ip: "127.0.0.1".parse().unwrap(),
                root_dir: dir.into(),
                runtime: RuntimeKind::Process,
                index,
                cluster_cidr: examples::network::NetworkPlan::new(MULTI_PROCESS_NETWORK)
                    .cluster_cidr,
                cluster_dns: None,
                heartbeat_interval: None,
                images: Default::default(),
            })
            .await
            .unwrap();
            println!("READY {}", std::process::id());
            wait_for_stdin_close().await;
            node.shutdown().await.unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

async fn wait_for_stdin_close() {
    let _ = tokio::task::spawn_blocking(|| {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines() {
            if line.is_err() {
                break;
            }
        }
    })
    .await;
}

/// Starts this binary as `role`; returns the child and what it printed after `READY `.
async fn spawn(role: &str, dir: &std::path::Path, env: &[(&str, &str)]) -> (Child, String) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "multi_process::role_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, role)
        .env("KUBE_PARTS_DIR", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // libtest prints the test's name first, on the same line.
            if let Some((_, rest)) = line.split_once("READY ") {
                return rest.trim().to_string();
            }
        }
        panic!("{role} exited before it was ready");
    })
    .await
    .unwrap_or_else(|_| panic!("{role} not ready within 60 s"));
    // Keep reading: a child whose stdout closes fails when it prints its test result.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, ready)
}

/// Asks a child to stop (closing its stdin) and waits for it.
async fn stop(mut child: Child) {
    drop(child.stdin.take());
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the child stops within 60 s")
        .unwrap();
    assert!(status.success(), "child exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_and_node_agents_in_separate_processes_run_pods() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (control_plane, url) = spawn("control-plane", &dir.path().join("cp"), &[]).await;
    let mut nodes = Vec::new();
    for name in ["remote-a", "remote-b"] {
        let (child, _) = spawn(
            "node",
            &dir.path().join(name),
            &[
                ("KUBE_PARTS_SERVER", &url),
                ("KUBE_PARTS_NODE", name),
                ("KUBE_PARTS_CP_DIR", dir.path().join("cp").to_str().unwrap()),
            ],
        )
        .await;
        nodes.push(child);
    }

    let admin = credentials(
        &dir.path().join("cp"),
        "admin",
        "kubernetes-admin",
        &["system:masters"],
    )
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(RemoteStore::with_auth(&url, admin).unwrap());
    let deployments: Api<Deployment> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "sleepers"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "sleepers"}},
            "template": {
                "metadata": {"labels": {"app": "sleepers"}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [{"name": "sleep", "image": "busybox", "command": ["sleep", "600"]}],
                },
            },
        },
    }))
    .unwrap();
    deployments.create(&deployment).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let placed = loop {
        let list = pods.list(&ListOptions::default()).await.unwrap().items;
        let running: Vec<&Pod> = list
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect();
        if running.len() == 2 {
            break running
                .iter()
                .filter_map(|p| p.spec.as_ref()?.node_name.clone())
                .collect::<BTreeSet<_>>();
        }
        assert!(Instant::now() < deadline, "2 pods Running: {list:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        placed,
        BTreeSet::from(["remote-a".to_string(), "remote-b".to_string()]),
        "the scheduler spreads the pods over both remote nodes"
    );
    let sleeping = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .filter(|cmd| cmd.starts_with(b"sleep\x00600"))
            .count()
    };
    // Running is reported once the process is started; it may still be on its way to
    // exec'ing `sleep` (entering its namespaces) for a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sleeping() < 2 {
        assert!(Instant::now() < deadline, "the pods are real processes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    deployments
        .delete("sleepers", &Preconditions::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pods
        .list(&ListOptions::default())
        .await
        .unwrap()
        .items
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "pods deleted with their deployment"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for node in nodes {
        stop(node).await;
    }
    stop(control_plane).await;
}
