//! Integration tests of the test harness (`kube_parts::testing`).
#![allow(clippy::unwrap_used, missing_docs)]

mod deployment;
mod events;
#[cfg(all(feature = "server", feature = "client"))]
mod least_privilege;
mod node_failure;
mod paused;
mod scale;
#[cfg(all(feature = "server", feature = "client"))]
mod secure;
#[cfg(all(feature = "server", feature = "client"))]
mod token_volume;

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;

/// A Deployment of `replicas` pods labelled `app=<name>`; `tolerate_unreachable` bounds how
/// long its pods stay on an unreachable node (seconds).
pub fn deployment(name: &str, replicas: i32, tolerate_unreachable: Option<i64>) -> Deployment {
    let tolerations = match tolerate_unreachable {
        Some(seconds) => json!([
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
             "effect": "NoExecute", "tolerationSeconds": seconds},
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
             "effect": "NoExecute", "tolerationSeconds": seconds},
        ]),
        None => json!([]),
    };
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "main", "image": format!("{name}:1"),
                                    "resources": {"requests": {"cpu": "100m"}}}],
                    "tolerations": tolerations,
                }
            }
        }
    }))
    .unwrap()
}
