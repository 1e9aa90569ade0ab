//! An in-cluster client: run as a pod, it finds the API server through the `kubernetes`
//! Service (`KUBERNETES_SERVICE_HOST`/`_PORT`), authenticates with the pod's projected
//! ServiceAccount token and verifies the server with the mounted CA, as every in-cluster
//! client does (kube-rs's `Client::try_default`, client-go's `rest.InClusterConfig`).
//!
//! It lists the pods of its namespace and prints one line per pod, then `pods=<n>`.
//! `cargo build --example in_cluster`; the cluster network tests run it as a pod.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

/// Where every pod finds its namespace.
const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let client = kube::Client::try_default().await?;
    let namespace = std::fs::read_to_string(NAMESPACE_FILE)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "default".into());
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let list = pods.list(&ListParams::default()).await?;
    for pod in &list.items {
        println!("pod {}", pod.metadata.name.as_deref().unwrap_or(""));
    }
    println!("pods={}", list.items.len());
    Ok(())
}
