//! The quickstart cluster on etcd (`--store etcd --etcd-endpoints URL`, cargo feature `etcd`):
//! kubectl writes through the API server into a real etcd, and a cluster started again on the
//! same etcd sees the same state.

use examples::cluster::{ClusterConfig, LocalCluster, RuntimeKind, StoreKind};
use kube_store::local_etcd::LocalEtcd;

use crate::kubectl::{Kubectl, kubectl_binary};

/// A single etcd member, or `None` to skip; under `CI=true` a missing etcd fails the test.
fn etcd() -> Option<LocalEtcd> {
    match LocalEtcd::single() {
        Ok(etcd) => Some(etcd),
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "etcd is required under CI=true: {e}"
            );
            eprintln!("skipping: {e}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_cluster_keeps_its_state_in_etcd() {
    let Some(binary) = kubectl_binary() else {
        return;
    };
    let Some(etcd) = etcd() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = ClusterConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        nodes: 1,
        runtime: RuntimeKind::Fake,
        store: StoreKind::parse("etcd", etcd.endpoints()).unwrap(),
        ..ClusterConfig::default()
    };
    let cluster = LocalCluster::start(config.clone()).await.unwrap();
    let k = Kubectl {
        binary: binary.clone(),
        kubeconfig: cluster.kubeconfig.clone(),
    };
    k.wait_for("a Ready node", &["get", "nodes"], |out| {
        out.contains(" Ready ")
    })
    .await;
    let manifest = dir.path().join("settings.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  colour: teal\n",
    )
    .unwrap();
    let out = k.run(&["apply", "-f", manifest.to_str().unwrap()]).await;
    assert!(out.contains("configmap/settings created"), "{out}");
    cluster.shutdown().await.unwrap();

    // Started again on the same etcd (its data directory keeps only the PKI and kubeconfig).
    let cluster = LocalCluster::start(config).await.unwrap();
    let k = Kubectl {
        binary,
        kubeconfig: cluster.kubeconfig.clone(),
    };
    let colour = k
        .run(&[
            "get",
            "configmap",
            "settings",
            "-o",
            "jsonpath={.data.colour}",
        ])
        .await;
    assert_eq!(colour, "teal");
    k.wait_for("the node Ready again", &["get", "nodes"], |out| {
        out.contains(" Ready ")
    })
    .await;
    cluster.shutdown().await.unwrap();
    drop(etcd);
}

#[test]
fn store_etcd_needs_endpoints() {
    let err = StoreKind::parse("etcd", Vec::new()).unwrap_err();
    assert!(err.to_string().contains("--etcd-endpoints"), "{err}");
    let err = StoreKind::parse("sqlite", Vec::new()).unwrap_err();
    assert!(err.to_string().contains("unknown store"), "{err}");
}
