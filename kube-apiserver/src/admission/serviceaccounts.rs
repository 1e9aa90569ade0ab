//! ServiceAccount token volume projection, as Kubernetes does it: the ServiceAccount admission
//! plugin gives every new pod a projected `kube-api-access-<random>` volume (a bound token, the
//! cluster CA, the namespace) mounted read-only at [`MOUNT_PATH`] in each container, and every
//! namespace gets the `kube-root-ca.crt` ConfigMap (the root-CA publisher of
//! kube-controller-manager) and the `default` ServiceAccount (its serviceaccounts controller).

use std::sync::Arc;

use futures::StreamExt;
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::selector::FieldSelector;
use kube_core::store::{ListOptions, Store, StoreError, WatchEvent, WatchOptions};
use rand::Rng;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

/// Where the token, `ca.crt` and `namespace` appear in containers.
pub(crate) const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The ConfigMap holding the cluster CA in every namespace.
pub(crate) const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// Lifetime asked for the projected token: Kubernetes' 3607 s (an hour and a few seconds, the
/// value by which Kubernetes recognises the tokens of these admission-made volumes).
const TOKEN_EXPIRATION_SECONDS: u64 = 3607;
/// The characters of generated name suffixes (Kubernetes' `utilrand.String`).
const SUFFIX_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Why a pod was not admitted.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The pod's ServiceAccount does not exist (Kubernetes answers 403).
    NoAccount(String),
    /// The store failed.
    Store(StoreError),
}

/// How often the `default` ServiceAccount is looked for before a pod naming it is refused:
/// it is made right after its namespace, so a pod created at once may come first (as in
/// Kubernetes' admission: 10 tries, 100-200 ms apart; other accounts get one).
const DEFAULT_ACCOUNT_TRIES: usize = 10;

/// The ServiceAccount admission plugin for a new pod: its ServiceAccount must exist, and it
/// gets the token volume unless it or its ServiceAccount says
/// `automountServiceAccountToken: false` (the pod's own setting wins), or it already mounts
/// something at [`MOUNT_PATH`] everywhere; a pod naming no `imagePullSecrets` gets its
/// ServiceAccount's.
///
/// `with_ca`: whether the server publishes `kube-root-ca.crt` (it has a CA certificate); if
/// not, the volume has no `ca.crt`, rather than a source the pod would wait for forever.
pub(crate) async fn admit_pod(
    store: &dyn Store,
    pod: &mut DynamicObject,
    with_ca: bool,
) -> Result<(), Refused> {
    if pod.kind != "Pod" || pod.api_version != "v1" {
        return Ok(());
    }
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let Some(Value::Object(spec)) = pod.data.get_mut("spec") else {
        return Ok(());
    };
    let name = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|name| !name.is_empty())
        .unwrap_or("default")
        .to_string();
    let tries = if name == "default" {
        DEFAULT_ACCOUNT_TRIES
    } else {
        1
    };
    let key = ObjectKey::namespaced(namespace.clone(), name.clone());
    let mut account = None;
    for attempt in 0..tries {
        if attempt > 0 {
            let pause = rand::rng().random_range(100..200);
            tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        }
        match store
            .get_shared(&GroupKind::new("", "ServiceAccount"), &key)
            .await
        {
            Ok(found) => {
                account = Some(found);
                break;
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Refused::Store(e)),
        }
    }
    let Some(account) = account else {
        return Err(Refused::NoAccount(format!(
            "error looking up service account {namespace}/{name}: serviceaccount \"{name}\" not found"
        )));
    };
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            account
                .data
                .get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    if automount {
        add_token_volume(spec, with_ca);
    }
    // A pod that names no pull secrets gets its account's, as Kubernetes' admission does.
    let no_pull_secrets = spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if no_pull_secrets
        && let Some(secrets) = account
            .data
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .filter(|s| !s.is_empty())
    {
        spec.insert("imagePullSecrets".into(), Value::Array(secrets.clone()));
    }
    Ok(())
}

