//! `DefaultScheduler` called directly: no runtime, no store.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube_core::scheduler::{ScheduleError, Scheduler, Snapshot};
use kube_sched::DefaultScheduler;
use serde_json::json;

use crate::support::{bound, node, pod};

fn snapshot(nodes: Vec<Node>, pods: Vec<Arc<Pod>>) -> Snapshot {
    Snapshot::new(nodes.into_iter().map(Arc::new), pods)
}

fn reasons(result: Result<String, ScheduleError>) -> BTreeMap<String, String> {
    match result {
        Err(ScheduleError::Unschedulable { reasons }) => reasons,
        other => panic!("expected Unschedulable, got {other:?}"),
    }
}

#[test]
fn fits_by_cpu_memory_and_pod_count() {
    let s = DefaultScheduler::new();
    let n1 = || node("n1", "1", "1Gi", "2", json!({}));
    let small = pod(
        "small",
        json!({"cpu": "400m", "memory": "256Mi"}),
        json!({}),
    );

    let empty = snapshot(vec![n1()], vec![]);
    assert_eq!(s.schedule(&small, &empty).unwrap(), "n1");

    // 700m of 1 CPU is taken: 400m more does not fit.
    let cpu_busy = bound(pod("a", json!({"cpu": "700m"}), json!({})), "n1");
    let r = reasons(s.schedule(&small, &snapshot(vec![n1()], vec![cpu_busy])));
    assert_eq!(r["n1"], "Insufficient cpu");

    let mem_busy = bound(pod("a", json!({"memory": "900Mi"}), json!({})), "n1");
    let r = reasons(s.schedule(&small, &snapshot(vec![n1()], vec![mem_busy])));
    assert_eq!(r["n1"], "Insufficient memory");

    // Two request-less pods fill a node that allows two pods.
    let full = vec![
        bound(pod("a", json!({}), json!({})), "n1"),
        bound(pod("b", json!({}), json!({})), "n1"),
    ];
    let r = reasons(s.schedule(&small, &snapshot(vec![n1()], full)));
    assert_eq!(r["n1"], "Too many pods");

    // Finished pods hold nothing.
    let mut done = pod("a", json!({"cpu": "1"}), json!({}));
    done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
    let snap = snapshot(vec![n1()], vec![bound(done, "n1")]);
    assert_eq!(s.schedule(&small, &snap).unwrap(), "n1");
}

#[test]
fn node_selector_must_match_node_labels() {
    let s = DefaultScheduler::new();
    let nodes = || {
        vec![
            node("hdd", "4", "8Gi", "110", json!({"disk": "hdd"})),
            node(
                "ssd",
                "4",
                "8Gi",
                "110",
                json!({"disk": "ssd", "zone": "a"}),
            ),
        ]
    };
    let wants_ssd = pod("p", json!({}), json!({"nodeSelector": {"disk": "ssd"}}));
    for _ in 0..3 {
        assert_eq!(
            s.schedule(&wants_ssd, &snapshot(nodes(), vec![])).unwrap(),
            "ssd"
        );
    }
    let wants_gpu = pod(
        "p",
        json!({}),
        json!({"nodeSelector": {"disk": "ssd", "gpu": "yes"}}),
    );
    let r = reasons(s.schedule(&wants_gpu, &snapshot(nodes(), vec![])));
    assert_eq!(r.len(), 2);
    assert!(
        r.values()
            .all(|v| v == "node(s) didn't match Pod's node affinity/selector")
    );
}

#[test]
fn node_name_pins_the_pod() {
    let s = DefaultScheduler::new();
    let nodes = || {
        vec![
            node("n1", "4", "8Gi", "110", json!({})),
            node("n2", "4", "8Gi", "110", json!({})),
        ]
    };
    let pinned = pod("p", json!({}), json!({"nodeName": "n2"}));
    for _ in 0..3 {
        assert_eq!(
            s.schedule(&pinned, &snapshot(nodes(), vec![])).unwrap(),
            "n2"
        );
    }
    let missing = pod("p", json!({}), json!({"nodeName": "n9"}));
    let r = reasons(s.schedule(&missing, &snapshot(nodes(), vec![])));
    assert_eq!(r["n1"], "node(s) didn't match the requested node name");
    assert_eq!(r["n2"], "node(s) didn't match the requested node name");
}

