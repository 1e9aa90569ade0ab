//! NodeAgent over MemStore + OciRuntime: real containers through runc, from a busybox image
//! built from the host's static busybox.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_core::runtime::{LogOptions, Runtime};
use kube_core::store::Preconditions;
use kube_node::{CniConfig, OciRuntime};

use crate::common::{
    Cluster, agent, busybox, eventually, first_container, leftover_cgroups, pod, require,
};

const WAIT: Duration = Duration::from_secs(10);

fn runtime(dir: &std::path::Path) -> OciRuntime {
    OciRuntime::builder()
        .root_dir(dir.join("oci"))
        .image("busybox", busybox(dir))
        .build()
        .expect("runc runtime")
}

fn sh(script: &str) -> serde_json::Value {
    serde_json::json!({"name": "c", "image": "busybox", "command": ["sh", "-c", script]})
}

async fn logs(runtime: &OciRuntime, pod: &str, previous: bool) -> String {
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

#[tokio::test]
async fn runc_pod_runs_in_its_own_namespaces_and_leaves_nothing() {
    if !require("runc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let cgroup = runtime.cgroup_parent().to_string();
    let cluster = Cluster::start(agent(Arc::new(runtime.clone())).build().unwrap());
    let pods = cluster.pods();
    pods.create(&pod(
        "web",
        "Always",
        serde_json::json!([sh("echo pid=$$$$ host=$(hostname); sleep 30")]),
    ))
    .await
    .unwrap();
    let running = cluster.wait_phase("web", "Running", WAIT).await;
    let c = first_container(&running);
    assert!(c.container_id.unwrap().starts_with("runc://"));
    assert!(c.ready);
    // PID 1 in its own PID namespace, the pod's hostname in its own UTS namespace.
    let log = eventually(WAIT, "log line", || async {
        let log = logs(&runtime, "web", false).await;
        log.contains("pid=").then_some(log)
    })
    .await;
    assert_eq!(log.trim(), "pid=1 host=web");

    pods.delete("web", &Preconditions::default()).await.unwrap();
    eventually(WAIT, "runtime emptied", || async {
        runtime
            .list_pod_sandboxes()
            .await
            .ok()?
            .is_empty()
            .then_some(())
    })
    .await;
    cluster.shutdown().await;
    drop(runtime);
    assert_eq!(leftover_cgroups(&cgroup), Vec::<String>::new());
}

#[tokio::test]
async fn runc_crash_loop_backs_off_and_keeps_the_previous_log() {
    if !require("runc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
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
    // Note when each restart is first seen; backoff (300 ms doubling to 2 s) spaces them out.
    let pods = cluster.pods();
    let mut seen: Vec<(i32, Instant)> = Vec::new();
    let mut crash_loop = false;
    let deadline = Instant::now() + Duration::from_secs(12);
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
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen.len() >= 4, "restarts seen: {seen:?}");
    assert!(crash_loop, "CrashLoopBackOff was never reported");
    let gaps: Vec<Duration> = seen.windows(2).map(|w| w[1].1 - w[0].1).collect();
    // 0 → 1 is immediate-ish; 1 → 2 waits ≥ 300 ms; 2 → 3 waits ≥ 600 ms.
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
    cluster.shutdown().await;
}

#[tokio::test]
async fn runc_memory_limit_gives_oom_killed() {
    if !require("runc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let cluster = Cluster::start(agent(Arc::new(runtime.clone())).build().unwrap());
    let mut container = sh("x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived");
    container["resources"] = serde_json::json!({"limits": {"memory": "20Mi"}});
    cluster
        .pods()
        .create(&pod("hog", "Never", serde_json::json!([container])))
        .await
        .unwrap();
    let failed = cluster.wait_phase("hog", "Failed", WAIT).await;
    let c = first_container(&failed);
    let t = c.state.unwrap().terminated.unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (137, Some("OOMKilled")));
    cluster.shutdown().await;
}

#[tokio::test]
async fn runc_termination_honours_the_grace_period() {
    if !require("runc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let sandbox = runtime.run_pod_sandbox(&Default::default()).await.unwrap();
    let start = |script: &str| {
        let config = kube_core::runtime::ContainerConfig {
            name: "c".into(),
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
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    runtime
        .stop_container(&polite, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let s = runtime.container_status(&polite).await.unwrap();
    assert_eq!(s.exit_code, Some(0));
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
    assert_eq!(s.exit_code, Some(137));
    runtime.remove_pod_sandbox(&sandbox).await.unwrap();
}

#[tokio::test]
async fn runc_pods_survive_a_node_agent_restart() {
    if !require("runc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let store: Arc<dyn kube_core::store::Store> = Arc::new(kube_store::MemStore::new());
    let first = Cluster::start_with_store(
        agent(Arc::new(runtime.clone())).build().unwrap(),
        store.clone(),
    );
    first
        .pods()
        .create(&pod(
            "steady",
            "Always",
            serde_json::json!([sh("sleep 60")]),
        ))
        .await
        .unwrap();
    let before = first_container(&first.wait_phase("steady", "Running", WAIT).await);
    first.shutdown().await;

    let second =
        Cluster::start_with_store(agent(Arc::new(runtime.clone())).build().unwrap(), store);
    // Give the new agent a few syncs; the container must be the same one, not restarted.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = first_container(&second.wait_phase("steady", "Running", WAIT).await);
    assert_eq!(after.container_id, before.container_id);
    assert_eq!(after.restart_count, 0);
    assert!(after.state.unwrap().running.is_some());
    second.shutdown().await;
}

#[tokio::test]
async fn runc_two_pods_serve_one_port_on_their_own_ips() {
    if !require("runc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = OciRuntime::builder()
        .root_dir(dir.path().join("oci"))
        .image("busybox", busybox(dir.path()))
        .cni(CniConfig {
            bridge: "kn-test-oci".into(),
            subnet: "10.211.0.0/24".into(),
            name: "kn-test-oci".into(),
            ..Default::default()
        })
        .build()
        .unwrap();
    let cluster = Cluster::start(agent(Arc::new(runtime.clone())).build().unwrap());
    let pods = cluster.pods();
    let server = |name: &str| {
        pod(
            name,
            "Always",
            serde_json::json!([sh(&format!(
                "while true; do echo {name} | nc -l -p 8080; done"
            ))]),
        )
    };
    pods.create(&server("a")).await.unwrap();
    pods.create(&server("b")).await.unwrap();
    let ip = |p: kube_core::api::Pod| p.status.and_then(|s| s.pod_ip).unwrap();
    let ip_a = ip(cluster.wait_phase("a", "Running", WAIT).await);
    let ip_b = ip(cluster.wait_phase("b", "Running", WAIT).await);
    assert_ne!(ip_a, ip_b);
    assert!(ip_a.starts_with("10.211.0."), "{ip_a}");
    // Pod to pod, by IP: a client pod asks each server.
    pods.create(&pod(
        "client",
        "Never",
        serde_json::json!([sh(&format!(
            "sleep 0.3; nc -w 2 {ip_a} 8080; nc -w 2 {ip_b} 8080"
        ))]),
    ))
    .await
    .unwrap();
    cluster.wait_phase("client", "Succeeded", WAIT).await;
    let answers = logs(&runtime, "client", false).await;
    assert_eq!(answers.lines().collect::<Vec<_>>(), ["a", "b"]);
    cluster.shutdown().await;
}

#[tokio::test]
async fn runc_deletion_waits_the_grace_period_then_kills() {
    if !require("runc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let cluster = Cluster::start(agent(Arc::new(runtime.clone())).build().unwrap());
    let mut p = pod(
        "stubborn",
        "Always",
        serde_json::json!([sh("trap '' TERM; while true; do sleep 0.05; done")]),
    );
    p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(2);
    let pods = cluster.pods();
    pods.create(&p).await.unwrap();
    cluster.wait_phase("stubborn", "Running", WAIT).await;
    let t0 = Instant::now();
    pods.delete("stubborn", &Preconditions::default())
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
    // SIGTERM is ignored: the container dies by SIGKILL once the 2 s grace period is over.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn runc_env_and_volumes_come_from_config_maps_secrets_and_empty_dirs() {
    if !require("runc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime(dir.path());
    let cluster = Cluster::start(
        agent(Arc::new(runtime.clone()))
            .root_dir(dir.path().join("pods"))
            .build()
            .unwrap(),
    );
    let store = cluster.store.clone();
    let cms: kube_core::typed::Api<kube_core::api::ConfigMap> =
        kube_core::typed::Api::namespaced(store.clone(), "default");
    let secrets: kube_core::typed::Api<kube_core::api::Secret> =
        kube_core::typed::Api::namespaced(store, "default");
    cms.create(
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": "settings"},
            "data": {"greeting": "hello", "app.conf": "mode=fast\n"}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    secrets
        .create(
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "creds"},
                "data": {"password": "czNjcjN0"}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let p: kube_core::api::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "configured", "namespace": "default"},
        "spec": {
            "nodeName": crate::common::NODE,
            "restartPolicy": "Never",
            "volumes": [
                {"name": "conf", "configMap": {"name": "settings"}},
                {"name": "shared", "emptyDir": {}}
            ],
            "initContainers": [{
                "name": "init", "image": "busybox",
                "command": ["sh", "-c", "echo from-init > /shared/note"],
                "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]
            }],
            "containers": [{
                "name": "c", "image": "busybox",
                "command": ["sh", "-c",
                    "echo $GREETING $PASSWORD $CFG_greeting; cat /etc/app/app.conf /shared/note"],
                "env": [
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}
                ],
                "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "settings"}}],
                "volumeMounts": [
                    {"name": "conf", "mountPath": "/etc/app", "readOnly": true},
                    {"name": "shared", "mountPath": "/shared"}
                ]
            }]
        }
    }))
    .unwrap();
    cluster.pods().create(&p).await.unwrap();
    cluster.wait_phase("configured", "Succeeded", WAIT).await;
    assert_eq!(
        logs(&runtime, "configured", false).await,
        "hello s3cr3t hello\nmode=fast\nfrom-init\n"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_missing_config_map_holds_the_container_with_create_container_config_error() {
    let fake = kube_node::FakeRuntime::new();
    let cluster = Cluster::start(agent(Arc::new(fake)).build().unwrap());
    cluster
        .pods()
        .create(&pod(
            "waiting",
            "Always",
            serde_json::json!([{
                "name": "c", "image": "busybox",
                "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}]
            }]),
        ))
        .await
        .unwrap();
    let pods = cluster.pods();
    let waiting = eventually(WAIT, "CreateContainerConfigError", || async {
        let p = pods.get("waiting").await.ok()?;
        let w = p
            .status?
            .container_statuses?
            .first()?
            .state
            .clone()?
            .waiting?;
        (w.reason.as_deref() == Some("CreateContainerConfigError")).then_some(w)
    })
    .await;
    assert_eq!(
        waiting.message.as_deref(),
        Some("configmap \"absent\" not found")
    );

    // Attempts back off (1 s, 2 s, 4 s, ... up to 10 s) although pods are synced every
    // second: in 6 s, at most four attempts, each counted on the one `Failed` Event.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let events: kube_core::typed::Api<k8s_openapi::api::core::v1::Event> =
        kube_core::typed::Api::namespaced(cluster.store.clone(), "default");
    let failed: Vec<_> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some("Failed")
                && e.involved_object.name.as_deref() == Some("waiting")
        })
        .collect();
    assert_eq!(failed.len(), 1, "one Event, counted up: {failed:?}");
    let attempts = failed[0].count.unwrap_or(1);
    assert!((2..=4).contains(&attempts), "{attempts} attempts in ~6 s");

    // Once the ConfigMap exists, the container starts at the next attempt (≤ 10 s later).
    let config_maps: kube_core::typed::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube_core::typed::Api::namespaced(cluster.store.clone(), "default");
    let mut absent = k8s_openapi::api::core::v1::ConfigMap::default();
    absent.metadata.name = Some("absent".into());
    absent.data = Some([("k".to_string(), "v".to_string())].into());
    config_maps.create(&absent).await.unwrap();
    cluster
        .wait_phase("waiting", "Running", Duration::from_secs(15))
        .await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn runc_runs_an_image_from_an_oci_archive() {
    if !require("runc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("busybox.tar");
    kube_node::image::oci_archive(
        &busybox(dir.path()),
        &[kube_node::image::ArchiveImage {
            name: "docker.io/library/busybox:1.35".into(),
            cmd: vec!["sh".into()],
        }],
        &archive,
    )
    .unwrap();
    let runtime = OciRuntime::builder()
        .root_dir(dir.path().join("oci"))
        .image_archive("docker.io/library/busybox:1.35", &archive)
        .build()
        .unwrap();
    let cluster = Cluster::start(agent(Arc::new(runtime.clone())).build().unwrap());
    let mut p = pod(
        "archived",
        "Never",
        serde_json::json!([sh("echo from the archive")]),
    );
    p.spec.as_mut().unwrap().containers[0].image = Some("busybox:1.35".into());
    cluster.pods().create(&p).await.unwrap();
    cluster.wait_phase("archived", "Succeeded", WAIT).await;
    assert_eq!(
        logs(&runtime, "archived", false).await,
        "from the archive\n"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn runc_a_new_runtime_over_the_same_root_adopts_running_containers() {
    use kube_core::runtime::{ContainerConfig, ContainerState, PodSandboxConfig};
    if !require("runc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let build = |keep: bool| {
        OciRuntime::builder()
            .root_dir(dir.path().join("oci"))
            .image("busybox", dir.path().join("busybox"))
            .keep_on_drop(keep)
            .build()
            .expect("runc runtime")
    };
    busybox(dir.path());
    let first = build(true);
    let cgroup = first.cgroup_parent().to_string();
    let sandbox = first
        .run_pod_sandbox(&PodSandboxConfig::default())
        .await
        .unwrap();
    let config = ContainerConfig {
        name: "c".into(),
        image: "busybox".into(),
        command: vec!["sh".into(), "-c".into(), "echo up; exec sleep 30".into()],
        ..Default::default()
    };
    let id = first.create_container(&sandbox, &config).await.unwrap();
    first.start_container(&id).await.unwrap();
    eventually(WAIT, "the container logs", || async {
        let log = first
            .container_logs(&id, &LogOptions::default())
            .await
            .ok()?;
        (&log[..] == b"up\n").then_some(())
    })
    .await;
    drop(first);

    let second = build(false);
    assert_eq!(second.cgroup_parent(), cgroup, "the same cgroups");
    let status = second.container_status(&id).await.unwrap();
    assert_eq!(status.state, ContainerState::Running, "{status:?}");
    let exec = second
        .exec_sync(&id, &["echo".into(), "inside".into()], WAIT)
        .await
        .unwrap();
    assert_eq!(&exec.output[..], b"inside\n", "still the running container");
    assert_eq!(
        &second
            .container_logs(&id, &LogOptions::default())
            .await
            .unwrap()[..],
        b"up\n"
    );
    second
        .stop_container(&id, Duration::from_secs(2))
        .await
        .unwrap();
    let stopped = eventually(WAIT, "the exit recorded", || async {
        let s = second.container_status(&id).await.ok()?;
        (s.state == ContainerState::Exited).then_some(s)
    })
    .await;
    // PID 1 of the container ignores SIGTERM: SIGKILL after the grace period. The first
    // runtime's wait task saw it and left the exit for the second: the code is known.
    assert_eq!(
        (stopped.exit_code, stopped.reason.as_deref()),
        (Some(137), Some("Error")),
        "{stopped:?}"
    );
    second.remove_pod_sandbox(&sandbox).await.unwrap();
    drop(second);
    assert!(leftover_cgroups(&cgroup).is_empty());
}

/// The pod's `/etc/resolv.conf` and `/etc/hosts` on runc: with cluster DNS, `ClusterFirst`
/// gives its server, the cluster's search path and `ndots:5`, and the hosts file has the
/// pod's name (fully qualified with its subdomain) on its IP and its `hostAliases`;
/// `dnsPolicy: None` gives only the pod's `dnsConfig`.
#[tokio::test]
async fn runc_pods_get_resolv_conf_per_dns_policy_and_their_own_hosts_file() {
    if !require("runc") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = OciRuntime::builder()
        .root_dir(dir.path().join("oci"))
        .image("busybox", busybox(dir.path()))
        .cni(CniConfig {
            bridge: "kn-test-dns".into(),
            subnet: "10.221.0.0/24".into(),
            name: "kn-test-dns".into(),
            ..Default::default()
        })
        .build()
        .expect("runc runtime");
    let host_resolv = dir.path().join("host-resolv.conf");
    std::fs::write(&host_resolv, "nameserver 192.0.2.53\nsearch corp.example\n").expect("write");
    let dns: std::net::IpAddr = "10.96.0.10".parse().expect("ip");
    let agent = agent(Arc::new(runtime.clone()))
        .cluster_dns(vec![dns], "cluster.local")
        .resolv_conf(Some(host_resolv))
        .build()
        .expect("agent");
    let cluster = Cluster::start(agent);
    let pods = cluster.pods();
    let script = "cat /etc/resolv.conf; echo ---; cat /etc/hosts";
    let mut web = pod("web", "Never", serde_json::json!([sh(script)]));
    let spec = web.spec.as_mut().expect("spec");
    spec.subdomain = Some("front".into());
    spec.host_aliases = Some(
        serde_json::from_value(serde_json::json!([
            {"ip": "10.1.2.3", "hostnames": ["db.local", "db"]}
        ]))
        .expect("aliases"),
    );
    let mut custom = pod("custom", "Never", serde_json::json!([sh(script)]));
    let spec = custom.spec.as_mut().expect("spec");
    spec.dns_policy = Some("None".into());
    spec.dns_config = Some(
        serde_json::from_value(serde_json::json!({
            "nameservers": ["1.1.1.1", "8.8.8.8"], "searches": ["my.example"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]
        }))
        .expect("dnsConfig"),
    );
    pods.create(&web).await.expect("create web");
    pods.create(&custom).await.expect("create custom");
    let done = cluster.wait_phase("web", "Succeeded", WAIT).await;
    let ip = done.status.and_then(|s| s.pod_ip).expect("a pod IP");
    assert!(ip.starts_with("10.221.0."), "{ip}");
    let out = logs(&runtime, "web", false).await;
    let (resolv, hosts) = out.split_once("---\n").expect("both files");
    assert_eq!(
        resolv,
        "search default.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
         nameserver 10.96.0.10\noptions ndots:5\n"
    );
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"),
        "{hosts}"
    );
    assert!(
        hosts.contains(&format!(
            "\n{ip}\tweb.front.default.svc.cluster.local\tweb\n"
        )),
        "{hosts}"
    );
    assert!(
        hosts.ends_with("# Entries added by HostAliases.\n10.1.2.3\tdb.local\tdb\n"),
        "{hosts}"
    );

    cluster.wait_phase("custom", "Succeeded", WAIT).await;
    let out = logs(&runtime, "custom", false).await;
    let (resolv, hosts) = out.split_once("---\n").expect("both files");
    assert_eq!(
        resolv,
        "search my.example\nnameserver 1.1.1.1\nnameserver 8.8.8.8\noptions ndots:2 edns0\n"
    );
    assert!(hosts.contains("\tcustom\n"), "{hosts}");
    cluster.shutdown().await;
}
