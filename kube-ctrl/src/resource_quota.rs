//! [`ResourceQuotaController`]: keeps each ResourceQuota's `status.hard` equal to its
//! `spec.hard` and `status.used` equal to what its namespace holds, as kube-controller-
//! manager's resource quota controller does.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::kind::Registry;
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::quota::{self, Amount, ResourceList};
use kube_core::store::{ListOptions, StoreError};
use serde_json::Value;

/// How often every quota is recounted even if nothing told it to (Kubernetes'
/// `--resource-quota-sync-period` default).
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(300);

/// The kinds whose changes can give quota back, watched for deletions and finished pods.
const REPLENISHED: [(&str, &str); 6] = [
    ("", "Pod"),
    ("", "Service"),
    ("", "PersistentVolumeClaim"),
    ("", "ConfigMap"),
    ("", "Secret"),
    ("", "ReplicationController"),
];

/// Counts usage for ResourceQuotas.
///
/// A quota is recounted when its `spec.hard` differs from `status.hard` (new or edited),
/// when an object in its namespace is deleted or a pod finishes (usage given back), and
/// every resync period. Creations are not recounted: the API server's quota admission
/// charged them to `status.used` already, and a recount racing a create it just charged
/// (the quota written, the object not yet) would hand the unit out twice, which is why
/// Kubernetes' controller does not react to them either.
///
/// ```
/// use kube_ctrl::{ControllerManager, ResourceQuotaController};
/// let manager = ControllerManager::new().with(ResourceQuotaController::new());
/// assert!(format!("{manager:?}").contains("resourcequota"));
/// ```
#[derive(Debug, Clone)]
pub struct ResourceQuotaController {
    resync: Duration,
    counted: Arc<Mutex<HashMap<ObjectKey, Instant>>>,
    replenished: Arc<Mutex<HashSet<ObjectKey>>>,
}

impl Default for ResourceQuotaController {
    fn default() -> Self {
        Self::new()
    }
}

impl ResourceQuotaController {
    /// A controller recounting every [`DEFAULT_RESYNC`].
    pub fn new() -> Self {
        Self::with_resync(DEFAULT_RESYNC)
    }

    /// A controller recounting every quota at least every `resync`.
    pub fn with_resync(resync: Duration) -> Self {
        Self {
            resync,
            counted: Arc::default(),
            replenished: Arc::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a change gives quota back: the object is gone, or a pod finished or is going.
fn gives_back(kind: &GroupKind, object: &DynamicObject, ctx: &ControllerContext) -> bool {
    if ctx.informers.informer(kind).get(&object.key()).is_none() {
        return true;
    }
    if kind.kind != "Pod" {
        // A Service may stop being a NodePort or LoadBalancer, a claim may shrink: cheap to
        // recount, and rare.
        return kind.kind == "Service" || kind.kind == "PersistentVolumeClaim";
    }
    let phase = object.field("status.phase");
    object.metadata.deletion_timestamp.is_some()
        || matches!(
            phase.as_ref().and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        )
}

/// Whether two lists hold the same amounts (however they are written).
fn same_amounts(a: &ResourceList, b: &ResourceList) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| w.milli() == v.milli()))
}

/// The kinds a quota's resources are counted from: (group, plural) and its kind.
fn counted_kinds(hard: &ResourceList) -> Vec<(String, String, GroupKind)> {
    let registry = Registry::builtin();
    let mut out: Vec<(String, String, GroupKind)> = Vec::new();
    let mut add = |group: &str, plural: &str| {
        if out.iter().any(|(g, p, _)| g == group && p == plural) {
            return;
        }
        if let Some(info) = registry.by_plural(group, plural) {
            out.push((group.to_string(), plural.to_string(), info.group_kind()));
        }
    };
    for name in hard.keys() {
        if let Some(resource) = name.strip_prefix("count/") {
            let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
            add(group, plural);
        }
    }
    for plural in [
        "pods",
        "services",
        "persistentvolumeclaims",
        "configmaps",
        "secrets",
        "replicationcontrollers",
        "resourcequotas",
    ] {
        add("", plural);
    }
    out
}

