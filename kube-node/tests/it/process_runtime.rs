//! ProcessRuntime: real processes, process groups, signals, exit codes, logs.

use std::time::{Duration, Instant};

use kube_core::runtime::{
    ContainerConfig, ContainerState, ContainerStatus, LogOptions, PodSandboxConfig, Runtime,
    RuntimeError,
};
use kube_node::ProcessRuntime;

use crate::common::{alive, eventually};

fn sh(name: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        name: name.into(),
        image: "ignored".into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

async fn run(runtime: &ProcessRuntime, config: &ContainerConfig) -> (String, String) {
    let sandbox = runtime
        .run_pod_sandbox(&PodSandboxConfig::default())
        .await
        .expect("sandbox runs");
    let id = runtime
        .create_container(&sandbox, config)
        .await
        .expect("container created");
    runtime
        .start_container(&id)
        .await
        .expect("container started");
    (sandbox, id)
}

fn pid(status: &ContainerStatus) -> u32 {
    status.info["pid"].parse().expect("numeric pid")
}

async fn exited(runtime: &ProcessRuntime, id: &str) -> ContainerStatus {
    eventually(Duration::from_secs(5), "container exit", || async {
        let s = runtime.container_status(id).await.ok()?;
        (s.state == ContainerState::Exited).then_some(s)
    })
    .await
}

async fn logs(runtime: &ProcessRuntime, id: &str) -> String {
    let bytes = runtime
        .container_logs(id, &LogOptions::default())
        .await
        .expect("logs readable");
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn runs_a_real_process_and_keeps_its_log() {
    let runtime = ProcessRuntime::temp().unwrap();
    let (sandbox, id) = run(&runtime, &sh("c", "echo hi; echo oops >&2; sleep 30")).await;
    let status = runtime.container_status(&id).await.unwrap();
    assert_eq!(status.state, ContainerState::Running);
    let pid = pid(&status);
    assert!(alive(pid), "pid {pid} should be running");
    let log = eventually(Duration::from_secs(5), "log output", || async {
        let log = logs(&runtime, &id).await;
        log.contains("oops").then_some(log)
    })
    .await;
    assert_eq!(log, "hi\noops\n", "stdout and stderr share one log");
    assert_eq!(
        runtime
            .pod_sandbox_status(&sandbox)
            .await
            .unwrap()
            .ip
            .as_deref(),
        Some("127.0.0.1")
    );

    let log_path = std::path::PathBuf::from(&status.info["logPath"]);
    assert!(log_path.starts_with(runtime.root_dir()));
    runtime
        .stop_container(&id, Duration::from_secs(5))
        .await
        .unwrap();
    let status = runtime.container_status(&id).await.unwrap();
    assert_eq!(status.exit_code, Some(143), "SIGTERM death is 128 + 15");
    assert_eq!(status.reason.as_deref(), Some("Error"));
    assert!(!alive(pid));
    runtime.remove_container(&id).await.unwrap();
    assert!(!log_path.exists(), "removal deletes the log");
}

#[tokio::test]
async fn stop_escalates_to_sigkill_after_the_timeout() {
    let runtime = ProcessRuntime::temp().unwrap();
    let (_, id) = run(&runtime, &sh("c", "trap '' TERM; echo ready; sleep 30")).await;
    // Wait until the trap is installed, or SIGTERM would still kill the shell.
    eventually(Duration::from_secs(5), "trap installed", || async {
        logs(&runtime, &id).await.contains("ready").then_some(())
    })
    .await;
    let pid = pid(&runtime.container_status(&id).await.unwrap());
    let start = Instant::now();
    runtime
        .stop_container(&id, Duration::from_millis(300))
        .await
        .unwrap();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "SIGTERM was ignored, so it waited: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "then SIGKILL: {took:?}");
    let status = runtime.container_status(&id).await.unwrap();
    assert_eq!(status.exit_code, Some(137), "SIGKILL death is 128 + 9");
    assert!(!alive(pid));
}

#[tokio::test]
async fn stop_kills_the_whole_process_group() {
    let runtime = ProcessRuntime::temp().unwrap();
    let (_, id) = run(&runtime, &sh("c", "sleep 30 & echo $!; wait")).await;
    let child: u32 = eventually(Duration::from_secs(5), "child pid", || async {
        logs(&runtime, &id).await.trim().parse().ok()
    })
    .await;
    assert!(alive(child));
    runtime
        .stop_container(&id, Duration::from_secs(5))
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "child killed", || async {
        (!alive(child)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn leftovers_die_with_the_main_process() {
    let runtime = ProcessRuntime::temp().unwrap();
    let (_, id) = run(&runtime, &sh("c", "sleep 30 & echo $!; sleep 0.2")).await;
    let child: u32 = eventually(Duration::from_secs(5), "child pid", || async {
        logs(&runtime, &id).await.trim().parse().ok()
    })
    .await;
    let status = exited(&runtime, &id).await;
    assert_eq!(
        (status.exit_code, status.reason.as_deref()),
        (Some(0), Some("Completed"))
    );
    eventually(Duration::from_secs(5), "orphan killed", || async {
        (!alive(child)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn exit_codes_are_reported() {
    let runtime = ProcessRuntime::temp().unwrap();
    let (_, three) = run(&runtime, &sh("three", "exit 3")).await;
    let status = exited(&runtime, &three).await;
    assert_eq!(
        (status.exit_code, status.reason.as_deref()),
        (Some(3), Some("Error"))
    );
    assert!(status.finished_at.is_some() && status.started_at.is_some());

    let (_, killed) = run(&runtime, &sh("killed", "kill -KILL $$")).await;
    assert_eq!(exited(&runtime, &killed).await.exit_code, Some(137));
}

#[tokio::test]
async fn env_args_and_working_dir_are_honoured() {
    let runtime = ProcessRuntime::temp().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = ContainerConfig {
        name: "c".into(),
        // No command: args[0] is the program.
        args: vec!["sh".into(), "-c".into(), "echo $GREETING; pwd".into()],
        env: vec![("GREETING".into(), "hello there".into())],
        working_dir: Some(dir.path().to_string_lossy().into_owned()),
        ..Default::default()
    };
    let (_, id) = run(&runtime, &config).await;
    exited(&runtime, &id).await;
    let expected = format!(
        "hello there\n{}\n",
        dir.path().canonicalize().unwrap().display()
    );
    assert_eq!(logs(&runtime, &id).await, expected);
    let tail = LogOptions {
        tail_lines: Some(1),
        limit_bytes: None,
    };
    let last = runtime.container_logs(&id, &tail).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&last),
        format!("{}\n", dir.path().canonicalize().unwrap().display())
    );
}

#[tokio::test]
async fn bad_commands_are_refused_or_fail_to_start() {
    let runtime = ProcessRuntime::temp().unwrap();
    let sandbox = runtime
        .run_pod_sandbox(&PodSandboxConfig::default())
        .await
        .unwrap();
    let empty = ContainerConfig {
        name: "c".into(),
        ..Default::default()
    };
    let err = runtime
        .create_container(&sandbox, &empty)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidArgument(_)), "{err:?}");

    let missing = ContainerConfig {
        name: "c".into(),
        command: vec!["/nonexistent/program".into()],
        ..Default::default()
    };
    let id = runtime.create_container(&sandbox, &missing).await.unwrap();
    assert!(runtime.start_container(&id).await.is_err());
    let status = runtime.container_status(&id).await.unwrap();
    assert_eq!(status.state, ContainerState::Exited);
    assert_eq!(
        (status.exit_code, status.reason.as_deref()),
        (Some(128), Some("StartError"))
    );
}

#[tokio::test]
async fn stopping_or_removing_a_sandbox_kills_its_containers() {
    let runtime = ProcessRuntime::temp().unwrap();
    let (sandbox, a) = run(&runtime, &sh("a", "trap '' TERM; sleep 30")).await;
    let b = runtime
        .create_container(&sandbox, &sh("b", "sleep 30"))
        .await
        .unwrap();
    runtime.start_container(&b).await.unwrap();
    let pids = [
        pid(&runtime.container_status(&a).await.unwrap()),
        pid(&runtime.container_status(&b).await.unwrap()),
    ];
    runtime.stop_pod_sandbox(&sandbox).await.unwrap();
    assert!(pids.iter().all(|p| !alive(*p)));
    assert_eq!(
        runtime.container_status(&a).await.unwrap().exit_code,
        Some(137)
    );

    runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    assert!(
        runtime
            .list_containers(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(runtime.list_pod_sandboxes().await.unwrap().is_empty());
    // Removal is idempotent.
    runtime.remove_pod_sandbox(&sandbox).await.unwrap();
}

#[tokio::test]
async fn dropping_the_runtime_kills_every_process() {
    let runtime = ProcessRuntime::temp().unwrap();
    let root = runtime.root_dir().to_path_buf();
    let (_, id) = run(&runtime, &sh("c", "sleep 30")).await;
    let pid = pid(&runtime.container_status(&id).await.unwrap());
    let clone = runtime.clone();
    drop(runtime);
    assert!(alive(pid), "a clone still holds the runtime");
    drop(clone);
    eventually(Duration::from_secs(5), "process killed", || async {
        (!alive(pid)).then_some(())
    })
    .await;
    assert!(!root.exists(), "the temporary root is deleted");
}
