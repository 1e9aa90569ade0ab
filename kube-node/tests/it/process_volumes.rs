//! ProcessRuntime shows volume mounts to host processes: bind mounts in a private mount
//! namespace as root, symlinks under the sandbox directory otherwise.

use std::sync::Arc;
use std::time::Duration;

use kube_core::api::{ConfigMap, Pod};
use kube_core::runtime::{LogOptions, Runtime};
use kube_core::typed::Api;
use kube_node::{ProcessRuntime, VolumeMounts};

use crate::common::{Cluster, agent, require};

const WAIT: Duration = Duration::from_secs(20);

async fn config_map(cluster: &Cluster) {
    let cms: Api<ConfigMap> = Api::namespaced(cluster.store.clone(), "default");
    cms.create(
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": "settings"},
            "data": {"greeting": "hello", "app.conf": "mode=fast\n"}
        }))
        .expect("configmap"),
    )
    .await
    .expect("create configmap");
}

fn pod(name: &str, script: &str, mounts: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": crate::common::NODE,
            "restartPolicy": "Never",
            "volumes": [
                {"name": "conf", "configMap": {"name": "settings"}},
                {"name": "scratch", "emptyDir": {}}
            ],
            "containers": [{
                "name": "c", "image": "ignored",
                "command": ["sh", "-c", script],
                "volumeMounts": mounts,
            }]
        }
    }))
    .expect("pod")
}

async fn log(runtime: &ProcessRuntime, name: &str) -> String {
    let bytes = kube_node::pod_logs(runtime, "default", name, "c", false, &LogOptions::default())
        .await
        .expect("logs");
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn as_root_volumes_are_bind_mounted_at_their_paths_in_a_private_namespace() {
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
    config_map(&cluster).await;
    // `/etc/kn-test-app` and `/kn-test-scratch` do not exist on the host.
    let script = "cat /etc/kn-test-app/greeting; echo; cat /etc/kn-test-app/app.conf; \
                  echo saved > /kn-test-scratch/out; \
                  test -e /etc/passwd && echo etc-intact; \
                  touch /etc/kn-test-app/new 2>/dev/null || echo read-only; \
                  pwd";
    cluster
        .pods()
        .create(&pod(
            "mounted",
            script,
            serde_json::json!([
                {"name": "conf", "mountPath": "/etc/kn-test-app", "readOnly": true},
                {"name": "scratch", "mountPath": "/kn-test-scratch"}
            ]),
        ))
        .await
        .expect("create");
    let done = cluster.wait_phase("mounted", "Succeeded", WAIT).await;
    let sandbox_dir = log(&runtime, "mounted").await;
    let lines: Vec<&str> = sandbox_dir.lines().collect();
    assert_eq!(
        lines[..5],
        ["hello", "mode=fast", "etc-intact", "read-only", lines[4]],
        "{sandbox_dir}"
    );
    assert!(
        lines[4].starts_with(&runtime.root_dir().display().to_string()),
        "the working directory is the sandbox's: {sandbox_dir}"
    );
    assert!(
        !std::path::Path::new("/etc/kn-test-app").exists(),
        "the host is untouched"
    );
    assert!(
        !std::path::Path::new("/kn-test-scratch").exists(),
        "the host is untouched"
    );
    let uid = done.metadata.uid.expect("uid");
    let out = dir
        .path()
        .join("pods")
        .join(uid)
        .join("volumes/scratch/out");
    assert_eq!(
        std::fs::read_to_string(&out).expect("written through the mount"),
        "saved\n"
    );

    // Exec (probes, hooks) runs in the container's view too.
    cluster
        .pods()
        .create(&pod(
            "long",
            "exec sleep 30",
            serde_json::json!([{"name": "conf", "mountPath": "/etc/kn-test-app"}]),
        ))
        .await
        .expect("create");
    cluster.wait_phase("long", "Running", WAIT).await;
    let id = runtime
        .list_containers(&Default::default())
        .await
        .expect("list")
        .into_iter()
        .find(|c| c.labels[kube_node::labels::POD_NAME] == "long")
        .expect("container")
        .id;
    let exec = runtime
        .exec_sync(
            &id,
            &["cat".into(), "/etc/kn-test-app/greeting".into()],
            WAIT,
        )
        .await
        .expect("exec");
    assert_eq!((exec.exit_code, &exec.output[..]), (0, &b"hello"[..]));
    cluster.shutdown().await;
}

#[tokio::test]
async fn unprivileged_volumes_are_linked_under_the_sandbox_directory() {
    let runtime = ProcessRuntime::builder()
        .volume_mounts(VolumeMounts::Symlinks)
        .build()
        .expect("runtime");
    let cluster = Cluster::start(agent(Arc::new(runtime.clone())).build().expect("agent"));
    config_map(&cluster).await;
    cluster
        .pods()
        .create(&pod(
            "linked",
            "cat etc/app/greeting; echo; echo saved > data/out && cat data/out",
            serde_json::json!([
                {"name": "conf", "mountPath": "/etc/app", "readOnly": true},
                {"name": "scratch", "mountPath": "/data"}
            ]),
        ))
        .await
        .expect("create");
    cluster.wait_phase("linked", "Succeeded", WAIT).await;
    assert_eq!(log(&runtime, "linked").await, "hello\nsaved\n");
    cluster.shutdown().await;
}
