//! NodeAgent over MemStore + DockerRuntime, against a dockerd the test starts itself, with
//! images pulled from a registry on loopback through Docker's `registry-mirrors`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_core::runtime::{
    AuthConfig, ContainerConfig, ContainerResources, ContainerState, LogOptions, Mount,
    PodSandboxConfig, PodSandboxMetadata, Runtime, RuntimeError, SandboxState,
};
use kube_core::store::Preconditions;
use kube_node::DockerRuntime;

use crate::common::{Cluster, agent, eventually, first_container, pod, require};
use crate::containerd_env::Dockerd;
use crate::registry::{REGISTRY_BIN, Registry, TestImage, require_tool};

const WAIT: Duration = Duration::from_secs(20);

/// The sandbox and default test image: busybox with `sh` as its `Cmd`, served by the local
/// registry as `docker.io/library/busybox:latest` (through the mirror).
const BUSYBOX: &str = "busybox:latest";

/// A registry holding busybox, a dockerd mirroring `docker.io` to it, and a runtime.
struct Env {
    runtime: DockerRuntime,
    dockerd: Dockerd,
    registry: Registry,
}

async fn env() -> Option<Env> {
    if !require("dockerd") || !require_tool(REGISTRY_BIN) {
        return None;
    }
    let registry = Registry::start();
    registry
        .push(
            "library/busybox",
            "latest",
            &TestImage::busybox(&[], &["sh"]),
        )
        .await;
    let dockerd = Dockerd::start(Some(&registry.host()), &[]).expect("dockerd starts");
    // No image yet: the first sandbox pulls its image (busybox) through the mirror.
    let runtime = dockerd.runtime(BUSYBOX).await.expect("docker runtime");
    Some(Env {
        runtime,
        dockerd,
        registry,
    })
}

fn sh(script: &str) -> serde_json::Value {
    serde_json::json!({"name": "c", "image": "busybox", "command": ["sh", "-c", script]})
}

