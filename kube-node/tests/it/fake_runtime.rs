//! FakeRuntime: simulated behaviours, CRI stop/remove semantics, call recording.

use std::time::Duration;

use kube_core::runtime::{
    ContainerConfig, ContainerFilter, ContainerState, LogOptions, PodSandboxConfig,
    PodSandboxMetadata, Runtime, RuntimeError, SandboxState,
};
use kube_node::{FakeBehavior, FakeCall, FakeOp, FakeRuntime};

fn sandbox_config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: PodSandboxMetadata {
            name: name.into(),
            namespace: "default".into(),
            uid: format!("uid-{name}"),
            attempt: 0,
        },
        ..Default::default()
    }
}

fn container(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        name: name.into(),
        image: image.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

async fn started(fake: &FakeRuntime, sandbox: &str, config: &ContainerConfig) -> String {
    let id = fake
        .create_container(sandbox, config)
        .await
        .expect("container created");
    fake.start_container(&id).await.expect("container started");
    id
}

#[tokio::test]
async fn containers_run_until_stopped_and_sandboxes_get_distinct_ips() {
    let fake = FakeRuntime::new();
    let a = fake.run_pod_sandbox(&sandbox_config("a")).await.unwrap();
    let b = fake.run_pod_sandbox(&sandbox_config("b")).await.unwrap();
    let ip_a = fake.pod_sandbox_status(&a).await.unwrap().ip.unwrap();
    let ip_b = fake.pod_sandbox_status(&b).await.unwrap().ip.unwrap();
    assert!(ip_a.starts_with("10.88.") && ip_b.starts_with("10.88."));
    assert_ne!(ip_a, ip_b);
    assert!(fake.version().starts_with("fake://"));

    let id = started(&fake, &a, &container("c", "nginx", &[])).await;
    let status = fake.container_status(&id).await.unwrap();
    assert_eq!(status.state, ContainerState::Running);
    assert!(status.started_at.is_some());
    assert_eq!(status.sandbox_id, a);

    fake.stop_container(&id, Duration::from_secs(30))
        .await
        .unwrap();
    let status = fake.container_status(&id).await.unwrap();
    assert_eq!(status.state, ContainerState::Exited);
    assert_eq!(
        status.exit_code,
        Some(143),
        "a polite stop looks like SIGTERM"
    );
    // Stopping an exited container is fine (CRI).
    fake.stop_container(&id, Duration::from_secs(30))
        .await
        .unwrap();

    assert_eq!(
        fake.calls(),
        vec![
            FakeCall {
                op: FakeOp::RunPodSandbox,
                target: "a".into()
            },
            FakeCall {
                op: FakeOp::RunPodSandbox,
                target: "b".into()
            },
            FakeCall {
                op: FakeOp::CreateContainer,
                target: "c".into()
            },
            FakeCall {
                op: FakeOp::StartContainer,
                target: id.clone()
            },
            FakeCall {
                op: FakeOp::StopContainer,
                target: id.clone()
            },
            FakeCall {
                op: FakeOp::StopContainer,
                target: id.clone()
            },
        ]
    );
    assert_eq!(fake.count(FakeOp::PodSandboxStatus), 2);
    assert_eq!(fake.count(FakeOp::ContainerStatus), 2);
}

#[tokio::test]
async fn behaviours_by_image_and_command() {
    let fake = FakeRuntime::new();
    fake.on_image(
        "crasher",
        FakeBehavior::exit_after(Duration::from_millis(50), 3),
    );
    fake.on_command("true", FakeBehavior::exit_after(Duration::ZERO, 0));
    let sb = fake.run_pod_sandbox(&sandbox_config("p")).await.unwrap();

    let crasher = started(&fake, &sb, &container("a", "crasher", &[])).await;
    assert_eq!(
        fake.container_status(&crasher).await.unwrap().state,
        ContainerState::Running
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    let status = fake.container_status(&crasher).await.unwrap();
    assert_eq!(status.state, ContainerState::Exited);
    assert_eq!(status.exit_code, Some(3));
    assert_eq!(status.reason.as_deref(), Some("Error"));

    // A command rule wins over the image rule.
    let ok = started(&fake, &sb, &container("b", "crasher", &["true"])).await;
    let status = fake.container_status(&ok).await.unwrap();
    assert_eq!(
        (status.exit_code, status.reason.as_deref()),
        (Some(0), Some("Completed"))
    );

    let exited = ContainerFilter {
        sandbox_id: Some(sb.clone()),
        state: Some(ContainerState::Exited),
    };
    assert_eq!(fake.list_containers(&exited).await.unwrap().len(), 2);
    assert_eq!(fake.running_count(), 0);
}

#[tokio::test]
async fn start_failures_report_start_error() {
    let fake = FakeRuntime::new();
    fake.on_image("broken", FakeBehavior::fail_start("exec: no such file"));
    let sb = fake.run_pod_sandbox(&sandbox_config("p")).await.unwrap();
    let id = fake
        .create_container(&sb, &container("c", "broken", &[]))
        .await
        .unwrap();
    let err = fake.start_container(&id).await.unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeError::Failed {
                operation: "start_container",
                ..
            }
        ),
        "{err:?}"
    );
    let status = fake.container_status(&id).await.unwrap();
    assert_eq!(status.state, ContainerState::Exited);
    assert_eq!(status.exit_code, Some(128));
    assert_eq!(status.reason.as_deref(), Some("StartError"));
    assert_eq!(status.message.as_deref(), Some("exec: no such file"));
}

