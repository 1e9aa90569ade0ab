//! [`ReplicaSetController`]: keeps `spec.replicas` pods of a ReplicaSet's template running.
//!
//! The same reconcile serves ReplicationControllers ([`crate::ReplicationControllerController`]),
//! as Kubernetes' replication controller is its ReplicaSet controller over a conversion: the
//! kinds differ only in their selector (a label map instead of a `LabelSelector`).

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{GroupKind, ObjectKey, controller_owner_ref, controller_ref};
use kube_core::selector::Selector;
use kube_core::store::Preconditions;
use kube_core::typed::{Api, Resource};

use crate::events::{EventRecorder, EventType};
use crate::expectations::Expectations;
use crate::index::OwnerIndex;
use crate::pods::{availability, is_active, is_ready, phase};

/// Most pods created or deleted in one reconcile; the rest follow in the next ones, so one
/// huge scale-up cannot monopolize the store.
const BURST: usize = 500;

/// Reconciles ReplicaSets: creates pods from the template or deletes surplus pods until the
/// number of active pods equals `spec.replicas`, adopts matching orphan pods, and reports
/// `status` (replicas, ready, available — ready for `spec.minReadySeconds` — fully labeled,
/// observed generation).
///
/// It counts pods from the shared cache, and acts for a ReplicaSet only once the cache shows
/// the pods it last created and deleted (expectations, as Kubernetes), so it never creates or
/// deletes twice.
#[derive(Debug, Clone)]
pub struct ReplicaSetController {
    inner: Replicas,
}

impl Default for ReplicaSetController {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplicaSetController {
    /// A ReplicaSet controller.
    pub fn new() -> Self {
        Self {
            inner: Replicas::new("replicaset-controller"),
        }
    }
}

/// What the reconcile needs of a kind that keeps replicas of a pod template: ReplicaSet and
/// ReplicationController.
pub(crate) trait Replicated: Resource + std::fmt::Debug {
    /// `spec.replicas` (default 1), `spec.minReadySeconds`, the template and the selector
    /// (`None` if the object has no spec).
    fn replica_spec(&self) -> Option<ReplicaSpec>;
    /// The status as a ReplicaSet's (the two kinds' statuses have the same fields).
    fn replica_status(&self) -> ReplicaSetStatus;
    /// Sets the status from a ReplicaSet's.
    fn set_replica_status(&mut self, status: ReplicaSetStatus);
}

/// A replicated kind's spec, in the ReplicaSet's terms.
#[derive(Debug)]
pub(crate) struct ReplicaSpec {
    pub(crate) replicas: i32,
    pub(crate) min_ready_seconds: i32,
    pub(crate) template: Option<PodTemplateSpec>,
    pub(crate) selector: Result<Selector, String>,
}

impl Replicated for ReplicaSet {
    fn replica_spec(&self) -> Option<ReplicaSpec> {
        let spec = self.spec.as_ref()?;
        Some(ReplicaSpec {
            replicas: spec.replicas.unwrap_or(1),
            min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
            template: spec.template.clone(),
            selector: Selector::from_label_selector(&spec.selector).map_err(|e| e.to_string()),
        })
    }

    fn replica_status(&self) -> ReplicaSetStatus {
        self.status.clone().unwrap_or_default()
    }

    fn set_replica_status(&mut self, status: ReplicaSetStatus) {
        self.status = Some(status);
    }
}

/// The reconcile shared by the ReplicaSet and ReplicationController controllers.
#[derive(Debug, Clone)]
pub(crate) struct Replicas {
    events: EventRecorder,
    expectations: Arc<Expectations>,
    pods: Arc<OwnerIndex>,
}

impl Replicas {
    pub(crate) fn new(component: &str) -> Self {
        Self {
            events: EventRecorder::new(component),
            expectations: Arc::default(),
            pods: Arc::new(OwnerIndex::new(GroupKind::POD)),
        }
    }

