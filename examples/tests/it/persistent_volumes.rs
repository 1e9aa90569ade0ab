//! A StatefulSet with a claim template in the quickstart (as root, runc): its pods come up in
//! order, each claim is bound to a local-path volume on its pod's node, and a pod deleted and
//! recreated finds what it wrote.

use std::time::Duration;

use crate::kubectl::{cluster_with_kubectl, kubectl_binary, memory_cluster, runc_or_skip};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_keeps_its_data_across_pod_restarts() {
    if !runc_or_skip() {
        return;
    }
    let Some(binary) = kubectl_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cluster, k) =
        cluster_with_kubectl(binary, memory_cluster(dir.path(), "127.0.0.43:0", 2, 43)).await;
    let manifest = dir.path().join("db.yaml");
    std::fs::write(
        &manifest,
        r#"
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: tcp, port: 5432}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: ["sh", "-c", "hostname >> /data/log && exec sleep 3600"]
        volumeMounts: [{name: data, mountPath: /data}]
        readinessProbe: {exec: {command: ["cat", "/data/log"]}, periodSeconds: 1}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 16Mi}}
"#,
    )
    .unwrap();
    k.run(&["apply", "-f", manifest.to_str().unwrap()]).await;
    k.run(&["rollout", "status", "sts/db", "--timeout=120s"])
        .await;

    // In order: db-1 was created only after db-0 was Ready.
    let ready_at = k
        .run(&[
            "get",
            "pod",
            "db-0",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].lastTransitionTime}",
        ])
        .await;
    let created = k
        .run(&[
            "get",
            "pod",
            "db-1",
            "-o",
            "jsonpath={.metadata.creationTimestamp}",
        ])
        .await;
    assert!(
        created >= ready_at,
        "db-1 created at {created}, db-0 Ready at {ready_at}"
    );

    // Each claim is bound to a volume of the default class.
    let claims = k
        .wait_for(
            "both claims Bound",
            &["get", "pvc", "--no-headers"],
            |out| out.lines().filter(|l| l.contains("Bound")).count() == 2,
        )
        .await;
    assert!(
        claims.contains("data-db-0") && claims.contains("local-path"),
        "{claims}"
    );
    assert_eq!(
        k.run(&["exec", "db-0", "--", "cat", "/data/log"]).await,
        "db-0\n"
    );

    // The pod comes back (same name, same claim) and finds what it wrote.
    let uid = k
        .run(&["get", "pod", "db-0", "-o", "jsonpath={.metadata.uid}"])
        .await;
    k.run(&["delete", "pod", "db-0", "--wait=false"]).await;
    k.wait_for(
        "db-0 recreated and Ready",
        &[
            "get",
            "pod",
            "db-0",
            "-o",
            "jsonpath={.metadata.uid} {.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        |out| !out.starts_with(uid.as_str()) && out.ends_with("True"),
    )
    .await;
    let log = k.run(&["exec", "db-0", "--", "cat", "/data/log"]).await;
    assert_eq!(log, "db-0\ndb-0\n", "the data survived the pod");

    // Deleting the claims (their Delete policy) removes the volumes.
    k.run(&["delete", "sts", "db"]).await;
    k.run(&["delete", "pvc", "--all", "--wait=false"]).await;
    let pvs = k
        .wait_for(
            "the volumes deleted",
            &["get", "pv", "--no-headers"],
            |out| out.trim().is_empty(),
        )
        .await;
    assert!(pvs.trim().is_empty());
    tokio::time::sleep(Duration::from_millis(100)).await;
    cluster.shutdown().await.unwrap();
}
