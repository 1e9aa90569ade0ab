//! [`DisruptionController`]: keeps each PodDisruptionBudget's status (healthy pods, how many
//! must stay, how many may go) as kube-controller-manager's disruption controller does, so
//! the API server's `pods/eviction` can honour it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey, now};
use kube_core::selector::Selector;
use serde_json::{Map, Value, json};

use crate::events::{EventRecorder, EventType};

/// How long a pod the eviction subresource marked as disrupted is not counted as healthy
/// while it is expected to go (Kubernetes' `DeletionTimeout`).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// Computes PodDisruptionBudget status: `currentHealthy` (Ready pods not being deleted and
/// not just evicted), `desiredHealthy` (from `minAvailable`, or the scale less
/// `maxUnavailable`; percentages of the scale of the pods' controllers), `expectedPods`,
/// `disruptionsAllowed`, `disruptedPods` (evictions not yet carried out, for at most
/// [`DELETION_TIMEOUT`]), `observedGeneration` and the `DisruptionAllowed` condition.
///
/// ```
/// use kube_ctrl::{ControllerManager, DisruptionController};
/// let manager = ControllerManager::new().with(DisruptionController::new());
/// assert!(format!("{manager:?}").contains("disruption"));
/// ```
#[derive(Debug, Clone)]
pub struct DisruptionController {
    events: EventRecorder,
}

impl Default for DisruptionController {
    fn default() -> Self {
        Self::new()
    }
}

impl DisruptionController {
    /// A disruption controller.
    pub fn new() -> Self {
        Self {
            events: EventRecorder::new("controllermanager"),
        }
    }
}

const PDB: GroupKind = GroupKind::from_static("policy", "PodDisruptionBudget");
/// Owners whose scale counts as a budget's expected pods.
const SCALED: [(&str, &str); 4] = [
    ("apps", "ReplicaSet"),
    ("apps", "Deployment"),
    ("apps", "StatefulSet"),
    ("", "ReplicationController"),
];

fn selector_of(pdb: &DynamicObject) -> Option<Selector> {
    let selector = pdb.data.get("spec")?.get("selector")?;
    serde_json::from_value(selector.clone())
        .ok()
        .and_then(|s| Selector::from_label_selector(&s).ok())
}

fn ready(pod: &DynamicObject) -> bool {
    pod.data
        .get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// `intstr.GetScaledValueFromIntOrPercent` rounding up.
fn scaled(value: &Value, total: i64) -> Result<i64, String> {
    match value {
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("invalid value {n}")),
        Value::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value \"{s}\""))?;
            Ok((percent * total + 99) / 100)
        }
        other => Err(format!("invalid value {other}")),
    }
}

