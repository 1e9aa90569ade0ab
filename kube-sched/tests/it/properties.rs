//! Property tests: whatever the cluster and the pods, placements keep every hard constraint.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube_core::resources::pod_requests;
use kube_sched::framework::{Cluster, Framework};
use kube_sched::plugins::tolerates;
use proptest::prelude::*;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
struct NodeSpec {
    cpu_milli: u32,
    mem_mi: u32,
    pods: u32,
    zone: u8,
    tainted: bool,
}

#[derive(Clone, Debug)]
struct PodSpec {
    cpu_milli: u32,
    mem_mi: u32,
    app: u8,
    anti: bool,
    spread: Option<u8>,
    tolerates: bool,
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (500u32..4000, 256u32..4096, 1u32..6, 0u8..3, any::<bool>()).prop_map(
        |(cpu_milli, mem_mi, pods, zone, t)| NodeSpec {
            cpu_milli,
            mem_mi,
            pods,
            zone,
            tainted: t && zone == 0,
        },
    )
}

fn pod_spec() -> impl Strategy<Value = PodSpec> {
    (
        0u32..1500,
        0u32..1500,
        0u8..3,
        prop::bool::weighted(0.3),
        prop::option::weighted(0.3, 1u8..3),
        any::<bool>(),
    )
        .prop_map(
            |(cpu_milli, mem_mi, app, anti, spread, tolerates)| PodSpec {
                cpu_milli,
                mem_mi,
                app,
                anti,
                spread,
                tolerates,
            },
        )
}

fn build_pod(i: usize, s: &PodSpec) -> Pod {
    let app = format!("app{}", s.app);
    let mut spec = json!({"containers": [{"name": "c", "resources": {"requests": {
        "cpu": format!("{}m", s.cpu_milli), "memory": format!("{}Mi", s.mem_mi)}}}]});
    if s.anti {
        spec["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}]}});
    }
    if let Some(skew) = s.spread {
        spec["topologySpreadConstraints"] = json!([{"maxSkew": skew, "topologyKey": "zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": app}}}]);
    }
    if s.tolerates {
        spec["tolerations"] = json!([{"key": "dedicated", "operator": "Exists"}]);
    }
    serde_json::from_value(
        json!({"metadata": {"name": format!("p{i}"), "namespace": "ns",
        "labels": {"app": app}}, "spec": spec}),
    )
    .unwrap()
}

fn build_node(i: usize, s: &NodeSpec) -> Value {
    let mut n = json!({"metadata": {"name": format!("n{i}"), "labels": {
            "kubernetes.io/hostname": format!("n{i}"), "zone": format!("z{}", s.zone)}},
        "status": {"allocatable": {"cpu": format!("{}m", s.cpu_milli),
            "memory": format!("{}Mi", s.mem_mi), "pods": s.pods.to_string()}}});
    if s.tainted {
        n["spec"] = json!({"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]});
    }
    n
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn placements_respect_resources_affinity_spread_and_taints(
        nodes in prop::collection::vec(node_spec(), 1..7),
        pods in prop::collection::vec(pod_spec(), 1..25),
    ) {
        let framework = Framework::new().sequential();
        let node_objs: Vec<_> = nodes.iter().enumerate()
            .map(|(i, n)| serde_json::from_value(build_node(i, n)).unwrap()).collect();
        let mut cluster = Cluster::from_objects(node_objs.clone(), []).unwrap();
        // (pod, node) of every placement so far.
        let mut placed: Vec<(Pod, usize)> = Vec::new();
        for (i, spec) in pods.iter().enumerate() {
            let pod = build_pod(i, spec);
            let Ok(p) = framework.place(&mut cluster, pod.clone()) else { continue };
            prop_assert!(p.victims.is_empty(), "equal priorities never preempt");
            let n: usize = p.node[1..].parse().unwrap();
            // Taints: the pod tolerates every hard taint of its node.
            if nodes[n].tainted {
                let taint = serde_json::from_value(json!({"key": "dedicated", "value": "x", "effect": "NoSchedule"})).unwrap();
                prop_assert!(pod.spec.as_ref().unwrap().tolerations.iter().flatten().any(|t| tolerates(t, &taint)));
            }
            // Spread: at placement time, the pod's zone exceeds the least loaded eligible zone by
            // at most maxSkew (zones of every node count: all nodes have the key).
            if let Some(skew) = spec.spread {
                let mut per_zone: BTreeMap<u8, i64> = nodes.iter().map(|n| (n.zone, 0)).collect();
                for (q, on) in placed.iter().chain([(pod.clone(), n)].iter()) {
                    if q.metadata.labels == pod.metadata.labels {
                        *per_zone.entry(nodes[*on].zone).or_default() += 1;
                    }
                }
                let min = per_zone.values().copied().min().unwrap();
                prop_assert!(per_zone[&nodes[n].zone] - min <= i64::from(skew), "{per_zone:?}");
            }
            placed.push((pod, n));
        }
        // Resources: no node over-committed on cpu, memory or pod count.
        for (i, spec) in nodes.iter().enumerate() {
            let on: Vec<&Pod> = placed.iter().filter(|(_, n)| *n == i).map(|(p, _)| p).collect();
            let cpu: i64 = on.iter().map(|p| pod_requests(p.spec.as_ref().unwrap()).unwrap().milli_cpu).sum();
            let mem: i64 = on.iter().map(|p| pod_requests(p.spec.as_ref().unwrap()).unwrap().memory).sum();
            prop_assert!(cpu <= i64::from(spec.cpu_milli));
            prop_assert!(mem <= i64::from(spec.mem_mi) << 20);
            prop_assert!(on.len() <= spec.pods as usize);
            prop_assert_eq!(cluster.node(&format!("n{i}")).unwrap().requested.milli_cpu, cpu);
        }
        // Anti-affinity: no two pods of one app on a node if either has anti-affinity to it.
        for (a, (pa, na)) in placed.iter().enumerate() {
            for (pb, nb) in placed.iter().skip(a + 1) {
                let same_app = pa.metadata.labels == pb.metadata.labels;
                let anti = |p: &Pod| p.spec.as_ref().unwrap().affinity.is_some();
                if na == nb && same_app {
                    prop_assert!(!anti(pa) && !anti(pb), "{:?} and {:?} share n{}", pa.metadata.name, pb.metadata.name, na);
                }
            }
        }
    }
}
