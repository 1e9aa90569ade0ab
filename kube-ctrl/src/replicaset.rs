//! [`ReplicaSetController`]: keeps `spec.replicas` pods of a ReplicaSet's template running.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{GroupKind, ObjectKey, controller_owner_ref, controller_ref};
use kube_core::selector::Selector;
use kube_core::store::Preconditions;
use kube_core::typed::Api;

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
    events: EventRecorder,
    expectations: Arc<Expectations>,
    pods: Arc<OwnerIndex>,
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
            events: EventRecorder::new("replicaset-controller"),
            expectations: Arc::default(),
            pods: Arc::new(OwnerIndex::new(GroupKind::POD)),
        }
    }
}

fn invalid(rs: &ObjectKey, message: impl std::fmt::Display) -> ReconcileError {
    ReconcileError::Invalid(format!("ReplicaSet {rs}: {message}"))
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

fn new_pod(rs: &ReplicaSet, namespace: &str) -> Result<Pod, ReconcileError> {
    let key = ObjectKey::from_meta(&rs.metadata);
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .ok_or_else(|| invalid(&key, "spec.template is required"))?;
    let owner = controller_owner_ref(rs).ok_or_else(|| invalid(&key, "has no name or uid"))?;
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
        let Some(namespace) = key.namespace.as_deref() else {
            return Ok(Action::await_change());
        };
        let sets: Api<ReplicaSet> = Api::namespaced(ctx.store.clone(), namespace);
        let pods: Api<Pod> = Api::namespaced(ctx.store.clone(), namespace);
        let Some(rs) = sets.get_opt(&key.name).await? else {
            // Deleted: its pods are the garbage collector's.
            self.expectations.forget(key);
            return Ok(Action::await_change());
        };
        if rs.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let spec = rs
            .spec
            .clone()
            .ok_or_else(|| invalid(key, "spec is required"))?;
        let selector =
            Selector::from_label_selector(&spec.selector).map_err(|e| invalid(key, e))?;
        if selector.is_empty() {
            return Err(invalid(key, "spec.selector must not be empty"));
        }
        let template_labels = spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        if !selector.matches(&template_labels) {
            return Err(invalid(
                key,
                "spec.selector does not match spec.template labels",
            ));
        }
        let uid = rs.metadata.uid.clone().unwrap_or_default();

        // Pods come from the shared cache, found through the owner index (never a scan of the
        // namespace); our own recent writes must show there first.
        let index = self.pods.view(&ctx.informers);
        if !self.expectations.satisfied(key, &index) {
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
        let candidates: Vec<Pod> = index
            .controlled_by(&uid)
            .into_iter()
            .chain(index.uncontrolled(Some(namespace)))
            .filter(|p| selector.matches_object(p))
            .filter_map(|p| p.to_typed::<Pod>().ok())
            .collect();
        let mut owned = Vec::new();
        let mut adopted_any = false;
        for mut pod in candidates {
            match controller_ref(&pod.metadata) {
                Some(owner) if owner.uid == uid => owned.push(pod),
                Some(_) => {}
                None if pod.metadata.deletion_timestamp.is_none() => {
                    // Adopt the orphan: it matches our selector and nobody controls it.
                    if let Some(owner) = controller_owner_ref(&rs) {
                        pod.metadata
                            .owner_references
                            .get_or_insert_with(Vec::new)
                            .push(owner);
                        match pods.replace(&pod).await {
                            Ok(adopted) => {
                                adopted_any = true;
                                owned.push(adopted);
                            }
                            Err(e) if e.is_conflict() || e.is_not_found() => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                None => {}
            }
        }
        let mut active: Vec<Pod> = owned.into_iter().filter(is_active).collect();
        let want = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);

        // Status reports the pods observed in this pass (as Kubernetes does); the changes made
        // below trigger another pass that reports them.
        let label_selector = Selector::from_labels(&template_labels);
        let ready = active.iter().filter(|p| is_ready(p)).count();
        // Available means ready for minReadySeconds; check again when the next pod gets there.
        let now = std::time::SystemTime::now();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
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
        let old = rs.status.clone().unwrap_or_default();
        let status = ReplicaSetStatus {
            replicas: as_i32(active.len()),
            ready_replicas: Some(as_i32(ready)),
            available_replicas: Some(as_i32(available)),
            fully_labeled_replicas: Some(as_i32(fully_labeled)),
            observed_generation: rs.metadata.generation,
            conditions: old.conditions.clone(),
            terminating_replicas: None,
        };
        let observed = active.len();
        if adopted_any {
            // The cache still shows the adopted pods as orphans: wait for it before counting
            // again, or the next pass could create for pods it already has.
            return Ok(Action::requeue(Duration::from_millis(100)));
        } else if active.len() < want {
            let missing = (want - active.len()).min(BURST);
            let template = new_pod(&rs, namespace)?;
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
            tracing::debug!(replicaset = %key, created = created_names.len(), "created pods");
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
            tracing::debug!(replicaset = %key, deleted = surplus, "deleted pods");
        }

        if status != old {
            let mut updated = rs.clone();
            updated.status = Some(status);
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