/// The summed scale of the controllers owning `pods`; an error names a pod without one.
async fn expected_scale(
    pods: &[DynamicObject],
    ctx: &ControllerContext,
) -> Result<(i64, Vec<String>), ReconcileError> {
    // By the UID of the scaled object (a Deployment for its ReplicaSets' pods), so each
    // scale counts once; `resolved` holds the owners already looked up.
    let mut scales: BTreeMap<String, i64> = BTreeMap::new();
    let mut resolved: BTreeSet<String> = BTreeSet::new();
    let mut unmanaged = Vec::new();
    for pod in pods {
        let Some(owner) = pod.controller_ref() else {
            unmanaged.push(pod.metadata.name.clone().unwrap_or_default());
            continue;
        };
        if resolved.contains(&owner.uid) {
            continue;
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let mut kind = GroupKind::from_api_version(&owner.api_version, &owner.kind);
        let mut name = owner.name.clone();
        let mut found = None;
        // A ReplicaSet a Deployment controls scales with its Deployment.
        for _ in 0..2 {
            if !SCALED
                .iter()
                .any(|(g, k)| kind == GroupKind::from_static(g, k))
            {
                break;
            }
            let key = ObjectKey::namespaced(namespace.clone(), name.clone());
            let object = match ctx.store.get(&kind, &key).await {
                Ok(o) => o,
                Err(e) if e.is_not_found() => break,
                Err(e) => return Err(e.into()),
            };
            match object.controller_ref() {
                Some(up) if kind.kind == "ReplicaSet" && up.kind == "Deployment" => {
                    kind = GroupKind::from_api_version(&up.api_version, &up.kind);
                    name = up.name.clone();
                }
                _ => {
                    let replicas = object
                        .field("spec.replicas")
                        .and_then(|r| r.as_i64())
                        .unwrap_or(1);
                    found = Some((object.metadata.uid.clone().unwrap_or_default(), replicas));
                    break;
                }
            }
        }
        let Some((uid, replicas)) = found else {
            return Err(ReconcileError::Invalid(format!(
                "found no controllers for pod \"{}\"",
                pod.metadata.name.clone().unwrap_or_default()
            )));
        };
        resolved.insert(owner.uid.clone());
        scales.insert(uid, replicas);
    }
    Ok((scales.values().sum(), unmanaged))
}

/// `(expectedPods, desiredHealthy, unmanaged pods)`.
async fn expected_and_desired(
    pdb: &DynamicObject,
    pods: &[DynamicObject],
    ctx: &ControllerContext,
) -> Result<(i64, i64, Vec<String>), ReconcileError> {
    let spec = pdb.data.get("spec").cloned().unwrap_or(Value::Null);
    if let Some(max) = spec.get("maxUnavailable").filter(|v| !v.is_null()) {
        let (expected, unmanaged) = expected_scale(pods, ctx).await?;
        let max = scaled(max, expected).map_err(ReconcileError::Invalid)?;
        return Ok((expected, (expected - max).max(0), unmanaged));
    }
    match spec.get("minAvailable") {
        Some(Value::Number(n)) => Ok((pods.len() as i64, n.as_i64().unwrap_or(0), Vec::new())),
        Some(min @ Value::String(_)) => {
            let (expected, unmanaged) = expected_scale(pods, ctx).await?;
            let desired = scaled(min, expected).map_err(ReconcileError::Invalid)?;
            Ok((expected, desired, unmanaged))
        }
        _ => Ok((0, 0, Vec::new())),
    }
}

/// Evictions still pending: pods in `disruptedPods` not yet being deleted and marked less
/// than [`DELETION_TIMEOUT`] ago; and when the earliest of them expires.
fn pending_disruptions(
    pdb: &DynamicObject,
    pods: &[DynamicObject],
) -> (Map<String, Value>, Option<Duration>) {
    let mut kept = Map::new();
    let mut recheck: Option<Duration> = None;
    let marked = pdb
        .data
        .get("status")
        .and_then(|s| s.get("disruptedPods"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let now_secs = now().0.as_second();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(at) = marked.get(&name) else {
            continue;
        };
        let Some(secs) = at
            .as_str()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map(|t| t.as_second())
        else {
            continue;
        };
        let expires = secs + DELETION_TIMEOUT.as_secs() as i64;
        if expires > now_secs {
            let left = Duration::from_secs((expires - now_secs) as u64);
            recheck = Some(recheck.map_or(left, |r| r.min(left)));
            kept.insert(name, at.clone());
        }
    }
    (kept, recheck)
}

/// The `DisruptionAllowed` condition, its transition time kept while its status holds.
fn condition(
    pdb: &DynamicObject,
    allowed: bool,
    reason: &str,
    message: &str,
    generation: i64,
) -> Value {
    let status = if allowed { "True" } else { "False" };
    let previous = pdb
        .data
        .get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == "DisruptionAllowed")
                .cloned()
        });
    let since = match previous {
        Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
        _ => json!(now()),
    };
    json!({"type": "DisruptionAllowed", "status": status, "reason": reason, "message": message,
        "observedGeneration": generation, "lastTransitionTime": since})
}