/// Adds the projected volume and the mounts (containers that mount [`MOUNT_PATH`] themselves
/// are left alone; with none left, no volume is added).
fn add_token_volume(spec: &mut Map<String, Value>, with_ca: bool) {
    let mounts_path = |c: &Value| {
        c["volumeMounts"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["mountPath"] == MOUNT_PATH))
    };
    let needs = ["initContainers", "containers"].iter().any(|list| {
        spec.get(*list)
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| !mounts_path(c)))
    });
    if !needs {
        return;
    }
    let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
    let Value::Array(volumes) = volumes else {
        return;
    };
    // A name no other volume of the pod has.
    let name = loop {
        let mut rng = rand::rng();
        let suffix: String = (0..5)
            .map(|_| SUFFIX_CHARS[rng.random_range(0..SUFFIX_CHARS.len())] as char)
            .collect();
        let name = format!("kube-api-access-{suffix}");
        if !volumes.iter().any(|v| v["name"] == name.as_str()) {
            break name;
        }
    };
    let mut sources = vec![json!({"serviceAccountToken": {"path": "token",
        "expirationSeconds": TOKEN_EXPIRATION_SECONDS}})];
    if with_ca {
        sources.push(json!({"configMap": {"name": ROOT_CA_CONFIG_MAP,
            "items": [{"key": "ca.crt", "path": "ca.crt"}]}}));
    }
    sources.push(json!({"downwardAPI": {"items": [{"path": "namespace",
        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}));
    volumes.push(json!({
        "name": name,
        "projected": {"defaultMode": 420, "sources": sources},
    }));
    for list in ["initContainers", "containers"] {
        let Some(Value::Array(containers)) = spec.get_mut(list) else {
            continue;
        };
        for container in containers.iter_mut() {
            if mounts_path(container) {
                continue;
            }
            let Value::Object(container) = container else {
                continue;
            };
            let mounts = container.entry("volumeMounts").or_insert_with(|| json!([]));
            if let Value::Array(mounts) = mounts {
                mounts.push(json!({"name": name, "readOnly": true, "mountPath": MOUNT_PATH}));
            }
        }
    }
}

/// Makes sure `namespace` has the `default` ServiceAccount and, with a CA, the
/// `kube-root-ca.crt` ConfigMap holding it (updated if it holds something else). A namespace
/// being deleted is left alone.
pub(crate) async fn publish(
    store: &dyn Store,
    namespace: &DynamicObject,
    ca_pem: Option<&str>,
) -> Result<(), StoreError> {
    if namespace.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let Some(ns) = namespace.metadata.name.clone() else {
        return Ok(());
    };
    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": ns}});
    create_if_missing(store, account).await?;
    let Some(ca_pem) = ca_pem else {
        return Ok(());
    };
    let key = ObjectKey::namespaced(ns.clone(), ROOT_CA_CONFIG_MAP);
    let kind = GroupKind::new("", "ConfigMap");
    match store.get(&kind, &key).await {
        Ok(mut existing) => {
            if existing.data.get("data").and_then(|d| d.get("ca.crt")) != Some(&json!(ca_pem)) {
                existing
                    .data
                    .insert("data".into(), json!({"ca.crt": ca_pem}));
                match store.update(existing).await {
                    Ok(_) => {}
                    // Someone else wrote it meanwhile; the next pass looks again.
                    Err(e) if e.is_conflict() || e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
        Err(e) if e.is_not_found() => {
            let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": ROOT_CA_CONFIG_MAP, "namespace": ns,
                    "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                "data": {"ca.crt": ca_pem}});
            create_if_missing(store, config_map).await
        }
        Err(e) => Err(e),
    }
}

async fn create_if_missing(store: &dyn Store, object: Value) -> Result<(), StoreError> {
    let object: DynamicObject =
        serde_json::from_value(object).map_err(|e| StoreError::Invalid(e.to_string()))?;
    match store.create(object).await {
        Ok(_) => Ok(()),
        // Gone meanwhile or being deleted: nothing to publish into.
        Err(e) if e.is_already_exists() || e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Publishes into every existing namespace; returns the revision of the list, from which
/// [`run_publisher`] watches.
pub(crate) async fn publish_all(
    store: &Arc<dyn Store>,
    ca_pem: Option<&str>,
) -> Result<u64, StoreError> {
    let namespaces = store
        .list(
            &GroupKind::new("", "Namespace"),
            None,
            &ListOptions::default(),
        )
        .await?;
    for ns in &namespaces.items {
        publish(store.as_ref(), ns, ca_pem).await?;
    }
    Ok(namespaces.resource_version)
}

/// The publisher's watch loop, until `stop`: publishes into each namespace that appears, and
/// again when its `kube-root-ca.crt` ConfigMap is deleted or changed; re-lists (with
/// [`publish_all`]) when a watch ends.
pub(crate) async fn run_publisher(
    store: Arc<dyn Store>,
    ca_pem: Option<String>,
    mut revision: u64,
    stop: CancellationToken,
) {
    let namespace_kind = GroupKind::new("", "Namespace");
    let config_map_kind = GroupKind::new("", "ConfigMap");
    loop {
        let watched = async {
            let namespaces = store
                .watch(
                    &namespace_kind,
                    None,
                    &WatchOptions::from_revision(revision),
                )
                .await?;
            let only_root_ca = ListOptions::default()
                .fields(FieldSelector::equals("metadata.name", ROOT_CA_CONFIG_MAP));
            let config_maps = store
                .watch(
                    &config_map_kind,
                    None,
                    &WatchOptions::from_revision(revision).filter(only_root_ca),
                )
                .await?;
            let mut events = futures::stream::select(namespaces, config_maps);
            while let Some(event) = events.next().await {
                let event = event?;
                let namespace = match &event {
                    WatchEvent::Added(o) | WatchEvent::Modified(o) if o.kind == "Namespace" => {
                        Some((**o).clone())
                    }
                    WatchEvent::Deleted(o) | WatchEvent::Modified(o)
                        if o.kind == "ConfigMap"
                            && o.metadata.name.as_deref() == Some(ROOT_CA_CONFIG_MAP) =>
                    {
                        let ns = o.metadata.namespace.clone().unwrap_or_default();
                        match store.get(&namespace_kind, &ObjectKey::cluster(ns)).await {
                            Ok(ns) => Some(ns),
                            Err(e) if e.is_not_found() => None,
                            Err(e) => return Err(e),
                        }
                    }
                    _ => None,
                };
                if let Some(namespace) = namespace {
                    publish(store.as_ref(), &namespace, ca_pem.as_deref()).await?;
                }
            }
            Ok::<(), StoreError>(())
        };
        tokio::select! {
            () = stop.cancelled() => return,
            result = watched => {
                if let Err(error) = result {
                    tracing::debug!(%error, "namespace publisher: watch ended");
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
        match publish_all(&store, ca_pem.as_deref()).await {
            Ok(rv) => revision = rv,
            Err(error) => tracing::warn!(%error, "namespace publisher: re-list failed"),
        }
    }
}
