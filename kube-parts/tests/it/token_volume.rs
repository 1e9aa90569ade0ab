//! ServiceAccount token volume projection end to end: a pod created through a secure API
//! server gets the `kube-api-access-*` volume, a remote node agent (its own identity, tokens
//! from TokenRequest through `RemoteTokenSource`) runs it as a host process, and the process
//! calls the API server with the token file, trusting `ca.crt`: allowed what the account's
//! RoleBinding grants, refused the rest.

use crate::secure::{SecureServer, object};
use std::sync::Arc;
use std::time::Duration;

use kube_parts::core::orchestrator::Orchestrator;
use kube_parts::core::runtime::LogOptions;
use kube_parts::core::store::Store;
use kube_parts::core::{GroupKind, ObjectKey};
use kube_parts::node::{NodeAgent, ProcessRuntime, VolumeMounts};
use kube_parts::remote::RemoteTokenSource;
use serde_json::json;

fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_calls_the_api_server_with_its_projected_token() {
    let root = nix_root();
    if !root || !have("unshare") || !have("curl") {
        // Under CI this must run: a missing prerequisite fails instead of skipping.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: this test needs root, unshare and curl"
        );
        eprintln!("skipped: needs root, unshare and curl");
        return;
    }
    let server = SecureServer::start(true).await;
    let identity = |file: &str, user: &str, groups: &[&str]| server.identity(file, user, groups);
    let admin = identity("admin", "kubernetes-admin", &["system:masters"]);
    let node_store = identity("node-n1", "system:node:n1", &["system:nodes"]);

    let runtime = ProcessRuntime::builder()
        .volume_mounts(VolumeMounts::Namespace)
        .build()
        .unwrap();
    let agent = NodeAgent::builder("n1", Arc::new(runtime.clone()))
        .resync_interval(Duration::from_millis(100))
        .token_source(Arc::new(RemoteTokenSource::new(node_store.clone())))
        .build()
        .unwrap();
    let node = Orchestrator::builder()
        .store(node_store)
        .node(agent)
        .shutdown_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .start();

    // The namespace's default account may read pods there, nothing in kube-system.
    admin
        .create(object(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "default-view", "namespace": "default"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}]})))
        .await
        .unwrap();
    let url = server.running.url();
    let port = url.rsplit(':').next().unwrap();
    let call = |path: &str| {
        format!(
            "curl -s -o /dev/null -w '%{{http_code}}\\n' --cacert $M/ca.crt \
             -H \"Authorization: Bearer $(cat $M/token)\" https://127.0.0.1:{port}{path}"
        )
    };
    let script = format!(
        "M=/var/run/secrets/kubernetes.io/serviceaccount; cat $M/namespace; echo; {}; {}",
        call("/api/v1/namespaces/$(cat $M/namespace)/pods/caller"),
        call("/api/v1/namespaces/kube-system/pods"),
    );
    admin
        .create(object(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "caller", "namespace": "default"},
            "spec": {"nodeName": "n1", "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": "host", "command": ["sh", "-c", script]}]}})))
        .await
        .unwrap();
    let key = ObjectKey::namespaced("default", "caller");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pod = admin.get(&GroupKind::POD, &key).await.unwrap();
        let phase = pod.field("status.phase");
        if phase == Some(json!("Succeeded")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pod never finished: {:?}",
            pod.data.get("status")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = kube_parts::node::pod_logs(
        &runtime,
        "default",
        "caller",
        "c",
        false,
        &LogOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&log),
        "default\n200\n403\n",
        "its own namespace's pods readable, kube-system's not"
    );
    node.shutdown().await.unwrap();
    server.running.shutdown().await;
}

fn nix_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}
