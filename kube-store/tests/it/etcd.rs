//! What only the etcd backend shows: a 3-member cluster losing members.

use std::time::{Duration, Instant};

use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::{Store, StoreError};
use kube_store::{EtcdConfig, EtcdStore};
use serde_json::json;

use kube_store::local_etcd::LocalEtcd;

const CM: GroupKind = GroupKind::from_static("", "ConfigMap");

fn config_map(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"}, "data": {"value": "v"}
    }))
    .unwrap()
}

/// Retries `create` for up to `within`, returning the first success.
async fn create_within(
    store: &EtcdStore,
    name: &str,
    within: Duration,
) -> Result<DynamicObject, StoreError> {
    let deadline = Instant::now() + within;
    loop {
        match store.create(config_map(name)).await {
            Ok(o) => return Ok(o),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_with_one_member_down_and_fails_clearly_without_quorum() {
    let mut cluster = LocalEtcd::start(3).unwrap();
    let config = EtcdConfig::new(cluster.endpoints()).request_timeout(Duration::from_secs(2));
    let store = EtcdStore::connect(config).await.unwrap();
    store.create(config_map("before")).await.unwrap();

    cluster.members[0].kill();
    let started = Instant::now();
    let after = create_within(&store, "one-down", Duration::from_secs(15))
        .await
        .expect("writes go on with 2 of 3");
    eprintln!(
        "write succeeded {:?} after losing one member",
        started.elapsed()
    );
    assert!(after.revision().is_some());
    let got = store
        .get(&CM, &ObjectKey::namespaced("default", "before"))
        .await
        .unwrap();
    assert_eq!(got.key().name, "before");

    cluster.members[1].kill();
    let started = Instant::now();
    let err = store
        .create(config_map("no-quorum"))
        .await
        .expect_err("no quorum, no write");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "failed after {waited:?}, not a hang"
    );
    assert!(
        matches!(err, StoreError::Backend(_)),
        "a backend error, got {err:?}"
    );
    let message = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    eprintln!("without quorum: {message} (after {waited:?})");
    let read = store
        .get(&CM, &ObjectKey::namespaced("default", "before"))
        .await;
    assert!(read.is_err(), "linearizable reads need quorum too");
}
