//! ControllerRevisions: the history of a workload's pod template, as Kubernetes'
//! `pkg/controller/history` keeps it for StatefulSets and DaemonSets.
//!
//! Each distinct template is one ControllerRevision owned (as controller) by the workload,
//! labelled with the template's labels (so `kubectl rollout history` finds it by the
//! workload's selector) and `controller-revision-hash`, named `<workload>-<hash>`, numbered by
//! `revision`. Its `data` is the strategic-merge patch that restores the template,
//! `{"spec": {"template": {..., "$patch": "replace"}}}`: `kubectl rollout undo` sends it back
//! as it is. Going back to an older template does not create a revision: the old one gets the
//! next number.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube_core::object::{GroupKind, controller_ref};
use kube_core::store::{Preconditions, StoreError};
use kube_core::typed::Api;
use serde_json::{Value, json};

use crate::index::IndexView;

/// The label naming the revision (StatefulSet pods: the revision's name; DaemonSet pods and
/// every ControllerRevision: its hash).
pub(crate) use crate::daemonset::REVISION_HASH_LABEL;

/// Kubernetes' alphabet for hash strings: no vowels (no words), no look-alikes.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Longest name prefix: the hash (at most 10 characters) and the dash must still fit in 253.
const MAX_PREFIX: usize = 223;

/// The kind of the revisions.
pub(crate) fn kind() -> GroupKind {
    GroupKind::new("apps", "ControllerRevision")
}

/// The revision data for `template`: the patch that puts it back.
pub(crate) fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut template = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut template {
        map.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// The template a revision holds (`None` if its data is not a template patch).
pub(crate) fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision
        .data
        .as_ref()?
        .0
        .get("spec")?
        .get("template")?
        .clone();
    if let Value::Object(map) = &mut template {
        map.remove("$patch");
    }
    serde_json::from_value(template).ok()
}

/// FNV-1a (32 bits), as Kubernetes hashes revisions and templates.
fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The hash of a revision's data, salted with the collision count (Kubernetes'
/// `HashControllerRevision`), encoded as Kubernetes' `SafeEncodeString`.
pub(crate) fn data_hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(data).unwrap_or_default();
    if let Some(count) = collision_count {
        bytes.extend_from_slice(count.to_string().as_bytes());
    }
    fnv1a32(&bytes)
        .to_string()
        .bytes()
        .map(|d| char::from(ALPHABET[usize::from(d) % ALPHABET.len()]))
        .collect()
}

/// `<parent>-<hash>`, the parent's name cut so the whole stays a valid name.
pub(crate) fn revision_name(parent: &str, hash: &str) -> String {
    let prefix: String = parent.chars().take(MAX_PREFIX).collect();
    format!("{prefix}-{hash}")
}

/// The revision number (0 if unset).
fn number(revision: &ControllerRevision) -> i64 {
    revision.revision
}

/// The revisions controlled by the owner with `uid`, oldest (lowest number) first.
pub(crate) fn owned(index: &IndexView, uid: &str) -> Vec<ControllerRevision> {
    let mut revisions: Vec<ControllerRevision> = index
        .controlled_by(uid)
        .iter()
        .filter_map(|o| o.to_typed::<ControllerRevision>().ok())
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .filter(|r| controller_ref(&r.metadata).is_some_and(|o| o.uid == uid))
        .collect();
    revisions.sort_by(|a, b| {
        (number(a), &a.metadata.creation_timestamp, &a.metadata.name).cmp(&(
            number(b),
            &b.metadata.creation_timestamp,
            &b.metadata.name,
        ))
    });
    revisions
}

/// What a workload's current template should be recorded as.
pub(crate) struct Wanted<'a> {
    /// The workload's name (the revisions' name prefix).
    pub(crate) parent: &'a str,
    /// The controller owner reference to the workload.
    pub(crate) owner: OwnerReference,
    /// The template's labels.
    pub(crate) labels: BTreeMap<String, String>,
    /// The revision data ([`template_patch`]).
    pub(crate) data: Value,
    /// The hash naming the revision for a collision count (StatefulSets hash the data,
    /// DaemonSets the template).
    pub(crate) hash: &'a (dyn Fn(Option<i32>) -> String + Send + Sync),
}

impl std::fmt::Debug for Wanted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wanted")
            .field("parent", &self.parent)
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

fn same_data(revision: &ControllerRevision, data: &Value) -> bool {
    revision.data.as_ref().is_some_and(|d| &d.0 == data)
}

