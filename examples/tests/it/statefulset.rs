//! The preinstalled kubectl against a cluster of FakeRuntime nodes driving a StatefulSet and a
//! DaemonSet: ordered start, `kubectl get sts`, `scale sts`, `rollout status/history/undo` for
//! both (the history is their ControllerRevisions), `get controllerrevisions`.

use std::time::Duration;

use examples::cluster::{ClusterConfig, LocalCluster, RuntimeKind, StoreKind};
use k8s_openapi::jiff::Timestamp;

use crate::kubectl::{Kubectl, kubectl_binary};

/// This test's pod network index (links, tables and the cluster CIDR derive from it).
const NETWORK: usize = 27;

const MANIFEST: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  selector:
    app: db
  ports:
  - port: 5432
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 2
  minReadySeconds: 2
  selector:
    matchLabels:
      app: db
  template:
    metadata:
      labels:
        app: db
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: db:1
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: x
spec:
  selector:
    matchLabels:
      app: x
  template:
    metadata:
      labels:
        app: x
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: agent:1
"#;

fn timestamp(text: &str) -> Timestamp {
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("not a timestamp {text:?}: {e}"))
}

/// `name=image` of the pods matching `selector` that are not being deleted, by name.
async fn images(k: &Kubectl, selector: &str) -> String {
    let out = k
        .run(&[
            "get",
            "pods",
            "-l",
            selector,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.spec.containers[0].image}={.metadata.deletionTimestamp}{\"\\n\"}{end}",
        ])
        .await;
    let mut live: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_suffix('='))
        .map(str::to_string)
        .collect();
    live.sort();
    live.join(" ")
}

/// Waits until the pods' `images` satisfy `done`.
async fn wait_images(k: &Kubectl, what: &str, selector: &str, done: impl Fn(&str) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = images(k, selector).await;
        if done(&out) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {out}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rolls_statefulsets_and_daemonsets_through_their_history() {
    let Some(binary) = kubectl_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(ClusterConfig {
        listen: "127.0.0.27:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        nodes: 1,
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
    k.wait_for("the node Ready", &["get", "nodes"], |out| {
        out.contains(" Ready ")
    })
    .await;
    let manifest = dir.path().join("db.yaml");
    std::fs::write(&manifest, MANIFEST).unwrap();
    let out = k.run(&["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(
        out.contains("statefulset.apps/db created") && out.contains("daemonset.apps/x created"),
        "{out}"
    );

    // In order: db-1 is created only once db-0 has been Ready for minReadySeconds.
    let out = k
        .run(&["rollout", "status", "sts/db", "--timeout=90s"])
        .await;
    assert!(out.contains("roll out complete"), "{out}");
    let ready_0 = k
        .run(&[
            "get",
            "pod",
            "db-0",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].lastTransitionTime}",
        ])
        .await;
    let created_1 = k
        .run(&[
            "get",
            "pod",
            "db-1",
            "-o",
            "jsonpath={.metadata.creationTimestamp}",
        ])
        .await;
    let gap = timestamp(&created_1).as_second() - timestamp(&ready_0).as_second();
    assert!(
        gap >= 1,
        "db-1 created at {created_1}, db-0 ready at {ready_0}"
    );
    let identity = k
        .run(&[
            "get",
            "pod",
            "db-1",
            "-o",
            "jsonpath={.spec.hostname}.{.spec.subdomain} {.metadata.labels.statefulset\\.kubernetes\\.io/pod-name} {.metadata.labels.apps\\.kubernetes\\.io/pod-index}",
        ])
        .await;
    assert_eq!(identity, "db-1.db db-1 1");
    let table = k.run(&["get", "sts", "-o", "wide"]).await;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "AGE", "CONTAINERS", "IMAGES"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!((row[0], row[1], row[3], row[4]), ("db", "2/2", "c", "db:1"));

    // The scale subresource.
    let out = k.run(&["scale", "sts", "db", "--replicas=3"]).await;
    assert!(out.contains("statefulset.apps/db scaled"), "{out}");
    k.run(&["rollout", "status", "sts/db", "--timeout=90s"])
        .await;
    wait_images(&k, "three db:1 pods", "app=db", |o| {
        o == "db-0=db:1 db-1=db:1 db-2=db:1"
    })
    .await;

    // A new template rolls out (highest ordinal first) and becomes revision 2.
    k.run(&["set", "image", "sts/db", "c=db:2"]).await;
    let out = k
        .run(&["rollout", "status", "sts/db", "--timeout=120s"])
        .await;
    assert!(out.contains("roll out complete"), "{out}");
    wait_images(&k, "three db:2 pods", "app=db", |o| {
        o == "db-0=db:2 db-1=db:2 db-2=db:2"
    })
    .await;
    let history = k.run(&["rollout", "history", "sts/db"]).await;
    assert!(history.contains("REVISION"), "{history}");
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    let revision_1 = k
        .run(&["rollout", "history", "sts/db", "--revision=1"])
        .await;
    assert!(revision_1.contains("db:1"), "{revision_1}");

    // Undo: the previous template comes back, as revision 3.
    let out = k.run(&["rollout", "undo", "sts/db"]).await;
    assert!(out.contains("statefulset.apps/db rolled back"), "{out}");
    k.run(&["rollout", "status", "sts/db", "--timeout=120s"])
        .await;
    wait_images(&k, "db:1 back", "app=db", |o| {
        o == "db-0=db:1 db-1=db:1 db-2=db:1"
    })
    .await;
    let history = k.run(&["rollout", "history", "sts/db"]).await;
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["2", "3"], "{history}");
    let table = k.run(&["get", "controllerrevisions"]).await;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "CONTROLLER", "REVISION", "AGE"]);
    assert!(table.contains("statefulset.apps/db"), "{table}");
    assert!(table.contains("daemonset.apps/x"), "{table}");

    // The DaemonSet's history works the same way.
    k.run(&["rollout", "status", "ds/x", "--timeout=90s"]).await;
    k.run(&["set", "image", "ds/x", "c=agent:2"]).await;
    k.run(&["rollout", "status", "ds/x", "--timeout=90s"]).await;
    wait_images(&k, "agent:2", "app=x", |o| {
        o.contains("agent:2") && !o.contains("agent:1")
    })
    .await;
    let history = k.run(&["rollout", "history", "ds/x"]).await;
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    let out = k.run(&["rollout", "undo", "ds/x"]).await;
    assert!(out.contains("daemonset.apps/x rolled back"), "{out}");
    k.run(&["rollout", "status", "ds/x", "--timeout=90s"]).await;
    wait_images(&k, "agent:1 back", "app=x", |o| {
        o.contains("agent:1") && !o.contains("agent:2")
    })
    .await;
    cluster.shutdown().await.unwrap();
}
