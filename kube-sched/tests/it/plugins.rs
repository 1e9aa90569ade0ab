//! The default plugins through the framework, on Kubernetes' edge cases. No runtime, no store.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube_sched::SchedError;
use kube_sched::framework::{
    Cluster, CycleState, FilterPlugin, Framework, NodeInfo, PermitDecision, PermitPlugin,
    PlaceError, Plugin, PluginConfig, PodInfo, ProfileConfig, Registry, Status,
};
use serde_json::{Value, json};

pub(crate) fn node(name: &str, cpu: &str, labels: Value, spec: Value) -> Node {
    let mut labels = labels;
    labels["kubernetes.io/hostname"] = json!(name);
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
        "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}
    }))
    .unwrap()
}

pub(crate) fn pod(name: &str, cpu: &str, labels: Value, extra: Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "c", "image": "app:1",
        "resources": {"requests": {"cpu": cpu}}}]});
    if let (Value::Object(s), Value::Object(e)) = (&mut spec, extra) {
        s.extend(e);
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": name, "labels": labels},
        "spec": spec
    }))
    .unwrap()
}

fn fw() -> Framework {
    Framework::new().sequential()
}

fn place(f: &Framework, c: &mut Cluster, p: Pod) -> String {
    f.place(c, p).unwrap().node
}

fn fail(f: &Framework, c: &mut Cluster, p: Pod) -> String {
    match f.place(c, p) {
        Err(e) => e.to_string(),
        Ok(ok) => panic!("expected a failure, placed on {}", ok.node),
    }
}

#[test]
fn failed_scheduling_message_is_worded_like_kubernetes() {
    let mut c = Cluster::from_objects(
        [
            node("a", "1", json!({}), json!({})),
            node("b", "1", json!({}), json!({})),
            node("c", "1", json!({}), json!({})),
            node(
                "d",
                "8",
                json!({}),
                json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}),
            ),
            node(
                "e",
                "8",
                json!({}),
                json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoExecute"}]}),
            ),
        ],
        [],
    )
    .unwrap();
    let msg = fail(&fw(), &mut c, pod("p", "2", json!({}), json!({})));
    assert_eq!(
        msg,
        "0/5 nodes are available: 2 node(s) had untolerated taint {dedicated: gpu}, 3 Insufficient cpu. \
         preemption: 0/5 nodes are available: 2 Preemption is not helpful for scheduling, \
         3 No preemption victims found for incoming pod.."
    );
}

