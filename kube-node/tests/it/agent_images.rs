//! The node agent's image handling over FakeRuntime's simulated pulls: pull policies, the
//! kubelet's waiting reasons and Events, back-off, `runAsNonRoot`, the Node's
//! `status.images`, serialized pulls and image garbage collection.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Event};
use kube_core::api::Pod;
use kube_core::runtime::Runtime;
use kube_core::typed::Api;
use kube_node::{FakeOp, FakePull, FakeRuntime, ImageGcPolicy};

use crate::common::{Cluster, NODE, agent, eventually, pod};

const WAIT: Duration = Duration::from_secs(10);

fn start(fake: &FakeRuntime) -> Cluster {
    Cluster::start(agent(Arc::new(fake.clone())).build().expect("agent builds"))
}

fn first(pod: &Pod) -> Option<ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()
        .cloned()
}

/// The container's waiting reason and message.
fn waiting(pod: &Pod) -> Option<(String, String)> {
    let w = first(pod)?.state?.waiting?;
    Some((w.reason?, w.message.unwrap_or_default()))
}

async fn wait_reason(cluster: &Cluster, name: &str, reason: &str) -> (String, String) {
    let pods = cluster.pods();
    eventually(WAIT, &format!("{name} waiting with {reason}"), || async {
        let pod = pods.get(name).await.ok()?;
        waiting(&pod).filter(|(r, _)| r == reason)
    })
    .await
}

/// (type, reason, message) of the Events about pod `name`, oldest first.
async fn events(cluster: &Cluster, name: &str) -> Vec<(String, String, String)> {
    let events: Api<Event> = Api::namespaced(cluster.store.clone(), "default");
    let mut list: Vec<Event> = events
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .collect();
    list.sort_by_key(|e| e.first_timestamp.as_ref().map(|t| t.0));
    list.into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect()
}

async fn wait_event(cluster: &Cluster, name: &str, reason: &str) -> String {
    eventually(WAIT, &format!("a {reason} event about {name}"), || async {
        events(cluster, name)
            .await
            .into_iter()
            .find(|(_, r, _)| r == reason)
            .map(|(_, _, m)| m)
    })
    .await
}

#[tokio::test]
async fn an_image_is_pulled_once_with_if_not_present_and_every_time_with_always() {
    let fake = FakeRuntime::new();
    fake.on_pull("web:1.0", FakePull::default().size(12_345));
    let cluster = start(&fake);
    let pods = cluster.pods();
    pods.create(&pod(
        "pinned",
        "Always",
        serde_json::json!([{"name": "c", "image": "web:1.0"}]),
    ))
    .await
    .unwrap();
    cluster.wait_phase("pinned", "Running", WAIT).await;
    let pulled = wait_event(&cluster, "pinned", "Pulled").await;
    assert!(
        pulled.starts_with("Successfully pulled image \"web:1.0\" in ")
            && pulled.ends_with("including waiting). Image size: 12345 bytes."),
        "{pulled}"
    );
    assert_eq!(fake.count(FakeOp::PullImage), 1);
    assert_eq!(fake.images(), ["docker.io/library/web:1.0"]);

    // A second pod of the same tagged image finds it present (IfNotPresent by default).
    pods.create(&pod(
        "again",
        "Always",
        serde_json::json!([{"name": "c", "image": "docker.io/library/web:1.0"}]),
    ))
    .await
    .unwrap();
    cluster.wait_phase("again", "Running", WAIT).await;
    assert_eq!(
        wait_event(&cluster, "again", "Pulled").await,
        "Container image \"docker.io/library/web:1.0\" already present on machine"
    );
    assert_eq!(fake.count(FakeOp::PullImage), 1);

    // `:latest` (or no tag) is pulled every time, present or not.
    fake.preload_image("busybox", 1);
    pods.create(&pod(
        "latest",
        "Always",
        serde_json::json!([{"name": "c", "image": "busybox"}]),
    ))
    .await
    .unwrap();
    cluster.wait_phase("latest", "Running", WAIT).await;
    assert_eq!(
        wait_event(&cluster, "latest", "Pulling").await,
        "Pulling image \"busybox\""
    );
    assert_eq!(fake.count(FakeOp::PullImage), 2);
    cluster.shutdown().await;
}