#[test]
fn unschedulable_nodes_take_only_tolerating_pods() {
    let s = DefaultScheduler::new();
    let mut cordoned = node("n1", "4", "8Gi", "110", json!({}));
    cordoned.spec = Some(serde_json::from_value(json!({"unschedulable": true})).unwrap());
    let snap = snapshot(vec![cordoned], vec![]);

    let plain = pod("p", json!({}), json!({}));
    assert_eq!(
        reasons(s.schedule(&plain, &snap))["n1"],
        "node(s) were unschedulable"
    );

    let tolerant = pod(
        "p",
        json!({}),
        json!({"tolerations": [{
            "key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"
        }]}),
    );
    assert_eq!(s.schedule(&tolerant, &snap).unwrap(), "n1");
}

#[test]
fn every_node_gets_a_reason_and_the_message_summarizes_them() {
    let s = DefaultScheduler::new();
    let mut cordoned = node("a-cordoned", "4", "8Gi", "110", json!({"disk": "ssd"}));
    cordoned.spec = Some(serde_json::from_value(json!({"unschedulable": true})).unwrap());
    let nodes = vec![
        cordoned,
        node("b-hdd", "4", "8Gi", "110", json!({"disk": "hdd"})),
        node("c-small", "1", "8Gi", "110", json!({"disk": "ssd"})),
        node("d-small", "1", "8Gi", "110", json!({"disk": "ssd"})),
    ];
    let p = pod(
        "p",
        json!({"cpu": "2"}),
        json!({"nodeSelector": {"disk": "ssd"}}),
    );
    let err = s.schedule(&p, &snapshot(nodes, vec![])).unwrap_err();
    let ScheduleError::Unschedulable { reasons } = &err else {
        panic!("expected Unschedulable, got {err:?}");
    };
    assert_eq!(
        reasons,
        &BTreeMap::from([
            (
                "a-cordoned".to_string(),
                "node(s) were unschedulable".to_string()
            ),
            (
                "b-hdd".to_string(),
                "node(s) didn't match Pod's node affinity/selector".to_string()
            ),
            ("c-small".to_string(), "Insufficient cpu".to_string()),
            ("d-small".to_string(), "Insufficient cpu".to_string()),
        ])
    );
    assert_eq!(
        err.to_string(),
        "0/4 nodes are available: 2 Insufficient cpu, 1 node(s) didn't match Pod's node \
         affinity/selector, 1 node(s) were unschedulable"
    );
}

#[test]
fn bad_quantities_make_an_invalid_pod() {
    let s = DefaultScheduler::new();
    let p = pod("p", json!({"cpu": "lots"}), json!({}));
    let snap = snapshot(vec![node("n1", "4", "8Gi", "110", json!({}))], vec![]);
    assert!(matches!(
        s.schedule(&p, &snap),
        Err(ScheduleError::InvalidPod(_))
    ));
}

#[test]
fn request_less_pods_spread_across_two_nodes() {
    let s = DefaultScheduler::new();
    let nodes = || {
        vec![
            node("n1", "4", "8Gi", "110", json!({})),
            node("n2", "4", "8Gi", "110", json!({})),
        ]
    };
    // n1 already runs a request-less pod: its non-zero default (100m, 200Mi) must make n2 the
    // better node, whatever the tie-break would have said.
    let on_n1 = vec![bound(pod("a", json!({}), json!({})), "n1")];
    let p = pod("p", json!({}), json!({}));
    assert_eq!(s.schedule(&p, &snapshot(nodes(), on_n1)).unwrap(), "n2");

    let mut placed: Vec<Arc<Pod>> = Vec::new();
    for i in 0..10 {
        let p = pod(&format!("p{i}"), json!({}), json!({}));
        let chosen = s.schedule(&p, &snapshot(nodes(), placed.clone())).unwrap();
        placed.push(bound(p, &chosen));
    }
    let on = |n: &str| {
        placed
            .iter()
            .filter(|p| p.spec.as_ref().unwrap().node_name.as_deref() == Some(n))
            .count()
    };
    assert_eq!((on("n1"), on("n2")), (5, 5));
}

#[test]
fn least_allocated_prefers_the_emptier_node() {
    let s = DefaultScheduler::new();
    let nodes = vec![
        node("busy", "2", "4Gi", "110", json!({})),
        node("idle", "2", "4Gi", "110", json!({})),
    ];
    let busy = vec![bound(
        pod("a", json!({"cpu": "1500m", "memory": "3Gi"}), json!({})),
        "busy",
    )];
    let p = pod("p", json!({"cpu": "100m", "memory": "100Mi"}), json!({}));
    assert_eq!(s.schedule(&p, &snapshot(nodes, busy)).unwrap(), "idle");
}
