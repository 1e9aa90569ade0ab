//! A StatefulSet pod's PersistentVolumeClaims: created from `volumeClaimTemplates` before the
//! pod, and owned per `persistentVolumeClaimRetentionPolicy` so the garbage collector removes
//! them when the set is deleted (`whenDeleted: Delete`) or scaled down past them
//! (`whenScaled: Delete`), as Kubernetes' `updateClaimOwnerRefForSetAndPod`.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube_core::informer::Informer;
use kube_core::object::{GroupKind, ObjectKey};
use kube_core::store::StoreError;
use kube_core::typed::Api;

use super::identity;

/// The kind of the claims.
pub(crate) fn kind() -> GroupKind {
    GroupKind::from_static("", "PersistentVolumeClaim")
}

/// Which of the set's events delete its claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retention {
    when_deleted: bool,
    when_scaled: bool,
}

impl Retention {
    fn of(set: &StatefulSet) -> Self {
        let policy = set
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_claim_retention_policy.clone())
            .unwrap_or_default();
        Self {
            when_deleted: policy.when_deleted.as_deref() == Some("Delete"),
            when_scaled: policy.when_scaled.as_deref() == Some("Delete"),
        }
    }
}

fn reference(
    api_version: &str,
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: meta.name.clone()?,
        uid: meta.uid.clone()?,
        controller: None,
        block_owner_deletion: None,
    })
}

/// The owner references a claim should carry: whatever others put there, plus the set's
/// (`whenDeleted: Delete`, while the pod is a replica) and the pod's (`whenScaled: Delete`, once
/// the pod is condemned by a scale-down).
fn wanted_refs(
    existing: &[OwnerReference],
    set: &StatefulSet,
    pod: Option<&Pod>,
    condemned: bool,
) -> Vec<OwnerReference> {
    let retention = Retention::of(set);
    let set_ref = reference("apps/v1", "StatefulSet", &set.metadata);
    let pod_ref = pod.and_then(|p| reference("v1", "Pod", &p.metadata));
    let ours = |r: &OwnerReference| {
        set_ref.as_ref().is_some_and(|s| s.uid == r.uid)
            || (r.kind == "Pod"
                && r.api_version == "v1"
                && pod.is_some_and(|p| p.metadata.name.as_deref() == Some(r.name.as_str())))
    };
    let mut refs: Vec<OwnerReference> = existing.iter().filter(|r| !ours(r)).cloned().collect();
    let keep = |r: &Option<OwnerReference>| {
        r.clone().map(|r| {
            existing
                .iter()
                .find(|e| e.uid == r.uid)
                .cloned()
                .unwrap_or(r)
        })
    };
    if retention.when_deleted && !(condemned && retention.when_scaled) {
        refs.extend(keep(&set_ref));
    }
    if retention.when_scaled && condemned {
        refs.extend(keep(&pod_ref));
    }
    refs
}

/// What [`ensure`] found.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    /// Claims created now.
    pub(crate) created: Vec<String>,
    /// Whether a claim is still being deleted (the pod must wait for it to go).
    pub(crate) stale: bool,
}

/// Creates the missing claims of the pod of `ordinal` (the cache names the existing ones)
/// and brings every claim's owner references in line with the retention policy (`pod` is the
/// pod using them, if it exists; `condemned` if a scale-down removes it).
pub(crate) async fn ensure(
    api: &Api<PersistentVolumeClaim>,
    cache: &Informer,
    set: &StatefulSet,
    ordinal: i32,
    pod: Option<&Pod>,
    condemned: bool,
) -> Result<Claims, StoreError> {
    let mut result = Claims::default();
    for mut claim in identity::claims(set, ordinal) {
        let name = claim.metadata.name.clone().unwrap_or_default();
        let key = ObjectKey {
            namespace: claim.metadata.namespace.clone(),
            name: name.clone(),
        };
        let Some(existing) = cache
            .get(&key)
            .and_then(|c| c.to_typed::<PersistentVolumeClaim>().ok())
        else {
            if condemned {
                // A scale-down never creates storage.
                continue;
            }
            let refs = wanted_refs(&[], set, pod, condemned);
            claim.metadata.owner_references = (!refs.is_empty()).then_some(refs);
            match api.create(&claim).await {
                Ok(_) => result.created.push(name),
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e),
            }
            continue;
        };
        if existing.metadata.deletion_timestamp.is_some() {
            result.stale = true;
            continue;
        }
        let have = existing
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default();
        let want = wanted_refs(&have, set, pod, condemned);
        if want != have {
            let mut updated = existing;
            updated.metadata.owner_references = (!want.is_empty()).then_some(want);
            match api.replace(&updated).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(result)
}

/// Whether every claim of the pod of `ordinal` carries the owner references the policy wants.
pub(crate) fn match_policy(
    cache: &Informer,
    set: &StatefulSet,
    ordinal: i32,
    pod: Option<&Pod>,
    condemned: bool,
) -> bool {
    identity::claims(set, ordinal).iter().all(|claim| {
        let key = ObjectKey {
            namespace: claim.metadata.namespace.clone(),
            name: claim.metadata.name.clone().unwrap_or_default(),
        };
        match cache.get(&key) {
            Some(existing) => {
                let have = existing
                    .metadata
                    .owner_references
                    .clone()
                    .unwrap_or_default();
                wanted_refs(&have, set, pod, condemned) == have
            }
            None => condemned,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(when_deleted: &str, when_scaled: &str) -> StatefulSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "uid": "set-uid"},
            "spec": {"selector": {}, "template": {},
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": when_deleted, "whenScaled": when_scaled}}
        }))
        .expect("set")
    }

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "db-1", "uid": "pod-uid"}}))
            .expect("pod")
    }

    fn uids(refs: &[OwnerReference]) -> Vec<&str> {
        refs.iter().map(|r| r.uid.as_str()).collect()
    }

    #[test]
    fn owners_follow_the_retention_policy() {
        let pod = pod();
        let other = OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "x".into(),
            uid: "other".into(),
            ..OwnerReference::default()
        };
        let existing = [other];
        let case = |d: &str, s: &str, condemned: bool| {
            wanted_refs(&existing, &set(d, s), Some(&pod), condemned)
        };
        assert_eq!(uids(&case("Retain", "Retain", false)), ["other"]);
        assert_eq!(uids(&case("Retain", "Retain", true)), ["other"]);
        assert_eq!(uids(&case("Delete", "Retain", false)), ["other", "set-uid"]);
        assert_eq!(uids(&case("Delete", "Retain", true)), ["other", "set-uid"]);
        assert_eq!(uids(&case("Retain", "Delete", false)), ["other"]);
        assert_eq!(uids(&case("Retain", "Delete", true)), ["other", "pod-uid"]);
        assert_eq!(uids(&case("Delete", "Delete", false)), ["other", "set-uid"]);
        assert_eq!(uids(&case("Delete", "Delete", true)), ["other", "pod-uid"]);
    }
}
