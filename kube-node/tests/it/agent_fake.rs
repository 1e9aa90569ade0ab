//! NodeAgent over MemStore + FakeRuntime: node registration, pod lifecycle, restarts, deletion.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ContainerStatus;
use kube_core::api::{Node, Pod};
use kube_core::runtime::{ContainerFilter, Runtime, SandboxState};
use kube_core::store::{Preconditions, Store};
use kube_core::typed::Api;
use kube_node::{FakeBehavior, FakeOp, FakeRuntime};
use kube_store::MemStore;

use crate::common::{Cluster, NODE, agent, eventually, pod};

const WAIT: Duration = Duration::from_secs(5);

fn start(fake: &FakeRuntime) -> Cluster {
    Cluster::start(agent(Arc::new(fake.clone())).build().expect("agent builds"))
}

fn statuses(pod: &Pod) -> Vec<ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default()
}

fn condition(pod: &Pod, type_: &str) -> Option<String> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

fn heartbeat(node: &Node) -> Option<k8s_openapi::jiff::Timestamp> {
    let conditions = node.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions.iter().find(|c| c.type_ == "Ready")?;
    ready.last_heartbeat_time.as_ref().map(|t| t.0)
}

#[tokio::test]
async fn registers_a_ready_node_and_heartbeats() {
    let fake = FakeRuntime::new();
    let cluster = Cluster::start(
        agent(Arc::new(fake.clone()))
            .capacity("cpu", "16")
            .allocatable("cpu", "15")
            .label("zone", "a")
            .node_ip("10.0.0.7")
            .build()
            .unwrap(),
    );
    let nodes = cluster.nodes();
    let node = eventually(WAIT, "node registered", || async {
        nodes.get(NODE).await.ok()
    })
    .await;
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels["kubernetes.io/hostname"], NODE);
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["zone"], "a");
    let status = node.status.clone().unwrap();
    let capacity = status.capacity.unwrap();
    let allocatable = status.allocatable.unwrap();
    assert_eq!(
        (capacity["cpu"].0.as_str(), allocatable["cpu"].0.as_str()),
        ("16", "15")
    );
    assert_eq!(capacity["memory"].0, "8Gi");
    assert_eq!(allocatable["pods"].0, "110");
    let addresses: Vec<_> = status
        .addresses
        .unwrap()
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert_eq!(
        addresses,
        [
            ("InternalIP".to_string(), "10.0.0.7".to_string()),
            ("Hostname".to_string(), NODE.to_string())
        ]
    );
    let info = status.node_info.unwrap();
    assert!(info.container_runtime_version.starts_with("fake://"));
    assert_eq!(info.operating_system, "linux");
    assert!(!info.kubelet_version.is_empty());
    let ready = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("True", Some("KubeletReady"))
    );

    // The wire format keeps whole seconds, so a heartbeat shows within about a second.
    let first = heartbeat(&node).unwrap();
    eventually(Duration::from_secs(3), "heartbeat advances", || async {
        let node = nodes.get(NODE).await.ok()?;
        (heartbeat(&node)? > first).then_some(())
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_existing_node_is_updated_not_replaced() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let nodes: Api<Node> = Api::all(store.clone());
    nodes
        .create(
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": NODE, "labels": {"keep": "me"}},
                "spec": {"unschedulable": true}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let fake = FakeRuntime::new();
    let cluster = Cluster::start_with_store(agent(Arc::new(fake)).build().unwrap(), store);
    let node = eventually(WAIT, "node status", || async {
        let node = nodes.get(NODE).await.ok()?;
        heartbeat(&node).map(|_| node)
    })
    .await;
    let labels = node.metadata.labels.unwrap();
    assert_eq!(labels["keep"], "me");
    assert_eq!(labels["kubernetes.io/hostname"], NODE);
    assert_eq!(
        node.spec.and_then(|s| s.unschedulable),
        Some(true),
        "spec untouched"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_bound_pod_runs_with_an_ip_and_container_statuses() {
    let fake = FakeRuntime::new();
    let cluster = start(&fake);
    let pods = cluster.pods();
    pods.create(&pod(
        "web",
        "Always",
        serde_json::json!([
            {"name": "app", "image": "nginx"},
            {"name": "sidecar", "image": "envoy"}
        ]),
    ))
    .await
    .unwrap();
    let running = cluster.wait_phase("web", "Running", WAIT).await;
    let status = running.status.clone().unwrap();
    assert!(
        status
            .pod_ip
            .as_deref()
            .is_some_and(|ip| ip.starts_with("10.88.")),
        "{:?}",
        status.pod_ip
    );
    assert_eq!(
        status.pod_ips.unwrap()[0].ip,
        status.pod_ip.clone().unwrap()
    );
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    assert!(status.start_time.is_some());
    let containers = statuses(&running);
    assert_eq!(containers.len(), 2);
    for c in &containers {
        assert!(c.ready, "{c:?}");
        assert_eq!(c.started, Some(true));
        assert_eq!(c.restart_count, 0);
        assert!(c.state.as_ref().unwrap().running.is_some());
        assert!(c.container_id.as_deref().unwrap().starts_with("fake://"));
    }
    assert_eq!(containers[0].image, "nginx");
    for type_ in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert_eq!(
            condition(&running, type_).as_deref(),
            Some("True"),
            "{type_}"
        );
    }
    assert_eq!(fake.running_count(), 2);
    assert_eq!(fake.count(FakeOp::RunPodSandbox), 1);

    // Once settled, nothing is rewritten: resyncs only read.
    let version = pods.get("web").await.unwrap().metadata.resource_version;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        pods.get("web").await.unwrap().metadata.resource_version,
        version
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn never_policy_pods_succeed_or_fail_with_their_containers() {
    let fake = FakeRuntime::new();
    fake.on_image(
        "ok",
        FakeBehavior::exit_after(Duration::from_millis(100), 0),
    );
    fake.on_image(
        "bad",
        FakeBehavior::exit_after(Duration::from_millis(100), 1),
    );
    let cluster = start(&fake);
    let pods = cluster.pods();
    pods.create(&pod(
        "good",
        "Never",
        serde_json::json!([{"name": "c", "image": "ok"}]),
    ))
    .await
    .unwrap();
    pods.create(&pod(
        "broken",
        "Never",
        serde_json::json!([{"name": "c", "image": "bad"}]),
    ))
    .await
    .unwrap();

    let good = cluster.wait_phase("good", "Succeeded", WAIT).await;
    let terminated = statuses(&good)[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (0, Some("Completed"))
    );
    assert_eq!(condition(&good, "Ready").as_deref(), Some("False"));

    let broken = cluster.wait_phase("broken", "Failed", WAIT).await;
    let terminated = statuses(&broken)[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (1, Some("Error"))
    );

    // Nothing restarts, and the finished pods' sandboxes are stopped.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.count(FakeOp::StartContainer), 2);
    eventually(WAIT, "sandboxes stopped", || async {
        let sandboxes = fake.list_pod_sandboxes().await.ok()?;
        sandboxes
            .iter()
            .all(|s| s.state == SandboxState::NotReady)
            .then_some(())
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn start_failures_fail_a_never_pod() {
    let fake = FakeRuntime::new();
    fake.on_image("broken", FakeBehavior::fail_start("exec format error"));
    let cluster = start(&fake);
    cluster
        .pods()
        .create(&pod(
            "p",
            "Never",
            serde_json::json!([{"name": "c", "image": "broken"}]),
        ))
        .await
        .unwrap();
    let failed = cluster.wait_phase("p", "Failed", WAIT).await;
    let terminated = statuses(&failed)[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (terminated.exit_code, terminated.reason.as_deref()),
        (128, Some("StartError"))
    );
    assert_eq!(terminated.message.as_deref(), Some("exec format error"));
    cluster.shutdown().await;
}

#[tokio::test]
async fn always_policy_restarts_with_crash_loop_backoff() {
    let fake = FakeRuntime::new();
    fake.on_image(
        "crasher",
        FakeBehavior::exit_after(Duration::from_millis(50), 1),
    );
    let cluster = start(&fake);
    let pods = cluster.pods();
    pods.create(&pod(
        "crashy",
        "Always",
        serde_json::json!([{"name": "c", "image": "crasher"}]),
    ))
    .await
    .unwrap();

    // Backing off between restarts (base 300 ms in these tests) shows as CrashLoopBackOff.
    let backing_off = eventually(WAIT, "CrashLoopBackOff", || async {
        let pod = pods.get("crashy").await.ok()?;
        let c = statuses(&pod).into_iter().next()?;
        let reason = c.state.as_ref()?.waiting.as_ref()?.reason.clone()?;
        (reason == "CrashLoopBackOff").then_some(c)
    })
    .await;
    let last = backing_off.last_state.unwrap().terminated.unwrap();
    assert_eq!(last.exit_code, 1);
    assert!(backing_off.restart_count >= 1);

    let restarted = eventually(WAIT, "restartCount 3", || async {
        let pod = pods.get("crashy").await.ok()?;
        let c = statuses(&pod).into_iter().next()?;
        (c.restart_count >= 3).then_some(pod)
    })
    .await;
    assert_eq!(restarted.status.unwrap().phase.as_deref(), Some("Running"));
    // Only the newest container and the one before it are kept.
    assert!(
        fake.container_count() <= 2,
        "{} containers kept",
        fake.container_count()
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn on_failure_restarts_failures_only() {
    let fake = FakeRuntime::new();
    fake.on_image(
        "flaky",
        FakeBehavior::exit_after(Duration::from_millis(50), 2),
    );
    fake.on_image("ok", FakeBehavior::exit_after(Duration::from_millis(50), 0));
    let cluster = start(&fake);
    let pods = cluster.pods();
    pods.create(&pod(
        "done",
        "OnFailure",
        serde_json::json!([{"name": "c", "image": "ok"}]),
    ))
    .await
    .unwrap();
    pods.create(&pod(
        "flaky",
        "OnFailure",
        serde_json::json!([{"name": "c", "image": "flaky"}]),
    ))
    .await
    .unwrap();
    cluster.wait_phase("done", "Succeeded", WAIT).await;
    eventually(WAIT, "flaky restarted", || async {
        let pod = pods.get("flaky").await.ok()?;
        (statuses(&pod).first()?.restart_count >= 1).then_some(())
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn init_containers_run_in_order_before_app_containers() {
    let fake = FakeRuntime::new();
    fake.on_command(
        "init",
        FakeBehavior::exit_after(Duration::from_millis(50), 0),
    );
    fake.on_command(
        "fail",
        FakeBehavior::exit_after(Duration::from_millis(50), 1),
    );
    let cluster = start(&fake);
    let pods = cluster.pods();
    let mut ok = pod(
        "ok",
        "Always",
        serde_json::json!([{"name": "app", "image": "nginx"}]),
    );
    ok.spec.as_mut().unwrap().init_containers = Some(
        serde_json::from_value(serde_json::json!([
            {"name": "first", "image": "busybox", "command": ["init"]},
            {"name": "second", "image": "busybox", "command": ["init"]}
        ]))
        .unwrap(),
    );
    pods.create(&ok).await.unwrap();
    let running = cluster.wait_phase("ok", "Running", WAIT).await;
    assert_eq!(condition(&running, "Initialized").as_deref(), Some("True"));
    let init = running.status.unwrap().init_container_statuses.unwrap();
    assert!(init.iter().all(|s| {
        s.state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code
            == 0
    }));
    let created: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.op == FakeOp::CreateContainer)
        .map(|c| c.target)
        .collect();
    assert_eq!(created, ["first", "second", "app"]);

    // A failing init container of a Never pod fails the pod; app containers never start.
    let mut bad = pod(
        "bad",
        "Never",
        serde_json::json!([{"name": "app2", "image": "nginx"}]),
    );
    bad.spec.as_mut().unwrap().init_containers = Some(
        serde_json::from_value(serde_json::json!([
            {"name": "setup", "image": "busybox", "command": ["fail"]}
        ]))
        .unwrap(),
    );
    pods.create(&bad).await.unwrap();
    let failed = cluster.wait_phase("bad", "Failed", WAIT).await;
    assert_eq!(condition(&failed, "Initialized").as_deref(), Some("False"));
    let app = &statuses(&failed)[0];
    assert_eq!(
        app.state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("PodInitializing")
    );
    assert!(!fake.calls().iter().any(|c| c.target == "app2"));
    cluster.shutdown().await;
}

#[tokio::test]
async fn deleting_a_pod_stops_and_removes_its_sandbox_and_containers() {
    let fake = FakeRuntime::new();
    let cluster = start(&fake);
    let pods = cluster.pods();
    pods.create(&pod(
        "web",
        "Always",
        serde_json::json!([{"name": "c", "image": "nginx"}]),
    ))
    .await
    .unwrap();
    cluster.wait_phase("web", "Running", WAIT).await;
    fake.clear_calls();
    pods.delete("web", &Preconditions::default()).await.unwrap();
    eventually(WAIT, "runtime emptied", || async {
        (fake.sandbox_count() == 0 && fake.container_count() == 0).then_some(())
    })
    .await;
    let ops: Vec<FakeOp> = fake.calls().into_iter().map(|c| c.op).collect();
    assert_eq!(
        ops,
        [
            FakeOp::StopContainer,
            FakeOp::RemoveContainer,
            FakeOp::StopPodSandbox,
            FakeOp::RemovePodSandbox
        ]
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn status_writes_keep_concurrent_spec_and_label_changes() {
    let fake = FakeRuntime::new();
    let cluster = start(&fake);
    let pods = cluster.pods();
    pods.create(&pod(
        "web",
        "Always",
        serde_json::json!([{"name": "c", "image": "nginx"}]),
    ))
    .await
    .unwrap();
    cluster.wait_phase("web", "Running", WAIT).await;
    pods.patch_merge(
        "web",
        &serde_json::json!({"metadata": {"labels": {"tier": "front"}}}),
    )
    .await
    .unwrap();
    // A crash changes the status; the label written meanwhile must survive the status write.
    let filter = ContainerFilter::default();
    let id = fake.list_containers(&filter).await.unwrap()[0].id.clone();
    assert!(fake.kill_container(&id, 137));
    let restarted = eventually(WAIT, "restart seen", || async {
        let pod = pods.get("web").await.ok()?;
        (statuses(&pod).first()?.restart_count == 1).then_some(pod)
    })
    .await;
    assert_eq!(restarted.metadata.labels.as_ref().unwrap()["tier"], "front");
    let last = statuses(&restarted)[0]
        .last_state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(last.exit_code, 137);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_restarted_agent_adopts_what_is_running() {
    let fake = FakeRuntime::new();
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let first = Cluster::start_with_store(
        agent(Arc::new(fake.clone())).build().unwrap(),
        store.clone(),
    );
    first
        .pods()
        .create(&pod(
            "web",
            "Always",
            serde_json::json!([{"name": "c", "image": "nginx"}]),
        ))
        .await
        .unwrap();
    first.wait_phase("web", "Running", WAIT).await;
    first.shutdown().await;

    // A new agent on the same runtime finds the sandbox by its labels: nothing is re-created.
    let second = Cluster::start_with_store(agent(Arc::new(fake.clone())).build().unwrap(), store);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.count(FakeOp::RunPodSandbox), 1);
    assert_eq!(fake.count(FakeOp::CreateContainer), 1);
    assert_eq!(fake.running_count(), 1);

    // ...and still cleans up when the pod goes.
    second
        .pods()
        .delete("web", &Preconditions::default())
        .await
        .unwrap();
    eventually(WAIT, "runtime emptied", || async {
        (fake.sandbox_count() == 0).then_some(())
    })
    .await;
    second.shutdown().await;
}

#[tokio::test]
async fn a_graceful_deletion_is_finished_by_the_agent() {
    let fake = FakeRuntime::new();
    let cluster = start(&fake);
    let pods = cluster.pods();
    pods.create(&pod(
        "web",
        "Always",
        serde_json::json!([{"name": "c", "image": "nginx"}]),
    ))
    .await
    .unwrap();
    cluster.wait_phase("web", "Running", WAIT).await;
    // What an API server does on DELETE of a pod on a node: mark it, let the node finish.
    pods.patch_merge(
        "web",
        &serde_json::json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z", "deletionGracePeriodSeconds": 1}}),
    )
    .await
    .unwrap();
    eventually(WAIT, "pod deleted by the agent", || async {
        pods.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;
    assert_eq!((fake.sandbox_count(), fake.container_count()), (0, 0));
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_node_lease_is_created_owned_by_the_node_and_renewed() {
    use kube_core::api::Lease;
    let fake = FakeRuntime::new();
    let cluster = start(&fake);
    let leases: Api<Lease> = Api::namespaced(cluster.store.clone(), "kube-node-lease");
    let renew = |l: &Lease| {
        l.spec
            .as_ref()
            .and_then(|s| s.renew_time.clone())
            .map(|t| t.0)
    };
    let lease = eventually(WAIT, "lease created", || async {
        let l = leases.get(NODE).await.ok()?;
        // Created after the Node, so it can name it as its owner.
        l.metadata.owner_references.is_some().then_some(l)
    })
    .await;
    let spec = lease.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(NODE));
    // Four heartbeats (200 ms in tests), at least a second.
    assert_eq!(spec.lease_duration_seconds, Some(1));
    let owner = &lease.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", NODE));
    let first = renew(&lease).unwrap();
    eventually(WAIT, "lease renewed", || async {
        let l = leases.get(NODE).await.ok()?;
        (renew(&l)? > first).then_some(())
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn admission_rejects_what_does_not_fit_the_node() {
    let fake = FakeRuntime::new();
    let cluster = Cluster::start(
        agent(Arc::new(fake.clone()))
            .capacity("cpu", "1")
            .label("disk", "ssd")
            .build()
            .unwrap(),
    );
    let pods = cluster.pods();
    let with = |name: &str, extra: serde_json::Value| -> Pod {
        let mut p = serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": NODE, "containers": [{
                "name": "c", "image": "nginx",
                "resources": {"requests": {"cpu": "600m"}},
                "ports": [{"containerPort": 80, "hostPort": 8080}]
            }]}
        });
        if let serde_json::Value::Object(extra) = extra {
            for (k, v) in extra {
                p["spec"][k] = v;
            }
        }
        serde_json::from_value(p).unwrap()
    };
    pods.create(&with("first", serde_json::json!({})))
        .await
        .unwrap();
    cluster.wait_phase("first", "Running", WAIT).await;

    // 600m + 600m > 1 CPU.
    pods.create(&with("second", serde_json::json!({})))
        .await
        .unwrap();
    let rejected = cluster.wait_phase("second", "Failed", WAIT).await;
    let status = rejected.status.unwrap();
    assert_eq!(status.reason.as_deref(), Some("OutOfcpu"));
    assert!(
        status
            .message
            .unwrap()
            .contains("requested: 600, used: 600, capacity: 1000")
    );

    // Fits the CPU but wants the same host port.
    let mut third = with("third", serde_json::json!({}));
    third.spec.as_mut().unwrap().containers[0].resources = None;
    pods.create(&third).await.unwrap();
    let rejected = cluster.wait_phase("third", "Failed", WAIT).await;
    assert_eq!(
        rejected.status.unwrap().reason.as_deref(),
        Some("NodePorts")
    );

    // The node selector is checked against the node's labels.
    let mut fourth = with(
        "fourth",
        serde_json::json!({"nodeSelector": {"disk": "hdd"}}),
    );
    fourth.spec.as_mut().unwrap().containers[0].resources = None;
    fourth.spec.as_mut().unwrap().containers[0].ports = None;
    pods.create(&fourth).await.unwrap();
    let rejected = cluster.wait_phase("fourth", "Failed", WAIT).await;
    assert_eq!(
        rejected.status.unwrap().reason.as_deref(),
        Some("NodeAffinity")
    );
    // Nothing of the rejected pods ran.
    assert_eq!(fake.sandbox_count(), 1);

    // Once the first pod is gone, its CPU is free again.
    pods.delete("first", &Preconditions::default())
        .await
        .unwrap();
    eventually(WAIT, "first torn down", || async {
        (fake.sandbox_count() == 0).then_some(())
    })
    .await;
    pods.create(&with("fifth", serde_json::json!({})))
        .await
        .unwrap();
    cluster.wait_phase("fifth", "Running", WAIT).await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn capacity_can_be_detected_from_the_host() {
    let fake = FakeRuntime::new();
    let agent = agent(Arc::new(fake)).detect_capacity().build().unwrap();
    let capacity = &agent.config().capacity;
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(capacity["cpu"], cpus.to_string());
    assert!(capacity["memory"].ends_with("Ki"), "{}", capacity["memory"]);
    assert_eq!(capacity["pods"], "110");
}

#[tokio::test]
async fn host_pressure_conditions_are_reported() {
    let fake = FakeRuntime::new();
    let cluster = Cluster::start(agent(Arc::new(fake)).host_pressure(true).build().unwrap());
    let nodes = cluster.nodes();
    let node = eventually(WAIT, "node registered", || async {
        nodes.get(NODE).await.ok()
    })
    .await;
    let conditions = node.status.unwrap().conditions.unwrap();
    for type_ in ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"] {
        let c = conditions.iter().find(|c| c.type_ == type_).unwrap();
        assert!(["True", "False"].contains(&c.status.as_str()), "{c:?}");
        assert!(
            c.reason
                .as_deref()
                .is_some_and(|r| r.starts_with("Kubelet"))
        );
    }
    cluster.shutdown().await;
}

/// A [`FakeRuntime`] that keeps the config of every container created, to look at what the
/// agent asked for.
#[derive(Debug, Clone)]
struct Recording {
    inner: FakeRuntime,
    created: Arc<std::sync::Mutex<Vec<kube_core::runtime::ContainerConfig>>>,
}

impl Recording {
    fn new() -> Self {
        Self {
            inner: FakeRuntime::new(),
            created: Arc::default(),
        }
    }

    fn created(&self, name: &str) -> Option<kube_core::runtime::ContainerConfig> {
        let created = self.created.lock().expect("lock");
        created.iter().rev().find(|c| c.name == name).cloned()
    }
}

#[async_trait::async_trait]
impl Runtime for Recording {
    fn version(&self) -> String {
        self.inner.version()
    }
    async fn run_pod_sandbox(
        &self,
        config: &kube_core::runtime::PodSandboxConfig,
    ) -> Result<String, kube_core::runtime::RuntimeError> {
        self.inner.run_pod_sandbox(config).await
    }
    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), kube_core::runtime::RuntimeError> {
        self.inner.stop_pod_sandbox(id).await
    }
    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), kube_core::runtime::RuntimeError> {
        self.inner.remove_pod_sandbox(id).await
    }
    async fn pod_sandbox_status(
        &self,
        id: &str,
    ) -> Result<kube_core::runtime::PodSandboxStatus, kube_core::runtime::RuntimeError> {
        self.inner.pod_sandbox_status(id).await
    }
    async fn list_pod_sandboxes(
        &self,
    ) -> Result<Vec<kube_core::runtime::PodSandboxStatus>, kube_core::runtime::RuntimeError> {
        self.inner.list_pod_sandboxes().await
    }
    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &kube_core::runtime::ContainerConfig,
    ) -> Result<String, kube_core::runtime::RuntimeError> {
        self.created.lock().expect("lock").push(config.clone());
        self.inner.create_container(sandbox_id, config).await
    }
    async fn start_container(&self, id: &str) -> Result<(), kube_core::runtime::RuntimeError> {
        self.inner.start_container(id).await
    }
    async fn stop_container(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<(), kube_core::runtime::RuntimeError> {
        self.inner.stop_container(id, timeout).await
    }
    async fn remove_container(&self, id: &str) -> Result<(), kube_core::runtime::RuntimeError> {
        self.inner.remove_container(id).await
    }
    async fn container_status(
        &self,
        id: &str,
    ) -> Result<kube_core::runtime::ContainerStatus, kube_core::runtime::RuntimeError> {
        self.inner.container_status(id).await
    }
    async fn list_containers(
        &self,
        filter: &ContainerFilter,
    ) -> Result<Vec<kube_core::runtime::ContainerStatus>, kube_core::runtime::RuntimeError> {
        self.inner.list_containers(filter).await
    }
    async fn container_logs(
        &self,
        id: &str,
        options: &kube_core::runtime::LogOptions,
    ) -> Result<bytes::Bytes, kube_core::runtime::RuntimeError> {
        self.inner.container_logs(id, options).await
    }
}

/// The mount of `path` in a container's config, with the file's content.
fn mount_of(config: &kube_core::runtime::ContainerConfig, path: &str) -> Option<(bool, String)> {
    let m = config.mounts.iter().find(|m| m.container_path == path)?;
    let content = std::fs::read_to_string(&m.host_path).expect("a mounted file");
    Some((m.read_only, content))
}

/// Every container gets the pod's `/etc/resolv.conf` (per `dnsPolicy`, from the cluster DNS
/// the agent was given) and `/etc/hosts` (its name on its IP, `hostAliases`) as mounts of
/// files the agent writes, writable as in Kubernetes; a container mounting a volume at one of
/// the paths keeps its own.
#[tokio::test]
async fn containers_get_the_pods_resolv_conf_and_hosts_as_mounts() {
    let runtime = Recording::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let host_resolv = dir.path().join("host-resolv.conf");
    std::fs::write(&host_resolv, "nameserver 192.0.2.53\nsearch corp.example\n").expect("write");
    let dns: std::net::IpAddr = "10.96.0.10".parse().expect("ip");
    let agent = agent(Arc::new(runtime.clone()))
        .root_dir(dir.path().join("pods"))
        .cluster_dns(vec![dns], "cluster.local")
        .resolv_conf(Some(host_resolv))
        .build()
        .expect("agent");
    let cluster = Cluster::start(agent);
    let pods = cluster.pods();
    let mut web: Pod = pod(
        "web",
        "Always",
        serde_json::json!([
            {"name": "app", "image": "nginx",
             "volumeMounts": [{"name": "own", "mountPath": "/etc/hosts", "subPath": "hosts"}]},
            {"name": "sidecar", "image": "envoy"}
        ]),
    );
    let spec = web.spec.as_mut().expect("spec");
    spec.subdomain = Some("front".into());
    spec.host_aliases = Some(
        serde_json::from_value(serde_json::json!([{"ip": "10.1.2.3", "hostnames": ["db.local"]}]))
            .expect("aliases"),
    );
    spec.volumes = Some(
        serde_json::from_value(serde_json::json!([{"name": "own", "emptyDir": {}}]))
            .expect("volumes"),
    );
    pods.create(&web).await.expect("create");
    let running = cluster.wait_phase("web", "Running", WAIT).await;
    let ip = running.status.and_then(|s| s.pod_ip).expect("a pod IP");

    let sidecar = runtime.created("sidecar").expect("sidecar created");
    let (read_only, resolv) = mount_of(&sidecar, "/etc/resolv.conf").expect("resolv.conf");
    assert!(!read_only);
    assert_eq!(
        resolv,
        "search default.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
         nameserver 10.96.0.10\noptions ndots:5\n"
    );
    let (read_only, hosts) = mount_of(&sidecar, "/etc/hosts").expect("hosts");
    assert!(!read_only);
    assert!(hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
    assert!(
        hosts.contains(&format!(
            "\n{ip}\tweb.front.default.svc.cluster.local\tweb\n"
        )),
        "{hosts}"
    );
    assert!(
        hosts.ends_with("# Entries added by HostAliases.\n10.1.2.3\tdb.local\n"),
        "{hosts}"
    );
    // The app mounts its own /etc/hosts: only the resolv.conf is added.
    let app = runtime.created("app").expect("app created");
    let hosts_mounts: Vec<_> = app
        .mounts
        .iter()
        .filter(|m| m.container_path == "/etc/hosts")
        .collect();
    assert_eq!(hosts_mounts.len(), 1);
    assert!(hosts_mounts[0].host_path.ends_with("volumes/own/hosts"));
    assert!(mount_of(&app, "/etc/resolv.conf").is_some());
    cluster.shutdown().await;
}

/// `dnsPolicy: None` gives only the pod's `dnsConfig`; without cluster DNS, `ClusterFirst`
/// falls back to the node's resolv.conf, and the node gets a `MissingClusterDNS` warning.
#[tokio::test]
async fn dns_policy_none_and_the_fallback_without_cluster_dns() {
    use k8s_openapi::api::core::v1::Event;

    let runtime = Recording::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let host_resolv = dir.path().join("host-resolv.conf");
    std::fs::write(
        &host_resolv,
        "nameserver 192.0.2.53\nsearch corp.example\noptions timeout:2\n",
    )
    .expect("write");
    let agent = agent(Arc::new(runtime.clone()))
        .resolv_conf(Some(host_resolv))
        .build()
        .expect("agent");
    let cluster = Cluster::start(agent);
    let pods = cluster.pods();
    let mut none = pod(
        "none",
        "Always",
        serde_json::json!([{"name": "c", "image": "busybox"}]),
    );
    let spec = none.spec.as_mut().expect("spec");
    spec.dns_policy = Some("None".into());
    spec.dns_config = Some(
        serde_json::from_value(serde_json::json!({
            "nameservers": ["1.1.1.1"], "searches": ["my.example"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]
        }))
        .expect("dnsConfig"),
    );
    pods.create(&none).await.expect("create");
    pods.create(&pod(
        "plain",
        "Always",
        serde_json::json!([{"name": "d", "image": "busybox"}]),
    ))
    .await
    .expect("create");
    cluster.wait_phase("none", "Running", WAIT).await;
    cluster.wait_phase("plain", "Running", WAIT).await;
    let (_, resolv) =
        mount_of(&runtime.created("c").expect("c"), "/etc/resolv.conf").expect("resolv.conf");
    assert_eq!(
        resolv,
        "search my.example\nnameserver 1.1.1.1\noptions ndots:2 edns0\n"
    );
    let (_, resolv) =
        mount_of(&runtime.created("d").expect("d"), "/etc/resolv.conf").expect("resolv.conf");
    assert_eq!(
        resolv,
        "search corp.example\nnameserver 192.0.2.53\noptions timeout:2\n"
    );
    let events: Api<Event> = Api::all(cluster.store.clone());
    let warning = eventually(WAIT, "a MissingClusterDNS event", || async {
        let list = events.list(&Default::default()).await.ok()?.items;
        list.into_iter()
            .find(|e| e.reason.as_deref() == Some("MissingClusterDNS"))
    })
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert_eq!(warning.involved_object.kind.as_deref(), Some("Node"));
    assert_eq!(warning.involved_object.name.as_deref(), Some(NODE));
    cluster.shutdown().await;
}
