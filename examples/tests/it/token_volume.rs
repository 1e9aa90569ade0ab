//! The quickstart's pods get a working ServiceAccount token: the API server projects the
//! `kube-api-access-*` volume, the in-process node agent fetches a token bound to the pod, and
//! what the pod reads from `/var/run/secrets/kubernetes.io/serviceaccount` (token, `ca.crt`,
//! namespace) is all a kube-rs client needs to reach the API server as the pod's account.

use std::time::Duration;

use examples::cluster::{ClusterConfig, LocalCluster, RuntimeKind, StoreKind};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ListParams, LogParams, PostParams};
use kube::{Client, Config};

/// A kube client from a kubeconfig text.
async fn client(yaml: &str) -> Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(yaml).unwrap();
    let config =
        Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_pods_read_a_token_that_works_against_the_api_server() {
    if !nix::unistd::geteuid().is_root() {
        // Under CI this must run: not being root fails instead of skipping.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: this test needs root"
        );
        eprintln!("skipping: volumes are mounted at their paths as root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(ClusterConfig {
        listen: "127.0.0.9:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        nodes: 1,
        runtime: RuntimeKind::Process,
        store: StoreKind::Memory,
        pod_network_base: 13,
        ..ClusterConfig::default()
    })
    .await
    .unwrap();
    let admin = client(&std::fs::read_to_string(&cluster.kubeconfig).unwrap()).await;
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "default");
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "default-view"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}],
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let script = "M=/var/run/secrets/kubernetes.io/serviceaccount; \
                  cat $M/namespace; echo; cat $M/token; echo; cat $M/ca.crt";
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": "reader"},
            "spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", script]}]},
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pod = pods.get("reader").await.unwrap();
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        if phase.as_deref() == Some("Succeeded") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pod never finished: {:?}",
            pod.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = pods.logs("reader", &LogParams::default()).await.unwrap();
    let mut lines = log.splitn(3, '\n');
    let (namespace, token, ca) = (
        lines.next().unwrap(),
        lines.next().unwrap(),
        lines.next().unwrap(),
    );
    assert_eq!(namespace, "default");
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{log}");

    // What an in-cluster client does with those files.
    let ca_file = dir.path().join("pod-ca.crt");
    std::fs::write(&ca_file, ca).unwrap();
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://{}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n",
        cluster.addr,
        ca_file.display()
    );
    let as_pod = client(&yaml).await;
    let own: Api<Pod> = Api::namespaced(as_pod.clone(), "default");
    let names: Vec<_> = own
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(names, ["reader"]);
    let other: Api<Pod> = Api::namespaced(as_pod, "kube-system");
    match other.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403, got {other:?}"),
    }
    cluster.shutdown().await.unwrap();
}
