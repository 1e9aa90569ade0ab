//! The admission plugins that read other objects, in Kubernetes' order: the mutating ones
//! (LimitRanger, Priority) and then the validating ones (Priority's PriorityClass check,
//! ResourceQuota last, so it charges only what everything else admitted).

use kube_core::kind::KindInfo;
use kube_core::object::DynamicObject;
use kube_core::store::Store;

use super::refused::Refused;
use super::{limit_range, priority, resource_quota};

/// Runs the plugins on a new object; with `dry_run` nothing is charged.
pub(crate) async fn admit_create(
    store: &dyn Store,
    info: &KindInfo,
    object: &mut DynamicObject,
    dry_run: bool,
) -> Result<(), Refused> {
    limit_range::admit(store, object).await?;
    priority::admit_pod(store, object).await?;
    priority::validate_class(store, object).await?;
    resource_quota::admit(store, info, object, None, dry_run).await
}

/// Runs the plugins on an update of `old` (the main resource, not `status`).
pub(crate) async fn admit_update(
    store: &dyn Store,
    info: &KindInfo,
    object: &mut DynamicObject,
    old: &DynamicObject,
    dry_run: bool,
) -> Result<(), Refused> {
    if object.kind == "PersistentVolumeClaim" {
        limit_range::admit(store, object).await?;
    }
    priority::validate_class(store, object).await?;
    resource_quota::admit(store, info, object, Some(old), dry_run).await
}

/// The name an admission error names: the object's, else its `generateName`.
pub(crate) fn shown_name(object: &DynamicObject) -> String {
    object
        .metadata
        .name
        .clone()
        .or_else(|| object.metadata.generate_name.clone())
        .unwrap_or_default()
}