/// The revision recording `wanted`, given the existing `revisions` (oldest first), as
/// Kubernetes' `getStatefulSetRevisions` / the DaemonSet controller's `constructHistory`:
/// the newest revision if it holds the same data; else an older one with the same data,
/// renumbered as the newest; else a new revision (`collision_count` grows while its name is
/// taken by different data). Returns the revision; `revisions` is updated to match.
pub(crate) async fn record(
    api: &Api<ControllerRevision>,
    revisions: &mut Vec<ControllerRevision>,
    wanted: &Wanted<'_>,
    collision_count: &mut Option<i32>,
) -> Result<ControllerRevision, StoreError> {
    let next = revisions.last().map_or(0, number) + 1;
    if let Some(last) = revisions.last() {
        if same_data(last, &wanted.data) {
            return Ok(last.clone());
        }
    }
    if let Some(i) = revisions.iter().rposition(|r| same_data(r, &wanted.data)) {
        // A rollback: the old revision becomes the newest.
        let mut renumbered = revisions.remove(i);
        renumbered.revision = next;
        let renumbered = api.replace(&renumbered).await?;
        revisions.push(renumbered.clone());
        return Ok(renumbered);
    }
    loop {
        let hash = (wanted.hash)(*collision_count);
        let mut labels = wanted.labels.clone();
        labels.insert(REVISION_HASH_LABEL.into(), hash.clone());
        let mut revision = ControllerRevision {
            data: Some(RawExtension(wanted.data.clone())),
            revision: next,
            ..ControllerRevision::default()
        };
        revision.metadata.name = Some(revision_name(wanted.parent, &hash));
        revision.metadata.labels = Some(labels);
        revision.metadata.owner_references = Some(vec![wanted.owner.clone()]);
        match api.create(&revision).await {
            Ok(created) => {
                revisions.push(created.clone());
                return Ok(created);
            }
            Err(e) if e.is_already_exists() => {
                let name = revision.metadata.name.clone().unwrap_or_default();
                let existing = api.get(&name).await?;
                let ours =
                    controller_ref(&existing.metadata).is_some_and(|o| o.uid == wanted.owner.uid);
                if ours && same_data(&existing, &wanted.data) {
                    // Ours, not yet in the cache.
                    revisions.retain(|r| r.metadata.name != existing.metadata.name);
                    revisions.push(existing.clone());
                    return Ok(existing);
                }
                // A hash collision: salt the hash and try the next name.
                *collision_count = Some(collision_count.unwrap_or(0).saturating_add(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Deletes the oldest revisions no pod, current or update revision uses (`live` names),
/// keeping at most `limit` of them, as Kubernetes' `truncateHistory`.
pub(crate) async fn truncate(
    api: &Api<ControllerRevision>,
    revisions: &[ControllerRevision],
    live: &HashSet<String>,
    limit: usize,
) -> Result<(), StoreError> {
    let history: Vec<&ControllerRevision> = revisions
        .iter()
        .filter(|r| {
            r.metadata
                .name
                .as_ref()
                .is_none_or(|name| !live.contains(name))
        })
        .collect();
    let excess = history.len().saturating_sub(limit);
    for revision in &history[..excess] {
        let name = revision.metadata.name.clone().unwrap_or_default();
        let pre = Preconditions::uid(revision.metadata.uid.clone().unwrap_or_default());
        match api.delete(&name, &pre).await {
            Ok(_) => tracing::debug!(revision = %name, "deleted old revision"),
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_is_a_replacing_patch_of_the_template() {
        let template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "db"}},
            "spec": {"containers": [{"name": "c", "image": "db:1"}]}
        }))
        .expect("template");
        let data = template_patch(&template);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert_eq!(
            data["spec"]["template"]["spec"]["containers"][0]["image"],
            "db:1"
        );
        let revision = ControllerRevision {
            data: Some(RawExtension(data.clone())),
            ..ControllerRevision::default()
        };
        assert_eq!(template_of(&revision), Some(template));
        assert_ne!(data_hash(&data, Some(0)), data_hash(&data, Some(1)));
        assert!(
            data_hash(&data, None)
                .bytes()
                .all(|b| ALPHABET.contains(&b))
        );
        assert_eq!(revision_name("db", "abc"), "db-abc");
        assert_eq!(revision_name(&"x".repeat(300), "h").len(), MAX_PREFIX + 2);
    }
}