#[test]
fn taints_filter_on_hard_effects_and_score_prefer_no_schedule() {
    let f = fw();
    let mut c = Cluster::from_objects(
        [
            node(
                "soft",
                "4",
                json!({}),
                json!({"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}),
            ),
            node("plain", "4", json!({}), json!({})),
        ],
        [],
    )
    .unwrap();
    for i in 0..3 {
        assert_eq!(
            place(
                &f,
                &mut c,
                pod(&format!("p{i}"), "100m", json!({}), json!({}))
            ),
            "plain"
        );
    }
    // Tolerating it makes both equal again on taints; the emptier node wins.
    let tolerant = pod(
        "t",
        "100m",
        json!({}),
        json!({"tolerations": [{"key": "k", "operator": "Exists"}]}),
    );
    assert_eq!(place(&f, &mut c, tolerant), "soft");
}

#[test]
fn host_ports_conflict_by_protocol_ip_and_port() {
    let f = fw();
    let mut c = Cluster::from_objects([node("n", "4", json!({}), json!({}))], []).unwrap();
    let with_port = |name: &str, port: Value| {
        let mut p = pod(name, "10m", json!({}), json!({}));
        p.spec.as_mut().unwrap().containers[0].ports =
            Some(vec![serde_json::from_value(port).unwrap()]);
        p
    };
    place(
        &f,
        &mut c,
        with_port(
            "a",
            json!({"containerPort": 80, "hostPort": 8080, "hostIP": "10.0.0.1"}),
        ),
    );
    // Another IP and another protocol do not conflict; the wildcard IP does.
    place(
        &f,
        &mut c,
        with_port(
            "b",
            json!({"containerPort": 80, "hostPort": 8080, "hostIP": "10.0.0.2"}),
        ),
    );
    place(
        &f,
        &mut c,
        with_port(
            "c",
            json!({"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}),
        ),
    );
    let msg = fail(
        &f,
        &mut c,
        with_port("d", json!({"containerPort": 80, "hostPort": 8080})),
    );
    assert!(
        msg.starts_with(
            "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports."
        ),
        "{msg}"
    );
}

fn anti(label: &str, key: &str) -> Value {
    json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": label}}, "topologyKey": key}]}}})
}

#[test]
fn required_anti_affinity_spreads_by_hostname_and_existing_pods_are_respected() {
    let f = fw();
    let mut c = Cluster::from_objects(
        [
            node("n1", "4", json!({}), json!({})),
            node("n2", "4", json!({}), json!({})),
        ],
        [],
    )
    .unwrap();
    let a = place(
        &f,
        &mut c,
        pod(
            "a",
            "10m",
            json!({"app": "db"}),
            anti("db", "kubernetes.io/hostname"),
        ),
    );
    let b = place(
        &f,
        &mut c,
        pod(
            "b",
            "10m",
            json!({"app": "db"}),
            anti("db", "kubernetes.io/hostname"),
        ),
    );
    assert_ne!(a, b);
    let msg = fail(
        &f,
        &mut c,
        pod(
            "x",
            "10m",
            json!({"app": "db"}),
            anti("db", "kubernetes.io/hostname"),
        ),
    );
    assert!(
        msg.contains("2 node(s) didn't match pod anti-affinity rules"),
        "{msg}"
    );
    // A pod without anti-affinity but matching the existing pods' terms is kept away too.
    let msg = fail(&f, &mut c, pod("y", "10m", json!({"app": "db"}), json!({})));
    assert!(
        msg.contains("2 node(s) didn't satisfy existing pods anti-affinity rules"),
        "{msg}"
    );
    // Anti-affinity is per namespace unless the term says otherwise.
    let mut other_ns = pod("z", "10m", json!({"app": "db"}), json!({}));
    other_ns.metadata.namespace = Some("other".into());
    place(&f, &mut c, other_ns);
}

#[test]
fn required_affinity_follows_the_target_and_lets_the_first_pod_in() {
    let f = fw();
    let zone = |z: &str| json!({"topology.kubernetes.io/zone": z});
    let mut c = Cluster::from_objects(
        [
            node("a1", "4", zone("a"), json!({})),
            node("b1", "4", zone("b"), json!({})),
            node("b2", "4", zone("b"), json!({})),
        ],
        [],
    )
    .unwrap();
    let affinity = |label: &str| {
        json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": label}}, "topologyKey": "topology.kubernetes.io/zone"}]}}})
    };
    // No "cache" pod anywhere and the pod does not match itself: nowhere.
    let msg = fail(
        &f,
        &mut c,
        pod("web", "10m", json!({"app": "web"}), affinity("cache")),
    );
    assert!(
        msg.contains("3 node(s) didn't match pod affinity rules"),
        "{msg}"
    );
    // A pod matching its own affinity may go first.
    let first = place(
        &f,
        &mut c,
        pod("cache-0", "10m", json!({"app": "cache"}), affinity("cache")),
    );
    let zone_of = |n: &str| if n == "a1" { "a" } else { "b" };
    for i in 0..4 {
        let n = place(
            &f,
            &mut c,
            pod(
                &format!("web-{i}"),
                "10m",
                json!({"app": "web"}),
                affinity("cache"),
            ),
        );
        assert_eq!(zone_of(&n), zone_of(&first));
    }
}

#[test]
fn namespace_selector_widens_affinity_terms() {
    let f = fw();
    let mut c = Cluster::from_objects(
        [
            node("n1", "4", json!({}), json!({})),
            node("n2", "4", json!({}), json!({})),
        ],
        [],
    )
    .unwrap();
    c.set_namespace(
        &serde_json::from_value(json!({"metadata": {"name": "team-a", "labels": {"team": "a"}}}))
            .unwrap(),
    );
    let mut other = pod("other", "10m", json!({"app": "db"}), json!({}));
    other.metadata.namespace = Some("team-a".into());
    let on = place(&f, &mut c, other);
    let term = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "namespaceSelector": {"matchLabels": {"team": "a"}},
         "topologyKey": "kubernetes.io/hostname"}]}}});
    for i in 0..3 {
        let n = place(
            &f,
            &mut c,
            pod(&format!("p{i}"), "10m", json!({}), term.clone()),
        );
        assert_ne!(n, on);
    }
}

