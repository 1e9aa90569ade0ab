//! The node agent pulling from a real private registry (htpasswd over TLS) on runc: a pod's
//! `imagePullSecrets` let it in, a wrong password gives `ErrImagePull` then
//! `ImagePullBackOff` with the registry's reason in the Event, and the node's credentials file
//! serves pods that name no secret. The image's Entrypoint runs without a command.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube_core::typed::Api;
use kube_node::OciRuntime;
use kube_node::pull::{Endpoint, HostConfig, RegistryConfig};

use crate::common::{Cluster, agent, eventually, require};
use crate::registry::{Registry, TestImage, require_tool};

const WAIT: Duration = Duration::from_secs(30);

/// A `kubernetes.io/dockerconfigjson` Secret for `host` as `user` / `password`.
fn pull_secret(name: &str, host: &str, user: &str, password: &str) -> Secret {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let config = serde_json::json!({"auths": {host: {"auth": auth}}});
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(config.to_string())},
    }))
    .expect("a valid Secret")
}

/// A pod of `image` with no command, pulling with `secret` if given.
fn pod(name: &str, image: &str, secret: Option<&str>) -> kube_core::api::Pod {
    let mut spec = serde_json::json!({
        "nodeName": crate::common::NODE,
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "c", "image": image}],
    });
    if let Some(secret) = secret {
        spec["imagePullSecrets"] = serde_json::json!([{"name": secret}]);
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .expect("a valid Pod")
}

