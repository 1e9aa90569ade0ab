//! A scheduler embedded in a plain unit test: kube-sched's framework with Kubernetes' default
//! plugins, nodes and pods as plain values — no store, no runtime, no async.
//!
//! `cargo run --example embedded_scheduler` places a few pods and prints why the next one goes
//! where it goes; `cargo test --example embedded_scheduler` runs the tests at the bottom, which
//! are how placement is tested in a crate of your own.

use k8s_openapi::api::core::v1::{Node, Pod};
use kube_sched::framework::{Cluster, Framework};
use serde_json::{Value, json};

/// A Ready node with `cpu` cores and 8 GiB, with these taints.
fn node(name: &str, cpu: &str, taints: Value) -> anyhow::Result<Node> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"taints": taints},
        "status": {
            "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }))?)
}

/// A pending pod requesting `cpu`.
fn pod(name: &str, cpu: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "app", "image": "app:1",
            "resources": {"requests": {"cpu": cpu, "memory": "256Mi"}}}]},
    }))?)
}

/// Three nodes: a small one, a large one, and a large one tainted for GPU work.
fn cluster() -> anyhow::Result<Cluster> {
    let gpu_taint = json!([{"key": "gpu", "value": "true", "effect": "NoSchedule"}]);
    Ok(Cluster::from_objects(
        [
            node("small", "1", json!([]))?,
            node("large", "4", json!([]))?,
            node("gpu", "8", gpu_taint)?,
        ],
        [],
    )?)
}

fn main() -> anyhow::Result<()> {
    let framework = Framework::new();
    let mut cluster = cluster()?;
    for i in 0..3 {
        let placed = framework.place(&mut cluster, pod(&format!("web-{i}"), "500m")?)?;
        println!("web-{i} -> {}", placed.node);
    }
    println!("\n{}", framework.explain(&cluster, pod("batch", "2")?)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use kube_sched::framework::PlaceError;

    use super::*;

    #[test]
    fn pods_land_only_where_they_fit_and_are_tolerated() -> anyhow::Result<()> {
        let framework = Framework::new();
        let mut cluster = cluster()?;
        for i in 0..6 {
            let placed = framework.place(&mut cluster, pod(&format!("web-{i}"), "500m")?)?;
            assert_ne!(placed.node, "gpu", "no pod tolerates the gpu taint");
        }
        // The cluster counts what it placed: 3 cores requested over small (1) and large (4).
        let requested: i64 = cluster.nodes().iter().map(|n| n.requested.milli_cpu).sum();
        assert_eq!(requested, 3000);
        Ok(())
    }

    #[test]
    fn a_pod_no_node_can_take_is_unschedulable_with_reasons() -> anyhow::Result<()> {
        let framework = Framework::new();
        let mut cluster = cluster()?;
        match framework.place(&mut cluster, pod("huge", "6")?) {
            Err(PlaceError::Unschedulable(fit)) => {
                let text = fit.to_string();
                assert!(text.contains("Insufficient cpu"), "{text}");
                assert!(text.contains("untolerated taint"), "{text}");
            }
            other => panic!("expected Unschedulable, got {other:?}"),
        }
        let explanation = framework.explain(&cluster, pod("big", "2")?)?;
        assert_eq!(explanation.selected.as_deref(), Some("large"));
        Ok(())
    }
}
