//! Probes: readiness flips the Ready condition, a failing liveness probe restarts the
//! container. With FakeRuntime (scripted exec results) and with real runc containers.

use std::sync::Arc;
use std::time::Duration;

use kube_core::api::Pod;
use kube_node::{CniConfig, FakeRuntime, OciRuntime};

use crate::common::{Cluster, agent, busybox, eventually, first_container, pod, require};

const WAIT: Duration = Duration::from_secs(15);

fn condition(pod: &Pod, type_: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

async fn wait_ready(cluster: &Cluster, name: &str, ready: &str) -> Pod {
    let pods = cluster.pods();
    eventually(WAIT, &format!("pod {name} Ready={ready}"), || {
        let pods = pods.clone();
        async move {
            let p = pods.get(name).await.ok()?;
            (condition(&p, "Ready").as_deref() == Some(ready)).then_some(p)
        }
    })
    .await
}

#[tokio::test]
async fn readiness_probe_flips_the_ready_condition() {
    let fake = FakeRuntime::new();
    fake.set_exec_result("check", 1);
    let cluster = Cluster::start(agent(Arc::new(fake.clone())).build().unwrap());
    cluster
        .pods()
        .create(&pod(
            "web",
            "Always",
            serde_json::json!([{
                "name": "c", "image": "nginx",
                "readinessProbe": {"exec": {"command": ["check"]}, "periodSeconds": 1,
                                    "failureThreshold": 1}
            }]),
        ))
        .await
        .unwrap();
    let running = cluster.wait_phase("web", "Running", WAIT).await;
    assert_eq!(condition(&running, "Ready").as_deref(), Some("False"));
    assert!(!first_container(&running).ready);

    fake.set_exec_result("check", 0);
    let ready = wait_ready(&cluster, "web", "True").await;
    assert_eq!(
        condition(&ready, "ContainersReady").as_deref(),
        Some("True")
    );
    assert!(first_container(&ready).ready);

    fake.set_exec_result("check", 1);
    let unready = wait_ready(&cluster, "web", "False").await;
    // Not ready is not dead: the same container keeps running.
    assert_eq!(first_container(&unready).restart_count, 0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn startup_probe_holds_back_liveness_and_readiness() {
    let fake = FakeRuntime::new();
    fake.set_exec_result("started", 1);
    // Liveness would fail at once; it must not run before startup succeeds.
    fake.set_exec_result("alive", 1);
    let cluster = Cluster::start(agent(Arc::new(fake.clone())).build().unwrap());
    cluster
        .pods()
        .create(&pod(
            "slow",
            "Always",
            serde_json::json!([{
                "name": "c", "image": "nginx",
                "startupProbe": {"exec": {"command": ["started"]}, "periodSeconds": 1,
                                  "failureThreshold": 30},
                "livenessProbe": {"exec": {"command": ["alive"]}, "periodSeconds": 1,
                                   "failureThreshold": 1}
            }]),
        ))
        .await
        .unwrap();
    let running = cluster.wait_phase("slow", "Running", WAIT).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let c = first_container(&cluster.pods().get("slow").await.unwrap());
    assert_eq!(
        (c.started, c.ready, c.restart_count),
        (Some(false), false, 0)
    );
    assert_eq!(condition(&running, "Ready").as_deref(), Some("False"));

    fake.set_exec_result("alive", 0);
    fake.set_exec_result("started", 0);
    let ready = wait_ready(&cluster, "slow", "True").await;
    let c = first_container(&ready);
    assert_eq!((c.started, c.restart_count), (Some(true), 0));
    cluster.shutdown().await;
}

#[tokio::test]
async fn runc_failing_liveness_probe_restarts_the_container() {
    if !require("runc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = OciRuntime::builder()
        .root_dir(dir.path().join("oci"))
        .image("busybox", busybox(dir.path()))
        .build()
        .unwrap();
    let cluster = Cluster::start(agent(Arc::new(runtime)).build().unwrap());
    cluster
        .pods()
        .create(&pod(
            "sick",
            "Always",
            serde_json::json!([{
                "name": "c", "image": "busybox",
                "command": ["sh", "-c", "touch /tmp/healthy; sleep 1; rm /tmp/healthy; sleep 60"],
                "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]},
                                   "periodSeconds": 1, "failureThreshold": 1}
            }]),
        ))
        .await
        .unwrap();
    let pods = cluster.pods();
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
    let c = first_container(&restarted);
    let last = c.last_state.unwrap().terminated.unwrap();
    // Stopped by the agent: SIGTERM is ignored by PID 1's sleep, so SIGKILL after the grace.
    assert!([137, 143].contains(&last.exit_code), "{last:?}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn runc_http_readiness_probe_follows_the_server() {
    if !require("runc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = OciRuntime::builder()
        .root_dir(dir.path().join("oci"))
        .image("busybox", busybox(dir.path()))
        .cni(CniConfig {
            bridge: "kn-test-probe".into(),
            subnet: "10.214.0.0/24".into(),
            name: "kn-test-probe".into(),
            ..Default::default()
        })
        .build()
        .unwrap();
    let cluster = Cluster::start(agent(Arc::new(runtime)).build().unwrap());
    // Serves /ready for ~2 s, then stops serving it (404).
    let script = "mkdir -p /tmp/www; echo ok > /tmp/www/ready; \
                  (sleep 2; rm /tmp/www/ready) & httpd -f -p 8080 -h /tmp/www";
    cluster
        .pods()
        .create(&pod(
            "web",
            "Always",
            serde_json::json!([{
                "name": "c", "image": "busybox", "command": ["sh", "-c", script],
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"},
                                    "periodSeconds": 1, "failureThreshold": 1}
            }]),
        ))
        .await
        .unwrap();
    wait_ready(&cluster, "web", "True").await;
    let unready = wait_ready(&cluster, "web", "False").await;
    assert_eq!(first_container(&unready).restart_count, 0);
    cluster.shutdown().await;
}
