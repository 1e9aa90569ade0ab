//! [`StatefulSetController`]: pods with stable names, hostnames and storage, created, scaled
//! and updated in ordinal order, as Kubernetes' `pkg/controller/statefulset`.
//!
//! - `identity`: pod names `<set>-<ordinal>`, hostname/subdomain, identity labels, claims.
//! - `claims`: PersistentVolumeClaims from `volumeClaimTemplates` and the retention policy.
//! - `history`: ControllerRevisions (shared with the DaemonSet controller).
//! - `status`: the status from the pods.
//! - `sync`: one pass over a set's pods: create, scale down, roll out.

mod claims;
pub(crate) mod history;
mod identity;
mod status;
mod sync;

pub use identity::{POD_INDEX_LABEL, POD_NAME_LABEL};

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{
    DynamicObject, GroupKind, ObjectKey, controller_owner_ref, controller_ref,
};
use kube_core::selector::Selector;
use kube_core::typed::Api;

use crate::events::EventRecorder;
use crate::expectations::Expectations;
use crate::index::OwnerIndex;
use sync::{Progress, Sync};

/// How long a set waiting on its pods looks again without an event (a safety net; pod events
/// normally wake it first).
const RESYNC: Duration = Duration::from_secs(5);

/// Reconciles StatefulSets (apps/v1) with Kubernetes' semantics: pods `<set>-<ordinal>` for
/// the ordinals `ordinals.start ..+ replicas`, each with hostname its name, subdomain the
/// set's `serviceName` and the labels `statefulset.kubernetes.io/pod-name`,
/// `apps.kubernetes.io/pod-index` and `controller-revision-hash`; claims from
/// `volumeClaimTemplates` created before their pod and owned per
/// `persistentVolumeClaimRetentionPolicy`; `OrderedReady` (one pod at a time, each after its
/// predecessors are Running and Ready for `minReadySeconds`, removed in reverse order) or
/// `Parallel` management; `RollingUpdate` (highest ordinal first, down to `partition`, at most
/// `maxUnavailable` at a time) or `OnDelete` updates; revisions as ControllerRevisions
/// (`kubectl rollout history/undo`), trimmed to `revisionHistoryLimit`; and status.
///
/// It needs a [`crate::GarbageCollector`] for pods, ControllerRevisions and
/// PersistentVolumeClaims owned by StatefulSets (and claims owned by pods) to clean up.
#[derive(Debug, Clone)]
pub struct StatefulSetController {
    events: EventRecorder,
    expectations: Arc<Expectations>,
    pods: Arc<OwnerIndex>,
    revisions: Arc<OwnerIndex>,
}

impl Default for StatefulSetController {
    fn default() -> Self {
        Self::new()
    }
}

impl StatefulSetController {
    /// A StatefulSet controller.
    pub fn new() -> Self {
        Self {
            events: EventRecorder::new("statefulset-controller"),
            expectations: Arc::default(),
            pods: Arc::new(OwnerIndex::new(GroupKind::POD)),
            revisions: Arc::new(OwnerIndex::new(history::kind())),
        }
    }
}

fn invalid(key: &ObjectKey, message: impl std::fmt::Display) -> ReconcileError {
    ReconcileError::Invalid(format!("StatefulSet {key}: {message}"))
}

#[async_trait::async_trait]
impl Controller for StatefulSetController {
    fn name(&self) -> &str {
        "statefulset"
    }

    fn watches(&self) -> Watches {
        Watches::primary(GroupKind::of::<StatefulSet>())
            .owns(GroupKind::POD)
            .owns(history::kind())
            .related(claims::kind())
    }

    fn map_related(
        &self,
        _kind: &GroupKind,
        claim: &DynamicObject,
        _ctx: &ControllerContext,
    ) -> Vec<ObjectKey> {
        // A claim going away may unblock the pod waiting for it; the set owning it reacts.
        claim
            .metadata
            .owner_references
            .iter()
            .flatten()
            .filter(|r| r.kind == "StatefulSet" && r.api_version == "apps/v1")
            .map(|r| ObjectKey {
                namespace: claim.metadata.namespace.clone(),
                name: r.name.clone(),
            })
            .collect()
    }

    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        let Some(namespace) = key.namespace.as_deref() else {
            return Ok(Action::await_change());
        };
        let sets: Api<StatefulSet> = Api::namespaced(ctx.store.clone(), namespace);
        let Some(set) = sets.get_opt(&key.name).await? else {
            // Deleted: its pods, revisions and claims are the garbage collector's.
            self.expectations.forget(key);
            return Ok(Action::await_change());
        };
        let spec = set
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
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        if !selector.matches(&template_labels) {
            return Err(invalid(
                key,
                "spec.selector does not match spec.template labels",
            ));
        }
        let owner = controller_owner_ref(&set).ok_or_else(|| invalid(key, "has no name or uid"))?;

