//! Builders for nodes and pods, and a polling wait.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

/// A node with this allocatable cpu, memory and pod count, and labels.
pub(crate) fn node(name: &str, cpu: &str, memory: &str, pods: &str, labels: Value) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": pods}}
    }))
    .unwrap()
}

/// A pod with one container requesting `requests` (e.g. `{"cpu": "500m"}`), plus extra spec
/// fields merged in.
pub(crate) fn pod(name: &str, requests: Value, extra_spec: Value) -> Pod {
    let mut spec = json!({
        "containers": [{"name": "c", "image": "busybox", "resources": {"requests": requests}}]
    });
    if let (Value::Object(spec), Value::Object(extra)) = (&mut spec, extra_spec) {
        spec.extend(extra);
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": spec
    }))
    .unwrap()
}

/// `pod` bound to `node`.
pub(crate) fn bound(mut pod: Pod, node: &str) -> Arc<Pod> {
    pod.spec.as_mut().unwrap().node_name = Some(node.into());
    Arc::new(pod)
}

/// Polls `check` every 10 ms until it returns `Some`, failing the test after `timeout`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