/// What the namespace holds against the quota's `hard` resources (all of them, zero when
/// nothing is charged).
async fn count(
    quota_object: &DynamicObject,
    hard: &ResourceList,
    ctx: &ControllerContext,
) -> Result<ResourceList, StoreError> {
    let namespace = quota_object.metadata.namespace.clone().unwrap_or_default();
    let selectors = quota::scope_selectors(quota_object);
    let mut used: ResourceList = hard.keys().map(|k| (k.clone(), Amount::count(0))).collect();
    for (group, plural, kind) in counted_kinds(hard) {
        let matching = quota::matching_resources(&group, &plural, hard.keys());
        if matching.is_empty() {
            continue;
        }
        // From the store, not a cache: a recount must not miss what was just admitted.
        let objects = ctx
            .store
            .list(&kind, Some(&namespace), &ListOptions::default())
            .await?;
        for object in &objects.items {
            if !quota::matches_scopes(&selectors, &group, &plural, object) {
                continue;
            }
            let usage = quota::usage(&group, &plural, object);
            used = quota::add(&used, &quota::mask(&usage, &matching));
        }
    }
    Ok(used)
}

#[async_trait::async_trait]
impl Controller for ResourceQuotaController {
    fn name(&self) -> &str {
        "resourcequota"
    }

    fn watches(&self) -> Watches {
        REPLENISHED.iter().fold(
            Watches::primary(GroupKind::from_static("", "ResourceQuota")),
            |w, (g, k)| w.related(GroupKind::from_static(g, k)),
        )
    }

    fn map_related(
        &self,
        kind: &GroupKind,
        object: &DynamicObject,
        ctx: &ControllerContext,
    ) -> Vec<ObjectKey> {
        let Some(namespace) = object.metadata.namespace.as_deref() else {
            return Vec::new();
        };
        if !gives_back(kind, object, ctx) {
            return Vec::new();
        }
        let keys: Vec<ObjectKey> = ctx
            .informers
            .informer(&GroupKind::from_static("", "ResourceQuota"))
            .list_namespace(namespace)
            .iter()
            .map(|q| q.key())
            .collect();
        lock(&self.replenished).extend(keys.iter().cloned());
        keys
    }

    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        let kind = GroupKind::from_static("", "ResourceQuota");
        let mut object = match ctx.store.get(&kind, key).await {
            Ok(object) => object,
            Err(e) if e.is_not_found() => {
                lock(&self.counted).remove(key);
                lock(&self.replenished).remove(key);
                return Ok(Action::await_change());
            }
            Err(e) => return Err(e.into()),
        };
        let hard = quota::parse_list(object.data.get("spec").and_then(|s| s.get("hard")));
        let status = object.data.get("status");
        let status_hard = quota::parse_list(status.and_then(|s| s.get("hard")));
        let last = lock(&self.counted).get(key).copied();
        let due = last.is_none_or(|at| at.elapsed() >= self.resync);
        let replenished = lock(&self.replenished).remove(key);
        if same_amounts(&status_hard, &hard) && !due && !replenished {
            let waited = last.map_or(Duration::ZERO, |at| at.elapsed());
            return Ok(Action::requeue(self.resync.saturating_sub(waited)));
        }
        let used = match count(&object, &hard, ctx).await {
            Ok(used) => used,
            Err(e) => {
                // Recount on the retry whatever the reason was.
                lock(&self.replenished).insert(key.clone());
                return Err(e.into());
            }
        };
        let current_used = quota::parse_list(status.and_then(|s| s.get("used")));
        if !same_amounts(&status_hard, &hard) || !same_amounts(&current_used, &used) {
            let spec_hard = object
                .data
                .get("spec")
                .and_then(|s| s.get("hard"))
                .cloned()
                .unwrap_or(Value::Object(Default::default()));
            let status = object
                .data
                .entry("status".to_string())
                .or_insert_with(|| Value::Object(Default::default()));
            if let Value::Object(status) = status {
                status.insert("hard".into(), spec_hard);
                status.insert("used".into(), quota::list_to_json(&used));
            }
            // Conditional on the version read: an admission charging meanwhile wins, and the
            // recount runs again on the new state.
            if let Err(e) = ctx.store.update(object).await {
                lock(&self.replenished).insert(key.clone());
                return Err(e.into());
            }
        }
        lock(&self.counted).insert(key.clone(), Instant::now());
        Ok(Action::requeue(self.resync))
    }
}