fn spread(max_skew: i32, extra: Value) -> Value {
    let mut c = json!({"maxSkew": max_skew, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}});
    if let (Value::Object(c), Value::Object(e)) = (&mut c, extra) {
        c.extend(e);
    }
    json!({"topologySpreadConstraints": [c]})
}

#[test]
fn topology_spread_keeps_skew_and_honours_min_domains() {
    let f = fw();
    let zone = |z: &str| json!({"topology.kubernetes.io/zone": z});
    let nodes = || {
        [
            node("a1", "8", zone("a"), json!({})),
            node("a2", "8", zone("a"), json!({})),
            node("b1", "1", zone("b"), json!({})),
            node("nolabel", "8", json!({}), json!({})),
        ]
    };
    let mut c = Cluster::from_objects(nodes(), []).unwrap();
    let mut per_zone = std::collections::BTreeMap::<String, i32>::new();
    for i in 0..4 {
        let n = place(
            &f,
            &mut c,
            pod(
                &format!("w{i}"),
                "100m",
                json!({"app": "web"}),
                spread(1, json!({})),
            ),
        );
        assert_ne!(n, "nolabel", "a node without the key is never a candidate");
        *per_zone
            .entry(if n == "b1" { "b".into() } else { "a".into() })
            .or_default() += 1;
    }
    assert_eq!(per_zone["a"], 2);
    assert_eq!(per_zone["b"], 2);
    let msg = fail(
        &f,
        &mut c,
        pod("big", "8", json!({"app": "web"}), spread(1, json!({}))),
    );
    assert!(
        msg.contains(
            "node(s) didn't match pod topology spread constraints (missing required label)"
        ),
        "{msg}"
    );

    // minDomains above the number of domains makes the global minimum 0.
    let mut c = Cluster::from_objects(nodes(), []).unwrap();
    place(
        &f,
        &mut c,
        pod(
            "w0",
            "100m",
            json!({"app": "web"}),
            spread(1, json!({"minDomains": 3})),
        ),
    );
    place(
        &f,
        &mut c,
        pod(
            "w1",
            "100m",
            json!({"app": "web"}),
            spread(1, json!({"minDomains": 3})),
        ),
    );
    let msg = fail(
        &f,
        &mut c,
        pod(
            "w2",
            "100m",
            json!({"app": "web"}),
            spread(1, json!({"minDomains": 3})),
        ),
    );
    assert!(
        msg.contains("3 node(s) didn't match pod topology spread constraints."),
        "{msg}"
    );
}

#[test]
fn topology_spread_node_affinity_policy_excludes_unselected_domains() {
    let f = fw();
    let labels = |z: &str, disk: &str| json!({"topology.kubernetes.io/zone": z, "disk": disk});
    let mut c = Cluster::from_objects(
        [
            node("a", "8", labels("a", "ssd"), json!({})),
            node("b", "8", labels("b", "hdd"), json!({})),
        ],
        [],
    )
    .unwrap();
    let extra = |policy: &str| {
        let mut s = spread(1, json!({"nodeAffinityPolicy": policy}));
        s["nodeSelector"] = json!({"disk": "ssd"});
        s
    };
    // Honor (default): zone b is not a domain, so zone a can take many pods.
    for i in 0..3 {
        assert_eq!(
            place(
                &f,
                &mut c,
                pod(
                    &format!("h{i}"),
                    "10m",
                    json!({"app": "web"}),
                    extra("Honor")
                )
            ),
            "a"
        );
    }
    // Ignore: zone b counts with 0 pods, so the skew is exceeded.
    let msg = fail(
        &f,
        &mut c,
        pod("i", "10m", json!({"app": "web"}), extra("Ignore")),
    );
    assert!(
        msg.contains("node(s) didn't match pod topology spread constraints"),
        "{msg}"
    );
}

