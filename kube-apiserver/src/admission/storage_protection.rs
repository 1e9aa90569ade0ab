//! Kubernetes' StorageObjectInUseProtection admission: a new PersistentVolumeClaim gets the
//! `kubernetes.io/pvc-protection` finalizer, a new PersistentVolume
//! `kubernetes.io/pv-protection`, so neither goes while in use (kube-ctrl's protection
//! controllers remove them when it is safe).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The finalizer of claims.
pub(crate) const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer of volumes.
pub(crate) const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// Adds the finalizer of `kind` to a new object's metadata. Only a new object qualifies (no
/// uid, creation time or resourceVersion yet): an update must be able to remove it.
pub(crate) fn on_create(kind: &str, meta: &mut ObjectMeta) {
    let new =
        meta.uid.is_none() && meta.creation_timestamp.is_none() && meta.resource_version.is_none();
    let finalizer = match kind {
        "PersistentVolumeClaim" => PVC_PROTECTION,
        "PersistentVolume" => PV_PROTECTION,
        _ => return,
    };
    if !new {
        return;
    }
    let finalizers = meta.finalizers.get_or_insert_with(Vec::new);
    if !finalizers.iter().any(|f| f == finalizer) {
        finalizers.push(finalizer.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_claims_and_volumes_get_the_finalizer() {
        let mut meta = ObjectMeta::default();
        on_create("PersistentVolumeClaim", &mut meta);
        on_create("PersistentVolumeClaim", &mut meta);
        assert_eq!(meta.finalizers, Some(vec![PVC_PROTECTION.to_string()]));
        let mut stored = ObjectMeta {
            uid: Some("u".into()),
            ..Default::default()
        };
        on_create("PersistentVolume", &mut stored);
        assert_eq!(stored.finalizers, None);
        let mut pv = ObjectMeta::default();
        on_create("PersistentVolume", &mut pv);
        assert_eq!(pv.finalizers, Some(vec![PV_PROTECTION.to_string()]));
    }
}
