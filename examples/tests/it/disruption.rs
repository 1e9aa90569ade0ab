//! `kubectl drain` against a PodDisruptionBudget, on a cluster of FakeRuntime nodes: the
//! disruption controller counts the Deployment's pods, the API server's eviction refuses
//! with 429 while the budget allows nothing (kubectl retries until its timeout and says why),
//! and the drain goes through once the budget allows a disruption.

use examples::cluster::{ClusterConfig, LocalCluster, RuntimeKind, StoreKind};

use crate::kubectl::{Kubectl, kubectl_binary};

/// This test's pod network index (links, tables and the cluster CIDR derive from it).
const NETWORK: usize = 51;

const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: web:1
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
spec:
  minAvailable: 2
  selector:
    matchLabels:
      app: web
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drain_stops_at_a_budget_and_goes_on_when_it_allows() {
    let Some(binary) = kubectl_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(ClusterConfig {
        listen: "127.0.0.51:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        nodes: 2,
        runtime: RuntimeKind::Fake,
        store: StoreKind::Memory,
        pod_network_base: NETWORK,
        ..ClusterConfig::default()
    })
    .await
    .unwrap();
    let k = Kubectl {
        binary,
        kubeconfig: cluster.kubeconfig.clone(),
    };
    k.wait_for("both nodes Ready", &["get", "nodes"], |out| {
        out.matches(" Ready ").count() == 2
    })
    .await;
    let manifest = dir.path().join("web.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    k.run(&["apply", "-f", manifest.to_str().unwrap()]).await;
    k.wait_for(
        "the budget counts two healthy pods",
        &[
            "get",
            "pdb",
            "web",
            "-o",
            "jsonpath={.status.currentHealthy}/{.status.disruptionsAllowed}",
        ],
        |out| out == "2/0",
    )
    .await;
    let table = k.run(&["get", "pdb"]).await;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "MIN",
            "AVAILABLE",
            "MAX",
            "UNAVAILABLE",
            "ALLOWED",
            "DISRUPTIONS",
            "AGE"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..4], ["web", "2", "N/A", "0"]);

    let node = k
        .run(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].spec.nodeName}",
        ])
        .await;
    let stderr = k
        .fail(&["drain", &node, "--ignore-daemonsets", "--timeout=5s"])
        .await;
    assert!(
        stderr.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{stderr}"
    );
    assert!(stderr.contains("global timeout reached: 5s"), "{stderr}");
    // Nothing was evicted: both pods are still there and counted.
    let status = k
        .run(&[
            "get",
            "pdb",
            "web",
            "-o",
            "jsonpath={.status.currentHealthy}/{.status.disruptionsAllowed}",
        ])
        .await;
    assert_eq!(status, "2/0");

    // One may go now; the drain evicts (the Deployment replaces the pod on the other node).
    k.run(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":1}}"#,
    ])
    .await;
    k.wait_for(
        "the budget allows one",
        &[
            "get",
            "pdb",
            "web",
            "-o",
            "jsonpath={.status.disruptionsAllowed}",
        ],
        |out| out == "1",
    )
    .await;
    let out = k
        .run(&["drain", &node, "--ignore-daemonsets", "--timeout=60s"])
        .await;
    assert!(out.contains(&format!("node/{node} drained")), "{out}");
    k.wait_for(
        "no web pod left on the drained node",
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName} {end}",
        ],
        |out| !out.split_whitespace().any(|n| n == node),
    )
    .await;

    cluster.shutdown().await.unwrap();
}

const CLASSES: &str = r#"
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata:
  name: low
value: 10
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata:
  name: high
value: 1000
"#;

/// A pod of priority class `class` asking for 800m of CPU (a node of 1 CPU fits one).
fn pod_of_class(name: &str, class: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  priorityClassName: {class}\n  containers:\n  - name: c\n    image: app:1\n    resources:\n      requests:\n        cpu: 800m\n"
    )
}

/// PriorityClasses through kubectl and the API server's Priority admission to kube-sched's
/// framework loop: a pod of class `high` preempts a pod of class `low` filling the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_of_a_higher_priority_class_preempts_a_lower_one_on_a_full_node() {
    use std::sync::Arc;
    use std::time::Duration;

    use kube_core::orchestrator::Orchestrator;
    use kube_core::store::Store;
    use kube_sched::{SchedulingConfig, SchedulingLoop};

    let Some(binary) = kubectl_binary() else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(kube_store::MemStore::new());
    for object in [
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "status": {"capacity": {"cpu": "1", "memory": "8Gi", "pods": "110"},
                "allocatable": {"cpu": "1", "memory": "8Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]}}),
    ] {
        store
            .create(serde_json::from_value(object).unwrap())
            .await
            .unwrap();
    }
    let server = kube_apiserver::ApiServer::new(store.clone())
        .serve("127.0.0.51:0".parse().unwrap())
        .await
        .unwrap();
    let scheduler = Orchestrator::builder()
        .store(store.clone())
        .scheduler(SchedulingLoop::with_framework(
            Arc::new(kube_sched::framework::Framework::new()),
            "default-scheduler",
            SchedulingConfig::default(),
        ))
        .build()
        .unwrap()
        .start();
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl {
        binary,
        kubeconfig: crate::kubectl::plain_kubeconfig(dir.path(), &server.url()),
    };
    let apply = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let classes = apply("classes.yaml", CLASSES.to_string());
    k.run(&["apply", "-f", classes.to_str().unwrap()]).await;
    let table = k.run(&["get", "pc"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"]
    );
    for expected in [
        ["high", "1000", "false"],
        ["system-node-critical", "2000001000", "false"],
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().take(3).eq(expected)),
            "{table}"
        );
    }
    let low = apply("low.yaml", pod_of_class("low", "low"));
    k.run(&["apply", "-f", low.to_str().unwrap()]).await;
    k.wait_for(
        "the low-priority pod bound",
        &[
            "get",
            "pod",
            "low",
            "-o",
            "jsonpath={.spec.nodeName}/{.spec.priority}",
        ],
        |out| out == "n1/10",
    )
    .await;
    let high = apply("high.yaml", pod_of_class("high", "high"));
    k.run(&["apply", "-f", high.to_str().unwrap()]).await;
    k.wait_for(
        "the high-priority pod bound in the low one's place",
        &[
            "get",
            "pods",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.spec.nodeName}={.spec.priority} {end}",
        ],
        |out| out.trim() == "high=n1=1000",
    )
    .await;
    let nominated = k
        .run(&[
            "get",
            "pod",
            "high",
            "-o",
            "jsonpath={.status.nominatedNodeName}",
        ])
        .await;
    assert_eq!(nominated, "n1");
    tokio::time::timeout(Duration::from_secs(10), scheduler.shutdown())
        .await
        .unwrap()
        .unwrap();
    server.shutdown().await;
}
