//! What every backend does to an object before writing it: the metadata the store owns
//! (uid, creationTimestamp, generation, resourceVersion) and validation of names and scope.

use kube_core::kind::Registry;
use kube_core::object::{DynamicObject, now};
use kube_core::store::StoreError;
use rand::Rng;

const NAME_SUFFIX_CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Checks a name as Kubernetes does for most kinds: a DNS subdomain (lower-case alphanumerics,
/// `-` and `.`, at most 253 characters, alphanumeric at both ends).
fn validate_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "metadata.name {name:?}: must be a lower-case DNS subdomain (a-z, 0-9, '-', '.'; at most 253 characters; alphanumeric at both ends)"
        )))
    }
}

/// RBAC objects are named like `system:node` or `system:discovery`: any name that is a valid
/// path segment (Kubernetes' `ValidatePathSegmentName`).
fn validate_path_segment(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '%']) {
        return Err(StoreError::Invalid(format!(
            "metadata.name {name:?}: may not be '.' or '..' and may not contain '/' or '%'"
        )));
    }
    Ok(())
}

/// Checks kind and scope, and fills in what the store owns on create. The name is generated
/// from `generateName` when empty (`taken` says whether a candidate name is in use); the UID
/// is generated unless one is set.
pub fn prepare_create(
    object: &mut DynamicObject,
    registry: &Registry,
    revision: u64,
    taken: impl Fn(&str) -> bool,
) -> Result<(), StoreError> {
    let info = registry.get(&object.group_kind()).ok_or_else(|| {
        StoreError::Invalid(format!(
            "unknown kind {} ({})",
            object.kind, object.api_version
        ))
    })?;
    if object
        .metadata
        .resource_version
        .as_deref()
        .is_some_and(|rv| !rv.is_empty())
    {
        return Err(StoreError::Invalid(
            "metadata.resourceVersion must not be set on objects to be created".into(),
        ));
    }
    check_scope(object, info.namespaced)?;
    if object.metadata.name.as_deref().unwrap_or("").is_empty() {
        let prefix = object.metadata.generate_name.clone().unwrap_or_default();
        if prefix.is_empty() {
            return Err(StoreError::Invalid(
                "metadata.name or metadata.generateName is required".into(),
            ));
        }
        let mut rng = rand::rng();
        let name = loop {
            let suffix: String = (0..5)
                .map(|_| NAME_SUFFIX_CHARS[rng.random_range(0..NAME_SUFFIX_CHARS.len())] as char)
                .collect();
            let candidate = format!("{prefix}{suffix}");
            if !taken(&candidate) {
                break candidate;
            }
        };
        object.metadata.name = Some(name);
    }
    let name = object.metadata.name.as_deref().unwrap_or("");
    if info.group == "rbac.authorization.k8s.io" {
        validate_path_segment(name)?;
    } else {
        validate_name(name)?;
    }
    object.api_version = info.api_version();
    // A UID the caller chose is kept (the API server picks a Job's before storing it, for its
    // selector); otherwise the store picks one.
    if object.metadata.uid.as_deref().is_none_or(str::is_empty) {
        object.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
    }
    object.metadata.creation_timestamp = Some(now());
    object.metadata.generation = Some(1);
    object.metadata.resource_version = Some(revision.to_string());
    Ok(())
}

fn check_scope(object: &mut DynamicObject, namespaced: bool) -> Result<(), StoreError> {
    let ns = object.metadata.namespace.as_deref().unwrap_or("");
    if namespaced && ns.is_empty() {
        return Err(StoreError::Invalid(format!(
            "{} objects must have metadata.namespace",
            object.kind
        )));
    }
    if !namespaced {
        // Cluster-scoped kinds ignore a namespace, as the API server does.
        object.metadata.namespace = None;
    }
    Ok(())
}

/// Carries over what the store owns from the stored object, checks the optimistic-concurrency
/// precondition, bumps `generation` when `spec` changed, and stamps the new revision.
pub fn prepare_update(
    object: &mut DynamicObject,
    current: &DynamicObject,
    revision: u64,
) -> Result<(), StoreError> {
    if let Some(rv) = object
        .metadata
        .resource_version
        .as_deref()
        .filter(|rv| !rv.is_empty())
    {
        if Some(rv) != current.metadata.resource_version.as_deref() {
            return Err(StoreError::Conflict {
                kind: current.group_kind(),
                key: current.key(),
                message: format!(
                    "the object has been modified; resourceVersion {rv} is not the latest ({}); re-read and retry",
                    current.metadata.resource_version.as_deref().unwrap_or("")
                ),
            });
        }
    }
    if let Some(uid) = object.metadata.uid.as_deref().filter(|u| !u.is_empty()) {
        if Some(uid) != current.metadata.uid.as_deref() {
            return Err(StoreError::Conflict {
                kind: current.group_kind(),
                key: current.key(),
                message: format!("uid {uid} does not match the stored object"),
            });
        }
    }
    // `clone_from`: an update usually carries these already, and the strings it has are
    // reused instead of freed and allocated again.
    object.api_version.clone_from(&current.api_version);
    let (meta, stored) = (&mut object.metadata, &current.metadata);
    meta.namespace.clone_from(&stored.namespace);
    meta.uid.clone_from(&stored.uid);
    meta.creation_timestamp
        .clone_from(&stored.creation_timestamp);
    meta.generate_name.clone_from(&stored.generate_name);
    // Deletion, once started, cannot be undone by an update.
    if stored.deletion_timestamp.is_some() {
        meta.deletion_timestamp
            .clone_from(&stored.deletion_timestamp);
    }
    let generation = current.metadata.generation.unwrap_or(1);
    // Fields still shared with the stored object (a metadata-only change) are equal unread.
    let spec_changed = !object.data.shares_with(&current.data)
        && object.data.get("spec") != current.data.get("spec");
    object.metadata.generation = Some(if spec_changed {
        generation + 1
    } else {
        generation
    });
    object.metadata.resource_version = Some(revision.to_string());
    Ok(())
}
