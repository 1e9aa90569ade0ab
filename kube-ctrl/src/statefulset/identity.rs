//! A StatefulSet pod's identity: its name `<set>-<ordinal>`, hostname and subdomain, identity
//! labels and the claims its volumes name, as Kubernetes' `stateful_set_utils.go`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use kube_core::object::controller_owner_ref;

use super::history::REVISION_HASH_LABEL;

/// The label holding a StatefulSet pod's name (so a Service can select one pod).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label holding a StatefulSet pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// `<set>-<ordinal>`.
pub(crate) fn pod_name(set: &str, ordinal: i32) -> String {
    format!("{set}-{ordinal}")
}

/// The ordinal of a pod of `set` named `<set>-<ordinal>` (`None` for any other name).
pub(crate) fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let suffix = pod.strip_prefix(set)?.strip_prefix('-')?;
    // Only the canonical spelling: `db-01` is not `db-1`'s.
    let ordinal: i32 = suffix.parse().ok()?;
    (ordinal >= 0 && ordinal.to_string() == suffix).then_some(ordinal)
}

/// `<template>-<set>-<ordinal>`: the claim a pod's volume `<template>` names.
pub(crate) fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

/// The claims the pod of `ordinal` uses, from `spec.volumeClaimTemplates`: named for the pod,
/// in the set's namespace, labelled with the set's `matchLabels` (as Kubernetes).
pub(crate) fn claims(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let name = set.metadata.name.clone().unwrap_or_default();
    let Some(spec) = set.spec.as_ref() else {
        return Vec::new();
    };
    let match_labels = spec.selector.match_labels.clone().unwrap_or_default();
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|template| {
            let mut claim = template.clone();
            let template_name = template.metadata.name.clone().unwrap_or_default();
            claim.metadata = Default::default();
            claim.metadata.name = Some(claim_name(&template_name, &name, ordinal));
            claim.metadata.namespace = set.metadata.namespace.clone();
            let mut labels = template.metadata.labels.clone().unwrap_or_default();
            labels.extend(match_labels.clone());
            claim.metadata.labels = Some(labels);
            claim.metadata.annotations = template.metadata.annotations.clone();
            claim.status = None;
            claim
        })
        .collect()
}

/// The volume name each claim template binds (the template's name).
fn claim_volumes(set: &StatefulSet, ordinal: i32) -> Vec<(String, String)> {
    let name = set.metadata.name.clone().unwrap_or_default();
    set.spec
        .iter()
        .flat_map(|s| s.volume_claim_templates.iter().flatten())
        .filter_map(|t| t.metadata.name.clone())
        .map(|t| {
            let claim = claim_name(&t, &name, ordinal);
            (t, claim)
        })
        .collect()
}

/// Sets the identity labels a pod of `set` with `ordinal` carries.
pub(crate) fn set_identity_labels(labels: &mut BTreeMap<String, String>, name: &str, ordinal: i32) {
    labels.insert(POD_NAME_LABEL.into(), name.to_string());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
}

/// Whether the pod carries its identity labels.
pub(crate) fn identity_matches(pod: &Pod, ordinal: i32) -> bool {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    labels.get(POD_NAME_LABEL) == Some(&name)
        && labels.get(POD_INDEX_LABEL) == Some(&ordinal.to_string())
}

/// The revision (name) a pod was made from, from its `controller-revision-hash` label.
pub(crate) fn pod_revision(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_HASH_LABEL)
        .map(String::as_str)
}

/// The pod of `ordinal` made from `template` at `revision` (Kubernetes' `newStatefulSetPod` +
/// `setPodRevision`): the template's labels, annotations and spec, owned by the set, named
/// `<set>-<ordinal>`, hostname its name, subdomain the set's `serviceName`, identity labels,
/// and a `persistentVolumeClaim` volume for each claim template (replacing a template volume
/// of the same name).
pub(crate) fn new_pod(
    set: &StatefulSet,
    template: &PodTemplateSpec,
    ordinal: i32,
    revision: &str,
) -> Pod {
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let name = pod_name(&set_name, ordinal);
    let meta = template.metadata.clone().unwrap_or_default();
    let mut pod = Pod {
        spec: template.spec.clone(),
        ..Pod::default()
    };
    pod.metadata.name = Some(name.clone());
    pod.metadata.namespace = set.metadata.namespace.clone();
    let mut labels = meta.labels.unwrap_or_default();
    set_identity_labels(&mut labels, &name, ordinal);
    labels.insert(REVISION_HASH_LABEL.into(), revision.to_string());
    pod.metadata.labels = Some(labels);
    pod.metadata.annotations = meta.annotations;
    pod.metadata.owner_references = controller_owner_ref(set).map(|o| vec![o]);
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(name);
    spec.subdomain = set.spec.as_ref().and_then(|s| s.service_name.clone());
    let claims = claim_volumes(set, ordinal);
    if !claims.is_empty() {
        let mut volumes: Vec<Volume> = claims
            .iter()
            .map(|(volume, claim)| Volume {
                name: volume.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    read_only: None,
                }),
                ..Volume::default()
            })
            .collect();
        for volume in spec.volumes.take().unwrap_or_default() {
            if !claims.iter().any(|(name, _)| *name == volume.name) {
                volumes.push(volume);
            }
        }
        spec.volumes = Some(volumes);
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_are_parsed_only_from_canonical_names() {
        assert_eq!(ordinal_of("db", "db-0"), Some(0));
        assert_eq!(ordinal_of("db", "db-12"), Some(12));
        assert_eq!(ordinal_of("db", "db-01"), None);
        assert_eq!(ordinal_of("db", "db-x"), None);
        assert_eq!(ordinal_of("db", "dbx-1"), None);
        assert_eq!(ordinal_of("db", "db--1"), None);
        assert_eq!(ordinal_of("db-1", "db-1-2"), Some(2));
    }

    #[test]
    fn a_pod_gets_its_identity_and_claims() {
        let set: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "ns", "uid": "u1"},
            "spec": {
                "serviceName": "dbs",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{"name": "c"}],
                        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"]}}]
            }
        }))
        .expect("set");
        let template = set.spec.as_ref().expect("spec").template.clone();
        let pod = new_pod(&set, &template, 2, "db-abc");
        assert_eq!(pod.metadata.name.as_deref(), Some("db-2"));
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some("db-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("dbs"));
        let volumes = spec.volumes.as_ref().expect("volumes");
        assert_eq!(volumes.len(), 2);
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str()),
            Some("data-db-2")
        );
        assert_eq!(volumes[1].name, "tmp");
        assert!(identity_matches(&pod, 2));
        assert_eq!(pod_revision(&pod), Some("db-abc"));
        let claims = claims(&set, 2);
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data-db-2"));
        assert_eq!(
            claims[0]
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app"))
                .map(String::as_str),
            Some("db")
        );
    }
}
