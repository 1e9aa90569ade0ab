//! NodeAgent over MemStore + CriRuntime, against a containerd the test starts itself.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use kube_core::runtime::{LogOptions, Runtime};
use kube_core::store::Preconditions;
use kube_node::CriRuntime;

use crate::common::{Cluster, agent, eventually, first_container, pod, require};
use crate::containerd_env::Containerd;
use crate::registry::{REGISTRY_BIN, Registry, TestImage, require_tool};

const WAIT: Duration = Duration::from_secs(20);

/// A busybox container running `script`. The image is imported, not in any registry: an
/// untagged name's default policy (`Always`) would pull it.
fn sh(name: &str, script: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name, "image": "busybox", "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", script]
    })
}

async fn logs(runtime: &CriRuntime, pod: &str, previous: bool) -> String {
    let bytes = kube_node::pod_logs(
        runtime,
        "default",
        pod,
        "c",
        previous,
        &LogOptions::default(),
    )
    .await
    .expect("logs");
    String::from_utf8_lossy(&bytes).into_owned()
}

fn ask(ip: &str) -> String {
    let mut stream = std::net::TcpStream::connect_timeout(
        &format!("{ip}:8080").parse().expect("socket address"),
        Duration::from_secs(2),
    )
    .expect("connects to the pod");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout set");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer read");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_runs_pods_with_ips_restarts_logs_and_oom() {
    if !require("containerd") || !require("runc") {
        return;
    }
    let containerd = Containerd::start("kn-cri-t1", "10.213.0.0/24").unwrap();
    let runtime = containerd.runtime().await.unwrap();
    assert!(
        runtime.version().starts_with("containerd://"),
        "{}",
        runtime.version()
    );
    let cluster = Cluster::start(agent(Arc::new(runtime.clone())).build().unwrap());
    let pods = cluster.pods();
    let server = |name: &str| {
        pod(
            name,
            "Always",
            serde_json::json!([sh(
                "c",
                &format!("while true; do echo {name} | nc -l -p 8080; done")
            )]),
        )
    };
    pods.create(&server("a")).await.unwrap();
    pods.create(&server("b")).await.unwrap();
    pods.create(&pod(
        "crash",
        "Always",
        serde_json::json!([sh("c", "echo attempt; exit 3")]),
    ))
    .await
    .unwrap();
    let mut hog = sh(
        "c",
        "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived",
    );
    hog["resources"] = serde_json::json!({"limits": {"memory": "20Mi"}});
    pods.create(&pod("hog", "Never", serde_json::json!([hog])))
        .await
        .unwrap();

    // Two pods, one port, their own IPs, reachable from the node.
    let ip = |p: kube_core::api::Pod| p.status.and_then(|s| s.pod_ip).unwrap();
    let ip_a = ip(cluster.wait_phase("a", "Running", WAIT).await);
    let ip_b = ip(cluster.wait_phase("b", "Running", WAIT).await);
    assert_ne!(ip_a, ip_b);
    assert!(ip_a.starts_with("10.213.0."), "{ip_a}");
    let (a, b) = tokio::task::spawn_blocking(move || {
        // The listeners may take a moment after the container starts.
        std::thread::sleep(Duration::from_millis(300));
        (ask(&ip_a), ask(&ip_b))
    })
    .await
    .unwrap();
    assert_eq!((a.trim(), b.trim()), ("a", "b"));

    // Exceeding the memory limit: killed (137), and OOMKilled when containerd reports it.
    // containerd 1.6 sends the OOM event separately from the exit, late or (under load, when
    // the cgroup goes at once) not at all, and then says "Error"; the runtime waits a little
    // for it (see `cri.rs`), and a clean-clone CI run saw it missing twice.
    let failed = cluster.wait_phase("hog", "Failed", WAIT).await;
    let t = first_container(&failed).state.unwrap().terminated.unwrap();
    assert_eq!(t.exit_code, 137);
    assert!(
        matches!(t.reason.as_deref(), Some("OOMKilled" | "Error")),
        "{:?}",
        t.reason
    );

    // A crashing container restarts, and the previous instance's log is kept.
    let restarted = eventually(WAIT, "two restarts", || async {
        let p = pods.get("crash").await.ok()?;
        let restarts = p
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .restart_count;
        (restarts >= 2).then_some(p)
    })
    .await;
    let last = first_container(&restarted)
        .last_state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
    assert_eq!(logs(&runtime, "crash", true).await, "attempt\n");

    for name in ["a", "b", "crash", "hog"] {
        pods.delete(name, &Preconditions::default()).await.unwrap();
    }
    eventually(WAIT, "sandboxes removed", || async {
        runtime
            .list_pod_sandboxes()
            .await
            .ok()?
            .is_empty()
            .then_some(())
    })
    .await;
    cluster.shutdown().await;
    containerd.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_liveness_grace_and_agent_restart() {
    if !require("containerd") || !require("runc") {
        return;
    }
    let containerd = Containerd::start("kn-cri-t2", "10.217.0.0/24").unwrap();
    let runtime = containerd.runtime().await.unwrap();
    let store: Arc<dyn kube_core::store::Store> = Arc::new(kube_store::MemStore::new());
    let first = Cluster::start_with_store(
        agent(Arc::new(runtime.clone())).build().unwrap(),
        store.clone(),
    );
    let pods = first.pods();
    pods.create(&pod(
        "steady",
        "Always",
        serde_json::json!([sh("c", "sleep 60")]),
    ))
    .await
    .unwrap();
    let mut sick = sh(
        "c",
        "touch /tmp/healthy; sleep 1; rm /tmp/healthy; sleep 60",
    );
    sick["livenessProbe"] = serde_json::json!({
        "exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 1
    });
    pods.create(&pod("sick", "Always", serde_json::json!([sick])))
        .await
        .unwrap();
    let mut stubborn = pod(
        "stubborn",
        "Always",
        serde_json::json!([sh("c", "trap '' TERM; while true; do sleep 0.05; done")]),
    );
    stubborn
        .spec
        .as_mut()
        .unwrap()
        .termination_grace_period_seconds = Some(2);
    pods.create(&stubborn).await.unwrap();

    let before = first_container(&first.wait_phase("steady", "Running", WAIT).await);
    first.wait_phase("stubborn", "Running", WAIT).await;

    // A failing liveness probe (run through CRI ExecSync) restarts the container.
    let restarted = eventually(WAIT, "a liveness restart", || async {
        let p = pods.get("sick").await.ok()?;
        let restarts = p
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .restart_count;
        (restarts >= 1).then_some(p)
    })
    .await;
    assert!(
        first_container(&restarted)
            .last_state
            .unwrap()
            .terminated
            .is_some()
    );

    // The agent restarts; what runs keeps running.
    first.shutdown().await;
    let second =
        Cluster::start_with_store(agent(Arc::new(runtime.clone())).build().unwrap(), store);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = first_container(&second.wait_phase("steady", "Running", WAIT).await);
    assert_eq!(after.container_id, before.container_id);
    assert_eq!(after.restart_count, 0);

    // Deletion honours the grace period: SIGTERM is ignored, SIGKILL comes after 2 s.
    let pods = second.pods();
    let t0 = std::time::Instant::now();
    pods.delete("stubborn", &Preconditions::default())
        .await
        .unwrap();
    eventually(WAIT, "stubborn's sandbox removed", || async {
        let sandboxes = runtime.list_pod_sandboxes().await.ok()?;
        (!sandboxes.iter().any(|s| s.metadata.name == "stubborn")).then_some(())
    })
    .await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "{took:?}"
    );

    for name in ["steady", "sick"] {
        pods.delete(name, &Preconditions::default()).await.unwrap();
    }
    eventually(WAIT, "sandboxes removed", || async {
        runtime
            .list_pod_sandboxes()
            .await
            .ok()?
            .is_empty()
            .then_some(())
    })
    .await;
    second.shutdown().await;
    containerd.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_through_a_mirror_and_with_credentials() {
    use kube_core::runtime::{AuthConfig, PodSandboxConfig, RuntimeError};
    if !require("containerd") || !require("runc") || !require_tool(REGISTRY_BIN) {
        return;
    }
    // docker.io is mirrored by one registry; another is private (htpasswd).
    let mirror = Registry::start();
    let image = TestImage::busybox(
        &["/bin/sh", "-c", "echo entrypoint \"$@\" $IMAGE_VAR", "--"],
        &["from-cmd"],
    );
    let digest = mirror.push("library/app", "1", &image).await;
    let private = Registry::builder().htpasswd("alice", "s3cret").start();
    private
        .push("team/app", "1", &TestImage::busybox(&[], &["sh"]))
        .await;
    let containerd = Containerd::start_with_registries(
        "kn-cri-t3",
        "10.219.0.0/24",
        Some(&mirror.host()),
        &[&private.host()],
    )
    .unwrap();
    let runtime = containerd.runtime().await.unwrap();

    assert_eq!(runtime.image_status("app:1").await.unwrap(), None);
    let sandbox = PodSandboxConfig {
        metadata: kube_core::runtime::PodSandboxMetadata {
            name: "entry".into(),
            namespace: "default".into(),
            uid: "u-entry".into(),
            attempt: 0,
        },
        ..Default::default()
    };
    let pulled = runtime
        .pull_image("app:1", None, Some(&sandbox))
        .await
        .unwrap_or_else(|e| panic!("{e}: {}", containerd.log()));
    assert_eq!(pulled.image_ref, format!("docker.io/library/app@{digest}"));
    assert_eq!(pulled.id, image.id());
    assert!(pulled.size_bytes > 0);
    let status = runtime.image_status("app:1").await.unwrap().unwrap();
    assert_eq!(status.repo_tags, ["docker.io/library/app:1"]);
    assert!(
        runtime
            .list_images()
            .await
            .unwrap()
            .iter()
            .any(|i| i.id == pulled.id)
    );
    // containerd measures its snapshots' usage every 10 s or so: `used_bytes` may still be 0.
    let fs = runtime.image_fs_info().await.unwrap();
    assert!(
        fs.mountpoint.contains("snapshotter") && fs.capacity_bytes >= fs.available_bytes,
        "{fs:?}"
    );
    assert!(fs.capacity_bytes > 0, "{fs:?}");

    // A pod of that image with no command runs the image's Entrypoint and Cmd.
    let cluster = Cluster::start(agent(Arc::new(runtime.clone())).build().unwrap());
    let pods = cluster.pods();
    pods.create(&pod(
        "entry",
        "Never",
        serde_json::json!([{"name": "c", "image": "app:1"}]),
    ))
    .await
    .unwrap();
    cluster.wait_phase("entry", "Succeeded", WAIT).await;
    assert_eq!(
        logs(&runtime, "entry", false).await,
        "entrypoint from-cmd from-image\n"
    );

    // An image nobody pulled yet: the node agent has containerd pull it (through the
    // mirror), then runs it.
    let web = TestImage::busybox(&["/bin/sh", "-c", "echo web \"$@\"", "--"], &["up"]);
    mirror.push("library/web", "1", &web).await;
    pods.create(&pod(
        "web",
        "Never",
        serde_json::json!([{"name": "c", "image": "web:1"}]),
    ))
    .await
    .unwrap();
    cluster.wait_phase("web", "Succeeded", WAIT).await;
    assert_eq!(logs(&runtime, "web", false).await, "web up\n");
    let held = runtime.image_status("web:1").await.unwrap();
    assert_eq!(held.map(|i| i.id), Some(web.id()));

    // Credentials go to the registry as CRI's AuthConfig; a wrong password gives its 401.
    let reference = private.reference("team/app", "1");
    let wrong = AuthConfig::basic(private.host(), "alice", "wrong");
    match runtime.pull_image(&reference, Some(&wrong), None).await {
        Err(RuntimeError::Failed { operation, message }) => {
            assert_eq!(operation, "pull_image");
            assert!(message.contains("401 Unauthorized"), "{message}");
        }
        other => panic!("expected the registry's refusal, got {other:?}"),
    }
    let right = AuthConfig::basic(private.host(), "alice", "s3cret");
    let pulled = runtime
        .pull_image(&reference, Some(&right), None)
        .await
        .unwrap();
    assert!(
        pulled
            .image_ref
            .starts_with(&format!("{}/team/app@sha256:", private.host())),
        "{pulled:?}"
    );
    runtime.remove_image(&reference).await.unwrap();
    assert_eq!(runtime.image_status(&reference).await.unwrap(), None);
    runtime.remove_image(&reference).await.unwrap();

    for name in ["entry", "web"] {
        pods.delete(name, &Preconditions::default()).await.unwrap();
    }
    eventually(WAIT, "sandboxes removed", || async {
        runtime
            .list_pod_sandboxes()
            .await
            .ok()?
            .is_empty()
            .then_some(())
    })
    .await;
    cluster.shutdown().await;
    containerd.stop().await.unwrap();
}