        let index = self.pods.view(&ctx.informers);
        if !self.expectations.satisfied(key, &index) {
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
        let pods_api: Api<Pod> = Api::namespaced(ctx.store.clone(), namespace);
        let mut pods: Vec<Pod> = index
            .controlled_by(&owner.uid)
            .iter()
            .filter(|p| selector.matches_object(p))
            .filter_map(|p| p.to_typed::<Pod>().ok())
            .collect();
        // Adopt orphans named as our pods that match the selector (after `kubectl delete
        // --cascade=orphan` and a new set of the same name).
        let mut adopted = false;
        if set.metadata.deletion_timestamp.is_none() {
            for orphan in index.uncontrolled(Some(namespace)) {
                let name = orphan.metadata.name.clone().unwrap_or_default();
                if !selector.matches_object(&orphan)
                    || identity::ordinal_of(&key.name, &name).is_none()
                    || orphan.metadata.deletion_timestamp.is_some()
                {
                    continue;
                }
                let Ok(mut pod) = orphan.to_typed::<Pod>() else {
                    continue;
                };
                pod.metadata
                    .owner_references
                    .get_or_insert_with(Vec::new)
                    .push(owner.clone());
                match pods_api.replace(&pod).await {
                    Ok(_) => adopted = true,
                    Err(e) if e.is_conflict() || e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if adopted {
            // The cache still shows them as orphans: count again once it shows them as ours.
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
        pods.retain(|p| controller_ref(&p.metadata).is_some_and(|o| o.uid == owner.uid));

        let revisions_api: Api<ControllerRevision> = Api::namespaced(ctx.store.clone(), namespace);
        let mut revisions = history::owned(&self.revisions.view(&ctx.informers), &owner.uid);
        let old_status = set.status.clone().unwrap_or_default();
        let mut collision_count = Some(old_status.collision_count.unwrap_or(0));
        let data = history::template_patch(&spec.template);
        let hash_data = data.clone();
        let hash = move |count: Option<i32>| history::data_hash(&hash_data, count);
        let wanted = history::Wanted {
            parent: &key.name,
            owner: owner.clone(),
            labels: template_labels,
            data,
            hash: &hash,
        };
        let update = history::record(
            &revisions_api,
            &mut revisions,
            &wanted,
            &mut collision_count,
        )
        .await?;
        let current = revisions
            .iter()
            .find(|r| r.metadata.name.is_some() && r.metadata.name == old_status.current_revision)
            .cloned()
            .unwrap_or_else(|| update.clone());

        let sync = Sync {
            key,
            ctx,
            set: &set,
            events: &self.events,
            expectations: &self.expectations,
            pods: &pods_api,
            current: &current,
            update: &update,
        };
        let (slots, condemned) = sync.split(pods);
        let revision_names = status::Revisions {
            current: current.metadata.name.as_deref().unwrap_or_default(),
            update: update.metadata.name.as_deref().unwrap_or_default(),
            collision_count,
        };
        let now = std::time::SystemTime::now();
        let (new_status, next_available) = status::compute(
            &set,
            slots
                .iter()
                .flatten()
                .chain(condemned.iter().map(|(_, p)| p)),
            &revision_names,
            now,
        );
        let mut live: HashSet<String> = slots
            .iter()
            .flatten()
            .chain(condemned.iter().map(|(_, p)| p))
            .filter_map(|p| identity::pod_revision(p).map(str::to_string))
            .collect();
        live.extend(current.metadata.name.clone());
        live.extend(update.metadata.name.clone());

        let progress = if set.metadata.deletion_timestamp.is_some() {
            // Being deleted: only status changes.
            Ok(Progress::Done)
        } else {
            sync.run(slots, condemned).await
        };

        if Some(&new_status) != set.status.as_ref() {
            let mut updated = set.clone();
            updated.status = Some(new_status);
            sets.replace(&updated).await?;
        }
        let limit = usize::try_from(spec.revision_history_limit.unwrap_or(10)).unwrap_or(0);
        history::truncate(&revisions_api, &revisions, &live, limit).await?;

        let wait = match progress? {
            Progress::Done => None,
            Progress::Wait(after) => Some(after.unwrap_or(RESYNC)),
        };
        let after = [wait, next_available.map(|w| w + Duration::from_millis(100))]
            .into_iter()
            .flatten()
            .min();
        Ok(after.map_or_else(Action::await_change, Action::requeue))
    }
}

impl crate::ControllerManager {
    /// Adds the StatefulSet controller and the garbage collection it relies on: of the
    /// ControllerRevisions of StatefulSets and DaemonSets, and of claims owned by StatefulSets
    /// (`whenDeleted: Delete`) or by their pods (`whenScaled: Delete`). The pod collector of
    /// [`crate::ControllerManager::with_default_controllers`] covers the pods.
    pub(crate) fn with_statefulsets(self) -> Self {
        let set = GroupKind::of::<StatefulSet>();
        self.with(StatefulSetController::new())
            .with(
                crate::GarbageCollector::new(history::kind())
                    .owner(set.clone())
                    .owner(GroupKind::new("apps", "DaemonSet")),
            )
            .with(
                crate::GarbageCollector::new(claims::kind())
                    .owner(set)
                    .owner(GroupKind::POD),
            )
    }
}