    pub(crate) async fn reconcile<K: Replicated>(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        let Some(namespace) = key.namespace.as_deref() else {
            return Ok(Action::await_change());
        };
        let sets: Api<K> = Api::namespaced(ctx.store.clone(), namespace);
        let pods: Api<Pod> = Api::namespaced(ctx.store.clone(), namespace);
        let Some(rs) = sets.get_opt(&key.name).await? else {
            // Deleted: its pods are the garbage collector's.
            self.expectations.forget(key);
            return Ok(Action::await_change());
        };
        if rs.metadata().deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let spec = rs
            .replica_spec()
            .ok_or_else(|| invalid::<K>(key, "spec is required"))?;
        let selector = spec.selector.clone().map_err(|e| invalid::<K>(key, e))?;
        if selector.is_empty() {
            return Err(invalid::<K>(key, "spec.selector must not be empty"));
        }
        let template_labels = spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        if !selector.matches(&template_labels) {
            return Err(invalid::<K>(
                key,
                "spec.selector does not match spec.template labels",
            ));
        }
        let uid = rs.metadata().uid.clone().unwrap_or_default();

        // Pods come from the shared cache, found through the owner index (never a scan of the
        // namespace); our own recent writes must show there first.
        let index = self.pods.view(&ctx.informers);
        if !self.expectations.satisfied(key, &index) {
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
        let mut owned = Vec::new();
        let mut claims_changed = false;
        for object in index.controlled_by(&uid) {
            let Ok(mut pod) = object.to_typed::<Pod>() else {
                continue;
            };
            if controller_ref(&pod.metadata).is_none_or(|o| o.uid != uid) {
                continue;
            }
            if selector.matches_object(&object) {
                owned.push(pod);
            } else if pod.metadata.deletion_timestamp.is_none() {
                // Its labels stopped matching: release it (drop our owner reference), as
                // Kubernetes' ClaimPods does; it lives on as an orphan.
                if let Some(refs) = pod.metadata.owner_references.as_mut() {
                    refs.retain(|r| r.uid != uid);
                }
                match pods.replace(&pod).await {
                    Ok(_) => claims_changed = true,
                    Err(e) if e.is_conflict() || e.is_not_found() => claims_changed = true,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let orphans: Vec<Pod> = index
            .uncontrolled(Some(namespace))
            .into_iter()
            .filter(|p| selector.matches_object(p))
            .filter_map(|p| p.to_typed::<Pod>().ok())
            .collect();
        for mut pod in orphans {
            if controller_ref(&pod.metadata).is_some() || pod.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            // Adopt the orphan: it matches our selector and nobody controls it.
            if let Some(owner) = controller_owner_ref(&rs) {
                pod.metadata
                    .owner_references
                    .get_or_insert_with(Vec::new)
                    .push(owner);
                match pods.replace(&pod).await {
                    Ok(adopted) => {
                        claims_changed = true;
                        owned.push(adopted);
                    }
                    Err(e) if e.is_conflict() || e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let mut active: Vec<Pod> = owned.into_iter().filter(is_active).collect();
        let want = usize::try_from(spec.replicas).unwrap_or(0);

        // Status reports the pods observed in this pass (as Kubernetes does); the changes made
        // below trigger another pass that reports them.
        let label_selector = Selector::from_labels(&template_labels);
        let ready = active.iter().filter(|p| is_ready(p)).count();
        // Available means ready for minReadySeconds; check again when the next pod gets there.
        let now = std::time::SystemTime::now();
        let min_ready = spec.min_ready_seconds;
        let mut available = 0;
        let mut next_available: Option<Duration> = None;
        for pod in &active {
            match availability(pod, min_ready, now) {
                (true, _) => available += 1,
                (false, Some(wait)) => {
                    next_available = Some(next_available.map_or(wait, |n| n.min(wait)));
                }
                (false, None) => {}
            }
        }
        let fully_labeled = active
            .iter()
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| label_selector.matches(l))
            })
            .count();
        let as_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let old = rs.replica_status();
        let status = ReplicaSetStatus {
            replicas: as_i32(active.len()),
            ready_replicas: Some(as_i32(ready)),
            available_replicas: Some(as_i32(available)),
            fully_labeled_replicas: Some(as_i32(fully_labeled)),
            observed_generation: rs.metadata().generation,
            conditions: old.conditions.clone(),
            terminating_replicas: None,
        };
        let observed = active.len();
        if claims_changed {
            // The cache still shows the adopted (or released) pods as they were: wait for it
            // before counting again, or the next pass could create for pods it already has.
            return Ok(Action::requeue(Duration::from_millis(100)));
        } else if active.len() < want {
            let missing = (want - active.len()).min(BURST);
            let template = new_pod(&rs, spec.template.clone(), namespace)?;
            // Slow start, as Kubernetes: batches of 1, 2, 4, ... created concurrently, stopping
            // at the first failure so a template the store rejects costs one call, not 500.
            let mut remaining = missing;
            let mut batch = 1;
            let mut created_names = Vec::new();
            let mut failure = None;
            while remaining > 0 && failure.is_none() {
                let n = batch.min(remaining);
                let results =
                    futures::future::join_all((0..n).map(|_| pods.create(&template))).await;
                for result in results {
                    match result {
                        Ok(created) => {
                            created_names.push(created.metadata.name.clone().unwrap_or_default());
                            self.expectations
                                .created(key, ObjectKey::from_meta(&created.metadata));
                        }
                        Err(e) => failure = Some(e),
                    }
                }
                remaining -= n;
                batch *= 2;
            }
            tracing::debug!(owner = %key, kind = K::KIND, created = created_names.len(), "created pods");
            // One event per pod, as Kubernetes; the recorder folds a flood into one Event.
            for name in &created_names {
                self.events
                    .record(
                        &ctx.store,
                        &rs,
                        EventType::Normal,
                        "SuccessfulCreate",
                        format!("Created pod: {name}"),
                    )
                    .await;
            }
            if let Some(e) = failure {
                self.events
                    .record(
                        &ctx.store,
                        &rs,
                        EventType::Warning,
                        "FailedCreate",
                        format!("Error creating: {e}"),
                    )
                    .await;
                return Err(e.into());
            }
        } else if active.len() > want {
            active.sort_by_key(deletion_rank);
            let surplus = (active.len() - want).min(BURST);
            for pod in active.drain(..surplus) {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                match pods.delete(&name, &Preconditions::uid(uid.clone())).await {
                    Ok(_) => {
                        self.expectations
                            .deleted(key, ObjectKey::from_meta(&pod.metadata), uid);
                        self.events
                            .record(
                                &ctx.store,
                                &rs,
                                EventType::Normal,
                                "SuccessfulDelete",
                                format!("Deleted pod: {name}"),
                            )
                            .await;
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => {
                        self.events
                            .record(
                                &ctx.store,
                                &rs,
                                EventType::Warning,
                                "FailedDelete",
                                format!("Error deleting: {e}"),
                            )
                            .await;
                        return Err(e.into());
                    }
                }
            }
            tracing::debug!(owner = %key, kind = K::KIND, deleted = surplus, "deleted pods");
        }

        if status != old {
            let mut updated = rs.clone();
            updated.set_replica_status(status);
            sets.replace(&updated).await?;
        }
        if observed != want {
            // More to do than one burst allowed, or waiting for our own writes to show up.
            return Ok(Action::requeue(Duration::from_millis(200)));
        }
        if let Some(wait) = next_available {
            // Whole seconds on the wire: wait past the boundary.
            return Ok(Action::requeue(wait + Duration::from_millis(100)));
        }
        Ok(Action::await_change())
    }
}

#[async_trait::async_trait]
impl Controller for ReplicaSetController {
    fn name(&self) -> &str {
        "replicaset"
    }

    fn watches(&self) -> Watches {
        Watches::primary(GroupKind::REPLICA_SET).owns(GroupKind::POD)
    }

    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        self.inner.reconcile::<ReplicaSet>(key, ctx).await
    }
}

fn invalid<K: Resource>(rs: &ObjectKey, message: impl std::fmt::Display) -> ReconcileError {
    ReconcileError::Invalid(format!("{} {rs}: {message}", K::KIND))
}

/// Order in which surplus pods are deleted: unscheduled, then pending, then not ready, then
/// the most recently created.
fn deletion_rank(pod: &Pod) -> impl Ord + use<> {
    let unscheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
        .is_empty();
    let phase_rank = match phase(pod) {
        "Pending" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    let created = pod.metadata.creation_timestamp.clone();
    (
        Reverse(unscheduled),
        phase_rank,
        is_ready(pod),
        Reverse(created),
    )
}

fn new_pod<K: Replicated>(
    rs: &K,
    template: Option<PodTemplateSpec>,
    namespace: &str,
) -> Result<Pod, ReconcileError> {
    let key = ObjectKey::from_meta(rs.metadata());
    let template = template.ok_or_else(|| invalid::<K>(&key, "spec.template is required"))?;
    let owner = controller_owner_ref(rs).ok_or_else(|| invalid::<K>(&key, "has no name or uid"))?;
    let template_meta = template.metadata.unwrap_or_default();
    let mut pod = Pod {
        spec: template.spec,
        ..Pod::default()
    };
    pod.metadata.generate_name = Some(format!("{}-", key.name));
    pod.metadata.namespace = Some(namespace.to_string());
    pod.metadata.labels = template_meta.labels;
    pod.metadata.annotations = template_meta.annotations;
    pod.metadata.owner_references = Some(vec![owner]);
    Ok(pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created_s: i64) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "creationTimestamp": format!("2026-01-01T00:00:{created_s:02}Z")},
            "spec": {"nodeName": node, "containers": [{"name": "c"}]},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .expect("pod")
    }

    #[test]
    fn surplus_pods_go_unscheduled_pending_not_ready_then_newest_first() {
        let mut pods = [
            pod("ready-old", Some("n1"), "Running", true, 1),
            pod("ready-new", Some("n1"), "Running", true, 9),
            pod("not-ready", Some("n1"), "Running", false, 2),
            pod("pending", Some("n1"), "Pending", false, 3),
            pod("unscheduled", None, "Pending", false, 4),
            pod("unknown", Some("n2"), "Unknown", false, 5),
        ];
        pods.sort_by_key(deletion_rank);
        let order: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap_or_default())
            .collect();
        assert_eq!(
            order,
            [
                "unscheduled",
                "pending",
                "unknown",
                "not-ready",
                "ready-new",
                "ready-old"
            ]
        );
    }
}
