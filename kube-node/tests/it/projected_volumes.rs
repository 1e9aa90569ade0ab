//! Projected volumes: the ServiceAccount token (from the agent's `TokenSource`, renewed after
//! 80% of its lifetime), `ca.crt` from a ConfigMap and `namespace` from the downward API, as
//! the API server's ServiceAccount admission adds them; and what a pod gets without a source.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kube_core::api::{ConfigMap, Pod};
use kube_core::orchestrator::BoxError;
use kube_core::runtime::LogOptions;
use kube_core::typed::Api;
use kube_node::{
    FakeRuntime, ProcessRuntime, ServiceAccountToken, TokenRequest, TokenSource, VolumeMounts,
};

use crate::common::{Cluster, NODE, agent, eventually, require};

const WAIT: Duration = Duration::from_secs(20);
const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Issues `token-<n>` for the n-th request, valid for `lifetime`, and records the requests.
#[derive(Debug)]
struct FakeTokens {
    lifetime: Duration,
    issued: AtomicUsize,
    requests: Mutex<Vec<TokenRequest>>,
}

impl FakeTokens {
    fn new(lifetime: Duration) -> Arc<Self> {
        Arc::new(Self {
            lifetime,
            issued: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait::async_trait]
impl TokenSource for FakeTokens {
    async fn token(&self, request: &TokenRequest) -> Result<ServiceAccountToken, BoxError> {
        self.requests.lock().expect("lock").push(request.clone());
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(ServiceAccountToken {
            token: format!("token-{n}"),
            expires: SystemTime::now() + self.lifetime,
        })
    }
}

async fn root_ca(cluster: &Cluster) {
    let cms: Api<ConfigMap> = Api::namespaced(cluster.store.clone(), "default");
    cms.create(
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kube-root-ca.crt"},
            "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n"}
        }))
        .expect("test setup"),
    )
    .await
    .expect("test setup");
}

/// A pod with the volume ServiceAccount admission adds (token lifetime `seconds`).
fn pod(name: &str, seconds: i64, command: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": NODE,
            "restartPolicy": "Never",
            "serviceAccountName": "robot",
            "volumes": [{"name": "kube-api-access-abcde", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": seconds}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ]}}],
            "containers": [{"name": "c", "image": "ignored", "command": command,
                "volumeMounts": [{"name": "kube-api-access-abcde", "mountPath": MOUNT, "readOnly": true}]}],
        }
    }))
    .expect("test setup")
}

fn read(dir: &std::path::Path, uid: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(
        dir.join(uid)
            .join("volumes/kube-api-access-abcde")
            .join(file),
    )
    .ok()
}

#[tokio::test]
async fn the_token_ca_and_namespace_are_written_and_the_token_is_renewed() {
    let dir = tempfile::tempdir().expect("test setup");
    let tokens = FakeTokens::new(Duration::from_secs(2));
    let cluster = Cluster::start(
        agent(Arc::new(FakeRuntime::new()))
            .root_dir(dir.path())
            .token_source(tokens.clone())
            .build()
            .expect("test setup"),
    );
    root_ca(&cluster).await;
    cluster
        .pods()
        .create(&pod("app", 600, serde_json::json!(["sleep", "3600"])))
        .await
        .expect("test setup");
    let running = cluster.wait_phase("app", "Running", WAIT).await;
    let uid = running.metadata.uid.clone().expect("test setup");
    assert_eq!(read(dir.path(), &uid, "token").as_deref(), Some("token-1"));
    assert_eq!(
        read(dir.path(), &uid, "ca.crt").as_deref(),
        Some("-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n")
    );
    assert_eq!(
        read(dir.path(), &uid, "namespace").as_deref(),
        Some("default")
    );
    let first = tokens.requests.lock().expect("lock")[0].clone();
    assert_eq!(
        first,
        TokenRequest {
            namespace: "default".into(),
            service_account: "robot".into(),
            audiences: vec![],
            expiration_seconds: 600,
            pod_name: "app".into(),
            pod_uid: uid.clone(),
        },
        "bound to the pod"
    );
    // The source said 2 s: renewed after 1.6 s, not on every sync.
    assert_eq!(tokens.issued.load(Ordering::SeqCst), 1);
    eventually(WAIT, "a renewed token", || async {
        (read(dir.path(), &uid, "token").as_deref() == Some("token-2")).then_some(())
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn without_a_token_source_the_volume_has_everything_but_the_token() {
    let dir = tempfile::tempdir().expect("test setup");
    let cluster = Cluster::start(
        agent(Arc::new(FakeRuntime::new()))
            .root_dir(dir.path())
            .build()
            .expect("test setup"),
    );
    root_ca(&cluster).await;
    cluster
        .pods()
        .create(&pod("app", 3607, serde_json::json!(["sleep", "3600"])))
        .await
        .expect("test setup");
    let running = cluster.wait_phase("app", "Running", WAIT).await;
    let uid = running.metadata.uid.expect("test setup");
    assert_eq!(
        read(dir.path(), &uid, "namespace").as_deref(),
        Some("default")
    );
    assert!(read(dir.path(), &uid, "ca.crt").is_some());
    assert_eq!(read(dir.path(), &uid, "token"), None);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_process_reads_its_token_at_the_kubernetes_path() {
    if !require("unshare") {
        return;
    }
    let runtime = ProcessRuntime::builder()
        .volume_mounts(VolumeMounts::Namespace)
        .build()
        .expect("test setup");
    let cluster = Cluster::start(
        agent(Arc::new(runtime.clone()))
            .token_source(FakeTokens::new(Duration::from_secs(3600)))
            .build()
            .expect("test setup"),
    );
    root_ca(&cluster).await;
    let script =
        format!("cat {MOUNT}/token; echo; cat {MOUNT}/namespace; echo; head -1 {MOUNT}/ca.crt");
    cluster
        .pods()
        .create(&pod(
            "reader",
            3607,
            serde_json::json!(["sh", "-c", script]),
        ))
        .await
        .expect("test setup");
    cluster.wait_phase("reader", "Succeeded", WAIT).await;
    let log = kube_node::pod_logs(
        &runtime,
        "default",
        "reader",
        "c",
        false,
        &LogOptions::default(),
    )
    .await
    .expect("test setup");
    assert_eq!(
        String::from_utf8_lossy(&log),
        "token-1\ndefault\n-----BEGIN CERTIFICATE-----\n"
    );
    cluster.shutdown().await;
}