/// Writes `status` if it differs from the stored one (ignoring condition times).
async fn write_status(
    mut pdb: DynamicObject,
    status: Value,
    ctx: &ControllerContext,
) -> Result<(), ReconcileError> {
    if pdb.data.get("status") == Some(&status) {
        return Ok(());
    }
    pdb.data.insert("status".into(), status);
    ctx.store.update(pdb).await?;
    Ok(())
}

#[async_trait::async_trait]
impl Controller for DisruptionController {
    fn name(&self) -> &str {
        "disruption"
    }

    fn watches(&self) -> Watches {
        let mut watches = Watches::primary(PDB).related(GroupKind::POD);
        for (g, k) in SCALED {
            watches = watches.related(GroupKind::from_static(g, k));
        }
        watches
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
        let budgets = ctx.informers.informer(&PDB).list_namespace(namespace);
        budgets
            .iter()
            .filter(|pdb| {
                // A scale change may matter to any budget of the namespace; a pod only to
                // the budgets selecting it.
                *kind != GroupKind::POD
                    || selector_of(pdb).is_some_and(|s| s.matches_object(object))
            })
            .map(|pdb| pdb.key())
            .collect()
    }

    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        let pdb = match ctx.store.get(&PDB, key).await {
            Ok(pdb) => pdb,
            Err(e) if e.is_not_found() => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        };
        let namespace = key.namespace.clone().unwrap_or_default();
        let generation = pdb.metadata.generation.unwrap_or(0);
        let pods: Vec<DynamicObject> = match selector_of(&pdb) {
            Some(selector) => ctx
                .informers
                .informer(&GroupKind::POD)
                .list_namespace(&namespace)
                .iter()
                .filter(|p| selector.matches_object(p))
                .map(|p| (**p).clone())
                .collect(),
            None => Vec::new(),
        };
        let typed = pdb.to_typed::<PodDisruptionBudget>().ok();
        if let (true, Some(typed)) = (pods.is_empty(), &typed) {
            self.events.record_detached(
                &ctx.store,
                typed,
                EventType::Normal,
                "NoPods",
                "No matching pods found",
            );
        }
        let (expected, desired, unmanaged) = match expected_and_desired(&pdb, &pods, ctx).await {
            Ok(found) => found,
            Err(ReconcileError::Invalid(why)) => {
                // Fail safe: nothing may be disrupted while the budget cannot be computed.
                let mut status = pdb.data.get("status").cloned().unwrap_or_else(|| json!({}));
                status["disruptionsAllowed"] = json!(0);
                status["observedGeneration"] = json!(generation);
                status["conditions"] =
                    json!([condition(&pdb, false, "SyncFailed", &why, generation)]);
                write_status(pdb, status, ctx).await?;
                return Err(ReconcileError::Invalid(why));
            }
            Err(e) => return Err(e),
        };
        if let (false, Some(typed)) = (unmanaged.is_empty(), &typed) {
            self.events.record_detached(&ctx.store, typed, EventType::Warning, "UnmanagedPods",
                "Pods selected by this PodDisruptionBudget were found to be unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value.");
        }
        let (disrupted, recheck) = pending_disruptions(&pdb, &pods);
        let healthy = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| !disrupted.contains_key(p.metadata.name.as_deref().unwrap_or_default()))
            .filter(|p| ready(p))
            .count() as i64;
        let mut allowed = healthy - desired;
        if expected <= 0 || allowed <= 0 {
            allowed = 0;
        }
        let reason = if allowed > 0 {
            "SufficientPods"
        } else {
            "InsufficientPods"
        };
        let mut status = json!({
            "observedGeneration": generation,
            "disruptionsAllowed": allowed,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
            "conditions": [condition(&pdb, allowed > 0, reason, "", generation)],
        });
        if !disrupted.is_empty() {
            status["disruptedPods"] = Value::Object(disrupted);
        }
        write_status(pdb, status, ctx).await?;
        Ok(match recheck {
            Some(after) => Action::requeue(after),
            None => Action::await_change(),
        })
    }
}
