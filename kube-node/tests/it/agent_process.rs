//! NodeAgent over MemStore + ProcessRuntime: real processes for real pods.

use std::sync::Arc;
use std::time::Duration;

use kube_core::runtime::{ContainerState, Runtime};
use kube_core::store::Preconditions;
use kube_node::ProcessRuntime;

use crate::common::{Cluster, agent, alive, eventually, pod};

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_pod_runs_a_real_process_and_deletion_leaves_none() {
    let runtime = ProcessRuntime::temp().unwrap();
    let cluster = Cluster::start(agent(Arc::new(runtime.clone())).build().unwrap());
    let pods = cluster.pods();
    pods.create(&pod(
        "sleeper",
        "Always",
        serde_json::json!([
            {"name": "main", "image": "ignored", "command": ["sleep", "30"]},
            {"name": "shell", "image": "ignored", "command": ["sh", "-c", "sleep 30 & wait"]}
        ]),
    ))
    .await
    .unwrap();
    let running = cluster.wait_phase("sleeper", "Running", WAIT).await;
    let status = running.status.unwrap();
    assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.1"));
    let container_id = status.container_statuses.unwrap()[0]
        .container_id
        .clone()
        .unwrap();
    assert!(container_id.starts_with("process://"), "{container_id}");

    let containers = runtime.list_containers(&Default::default()).await.unwrap();
    let pids: Vec<u32> = containers
        .iter()
        .filter(|c| c.state == ContainerState::Running)
        .map(|c| c.info["pid"].parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|p| alive(*p)));

    pods.delete("sleeper", &Preconditions::default())
        .await
        .unwrap();
    eventually(WAIT, "processes gone", || async {
        pids.iter().all(|p| !alive(*p)).then_some(())
    })
    .await;
    eventually(WAIT, "runtime emptied", || async {
        runtime
            .list_pod_sandboxes()
            .await
            .ok()?
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(
        runtime
            .list_containers(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn exit_codes_of_real_processes_decide_the_phase() {
    let runtime = ProcessRuntime::temp().unwrap();
    let cluster = Cluster::start(agent(Arc::new(runtime)).build().unwrap());
    cluster
        .pods()
        .create(&pod(
            "three",
            "Never",
            serde_json::json!([
                {"name": "c", "image": "ignored", "command": ["sh", "-c", "echo bye; exit 3"]}
            ]),
        ))
        .await
        .unwrap();
    let failed = cluster.wait_phase("three", "Failed", WAIT).await;
    let c = &failed.status.unwrap().container_statuses.unwrap()[0];
    let terminated = c.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (3, Some("Error"))
    );
    cluster.shutdown().await;
}

/// `kubectl describe pod` shows what the kubelet did: `Created` and `Started` for a container
/// that runs, and for one that cannot a `Failed` Warning that says why, from `kubelet` on the
/// pod's node.
#[tokio::test]
async fn the_agent_records_events_that_say_what_happened_to_each_container() {
    use k8s_openapi::api::core::v1::Event;
    use kube_core::typed::Api;

    let cluster = Cluster::start(
        agent(Arc::new(ProcessRuntime::temp().unwrap()))
            .build()
            .unwrap(),
    );
    let pods = cluster.pods();
    pods.create(&pod(
        "runs",
        "Always",
        serde_json::json!([{"name": "main", "image": "ignored", "command": ["sleep", "30"]}]),
    ))
    .await
    .unwrap();
    // No command, and images' entrypoints are not read: it cannot be run.
    pods.create(&pod(
        "cannot",
        "Always",
        serde_json::json!([{"name": "web", "image": "nginx"}]),
    ))
    .await
    .unwrap();
    let events: Api<Event> = Api::namespaced(cluster.store.clone(), "default");
    let about = |events: &[Event], pod: &str| -> Vec<(String, String, String)> {
        events
            .iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(pod))
            .map(|e| {
                (
                    e.type_.clone().unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                    e.message.clone().unwrap_or_default(),
                )
            })
            .collect()
    };
    let listed = eventually(WAIT, "events of both pods", || async {
        let list = events.list(&Default::default()).await.ok()?.items;
        let runs = about(&list, "runs");
        let cannot = about(&list, "cannot");
        (runs.len() >= 4 && cannot.iter().any(|(_, r, _)| r == "Failed")).then_some(list)
    })
    .await;
    // Listed by name, which is generated: compare as a set.
    let mut runs = about(&listed, "runs");
    // How long the pull took varies: compare what comes before it.
    for (_, reason, message) in &mut runs {
        if reason == "Pulled" {
            message.truncate(message.find(" in ").unwrap_or(message.len()));
        }
    }
    runs.sort();
    assert_eq!(
        runs,
        [
            (
                "Normal".into(),
                "Created".into(),
                "Created container main".into()
            ),
            // The runtime resolves images itself: `ignored` is "pulled" (its `:latest` is
            // pulled always) by the default image service, which does nothing.
            (
                "Normal".into(),
                "Pulled".into(),
                "Successfully pulled image \"ignored\"".into()
            ),
            (
                "Normal".into(),
                "Pulling".into(),
                "Pulling image \"ignored\"".into()
            ),
            (
                "Normal".into(),
                "Started".into(),
                "Started container main".into()
            ),
        ]
    );
    let cannot = about(&listed, "cannot");
    let failed = cannot
        .iter()
        .find(|(_, reason, _)| reason == "Failed")
        .expect("a Failed event");
    assert_eq!(
        (failed.0.as_str(), failed.1.as_str()),
        ("Warning", "Failed")
    );
    assert!(
        failed.2.starts_with("Error: ") && failed.2.contains("neither command nor args"),
        "{failed:?}"
    );
    let source = listed[0].source.as_ref().unwrap();
    assert_eq!(source.component.as_deref(), Some("kubelet"));
    assert_eq!(source.host.as_deref(), Some(crate::common::NODE));

    // Deleting the running pod stops its container, and says so.
    pods.delete("runs", &Preconditions::default())
        .await
        .unwrap();
    eventually(WAIT, "a Killing event", || async {
        let list = events.list(&Default::default()).await.ok()?.items;
        about(&list, "runs")
            .contains(&(
                "Normal".into(),
                "Killing".into(),
                "Stopping container main".into(),
            ))
            .then_some(())
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn deletion_runs_pre_stop_then_sigterm_within_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events");
    let e = events.display();
    let runtime = ProcessRuntime::temp().unwrap();
    let cluster = Cluster::start(agent(Arc::new(runtime.clone())).build().unwrap());
    let mut p = pod(
        "polite",
        "Always",
        serde_json::json!([{
            "name": "c", "image": "ignored",
            "command": ["sh", "-c", format!(
                "trap 'echo term >> {e}; exit 0' TERM; while true; do sleep 0.05; done")],
            "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", format!(
                "echo prestop >> {e}; sleep 0.3")]}}}
        }]),
    );
    p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(5);
    let pods = cluster.pods();
    pods.create(&p).await.unwrap();
    cluster.wait_phase("polite", "Running", WAIT).await;
    let t0 = std::time::Instant::now();
    pods.delete("polite", &Preconditions::default())
        .await
        .unwrap();
    eventually(WAIT, "runtime emptied", || async {
        runtime
            .list_pod_sandboxes()
            .await
            .ok()?
            .is_empty()
            .then_some(())
    })
    .await;
    let took = t0.elapsed();
    // The hook ran first, then SIGTERM ended the container well before the 5 s grace.
    assert_eq!(std::fs::read_to_string(&events).unwrap(), "prestop\nterm\n");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(4),
        "{took:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn privileged_process_pods_get_cgroup_limits_and_their_own_ips() {
    if !crate::common::require("nsenter") {
        return;
    }
    let runtime = ProcessRuntime::builder()
        .cgroups(true)
        .pids_limit(64)
        .network(kube_node::PodNetwork::Cni(kube_node::CniConfig {
            bridge: "kn-test-proc".into(),
            subnet: "10.216.0.0/24".into(),
            name: "kn-test-proc".into(),
            ..Default::default()
        }))
        .build()
        .unwrap();
    let cluster = Cluster::start(agent(Arc::new(runtime.clone())).build().unwrap());
    let pods = cluster.pods();
    let server = |name: &str| {
        pod(
            name,
            "Always",
            serde_json::json!([{"name": "c", "image": "ignored", "command": ["sh", "-c",
                format!("while true; do echo {name} | busybox nc -l -p 8080; done")]}]),
        )
    };
    pods.create(&server("a")).await.unwrap();
    pods.create(&server("b")).await.unwrap();
    let mut hog = pod(
        "hog",
        "Never",
        serde_json::json!([{"name": "c", "image": "ignored", "command": ["sh", "-c",
            "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived"],
            "resources": {"limits": {"memory": "20Mi"}}}]),
    );
    hog.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    pods.create(&hog).await.unwrap();

    let ip = |p: kube_core::api::Pod| p.status.and_then(|s| s.pod_ip).unwrap();
    let ip_a = ip(cluster.wait_phase("a", "Running", WAIT).await);
    let ip_b = ip(cluster.wait_phase("b", "Running", WAIT).await);
    assert_ne!(ip_a, ip_b);
    let answers = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(300));
        [ip_a, ip_b].map(|ip| {
            use std::io::Read;
            let mut s = std::net::TcpStream::connect((ip.as_str(), 8080)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out.trim().to_string()
        })
    })
    .await
    .unwrap();
    assert_eq!(answers, ["a", "b"]);

    let failed = cluster.wait_phase("hog", "Failed", WAIT).await;
    let t = crate::common::first_container(&failed)
        .state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("OOMKilled")));
    cluster.shutdown().await;
}

#[tokio::test]
async fn followed_logs_stream_until_the_container_exits() {
    use futures::StreamExt;
    let runtime = ProcessRuntime::temp().unwrap();
    let cluster = Cluster::start(agent(Arc::new(runtime.clone())).build().unwrap());
    cluster
        .pods()
        .create(&pod(
            "talker",
            "Never",
            serde_json::json!([{"name": "c", "image": "ignored", "command": ["sh", "-c",
                "for i in 1 2 3 4; do echo line$i; sleep 0.2; done"]}]),
        ))
        .await
        .unwrap();
    cluster.wait_phase("talker", "Running", WAIT).await;
    let stream = kube_node::follow_pod_logs(
        Arc::new(runtime.clone()),
        "default".into(),
        "talker".into(),
        "c".into(),
        Default::default(),
    );
    let chunks: Vec<_> = tokio::time::timeout(WAIT, stream.collect::<Vec<_>>())
        .await
        .expect("the stream ends when the container exits");
    let text: String = chunks
        .into_iter()
        .map(|c| String::from_utf8_lossy(&c.unwrap()).into_owned())
        .collect();
    assert_eq!(text, "line1\nline2\nline3\nline4\n");
    cluster.shutdown().await;
}