async fn logs(runtime: &DockerRuntime, pod: &str, previous: bool) -> String {
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

async fn wait_empty(runtime: &DockerRuntime) {
    eventually(WAIT, "sandboxes removed", || async {
        runtime
            .list_pod_sandboxes()
            .await
            .ok()?
            .is_empty()
            .then_some(())
    })
    .await;
}

/// Docker's own view: every container it holds, stopped ones too.
async fn docker_containers(runtime: &DockerRuntime) -> usize {
    runtime
        .client()
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            ..Default::default()
        }))
        .await
        .expect("docker lists containers")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pod_runs_in_the_sandbox_namespaces_with_logs_and_exec() {
    // Kept whole: the agent pulls `busybox` (untagged: policy Always) from the registry.
    let Some(env) = env().await else {
        return;
    };
    let runtime = env.runtime.clone();
    assert!(
        runtime.version().starts_with("docker://20."),
        "{}",
        runtime.version()
    );
    let cluster = Cluster::start(agent(Arc::new(runtime.clone())).build().unwrap());
    let pods = cluster.pods();
    pods.create(&pod(
        "web",
        "Always",
        serde_json::json!([sh(
            "echo pid=$$$$ host=$(hostname); sleep 0.1; echo to-stderr >&2; sleep 0.1; echo after; \
             sleep 30"
        )]),
    ))
    .await
    .unwrap();
    let running = cluster.wait_phase("web", "Running", WAIT).await;
    let c = first_container(&running);
    let id = c.container_id.unwrap();
    assert!(id.starts_with("docker://"), "{id}");
    assert!(c.ready);
    // PID 1 in its own PID namespace; the pod's hostname from the sandbox's UTS namespace;
    // stdout and stderr in one log (in the order written, given a moment between writes:
    // Docker reads the two pipes concurrently).
    let log = eventually(WAIT, "log lines", || async {
        let log = logs(&runtime, "web", false).await;
        log.contains("after").then_some(log)
    })
    .await;
    assert_eq!(log, "pid=1 host=web\nto-stderr\nafter\n");

    // exec joins the container: its PID namespace, the sandbox's IPC namespace.
    let id = id.trim_start_matches("docker://");
    let exec = runtime
        .exec_sync(
            id,
            &[
                "sh".into(),
                "-c".into(),
                "echo out; echo err >&2; exit 3".into(),
            ],
            WAIT,
        )
        .await
        .unwrap();
    assert_eq!(exec.exit_code, 3);
    assert_eq!(&exec.output[..], b"out\nerr\n");
    assert_eq!(exec.stdout_len, Some(4));
    let slow = runtime
        .exec_sync(
            id,
            &["sleep".into(), "5".into()],
            Duration::from_millis(300),
        )
        .await;
    assert!(
        matches!(&slow, Err(RuntimeError::Failed { message, .. }) if message.contains("timed out")),
        "{slow:?}"
    );
    let status = runtime.container_status(id).await.unwrap();
    assert_eq!(status.state, ContainerState::Running);
    assert_eq!((status.name.as_str(), status.attempt), ("c", 0));
    assert!(status.started_at.is_some() && status.finished_at.is_none());
    assert!(status.info.contains_key("pid"), "{status:?}");
    let sandbox = runtime
        .pod_sandbox_status(&status.sandbox_id)
        .await
        .unwrap();
    assert_eq!(sandbox.state, SandboxState::Ready);
    assert_eq!(
        (
            sandbox.metadata.name.as_str(),
            sandbox.metadata.namespace.as_str()
        ),
        ("web", "default")
    );

    pods.delete("web", &Preconditions::default()).await.unwrap();
    wait_empty(&runtime).await;
    cluster.shutdown().await;
    assert_eq!(docker_containers(&runtime).await, 0, "everything removed");
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_crash_loop_backs_off_and_keeps_the_previous_log() {
    // Kept whole: the agent pulls `busybox` (untagged: policy Always) from the registry.
    let Some(env) = env().await else {
        return;
    };
    let runtime = env.runtime.clone();
    let cluster = Cluster::start(agent(Arc::new(runtime.clone())).build().unwrap());
    cluster
        .pods()
        .create(&pod(
            "crash",
            "Always",
            serde_json::json!([sh("echo run-$(cat /proc/uptime | cut -d' ' -f1); exit 2")]),
        ))
        .await
        .unwrap();
    // When each restart is first seen; back-off (300 ms doubling to 2 s) spaces them out.
    let pods = cluster.pods();
    let mut seen: Vec<(i32, Instant)> = Vec::new();
    let mut crash_loop = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 4 && Instant::now() < deadline {
        if let Ok(p) = pods.get("crash").await
            && let Some(c) = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
        {
            if seen.last().is_none_or(|(n, _)| *n < c.restart_count) {
                seen.push((c.restart_count, Instant::now()));
            }
            let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
            if waiting.and_then(|w| w.reason.as_deref()) == Some("CrashLoopBackOff") {
                crash_loop = true;
                let last = c
                    .last_state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .unwrap();
                assert_eq!((last.exit_code, last.reason.as_deref()), (2, Some("Error")));
                assert!(last.finished_at.is_some() && last.started_at.is_some());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        seen.len() >= 4,
        "restarts seen: {seen:?}; {:?}",
        pods.get("crash").await.ok().and_then(|p| p.status)
    );
    assert!(crash_loop, "CrashLoopBackOff was never reported");
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].1 - w[0].1).collect();
    assert!(gaps[1] >= Duration::from_millis(250), "{gaps:?}");
    assert!(
        gaps[2] >= Duration::from_millis(550) && gaps[2] > gaps[1],
        "{gaps:?}"
    );
    let current = logs(&runtime, "crash", false).await;
    let previous = logs(&runtime, "crash", true).await;
    assert!(previous.starts_with("run-"), "{previous:?}");
    assert!(
        current.is_empty() || current != previous,
        "{current:?} vs {previous:?}"
    );
    pods.delete("crash", &Preconditions::default())
        .await
        .unwrap();
    wait_empty(&runtime).await;
    cluster.shutdown().await;
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_memory_limit_gives_oom_killed_and_cpu_quota_is_set() {
    // Kept whole: the agent pulls `busybox` (untagged: policy Always) from the registry.
    let Some(env) = env().await else {
        return;
    };
    let runtime = env.runtime.clone();
    let cluster = Cluster::start(agent(Arc::new(runtime.clone())).build().unwrap());
    let mut hog = sh("x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived");
    hog["resources"] = serde_json::json!({"limits": {"memory": "20Mi", "cpu": "250m"}});
    cluster
        .pods()
        .create(&pod("hog", "Never", serde_json::json!([hog])))
        .await
        .unwrap();
    let failed = cluster.wait_phase("hog", "Failed", WAIT).await;
    let c = first_container(&failed);
    let t = c.state.unwrap().terminated.unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("OOMKilled")));
    let id = c.container_id.unwrap();
    let inspect = runtime
        .client()
        .inspect_container(id.trim_start_matches("docker://"), None)
        .await
        .unwrap();
    let host = inspect.host_config.unwrap();
    assert_eq!(host.memory, Some(20 << 20));
    assert_eq!(
        (host.cpu_period, host.cpu_quota),
        (Some(100_000), Some(25_000))
    );
    cluster.shutdown().await;
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_stop_honours_the_grace_period() {
    // Kept whole: the agent pulls `busybox` (untagged: policy Always) from the registry.
    let Some(env) = env().await else {
        return;
    };
    let runtime = env.runtime.clone();
    let sandbox = runtime
        .run_pod_sandbox(&PodSandboxConfig::default())
        .await
        .unwrap();
    let start = |script: &str| {
        let config = ContainerConfig {
            name: format!("c{}", script.len()),
            image: "busybox".into(),
            command: vec!["sh".into(), "-c".into(), script.into()],
            ..Default::default()
        };
        let (runtime, sandbox) = (runtime.clone(), sandbox.clone());
        async move {
            let id = runtime.create_container(&sandbox, &config).await.unwrap();
            runtime.start_container(&id).await.unwrap();
            id
        }
    };
    // A container that handles SIGTERM ends at once, cleanly, well within its grace.
    let polite = start("trap 'echo bye; exit 0' TERM; while true; do sleep 0.05; done").await;
    // One that ignores it is killed when the grace period is over.
    let stubborn = start("trap '' TERM; while true; do sleep 0.05; done").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    runtime
        .stop_container(&polite, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let s = runtime.container_status(&polite).await.unwrap();
    assert_eq!(
        (s.state, s.exit_code, s.reason.as_deref()),
        (ContainerState::Exited, Some(0), Some("Completed"))
    );
    let log = runtime
        .container_logs(&polite, &LogOptions::default())
        .await
        .unwrap();
    assert_eq!(&log[..], b"bye\n");

    let t0 = Instant::now();
    runtime
        .stop_container(&stubborn, Duration::from_secs(1))
        .await
        .unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let s = runtime.container_status(&stubborn).await.unwrap();
    assert_eq!(
        (s.exit_code, s.reason.as_deref()),
        (Some(137), Some("Error"))
    );
    assert!(s.finished_at >= s.started_at);

    runtime.stop_pod_sandbox(&sandbox).await.unwrap();
    assert_eq!(
        runtime.pod_sandbox_status(&sandbox).await.unwrap().state,
        SandboxState::NotReady
    );
    runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    assert!(matches!(
        runtime.container_status(&polite).await,
        Err(RuntimeError::NotFound { .. })
    ));
    assert_eq!(docker_containers(&runtime).await, 0);
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_liveness_restart_deletion_grace_and_agent_restart() {
    // Kept whole: the agent pulls `busybox` (untagged: policy Always) from the registry.
    let Some(env) = env().await else {
        return;
    };
    let runtime = env.runtime.clone();
    let store: Arc<dyn kube_core::store::Store> = Arc::new(kube_store::MemStore::new());
    let first = Cluster::start_with_store(
        agent(Arc::new(runtime.clone())).build().unwrap(),
        store.clone(),
    );
    let pods = first.pods();
    pods.create(&pod(
        "steady",
        "Always",
        serde_json::json!([sh("sleep 60")]),
    ))
    .await
    .unwrap();
    let mut sick = sh("touch /tmp/healthy; sleep 1; rm /tmp/healthy; sleep 60");
    sick["livenessProbe"] = serde_json::json!({
        "exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 1
    });
    pods.create(&pod("sick", "Always", serde_json::json!([sick])))
        .await
        .unwrap();
    let mut stubborn = pod(
        "stubborn",
        "Always",
        serde_json::json!([sh("trap '' TERM; while true; do sleep 0.05; done")]),
    );
    stubborn
        .spec
        .as_mut()
        .unwrap()
        .termination_grace_period_seconds = Some(2);
    pods.create(&stubborn).await.unwrap();

    let before = first_container(&first.wait_phase("steady", "Running", WAIT).await);
    first.wait_phase("stubborn", "Running", WAIT).await;

    // A failing liveness probe (run through Docker's exec) restarts the container.
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
    let last = first_container(&restarted)
        .last_state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(last.exit_code, 137, "{last:?}");

    // The agent restarts, over a new runtime on the same daemon: it finds the pods by
    // their labels, and what runs keeps running.
    first.shutdown().await;
    let again = env.dockerd.runtime(BUSYBOX).await.unwrap();
    let second = Cluster::start_with_store(agent(Arc::new(again.clone())).build().unwrap(), store);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = first_container(&second.wait_phase("steady", "Running", WAIT).await);
    assert_eq!(after.container_id, before.container_id);
    assert_eq!(after.restart_count, 0);

    // Deletion honours the grace period: SIGTERM is ignored, SIGKILL comes after 2 s.
    let pods = second.pods();
    let t0 = Instant::now();
    pods.delete("stubborn", &Preconditions::default())
        .await
        .unwrap();
    eventually(WAIT, "stubborn's sandbox removed", || async {
        let sandboxes = again.list_pod_sandboxes().await.ok()?;
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
    wait_empty(&again).await;
    second.shutdown().await;
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_env_mounts_workdir_and_user_reach_the_container() {
    // Kept whole: the agent pulls `busybox` (untagged: policy Always) from the registry.
    let Some(env) = env().await else {
        return;
    };
    let runtime = env.runtime.clone();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("note"), "from the host\n").unwrap();
    // The container runs as user 1000.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    assert_eq!(runtime.image_status(BUSYBOX).await.unwrap(), None);
    let sandbox = runtime
        .run_pod_sandbox(&PodSandboxConfig {
            metadata: PodSandboxMetadata {
                name: "p".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                attempt: 0,
            },
            hostname: "p".into(),
            labels: [("app".to_string(), "demo".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let config = ContainerConfig {
        name: "c".into(),
        image: "busybox".into(),
        command: vec!["sh".into(), "-c".into()],
        args: vec![
            "echo $GREETING $IMAGE_VAR; pwd; id -u; id -g; cat /data/note; \
             touch /data/x 2>/dev/null || echo read-only"
                .into(),
        ],
        env: vec![("GREETING".into(), "hello".into())],
        working_dir: Some("/tmp".into()),
        run_as_user: Some(1000),
        run_as_group: Some(50),
        mounts: vec![Mount {
            host_path: dir.path().to_path_buf(),
            container_path: "/data".into(),
            read_only: true,
        }],
        resources: ContainerResources::default(),
        labels: [("role".to_string(), "main".to_string())].into(),
        ..Default::default()
    };
    assert!(
        runtime.image_status(BUSYBOX).await.unwrap().is_some(),
        "the sandbox image was pulled"
    );
    let id = runtime.create_container(&sandbox, &config).await.unwrap();
    let created = runtime.container_status(&id).await.unwrap();
    assert_eq!(created.state, ContainerState::Created);
    assert_eq!(
        created.labels, config.labels,
        "our own labels are not shown"
    );
    assert_eq!(created.sandbox_id, sandbox);
    runtime.start_container(&id).await.unwrap();
    let exited = eventually(WAIT, "the container exits", || async {
        let s = runtime.container_status(&id).await.ok()?;
        (s.state == ContainerState::Exited).then_some(s)
    })
    .await;
    assert_eq!(exited.reason.as_deref(), Some("Completed"), "{exited:?}");
    let log = runtime
        .container_logs(&id, &LogOptions::default())
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&log),
        "hello from-image\n/tmp\n1000\n50\nfrom the host\nread-only\n"
    );
    let tail = runtime
        .container_logs(
            &id,
            &LogOptions {
                tail_lines: Some(2),
                limit_bytes: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(&tail[..], b"from the host\nread-only\n");
    let listed = runtime.list_pod_sandboxes().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].labels,
        [("app".to_string(), "demo".to_string())].into()
    );
    let in_sandbox = runtime
        .list_containers(&kube_core::runtime::ContainerFilter {
            sandbox_id: Some(sandbox.clone()),
            state: Some(ContainerState::Exited),
        })
        .await
        .unwrap();
    assert_eq!(in_sandbox.len(), 1);
    runtime.remove_container(&id).await.unwrap();
    runtime.remove_container(&id).await.unwrap();
    runtime.stop_pod_sandbox(&sandbox).await.unwrap();
    runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    drop(env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_runs_an_image_entrypoint_pulled_through_the_mirror() {
    let Some(Env {
        runtime,
        dockerd,
        registry,
    }) = env().await
    else {
        return;
    };
    // An image whose Entrypoint does the work; the pod names no command.
    let image = TestImage::busybox(
        &["/bin/sh", "-c", "echo entrypoint \"$@\" $IMAGE_VAR", "--"],
        &["from-cmd"],
    );
    let digest = registry.push("demo/app", "1", &image).await;
    assert_eq!(runtime.image_status("demo/app:1").await.unwrap(), None);
    let pulled = runtime.pull_image("demo/app:1", None, None).await.unwrap();
    assert_eq!(pulled.image_ref, format!("docker.io/demo/app@{digest}"));
    assert_eq!(pulled.id, image.id());
    assert!(pulled.size_bytes > 0);
    let status = runtime.image_status("docker.io/demo/app:1").await.unwrap();
    let status = status.expect("the image is held");
    assert_eq!(status.repo_tags, ["docker.io/demo/app:1"]);
    assert!(!status.pinned);
    assert_eq!(runtime.list_images().await.unwrap().len(), 1);
    let fs = runtime.image_fs_info().await.unwrap();
    assert!(
        fs.used_bytes >= pulled.size_bytes && fs.capacity_bytes > 0,
        "{fs:?}"
    );

    let cluster = Cluster::start(agent(Arc::new(runtime.clone())).build().unwrap());
    let pods = cluster.pods();
    let no_command = serde_json::json!([{"name": "c", "image": "demo/app:1"}]);
    pods.create(&pod("entry", "Never", no_command))
        .await
        .unwrap();
    cluster.wait_phase("entry", "Succeeded", WAIT).await;
    assert_eq!(
        logs(&runtime, "entry", false).await,
        "entrypoint from-cmd from-image\n"
    );
    // args alone replace the image's Cmd and keep its Entrypoint.
    let args_only = serde_json::json!([{"name": "c", "image": "demo/app:1", "args": ["mine"]}]);
    pods.create(&pod("args", "Never", args_only)).await.unwrap();
    cluster.wait_phase("args", "Succeeded", WAIT).await;
    assert_eq!(
        logs(&runtime, "args", false).await,
        "entrypoint mine from-image\n"
    );
    // An image nobody pulled yet: the node agent has the runtime pull it, then runs it.
    let web = TestImage::busybox(&["/bin/sh", "-c", "echo web \"$@\"", "--"], &["up"]);
    registry.push("demo/web", "1", &web).await;
    let pulled_by_agent = serde_json::json!([{"name": "c", "image": "demo/web:1"}]);
    pods.create(&pod("web", "Never", pulled_by_agent))
        .await
        .unwrap();
    cluster.wait_phase("web", "Succeeded", WAIT).await;
    assert_eq!(logs(&runtime, "web", false).await, "web up\n");
    let held = runtime.image_status("demo/web:1").await.unwrap();
    assert_eq!(held.map(|i| i.id), Some(web.id()));
    let sandbox_image = runtime.image_status(BUSYBOX).await.unwrap().unwrap();
    assert!(sandbox_image.pinned, "the sandbox image is pinned");
    let mut listed: Vec<_> = runtime
        .list_images()
        .await
        .unwrap()
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "docker.io/demo/app:1",
            "docker.io/demo/web:1",
            "docker.io/library/busybox:latest"
        ]
    );

    for name in ["entry", "args", "web"] {
        pods.delete(name, &Preconditions::default()).await.unwrap();
    }
    wait_empty(&runtime).await;
    cluster.shutdown().await;

    runtime.remove_image("demo/app:1").await.unwrap();
    assert_eq!(runtime.image_status("demo/app:1").await.unwrap(), None);
    runtime.remove_image("demo/app:1").await.unwrap();
    drop(dockerd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_pulls_from_a_private_registry_with_credentials() {
    if !require("dockerd") || !require_tool(REGISTRY_BIN) {
        return;
    }
    let private = Registry::builder().htpasswd("alice", "s3cret").start();
    private
        .push("team/app", "1", &TestImage::busybox(&[], &["sh"]))
        .await;
    let dockerd = Dockerd::start(None, &[&private.host()]).expect("dockerd starts");
    let runtime = dockerd.runtime(BUSYBOX).await.unwrap();
    let reference = private.reference("team/app", "1");

    // Docker's words for the registry's 401: without credentials it does not ask.
    let anonymous = runtime.pull_image(&reference, None, None).await;
    let wrong = AuthConfig::basic(private.host(), "alice", "wrong");
    let denied = runtime.pull_image(&reference, Some(&wrong), None).await;
    for (result, reason) in [
        (anonymous, "no basic auth credentials"),
        (denied, "unauthorized"),
    ] {
        match result {
            Err(RuntimeError::Failed { operation, message }) => {
                assert_eq!(operation, "pull_image");
                assert!(message.contains(reason), "{message}");
            }
            other => panic!("expected the registry's refusal, got {other:?}"),
        }
    }
    let right = AuthConfig::basic(private.host(), "alice", "s3cret");
    let pulled = runtime
        .pull_image(&reference, Some(&right), None)
        .await
        .unwrap();
    assert!(
        pulled
            .image_ref
            .starts_with(&format!("{}/team/app@sha256:", private.host()))
    );
    assert!(runtime.image_status(&reference).await.unwrap().is_some());
    drop(dockerd);
}