#[tokio::test]
async fn pull_secrets_and_the_node_credentials_file_open_a_private_registry() {
    if !require("runc") || !require_tool(crate::registry::REGISTRY_BIN) {
        return;
    }
    let registry = Registry::builder()
        .htpasswd("alice", "s3cret")
        .tls()
        .start();
    let image = TestImage::busybox(&["/bin/echo", "from the entrypoint"], &[]);
    registry.push("private/app", "1", &image).await;
    let name = registry.reference("private/app", "1");
    // The same program as user 1000, for `runAsNonRoot`.
    let mut non_root = TestImage::busybox(&["/bin/id", "-u"], &[]);
    non_root.user = Some("1000".into());
    registry.push("private/nonroot", "1", &non_root).await;
    let non_root_name = registry.reference("private/nonroot", "1");
    let mut endpoint = Endpoint::from_url(&registry.url()).unwrap();
    endpoint.ca_pem.push(registry.ca_pem().unwrap().to_owned());
    let registries = RegistryConfig::default().host(
        &registry.host(),
        HostConfig {
            server: Some(endpoint),
            ..HostConfig::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    // The node's own credentials: the same account, for pods that name no secret.
    let node_file = dir.path().join("config.json");
    let node_auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    std::fs::write(
        &node_file,
        serde_json::json!({"auths": {registry.host(): {"auth": node_auth}}}).to_string(),
    )
    .unwrap();
    let runtime: Arc<dyn kube_core::runtime::Runtime> = Arc::new(
        OciRuntime::builder()
            .root_dir(dir.path().join("runtime"))
            .registries(registries.clone())
            .build()
            .unwrap(),
    );
    let cluster = Cluster::start(agent(runtime.clone()).build().unwrap());
    let secrets: Api<Secret> = Api::namespaced(cluster.store.clone(), "default");
    secrets
        .create(&pull_secret("good", &registry.host(), "alice", "s3cret"))
        .await
        .unwrap();
    secrets
        .create(&pull_secret("bad", &registry.host(), "alice", "wrong"))
        .await
        .unwrap();
    let pods = cluster.pods();
    pods.create(&pod("good", &name, Some("good")))
        .await
        .unwrap();
    // `Always`: the image the good pod pulled is on the node by now, and `IfNotPresent`
    // would run it without asking the registry (as the kubelet does).
    let mut bad = pod("bad", &name, Some("bad"));
    if let Some(c) = bad.spec.as_mut().and_then(|s| s.containers.first_mut()) {
        c.image_pull_policy = Some("Always".into());
    }
    pods.create(&bad).await.unwrap();

    // The right password: pulled, the Entrypoint runs, the pod succeeds.
    let done = cluster.wait_phase("good", "Succeeded", WAIT).await;
    let status = &done.status.unwrap().container_statuses.unwrap()[0];
    assert!(
        status.image_id.contains("sha256:") || status.image.contains("private/app"),
        "{status:?}"
    );
    let logs = kube_node::pod_logs(
        runtime.as_ref(),
        "default",
        "good",
        "c",
        false,
        &Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&logs).trim(), "from the entrypoint");

    // The wrong one: ErrImagePull with the registry's reason, then ImagePullBackOff.
    let reason_of = |pod: &kube_core::api::Pod| {
        let s = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
        let w = s.state.as_ref()?.waiting.as_ref()?;
        Some((w.reason.clone()?, w.message.clone().unwrap_or_default()))
    };
    let (_, message) = eventually(WAIT, "bad waiting with ErrImagePull", || async {
        let pod = pods.get("bad").await.ok()?;
        reason_of(&pod).filter(|(r, _)| r == "ErrImagePull")
    })
    .await;
    assert!(
        message.contains("unauthorized: authentication required"),
        "{message}"
    );
    eventually(WAIT, "bad waiting with ImagePullBackOff", || async {
        let pod = pods.get("bad").await.ok()?;
        reason_of(&pod).filter(|(r, _)| r == "ImagePullBackOff")
    })
    .await;
    let events: Api<Event> = Api::namespaced(cluster.store.clone(), "default");
    let failed = eventually(
        WAIT,
        "a Failed event naming the registry's reason",
        || async {
            let list = events.list(&Default::default()).await.ok()?.items;
            list.into_iter()
                .filter(|e| e.involved_object.name.as_deref() == Some("bad"))
                .filter(|e| e.reason.as_deref() == Some("Failed"))
                .filter_map(|e| e.message)
                .find(|m| m.starts_with("Failed to pull image"))
        },
    )
    .await;
    assert!(
        failed.contains("unauthorized: authentication required"),
        "{failed}"
    );
    cluster.shutdown().await;

    // A second node (a fresh runtime and store) with only its credentials file: a pod naming
    // no secret pulls all the same.
    let runtime_2: Arc<dyn kube_core::runtime::Runtime> = Arc::new(
        OciRuntime::builder()
            .root_dir(dir.path().join("runtime-2"))
            .registries(registries)
            .build()
            .unwrap(),
    );
    let cluster = Cluster::start(
        agent(runtime_2.clone())
            .credentials_file(&node_file)
            .build()
            .unwrap(),
    );
    cluster
        .pods()
        .create(&pod("node-creds", &name, None))
        .await
        .unwrap();
    cluster.wait_phase("node-creds", "Succeeded", WAIT).await;

    // `runAsNonRoot`: an image whose user is 1000 runs; a root image is refused with the
    // kubelet's message (the image's user comes from its config, through image_status).
    let non_root_pod = |name: &str, image: &str| {
        let mut p = pod(name, image, None);
        if let Some(spec) = p.spec.as_mut() {
            spec.security_context = Some(k8s_openapi::api::core::v1::PodSecurityContext {
                run_as_non_root: Some(true),
                ..Default::default()
            });
        }
        p
    };
    let pods = cluster.pods();
    pods.create(&non_root_pod("as-1000", &non_root_name))
        .await
        .unwrap();
    pods.create(&non_root_pod("as-root", &name)).await.unwrap();
    cluster.wait_phase("as-1000", "Succeeded", WAIT).await;
    let logs = kube_node::pod_logs(
        runtime_2.as_ref(),
        "default",
        "as-1000",
        "c",
        false,
        &Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&logs).trim(), "1000");
    let message = eventually(WAIT, "as-root refused", || async {
        let pod = pods.get("as-root").await.ok()?;
        let s = pod.status?.container_statuses?.into_iter().next()?;
        let w = s.state?.waiting?;
        (w.reason.as_deref() == Some("CreateContainerConfigError")).then_some(w.message?)
    })
    .await;
    assert_eq!(
        message,
        "container has runAsNonRoot and image will run as root (pod: \"as-root\", container: c)"
    );
    cluster.shutdown().await;
}
