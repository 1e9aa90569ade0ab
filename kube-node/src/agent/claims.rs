//! PersistentVolumeClaim volumes: the claim's bound volume's directory on this node
//! (`hostPath` or `local`), mounted as a hostPath volume is, as the kubelet's volume manager
//! resolves claim → volume → plugin.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube_core::object::{GroupKind, ObjectKey};
use kube_core::store::Store;

const CLAIM: GroupKind = GroupKind::from_static("", "PersistentVolumeClaim");
const VOLUME: GroupKind = GroupKind::from_static("", "PersistentVolume");

/// A claim volume's directory on the host and its hostPath `type` (`None` for a `local`
/// volume, which must exist).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClaimPath {
    pub(crate) path: String,
    pub(crate) type_: Option<String>,
}

/// The host path of each of the pod's claim volumes, by volume name; `Err` is the kubelet's
/// FailedMount message when a claim is missing, unbound, being deleted, or its volume has no
/// path on a node.
pub(crate) async fn resolve(
    store: &dyn Store,
    pod: &Pod,
) -> Result<HashMap<String, ClaimPath>, String> {
    let mut out = HashMap::new();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let claims: Vec<(&str, &str)> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| (v.name.as_str(), c.claim_name.as_str()))
        })
        .collect();
    let mut failed = Vec::new();
    let mut first_error = None;
    for (volume, claim) in &claims {
        match path_of(store, namespace, claim).await {
            Ok(path) => {
                out.insert((*volume).to_string(), path);
            }
            Err(e) => {
                failed.push(*volume);
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(error) = first_error {
        let names = failed.join(" ");
        return Err(format!(
            "Unable to attach or mount volumes: unmounted volumes=[{names}], unattached \
             volumes=[{names}], failed to process volumes=[{names}]: {error}"
        ));
    }
    Ok(out)
}

async fn path_of(store: &dyn Store, namespace: &str, name: &str) -> Result<ClaimPath, String> {
    let processing = format!("error processing PVC {namespace}/{name}");
    let key = ObjectKey::namespaced(namespace.to_string(), name.to_string());
    let claim: PersistentVolumeClaim = match store.get(&CLAIM, &key).await {
        Ok(o) => o.to_typed().map_err(|e| format!("{processing}: {e}"))?,
        Err(e) if e.is_not_found() => {
            return Err(format!(
                "{processing}: failed to fetch PVC from API server: persistentvolumeclaims \"{name}\" not found"
            ));
        }
        Err(e) => {
            return Err(format!(
                "{processing}: failed to fetch PVC from API server: {e}"
            ));
        }
    };
    if claim.metadata.deletion_timestamp.is_some() {
        return Err(format!(
            "{processing}: can't start pod because PVC is being deleted"
        ));
    }
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    if volume_name.is_empty() || phase != Some("Bound") {
        return Err(format!("{processing}: PVC is not bound"));
    }
    let volume: PersistentVolume = match store
        .get(&VOLUME, &ObjectKey::cluster(volume_name.clone()))
        .await
    {
        Ok(o) => o.to_typed().map_err(|e| format!("{processing}: {e}"))?,
        Err(e) => {
            return Err(format!(
                "{processing}: failed to fetch PV {volume_name} from API server: {e}"
            ));
        }
    };
    let bound_here = volume
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_some_and(|r| r.uid.is_none() || r.uid == claim.metadata.uid);
    if !bound_here {
        return Err(format!(
            "{processing}: the PV {volume_name} is not bound to the claim"
        ));
    }
    let spec = volume.spec.unwrap_or_default();
    if let Some(host) = spec.host_path {
        return Ok(ClaimPath {
            path: host.path,
            type_: host.type_,
        });
    }
    if let Some(local) = spec.local {
        return Ok(ClaimPath {
            path: local.path,
            type_: None,
        });
    }
    Err(format!(
        "{processing}: PV {volume_name} is of a type this node cannot mount (only hostPath and local)"
    ))
}