fn prio(p: i32) -> Value {
    json!({"priority": p})
}

#[test]
fn preemption_evicts_the_minimal_set_of_lower_priority_pods() {
    let f = fw();
    let mut c = Cluster::from_objects(
        [
            node("n1", "2", json!({}), json!({})),
            node("n2", "2", json!({}), json!({})),
        ],
        [],
    )
    .unwrap();
    for (name, cpu, p) in [
        ("n1-low", "1", 1),
        ("n1-mid", "1", 5),
        ("n2-a", "1500m", 1),
        ("n2-b", "500m", 1),
    ] {
        let mut pd = pod(name, cpu, json!({}), prio(p));
        pd.spec.as_mut().unwrap().node_name = Some(name[..2].to_string());
        c.set_pod(pd).unwrap();
    }
    // Needs 1 CPU: on n1 evicting n1-low (prio 1) is enough; on n2 n2-a (prio 1) too. Both have
    // one victim of priority 1; n1's victim set has the smaller sum, equal; n1 wins on order.
    let placed = f
        .place(&mut c, pod("high", "1", json!({}), prio(10)))
        .unwrap();
    assert_eq!(placed.victims.len(), 1);
    let victim = &placed.victims[0].name;
    assert!(victim == "n1-low" || victim == "n2-a", "{victim}");
    // Equal priority never preempts; preemptionPolicy Never neither.
    let msg = fail(&f, &mut c, pod("peer", "2", json!({}), prio(1)));
    assert!(msg.contains("No preemption victims found"), "{msg}");
    let mut never = pod("never", "1", json!({}), prio(100));
    never.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
    let msg = fail(&f, &mut c, never);
    assert!(msg.contains("preemptionPolicy=Never"), "{msg}");
}

#[test]
fn preemption_prefers_victims_without_disruption_budget() {
    let f = fw();
    let mut c = Cluster::from_objects(
        [
            node("n1", "1", json!({}), json!({})),
            node("n2", "1", json!({}), json!({})),
        ],
        [],
    )
    .unwrap();
    let mut guarded = pod("guarded", "1", json!({"app": "db"}), prio(0));
    guarded.spec.as_mut().unwrap().node_name = Some("n1".into());
    let mut free = pod("free", "1", json!({"app": "web"}), prio(0));
    free.spec.as_mut().unwrap().node_name = Some("n2".into());
    c.set_pod(guarded).unwrap();
    c.set_pod(free).unwrap();
    c.set_budget(
        &serde_json::from_value(json!({"metadata": {"name": "db", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "db"}}}, "status": {"disruptionsAllowed": 0,
        "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}}))
        .unwrap(),
    )
    .unwrap();
    let placed = f
        .place(&mut c, pod("high", "1", json!({}), prio(10)))
        .unwrap();
    assert_eq!(placed.node, "n2");
    assert_eq!(placed.victims[0].name, "free");
}

#[test]
fn image_locality_prefers_nodes_with_the_image() {
    let f = fw();
    let mut with_image = node("cached", "4", json!({}), json!({}));
    with_image.status.as_mut().unwrap().images = Some(vec![
        serde_json::from_value(json!(
            {"names": ["docker.io/library/big:1", "big:1"], "sizeBytes": 800_000_000}
        ))
        .unwrap(),
    ]);
    let mut c =
        Cluster::from_objects([node("empty", "4", json!({}), json!({})), with_image], []).unwrap();
    let mut p = pod("p", "10m", json!({}), json!({}));
    p.spec.as_mut().unwrap().containers[0].image = Some("big:1".into());
    assert_eq!(place(&f, &mut c, p), "cached");
}

#[test]
fn preferred_node_affinity_scores_and_node_selector_filters() {
    let f = fw();
    let mut c = Cluster::from_objects(
        [
            node("a", "4", json!({"disk": "hdd"}), json!({})),
            node("b", "4", json!({"disk": "ssd"}), json!({})),
        ],
        [],
    )
    .unwrap();
    let prefers_ssd = json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}});
    for i in 0..3 {
        assert_eq!(
            place(
                &f,
                &mut c,
                pod(&format!("p{i}"), "100m", json!({}), prefers_ssd.clone())
            ),
            "b"
        );
    }
    let msg = fail(
        &f,
        &mut c,
        pod(
            "x",
            "10m",
            json!({}),
            json!({"nodeSelector": {"disk": "nvme"}}),
        ),
    );
    assert!(
        msg.contains("2 node(s) didn't match Pod's node affinity/selector"),
        "{msg}"
    );
}

