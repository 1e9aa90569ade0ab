//! persistentVolumeClaim volumes on ProcessRuntime: the agent mounts the bound volume's
//! hostPath directory (making a `DirectoryOrCreate` one), so what one pod writes the next pod
//! with the same claim reads; a pod whose claim is not bound waits with FailedMount.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim};
use kube_core::api::Pod;
use kube_core::runtime::{LogOptions, Runtime};
use kube_core::typed::Api;
use kube_node::{ProcessRuntime, VolumeMounts};
use serde_json::json;

use crate::common::{Cluster, agent, eventually, require};

const WAIT: Duration = Duration::from_secs(20);

fn pod(name: &str, claim: &str, script: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": crate::common::NODE,
            "restartPolicy": "Never",
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
            "containers": [{"name": "c", "image": "ignored", "command": ["sh", "-c", script],
                "volumeMounts": [{"name": "data", "mountPath": "/kn-claim-data"}]}]
        }
    }))
    .expect("pod")
}

/// A claim and the local-path style volume it is bound to, as the PV controller leaves them.
async fn bound_claim(cluster: &Cluster, name: &str, path: &std::path::Path) {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.store.clone(), "default");
    let created = claims
        .create(
            &serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-path",
                "resources": {"requests": {"storage": "1Gi"}}}}))
            .expect("claim"),
        )
        .await
        .expect("create claim");
    let volumes: Api<PersistentVolume> = Api::all(cluster.store.clone());
    let volume_name = format!("pvc-{}", created.metadata.uid.clone().expect("uid"));
    volumes
        .create(
            &serde_json::from_value(json!({"metadata": {"name": volume_name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "storageClassName": "local-path", "persistentVolumeReclaimPolicy": "Delete",
                "hostPath": {"path": path, "type": "DirectoryOrCreate"},
                "claimRef": {"namespace": "default", "name": name, "uid": created.metadata.uid}},
            "status": {"phase": "Bound"}}))
            .expect("volume"),
        )
        .await
        .expect("create volume");
    let mut claim = created;
    claim.spec.as_mut().expect("spec").volume_name = Some(volume_name);
    claim.status = Some(serde_json::from_value(json!({"phase": "Bound"})).expect("status"));
    claims.replace(&claim).await.expect("bind claim");
}

/// The container's log, once the runtime lists the container and its output is in.
async fn log(runtime: &ProcessRuntime, name: &str) -> String {
    eventually(WAIT, &format!("{name}'s log"), || async {
        let options = LogOptions::default();
        let bytes = kube_node::pod_logs(runtime, "default", name, "c", false, &options).await;
        // Read once the output is in (the status may be written first).
        bytes
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .filter(|text| text.ends_with('\n'))
    })
    .await
}

#[tokio::test]
async fn what_a_pod_writes_to_its_claim_the_next_pod_with_the_claim_reads() {
    if !require("unshare") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = ProcessRuntime::builder()
        .volume_mounts(VolumeMounts::Namespace)
        .build()
        .expect("runtime");
    let cluster = Cluster::start(
        agent(Arc::new(runtime.clone()))
            .root_dir(dir.path().join("pods"))
            .build()
            .expect("agent"),
    );
    // Not there yet: the agent makes it (DirectoryOrCreate), as for k3s's local-path volumes.
    let storage = dir.path().join("storage").join("pvc-x_default_data");
    bound_claim(&cluster, "data", &storage).await;

    cluster
        .pods()
        .create(&pod(
            "writer",
            "data",
            "echo kept > /kn-claim-data/note && echo wrote",
        ))
        .await
        .expect("create writer");
    cluster.wait_phase("writer", "Succeeded", WAIT).await;
    assert_eq!(log(&runtime, "writer").await, "wrote\n");
    assert_eq!(
        std::fs::read_to_string(storage.join("note")).expect("on the volume"),
        "kept\n"
    );
    cluster
        .pods()
        .delete("writer", &Default::default())
        .await
        .expect("delete writer");
    eventually(WAIT, "writer gone", || async {
        cluster
            .pods()
            .get_opt("writer")
            .await
            .expect("get")
            .is_none()
            .then_some(())
    })
    .await;

    cluster
        .pods()
        .create(&pod("reader", "data", "cat /kn-claim-data/note"))
        .await
        .expect("create reader");
    cluster.wait_phase("reader", "Succeeded", WAIT).await;
    assert_eq!(
        log(&runtime, "reader").await,
        "kept\n",
        "the data outlived the pod"
    );
    assert!(
        !std::path::Path::new("/kn-claim-data").exists(),
        "the host is untouched"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_pod_whose_claim_is_not_bound_waits_with_failed_mount() {
    if !require("unshare") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = ProcessRuntime::builder()
        .volume_mounts(VolumeMounts::Namespace)
        .build()
        .expect("runtime");
    let cluster = Cluster::start(
        agent(Arc::new(runtime.clone()))
            .root_dir(dir.path().join("pods"))
            .build()
            .expect("agent"),
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.store.clone(), "default");
    claims
        .create(
            &serde_json::from_value(json!({"metadata": {"name": "later"},
            "spec": {"accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}}}))
            .expect("claim"),
        )
        .await
        .expect("claim");
    cluster
        .pods()
        .create(&pod("waiting", "later", "echo ran"))
        .await
        .expect("create");
    let events: Api<Event> = Api::namespaced(cluster.store.clone(), "default");
    let message = eventually(WAIT, "FailedMount", || async {
        let list = events.list(&Default::default()).await.expect("events");
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("FailedMount"))?
            .message
    })
    .await;
    assert_eq!(
        message,
        "Unable to attach or mount volumes: unmounted volumes=[data], unattached volumes=[data], \
         failed to process volumes=[data]: error processing PVC default/later: PVC is not bound"
    );
    let p = cluster.pods().get("waiting").await.expect("pod");
    let phase = p.status.and_then(|s| s.phase);
    assert!(
        matches!(phase.as_deref(), None | Some("Pending")),
        "{phase:?}"
    );
    assert!(
        runtime
            .list_containers(&Default::default())
            .await
            .expect("list")
            .is_empty(),
        "nothing started"
    );

    // Once bound, it runs. (Delete the unbound claim and bind a new one of the same name.)
    claims
        .delete("later", &Default::default())
        .await
        .expect("delete claim");
    bound_claim(&cluster, "later", &dir.path().join("storage/later")).await;
    cluster.wait_phase("waiting", "Succeeded", WAIT).await;
    assert_eq!(log(&runtime, "waiting").await, "ran\n");
    cluster.shutdown().await;
}