#[tokio::test]
async fn never_runs_present_images_and_waits_with_err_image_never_pull_for_others() {
    let fake = FakeRuntime::new();
    fake.preload_image("here:1", 1);
    let cluster = start(&fake);
    let pods = cluster.pods();
    let never = |name: &str, image: &str| {
        pod(
            name,
            "Always",
            serde_json::json!([{"name": "c", "image": image, "imagePullPolicy": "Never"}]),
        )
    };
    pods.create(&never("present", "here:1")).await.unwrap();
    pods.create(&never("absent", "gone:1")).await.unwrap();
    cluster.wait_phase("present", "Running", WAIT).await;
    let (_, message) = wait_reason(&cluster, "absent", "ErrImageNeverPull").await;
    assert_eq!(
        message,
        "Container image \"gone:1\" is not present with pull policy of Never"
    );
    assert_eq!(fake.count(FakeOp::PullImage), 0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_failed_pull_is_err_image_pull_then_image_pull_back_off_until_it_works() {
    let fake = FakeRuntime::new();
    fake.on_pull(
        "private:1",
        FakePull::fail("unexpected status from HEAD request: 401 Unauthorized"),
    );
    let cluster = start(&fake);
    let pods = cluster.pods();
    pods.create(&pod(
        "private",
        "Always",
        serde_json::json!([{"name": "c", "image": "private:1"}]),
    ))
    .await
    .unwrap();
    let (_, message) = wait_reason(&cluster, "private", "ErrImagePull").await;
    assert!(
        message.starts_with("Failed to pull image \"private:1\": ")
            && message.contains("401 Unauthorized"),
        "{message}"
    );
    let (_, message) = wait_reason(&cluster, "private", "ImagePullBackOff").await;
    assert_eq!(message, "Back-off pulling image \"private:1\"");
    let seen = events(&cluster, "private").await;
    let reasons: Vec<&str> = seen.iter().map(|(_, r, _)| r.as_str()).collect();
    for wanted in ["Pulling", "Failed", "BackOff"] {
        assert!(reasons.contains(&wanted), "{wanted} in {seen:?}");
    }
    assert!(
        seen.iter()
            .any(|(t, r, m)| t == "Warning" && r == "Failed" && m == "Error: ErrImagePull"),
        "{seen:?}"
    );
    // Back-off: far fewer pulls than syncs (every 50 ms) in the time it has had.
    let pulls = fake.count(FakeOp::PullImage);
    assert!(pulls <= 3, "{pulls} pulls");

    // The registry lets it in: the next attempt after the back-off runs the pod.
    fake.on_pull("private:1", FakePull::default());
    cluster.wait_phase("private", "Running", WAIT).await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_unparseable_image_is_invalid_image_name() {
    let fake = FakeRuntime::new();
    let cluster = start(&fake);
    cluster
        .pods()
        .create(&pod(
            "bad",
            "Always",
            serde_json::json!([{"name": "c", "image": "Not//A:Valid@Name"}]),
        ))
        .await
        .unwrap();
    let (_, message) = wait_reason(&cluster, "bad", "InvalidImageName").await;
    assert!(
        message.starts_with("Failed to apply default image tag \"Not//A:Valid@Name\""),
        "{message}"
    );
    assert_eq!(fake.count(FakeOp::PullImage), 0);
    cluster.shutdown().await;
}

#[tokio::test]
async fn run_as_non_root_refuses_a_root_image_and_allows_a_non_root_user() {
    let fake = FakeRuntime::new();
    let cluster = start(&fake);
    let pods = cluster.pods();
    let non_root = |name: &str, security: serde_json::Value| {
        pod(
            name,
            "Always",
            serde_json::json!([{"name": "c", "image": "app:1", "securityContext": security}]),
        )
    };
    // The fake's images name no user: they run as root.
    pods.create(&non_root("root", serde_json::json!({"runAsNonRoot": true})))
        .await
        .unwrap();
    pods.create(&non_root(
        "uid1000",
        serde_json::json!({"runAsNonRoot": true, "runAsUser": 1000}),
    ))
    .await
    .unwrap();
    pods.create(&non_root(
        "uid0",
        serde_json::json!({"runAsNonRoot": true, "runAsUser": 0}),
    ))
    .await
    .unwrap();
    let (_, message) = wait_reason(&cluster, "root", "CreateContainerConfigError").await;
    assert_eq!(
        message,
        "container has runAsNonRoot and image will run as root (pod: \"root\", container: c)"
    );
    let (_, message) = wait_reason(&cluster, "uid0", "CreateContainerConfigError").await;
    assert_eq!(
        message,
        "container's runAsUser breaks non-root policy (pod: \"uid0\", container: c)"
    );
    cluster.wait_phase("uid1000", "Running", WAIT).await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_node_reports_its_images_largest_first() {
    let fake = FakeRuntime::new();
    fake.preload_image("small:1", 10);
    fake.preload_image("big:1", 1000);
    let cluster = start(&fake);
    let nodes = cluster.nodes();
    let images = eventually(WAIT, "node images", || async {
        nodes.get(NODE).await.ok()?.status?.images
    })
    .await;
    let names: Vec<(Vec<String>, Option<i64>)> = images
        .into_iter()
        .map(|i| (i.names.unwrap_or_default(), i.size_bytes))
        .collect();
    assert_eq!(
        names,
        [
            (vec!["docker.io/library/big:1".to_string()], Some(1000)),
            (vec!["docker.io/library/small:1".to_string()], Some(10)),
        ]
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn pulls_are_serialized_by_default_and_parallel_when_allowed() {
    for (limit, at_most) in [(Some(1), Duration::MAX), (None, Duration::from_millis(550))] {
        let fake = FakeRuntime::new();
        fake.set_default_pull(FakePull::default().latency(Duration::from_millis(300)));
        let cluster = Cluster::start(
            agent(Arc::new(fake.clone()))
                .parallel_image_pulls(limit)
                .build()
                .unwrap(),
        );
        let started = std::time::Instant::now();
        for name in ["a", "b"] {
            cluster
                .pods()
                .create(&pod(
                    name,
                    "Always",
                    serde_json::json!([{"name": "c", "image": format!("{name}:1")}]),
                ))
                .await
                .unwrap();
        }
        cluster.wait_phase("a", "Running", WAIT).await;
        cluster.wait_phase("b", "Running", WAIT).await;
        let took = started.elapsed();
        if limit == Some(1) {
            assert!(took >= Duration::from_millis(600), "serialized: {took:?}");
        } else {
            assert!(took < at_most, "parallel: {took:?}");
        }
        cluster.shutdown().await;
    }
}

#[tokio::test]
async fn image_gc_frees_unused_images_and_never_used_ones() {
    let fake = FakeRuntime::new();
    fake.preload_image("used:1", 45);
    fake.preload_image("unused:1", 45);
    let cluster = Cluster::start(
        agent(Arc::new(fake.clone()))
            .image_gc(ImageGcPolicy {
                min_age: Duration::ZERO,
                period: Duration::from_millis(100),
                ..ImageGcPolicy::default()
            })
            .build()
            .unwrap(),
    );
    cluster
        .pods()
        .create(&pod(
            "user",
            "Always",
            serde_json::json!([{"name": "c", "image": "used:1"}]),
        ))
        .await
        .unwrap();
    cluster.wait_phase("user", "Running", WAIT).await;
    // 100 bytes of disk; two images of 45: 90 % used, over the 85 % threshold (until now
    // the capacity was unknown, and nothing was collected).
    fake.set_image_fs_capacity(100);
    eventually(WAIT, "the unused image collected", || async {
        (fake.images() == ["docker.io/library/used:1"]).then_some(())
    })
    .await;
    // Now at 45 %: nothing more goes, and the used image stays.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(fake.images(), ["docker.io/library/used:1"]);
    let status = fake.image_status("used:1").await.unwrap();
    assert!(status.is_some());
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_sandbox_that_cannot_be_created_is_an_event_and_is_retried() {
    let fake = FakeRuntime::new();
    fake.fail_next(
        FakeOp::RunPodSandbox,
        "failed to find plugin \"bridge\" in path [/usr/lib/cni]",
    );
    let cluster = start(&fake);
    cluster
        .pods()
        .create(&pod(
            "web",
            "Always",
            serde_json::json!([{"name": "c", "image": "web:1"}]),
        ))
        .await
        .unwrap();
    let message = wait_event(&cluster, "web", "FailedCreatePodSandBox").await;
    assert!(
        message.starts_with("Failed to create pod sandbox: ")
            && message.contains("failed to find plugin \"bridge\""),
        "{message}"
    );
    // The next attempt works.
    cluster.wait_phase("web", "Running", WAIT).await;
    cluster.shutdown().await;
}
