//! A node agent restarted as a new OS process adopts the pods the old one left running.
//!
//! The test runs its first half in a child process: this test binary, asked to run this one
//! test with [`CHILD_ENV`] set. The child starts an agent over a `DurableStore` and a runtime
//! that keeps its containers when dropped, runs pods, and exits. The parent then starts a
//! new agent over the same directories.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube_core::runtime::{ContainerState, Runtime};
use kube_core::store::{Preconditions, Store};
use kube_node::ProcessRuntime;

use crate::common::{Cluster, agent, alive, busybox, eventually, first_container, pod, require};

const WAIT: Duration = Duration::from_secs(10);
/// Set (to the test's directory) in the child process.
const CHILD_ENV: &str = "KUBE_NODE_RECOVERY_CHILD_DIR";
const TEST_NAME: &str = "restart_recovery::process_pods_survive_an_agent_process_restart";

struct Dirs {
    store: PathBuf,
    runtime: PathBuf,
    pods: PathBuf,
    stop: PathBuf,
    pids: PathBuf,
}

fn dirs(root: &Path) -> Dirs {
    Dirs {
        store: root.join("store"),
        runtime: root.join("runtime"),
        pods: root.join("pods"),
        stop: root.join("stop"),
        pids: root.join("pids.json"),
    }
}

fn cluster(dirs: &Dirs, runtime: ProcessRuntime) -> (Cluster, SocketAddr) {
    let store: Arc<dyn Store> =
        Arc::new(kube_store::DurableStore::open(&dirs.store).expect("durable store"));
    let agent = agent(Arc::new(runtime))
        .root_dir(&dirs.pods)
        .serve("127.0.0.1:0".parse().expect("addr"))
        .build()
        .expect("agent");
    let addr = agent.kubelet_addr().expect("serving");
    (Cluster::start_with_store(agent, store), addr)
}

/// The first agent process: two pods running, their pids written down, then exit.
async fn child(root: &Path) {
    let dirs = dirs(root);
    let runtime = ProcessRuntime::builder()
        .root_dir(&dirs.runtime)
        .keep_on_drop(true)
        .build()
        .expect("runtime");
    let (cluster, _) = cluster(&dirs, runtime.clone());
    let pods = cluster.pods();
    pods.create(&pod(
        "steady",
        "Always",
        serde_json::json!([{"name": "c", "image": "ignored", "command": ["sh", "-c",
            "echo hello; exec sleep 60"]}]),
    ))
    .await
    .expect("create");
    let stop = dirs.stop.display().to_string();
    pods.create(&pod(
        "short",
        "Never",
        serde_json::json!([{"name": "c", "image": "ignored", "command": ["sh", "-c",
            format!("while [ ! -e '{stop}' ]; do sleep 0.05; done; exit 3")]}]),
    ))
    .await
    .expect("create");
    cluster.wait_phase("steady", "Running", WAIT).await;
    cluster.wait_phase("short", "Running", WAIT).await;
    let pids: Vec<(String, u32)> = runtime
        .list_containers(&Default::default())
        .await
        .expect("list")
        .into_iter()
        .map(|c| {
            let pod = c.labels[kube_node::labels::POD_NAME].clone();
            (pod, c.info["pid"].parse().expect("pid"))
        })
        .collect();
    std::fs::write(&dirs.pids, serde_json::to_vec(&pids).expect("json")).expect("pids");
    cluster.shutdown().await;
}

