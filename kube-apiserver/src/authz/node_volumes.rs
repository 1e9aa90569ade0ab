//! The node authorizer's volume rules: a node may read the PersistentVolumeClaims its pods
//! mount and the PersistentVolumes those claims are bound to (Kubernetes' node authorizer
//! walks the same pod → claim → volume graph).

use kube_core::object::{GroupKind, ObjectKey};
use kube_core::selector::FieldSelector;
use kube_core::store::{ListOptions, Store, StoreError};

const CLAIM: GroupKind = GroupKind::from_static("", "PersistentVolumeClaim");

/// The claim names the pods bound to `node` in `namespace` mount.
async fn claims_on(
    store: &dyn Store,
    node: &str,
    namespace: Option<&str>,
) -> Result<Vec<(String, String)>, StoreError> {
    let options = ListOptions::default().fields(FieldSelector::equals("spec.nodeName", node));
    let pods = store.list(&GroupKind::POD, namespace, &options).await?;
    Ok(pods
        .items
        .iter()
        .flat_map(|pod| {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let volumes = pod.field("spec.volumes");
            volumes
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |v| {
                    v["persistentVolumeClaim"]["claimName"]
                        .as_str()
                        .map(|c| (ns.clone(), c.to_string()))
                })
        })
        .collect())
}

/// Whether a pod bound to `node` mounts the claim `namespace/name`.
pub(crate) async fn claim_used_on(
    store: &dyn Store,
    node: &str,
    namespace: &str,
    name: &str,
) -> Result<bool, StoreError> {
    Ok(claims_on(store, node, Some(namespace))
        .await?
        .iter()
        .any(|(_, c)| c == name))
}

/// Whether a claim a pod bound to `node` mounts is bound to the volume `name`.
pub(crate) async fn volume_used_on(
    store: &dyn Store,
    node: &str,
    name: &str,
) -> Result<bool, StoreError> {
    for (ns, claim) in claims_on(store, node, None).await? {
        let claim = match store.get(&CLAIM, &ObjectKey::namespaced(ns, claim)).await {
            Ok(c) => c,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        if claim
            .field("spec.volumeName")
            .and_then(|v| v.as_str().map(|v| v == name))
            == Some(true)
        {
            return Ok(true);
        }
    }
    Ok(false)
}
