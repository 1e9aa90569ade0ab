//! Kubernetes' DefaultStorageClass admission: a new PersistentVolumeClaim that names no
//! `storageClassName` gets the default StorageClass (annotated
//! `storageclass.kubernetes.io/is-default-class: "true"`; of several, the newest, then the
//! first by name). A claim with `storageClassName: ""` asks for no class and is left alone.

use kube_core::object::{DynamicObject, GroupKind};
use kube_core::store::{ListOptions, Store, StoreError};
use serde_json::{Value, json};

/// The annotation marking the default class.
const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

/// Sets the default class on a new claim without one.
pub(crate) async fn admit_claim(
    store: &dyn Store,
    object: &mut DynamicObject,
) -> Result<(), StoreError> {
    if object.kind != "PersistentVolumeClaim" || !object.group_kind().group.is_empty() {
        return Ok(());
    }
    let named = object
        .data
        .get("spec")
        .and_then(|s| s.get("storageClassName"))
        .is_some_and(|c| !c.is_null());
    if named {
        return Ok(());
    }
    let classes = store
        .list(
            &GroupKind::from_static("storage.k8s.io", "StorageClass"),
            None,
            &ListOptions::default(),
        )
        .await?;
    let default = classes
        .items
        .iter()
        .filter(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS))
                .is_some_and(|v| v == "true")
        })
        .max_by(|a, b| {
            let at = |c: &DynamicObject| c.metadata.creation_timestamp.as_ref().map(|t| t.0);
            at(a)
                .cmp(&at(b))
                .then_with(|| b.metadata.name.cmp(&a.metadata.name))
        });
    let Some(name) = default.and_then(|c| c.metadata.name.clone()) else {
        return Ok(());
    };
    let spec = object.data.entry("spec").or_insert_with(|| json!({}));
    if let Value::Object(spec) = spec {
        spec.insert("storageClassName".into(), Value::String(name));
    }
    Ok(())
}