#[tokio::test(start_paused = true)]
async fn stop_waits_out_the_grace_period_of_a_stubborn_container() {
    let fake = FakeRuntime::new();
    fake.set_default_behavior(FakeBehavior::run_forever().ignore_stop_signal());
    let sb = fake.run_pod_sandbox(&sandbox_config("p")).await.unwrap();
    let id = started(&fake, &sb, &container("c", "img", &[])).await;
    let start = tokio::time::Instant::now();
    fake.stop_container(&id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(
        fake.container_status(&id).await.unwrap().exit_code,
        Some(137)
    );
}

#[tokio::test(start_paused = true)]
async fn latency_and_injected_failures() {
    let fake = FakeRuntime::new();
    fake.set_latency(Duration::from_millis(100));
    let start = tokio::time::Instant::now();
    let sb = fake.run_pod_sandbox(&sandbox_config("p")).await.unwrap();
    fake.list_pod_sandboxes().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(200));

    fake.fail_next(FakeOp::CreateContainer, "disk full");
    let err = fake
        .create_container(&sb, &container("c", "img", &[]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    // Only the next call fails.
    fake.create_container(&sb, &container("c", "img", &[]))
        .await
        .unwrap();
    assert_eq!(fake.count(FakeOp::CreateContainer), 2);
}

#[tokio::test]
async fn logs_are_the_configured_output() {
    let fake = FakeRuntime::new();
    fake.on_image(
        "chatty",
        FakeBehavior::run_forever().with_output("one\ntwo\nthree\n"),
    );
    let sb = fake.run_pod_sandbox(&sandbox_config("p")).await.unwrap();
    let id = fake
        .create_container(&sb, &container("c", "chatty", &[]))
        .await
        .unwrap();
    let all = LogOptions::default();
    assert!(
        fake.container_logs(&id, &all).await.unwrap().is_empty(),
        "nothing before start"
    );
    fake.start_container(&id).await.unwrap();
    assert_eq!(
        &fake.container_logs(&id, &all).await.unwrap()[..],
        b"one\ntwo\nthree\n"
    );
    let tail = LogOptions {
        tail_lines: Some(1),
        limit_bytes: None,
    };
    assert_eq!(
        &fake.container_logs(&id, &tail).await.unwrap()[..],
        b"three\n"
    );
}

#[tokio::test]
async fn removal_is_forced_and_idempotent() {
    let fake = FakeRuntime::new();
    let sb = fake.run_pod_sandbox(&sandbox_config("p")).await.unwrap();
    let a = started(&fake, &sb, &container("a", "img", &[])).await;
    let b = started(&fake, &sb, &container("b", "img", &[])).await;

    // Removing a running container force-removes it.
    fake.remove_container(&a).await.unwrap();
    assert!(matches!(
        fake.container_status(&a).await,
        Err(RuntimeError::NotFound { .. })
    ));
    fake.remove_container(&a).await.unwrap();
    assert!(matches!(
        fake.stop_container(&a, Duration::ZERO).await,
        Err(RuntimeError::NotFound { .. })
    ));

    // Stopping the sandbox kills what runs in it.
    fake.stop_pod_sandbox(&sb).await.unwrap();
    assert_eq!(
        fake.pod_sandbox_status(&sb).await.unwrap().state,
        SandboxState::NotReady
    );
    assert_eq!(
        fake.container_status(&b).await.unwrap().exit_code,
        Some(137)
    );
    let err = fake
        .create_container(&sb, &container("c", "img", &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Failed { .. }), "{err:?}");

    fake.remove_pod_sandbox(&sb).await.unwrap();
    fake.remove_pod_sandbox(&sb).await.unwrap();
    assert_eq!((fake.sandbox_count(), fake.container_count()), (0, 0));
}

#[tokio::test]
async fn kill_container_simulates_a_crash() {
    let fake = FakeRuntime::new();
    let sb = fake.run_pod_sandbox(&sandbox_config("p")).await.unwrap();
    let id = started(&fake, &sb, &container("c", "img", &[])).await;
    assert!(fake.kill_container(&id, 137));
    assert!(!fake.kill_container(&id, 137), "already dead");
    let status = fake.container_status(&id).await.unwrap();
    assert_eq!(
        (status.state, status.exit_code),
        (ContainerState::Exited, Some(137))
    );
}
