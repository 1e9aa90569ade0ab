//! The scheduler embedded in a plain test: nodes and pods as values, no runtime, no store.
//! Also shows the explain output.

use kube_sched::framework::{Cluster, Framework};
use serde_json::json;

use crate::plugins::{node, pod};

#[test]
fn embed_the_scheduler_and_explain_a_decision() {
    let framework = Framework::new();
    let mut cluster = Cluster::from_objects(
        [
            node("small", "1", json!({}), json!({})),
            node("large", "4", json!({}), json!({})),
            node(
                "tainted",
                "8",
                json!({}),
                json!({"taints": [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]}),
            ),
        ],
        [],
    )
    .unwrap();
    // Place a few pods as a real scheduler would; the cluster counts them.
    for i in 0..3 {
        framework
            .place(
                &mut cluster,
                pod(&format!("web-{i}"), "500m", json!({}), json!({})),
            )
            .unwrap();
    }
    let used: i64 = cluster.nodes().iter().map(|n| n.requested.milli_cpu).sum();
    assert_eq!(used, 1500);

    let explanation = framework
        .explain(&cluster, pod("next", "2", json!({}), json!({})))
        .unwrap();
    let text = explanation.to_string();
    println!("{text}");
    assert_eq!(explanation.selected.as_deref(), Some("large"));
    let small = explanation
        .nodes
        .iter()
        .find(|n| n.node == "small")
        .unwrap();
    assert!(!small.feasible);
    assert!(
        text.contains("small: rejected by NodeResourcesFit: Insufficient cpu"),
        "{text}"
    );
    assert!(
        text.contains(
            "tainted: rejected by TaintToleration: node(s) had untolerated taint {gpu: true}"
        ),
        "{text}"
    );
    assert!(text.contains("large: feasible, total"), "{text}");
    assert!(text.contains("NodeResourcesFit="), "{text}");
}