#[tokio::test]
async fn process_pods_survive_an_agent_process_restart() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir)).await;
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let dirs = dirs(root.path());
    let exe = std::env::current_exe().expect("test binary");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(exe)
            .args([TEST_NAME, "--exact", "--nocapture"])
            .env(CHILD_ENV, root.path())
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("the first agent process ends")
    .expect("the first agent process runs");
    assert!(
        out.status.success() && dirs.pids.exists(),
        "first agent process failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pids: Vec<(String, u32)> =
        serde_json::from_slice(&std::fs::read(&dirs.pids).expect("pids")).expect("json");
    let pid_of = |name: &str| {
        pids.iter()
            .find(|(pod, _)| pod == name)
            .map(|(_, pid)| *pid)
            .expect("a pid")
    };
    let (steady, short) = (pid_of("steady"), pid_of("short"));
    assert!(alive(steady), "the first agent left its pod running");
    // One container ends while no agent runs: how it ended cannot be known.
    std::fs::write(&dirs.stop, "").expect("stop file");
    eventually(WAIT, "the short container to end", || async {
        (!alive(short)).then_some(())
    })
    .await;

    let runtime = ProcessRuntime::new(&dirs.runtime).expect("runtime over the same root");
    let adopted = runtime
        .list_containers(&Default::default())
        .await
        .expect("list");
    assert_eq!(
        adopted.len(),
        2,
        "both containers are known again: {adopted:?}"
    );
    let (cluster, addr) = cluster(&dirs, runtime.clone());
    let before = first_container(&cluster.wait_phase("steady", "Running", WAIT).await);
    // A few syncs: the container must be the same one, not restarted.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = first_container(&cluster.wait_phase("steady", "Running", WAIT).await);
    assert_eq!(after.container_id, before.container_id);
    assert_eq!(after.restart_count, 0);
    assert!(after.state.expect("state").running.is_some());
    assert!(alive(steady), "the same process runs");
    let running: Vec<_> = runtime
        .list_containers(&Default::default())
        .await
        .expect("list")
        .into_iter()
        .filter(|c| c.state == ContainerState::Running)
        .collect();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].info["pid"], steady.to_string());

    // Its log, written before the restart, is served by the new agent.
    let log = tokio::time::timeout(WAIT, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(
                b"GET /containerLogs/default/steady/c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await
            .expect("request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("response");
        response
    })
    .await
    .expect("a response");
    assert!(log.starts_with("HTTP/1.1 200"), "{log}");
    assert!(log.ends_with("\r\n\r\nhello\n"), "{log}");

    // The container that ended unseen: exited, exit code unknown (the kubelet's 137).
    let failed = cluster.wait_phase("short", "Failed", WAIT).await;
    let terminated = first_container(&failed)
        .state
        .and_then(|s| s.terminated)
        .expect("terminated");
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (137, Some("ContainerStatusUnknown"))
    );

    // The adopted process is the agent's to stop like any other.
    cluster
        .pods()
        .delete("steady", &Preconditions::default())
        .await
        .expect("delete");
    eventually(WAIT, "the adopted process stopped", || async {
        (!alive(steady)).then_some(())
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_new_runtime_over_the_same_root_adopts_running_and_exited_containers() {
    use kube_core::runtime::{ContainerConfig, PodSandboxConfig};
    let root = tempfile::tempdir().expect("tempdir");
    let first = ProcessRuntime::builder()
        .root_dir(root.path())
        .keep_on_drop(true)
        .build()
        .expect("runtime");
    assert!(
        ProcessRuntime::new(root.path()).is_err(),
        "one live runtime per root"
    );
    let sandbox = first
        .run_pod_sandbox(&PodSandboxConfig::default())
        .await
        .expect("sandbox");
    let sh = |name: &str, script: &str| ContainerConfig {
        name: name.into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    };
    let long = first
        .create_container(&sandbox, &sh("long", "echo up; exec sleep 30"))
        .await
        .expect("create");
    first.start_container(&long).await.expect("start");
    let quick = first
        .create_container(&sandbox, &sh("quick", "exit 3"))
        .await
        .expect("create");
    first.start_container(&quick).await.expect("start");
    eventually(WAIT, "quick exits", || async {
        let s = first.container_status(&quick).await.ok()?;
        (s.state == ContainerState::Exited).then_some(())
    })
    .await;
    // Dropped in this process while `long` runs: its wait task stays behind.
    let pid: u32 = first.container_status(&long).await.expect("status").info["pid"]
        .parse()
        .expect("pid");
    drop(first);
    assert!(alive(pid), "kept running");

    let second = ProcessRuntime::new(root.path()).expect("adopting runtime");
    let status = second.container_status(&long).await.expect("adopted");
    assert_eq!(status.state, ContainerState::Running);
    assert_eq!(status.info["pid"], pid.to_string());
    let exited = second.container_status(&quick).await.expect("adopted");
    assert_eq!(
        (exited.state, exited.exit_code, exited.reason.as_deref()),
        (ContainerState::Exited, Some(3), Some("Error"))
    );
    let log = second
        .container_logs(&long, &Default::default())
        .await
        .expect("log");
    assert_eq!(&log[..], b"up\n");
    // The old wait task sees the exit and leaves it for the new runtime: the code is known.
    second
        .stop_container(&long, Duration::from_secs(2))
        .await
        .expect("stop");
    let stopped = eventually(WAIT, "the exit recorded", || async {
        let s = second.container_status(&long).await.ok()?;
        (s.state == ContainerState::Exited).then_some(s)
    })
    .await;
    assert!(!alive(pid));
    assert_eq!(stopped.exit_code, Some(143), "SIGTERM: {stopped:?}");
    second.remove_pod_sandbox(&sandbox).await.expect("remove");
    drop(second);
    let third = ProcessRuntime::new(root.path()).expect("runtime");
    assert!(
        third
            .list_containers(&Default::default())
            .await
            .expect("list")
            .is_empty(),
        "removed containers stay removed"
    );

    // A runtime dropped without keep_on_drop kills its containers: nothing is left to adopt.
    let sandbox = third
        .run_pod_sandbox(&PodSandboxConfig::default())
        .await
        .expect("sandbox");
    let id = third
        .create_container(&sandbox, &sh("doomed", "exec sleep 30"))
        .await
        .expect("create");
    third.start_container(&id).await.expect("start");
    let pid: u32 = third.container_status(&id).await.expect("status").info["pid"]
        .parse()
        .expect("pid");
    drop(third);
    eventually(WAIT, "the container killed", || async {
        (!alive(pid)).then_some(())
    })
    .await;
    let fourth = ProcessRuntime::new(root.path()).expect("runtime");
    assert!(fourth.list_pod_sandboxes().await.expect("list").is_empty());
    assert!(
        fourth
            .list_containers(&Default::default())
            .await
            .expect("list")
            .is_empty()
    );
}

const RUNC_CHILD_ENV: &str = "KUBE_NODE_RECOVERY_RUNC_CHILD_DIR";
const RUNC_TEST_NAME: &str = "restart_recovery::runc_pods_survive_an_agent_process_restart";

fn runc_cluster(root: &Path, keep: bool) -> (Cluster, kube_node::OciRuntime, SocketAddr) {
    let dirs = dirs(root);
    let runtime = kube_node::OciRuntime::builder()
        .root_dir(root.join("oci"))
        .image("busybox", root.join("busybox"))
        .keep_on_drop(keep)
        .build()
        .expect("runc runtime");
    let store: Arc<dyn Store> =
        Arc::new(kube_store::DurableStore::open(&dirs.store).expect("durable store"));
    let agent = agent(Arc::new(runtime.clone()))
        .root_dir(&dirs.pods)
        .serve("127.0.0.1:0".parse().expect("addr"))
        .build()
        .expect("agent");
    let addr = agent.kubelet_addr().expect("serving");
    (Cluster::start_with_store(agent, store), runtime, addr)
}

#[tokio::test]
async fn runc_pods_survive_an_agent_process_restart() {
    if let Ok(dir) = std::env::var(RUNC_CHILD_ENV) {
        // The first agent process: a runc pod running, then exit.
        let (cluster, _runtime, _) = runc_cluster(Path::new(&dir), true);
        cluster
            .pods()
            .create(&pod(
                "steady",
                "Always",
                serde_json::json!([{"name": "c", "image": "busybox", "command": ["sh", "-c",
                    "echo hello; exec sleep 60"]}]),
            ))
            .await
            .expect("create");
        cluster.wait_phase("steady", "Running", WAIT).await;
        cluster.shutdown().await;
        return;
    }
    if !require("runc") {
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    busybox(root.path());
    let exe = std::env::current_exe().expect("test binary");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(exe)
            .args([RUNC_TEST_NAME, "--exact", "--nocapture"])
            .env(RUNC_CHILD_ENV, root.path())
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("the first agent process ends")
    .expect("the first agent process runs");
    assert!(
        out.status.success(),
        "first agent process failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let (cluster, runtime, addr) = runc_cluster(root.path(), false);
    let before = first_container(&cluster.wait_phase("steady", "Running", WAIT).await);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = first_container(&cluster.wait_phase("steady", "Running", WAIT).await);
    assert_eq!(
        after.container_id, before.container_id,
        "the same container"
    );
    assert_eq!(after.restart_count, 0);
    let id = after
        .container_id
        .as_deref()
        .and_then(|id| id.split_once("://"))
        .map(|(_, id)| id.to_string())
        .expect("container id");
    let exec = runtime
        .exec_sync(&id, &["echo".into(), "inside".into()], WAIT)
        .await
        .expect("exec in the adopted container");
    assert_eq!(&exec.output[..], b"inside\n");
    let log = tokio::time::timeout(WAIT, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(
                b"GET /containerLogs/default/steady/c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await
            .expect("request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("response");
        response
    })
    .await
    .expect("a response");
    assert!(log.ends_with("\r\n\r\nhello\n"), "{log}");
    cluster
        .pods()
        .delete("steady", &Preconditions::default())
        .await
        .expect("delete");
    eventually(WAIT, "the adopted container removed", || async {
        runtime
            .list_containers(&Default::default())
            .await
            .ok()?
            .is_empty()
            .then_some(())
    })
    .await;
    cluster.shutdown().await;
}