/// Keeps pods off nodes whose name starts with "spot-", and holds pods labelled `gate` at Permit.
#[derive(Debug)]
struct Custom;
impl Plugin for Custom {
    fn name(&self) -> &str {
        "Custom"
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_permit(&self) -> Option<&dyn PermitPlugin> {
        Some(self)
    }
}
impl FilterPlugin for Custom {
    fn filter(&self, _: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
        if node.name().starts_with("spot-") {
            Status::unresolvable("node(s) were spot nodes")
        } else {
            Status::success()
        }
    }
}
impl PermitPlugin for Custom {
    fn permit(&self, _: &CycleState, pod: &PodInfo, _: &str) -> PermitDecision {
        match pod.labels().get("gate").map(String::as_str) {
            Some("wait") => PermitDecision::Wait(Duration::from_secs(5)),
            Some("timeout") => PermitDecision::Wait(Duration::from_millis(20)),
            Some("reject") => PermitDecision::Reject(Status::unschedulable("gate closed")),
            _ => PermitDecision::Allow,
        }
    }
}

#[test]
fn registry_profiles_and_permit() {
    let mut registry = Registry::with_defaults();
    registry
        .register(
            "Custom",
            |_: &Value| Ok(Arc::new(Custom) as Arc<dyn Plugin>),
        )
        .unwrap();
    assert!(matches!(
        registry.register(
            "Custom",
            |_: &Value| Ok(Arc::new(Custom) as Arc<dyn Plugin>)
        ),
        Err(SchedError::DuplicatePlugin(_))
    ));
    let custom = ProfileConfig::default_profile()
        .named("custom")
        .with_plugin(PluginConfig::new("Custom"));
    let f =
        Arc::new(Framework::build(&registry, [ProfileConfig::default_profile(), custom]).unwrap());
    assert!(matches!(
        Framework::build(
            &registry,
            [ProfileConfig::default_profile().with_plugin(PluginConfig::new("Nope"))]
        ),
        Err(SchedError::UnknownPlugin(_))
    ));

    let mut c = Cluster::from_objects(
        [
            node("spot-1", "8", json!({}), json!({})),
            node("std-1", "1", json!({}), json!({})),
        ],
        [],
    )
    .unwrap();
    let custom_pod = |name: &str, gate: &str| {
        pod(
            name,
            "100m",
            json!({"gate": gate}),
            json!({"schedulerName": "custom"}),
        )
    };
    // The default profile prefers the big spot node; the custom profile never uses it.
    assert_eq!(
        f.place(&mut c, pod("d", "100m", json!({}), json!({})))
            .unwrap()
            .node,
        "spot-1"
    );
    assert_eq!(f.place(&mut c, custom_pod("c", "")).unwrap().node, "std-1");
    assert!(matches!(
        f.place(&mut c, custom_pod("r", "reject")),
        Err(PlaceError::Rejected { .. })
    ));
    let err = f
        .place(&mut c, custom_pod("t", "timeout"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("timeout"), "{err}");
    // Waiting pods are allowed from elsewhere.
    let f2 = f.clone();
    let allower = std::thread::spawn(move || {
        for _ in 0..500 {
            if let Some(k) = f2.waiting_pods().keys().into_iter().next() {
                f2.waiting_pods().allow(&k, "Custom");
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    });
    assert_eq!(
        f.place(&mut c, custom_pod("w", "wait")).unwrap().node,
        "std-1"
    );
    assert!(allower.join().unwrap());
    let unknown = pod("u", "1m", json!({}), json!({"schedulerName": "nobody"}));
    assert!(matches!(
        f.place(&mut c, unknown),
        Err(PlaceError::Invalid(SchedError::UnknownProfile(_)))
    ));
}

#[test]
fn preemption_what_if_removes_victims_from_anti_affinity_counts() {
    // One node, plenty of room, holding a low-priority `app: db` pod. The incoming pod's
    // required anti-affinity against `app: db` is satisfied only once that pod is gone: the
    // what-if check must take the victim out of InterPodAffinity's counts (RemovePod).
    let f = fw();
    let mut c = Cluster::from_objects([node("n1", "4", json!({}), json!({}))], []).unwrap();
    let mut low = pod("low-db", "10m", json!({"app": "db"}), prio(0));
    low.spec.as_mut().unwrap().node_name = Some("n1".into());
    c.set_pod(low).unwrap();
    let mut other = pod("low-web", "10m", json!({"app": "web"}), prio(0));
    other.spec.as_mut().unwrap().node_name = Some("n1".into());
    c.set_pod(other).unwrap();

    let mut extra = anti("db", "kubernetes.io/hostname");
    extra["priority"] = json!(10);
    let placed = f
        .place(&mut c, pod("high", "10m", json!({"app": "cache"}), extra))
        .unwrap();
    assert_eq!(placed.node, "n1");
    // Only the pod the anti-affinity is about: the other one is put back (AddPod) and fits.
    assert_eq!(placed.victims.len(), 1);
    assert_eq!(placed.victims[0].name, "low-db");

    // The reverse direction: an existing low-priority pod's anti-affinity keeps the incoming
    // pod away until it is preempted.
    let mut c = Cluster::from_objects([node("n1", "4", json!({}), json!({}))], []).unwrap();
    let mut hater = pod(
        "hater",
        "10m",
        json!({"app": "x"}),
        anti("web", "kubernetes.io/hostname"),
    );
    hater.spec.as_mut().unwrap().node_name = Some("n1".into());
    c.set_pod(hater).unwrap();
    let placed = f
        .place(&mut c, pod("web", "10m", json!({"app": "web"}), prio(10)))
        .unwrap();
    assert_eq!(placed.victims.len(), 1);
    assert_eq!(placed.victims[0].name, "hater");
    // Without preemption rights the same pod finds no victim.
    let mut c = Cluster::from_objects([node("n1", "4", json!({}), json!({}))], []).unwrap();
    let mut hater = pod(
        "hater",
        "10m",
        json!({"app": "x"}),
        anti("web", "kubernetes.io/hostname"),
    );
    hater.spec.as_mut().unwrap().node_name = Some("n1".into());
    c.set_pod(hater).unwrap();
    let msg = fail(
        &f,
        &mut c,
        pod("web", "10m", json!({"app": "web"}), json!({})),
    );
    assert!(
        msg.contains("1 node(s) didn't satisfy existing pods anti-affinity rules"),
        "{msg}"
    );
}

#[test]
fn preemption_what_if_updates_topology_spread_counts() {
    // Zone a holds two low-priority `app: web` pods; zone b has no web pod but its only node is
    // full with a pod of higher priority than the incoming one. maxSkew 1: a third web pod
    // cannot go to zone a (2+1-0 > 1) and does not fit in zone b. Only evicting web pods in zone
    // a helps, which the what-if check sees only if the spread counts follow the victims
    // (RemovePod); putting either back breaks the skew again (AddPod), so both go.
    let f = fw();
    let zone = |z: &str| json!({"topology.kubernetes.io/zone": z});
    let mut c = Cluster::from_objects(
        [
            node("a1", "4", zone("a"), json!({})),
            node("b1", "1", zone("b"), json!({})),
        ],
        [],
    )
    .unwrap();
    for (name, on, labels, cpu, priority) in [
        ("web-1", "a1", json!({"app": "web"}), "10m", 0),
        ("web-2", "a1", json!({"app": "web"}), "10m", 0),
        ("filler", "b1", json!({"app": "batch"}), "1", 100),
    ] {
        let mut p = pod(name, cpu, labels, prio(priority));
        p.spec.as_mut().unwrap().node_name = Some(on.into());
        c.set_pod(p).unwrap();
    }
    let extra = json!({"priority": 10, "topologySpreadConstraints": [{"maxSkew": 1,
        "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "web"}}}]});
    let placed = f
        .place(&mut c, pod("web-3", "500m", json!({"app": "web"}), extra))
        .unwrap();
    assert_eq!(placed.node, "a1");
    let mut victims: Vec<&str> = placed.victims.iter().map(|v| v.name.as_str()).collect();
    victims.sort();
    assert_eq!(victims, ["web-1", "web-2"]);
}

#[test]
fn default_spread_counts_pods_selected_by_the_pods_services_and_controller() {
    let f = fw();
    let zone = |z: &str| json!({"topology.kubernetes.io/zone": z});
    let mut c = Cluster::from_objects(
        [
            node("n1", "4", zone("a"), json!({})),
            node("n2", "4", zone("b"), json!({})),
        ],
        [],
    )
    .unwrap();
    let labels = json!({"app": "web", "tier": "front"});
    for i in 0..3 {
        let mut p = pod(&format!("web-{i}"), "10m", labels.clone(), json!({}));
        p.spec.as_mut().unwrap().node_name = Some("n1".into());
        c.set_pod(p).unwrap();
    }
    let mut busy = pod("busy", "2", json!({"app": "batch"}), json!({}));
    busy.spec.as_mut().unwrap().node_name = Some("n2".into());
    c.set_pod(busy).unwrap();
    let owned = |name: &str| {
        let mut p = pod(name, "10m", labels.clone(), json!({}));
        p.metadata.owner_references = Some(vec![
            serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "web", "uid": "rs-uid", "controller": true}))
            .unwrap(),
        ]);
        p
    };
    let target = |c: &Cluster, p: Pod| place(&f, &mut c.clone(), p);

    // Nothing selects the pods: no default constraint, and resources favour the emptier n1
    // (even for a pod with a controller the cluster does not know).
    assert_eq!(
        target(&c, pod("probe", "10m", labels.clone(), json!({}))),
        "n1"
    );
    assert_eq!(target(&c, owned("probe")), "n1");
    let info = PodInfo::from_pod(pod("probe", "10m", labels.clone(), json!({}))).unwrap();
    assert!(c.default_spread_selector(&info).is_none());

    // A Service selecting the pod: its selector counts the three web pods on n1, and the
    // default constraints (hostname maxSkew 3, zone maxSkew 5, ScheduleAnyway) spread to n2.
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}}
    }))
    .unwrap();
    c.set_service(&service);
    let selector = c.default_spread_selector(&info).unwrap();
    assert!(selector.matches(&[("app".to_string(), "web".to_string())].into()));
    assert_eq!(
        target(&c, pod("probe", "10m", labels.clone(), json!({}))),
        "n2"
    );
    // A Service in another namespace, or one not selecting the pod, does not count.
    let mut elsewhere = pod("probe", "10m", labels.clone(), json!({}));
    elsewhere.metadata.namespace = Some("other".into());
    assert_eq!(target(&c, elsewhere), "n1");
    c.remove_service(&kube_core::object::ObjectKey::namespaced("default", "web"));
    assert_eq!(
        target(&c, pod("probe", "10m", labels.clone(), json!({}))),
        "n1"
    );

    // The ReplicaSet controlling the pod: its selector counts them.
    let rs: k8s_openapi::api::apps::v1::ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"tier": "front"}}, "template": {}}
    }))
    .unwrap();
    c.set_replica_set(&rs).unwrap();
    assert_eq!(target(&c, owned("probe")), "n2");
    // Pods it does not control get no defaults from it.
    assert_eq!(
        target(&c, pod("probe", "10m", labels.clone(), json!({}))),
        "n1"
    );
}
