//! [`DeploymentController`]: rolls a Deployment's pod template out through ReplicaSets.
//!
//! Each distinct template gets a ReplicaSet named `<deployment>-<pod-template-hash>`, whose
//! selector and pods carry the hash label. The ReplicaSet whose template equals the
//! Deployment's is the *new* one; the rest are *old*. A `RollingUpdate` grows the new set while
//! the total stays within `replicas + maxSurge`, and shrinks old sets while the available total
//! stays at least `replicas - maxUnavailable`; `Recreate` scales old sets to zero, waits for
//! their pods to go, then scales the new one up. Rolling back is making the Deployment's
//! template equal an old ReplicaSet's again ([`rollback`]): that set becomes the new one and
//! gets the next revision.

mod hash;
mod rolling;
mod status;

pub use hash::{POD_TEMPLATE_HASH, pod_template_hash};
pub use status::{NEW_RS_AVAILABLE, PROGRESS_DEADLINE_EXCEEDED};

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet, ReplicaSetSpec};
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{GroupKind, ObjectKey, controller_owner_ref, controller_ref};
use kube_core::selector::Selector;
use kube_core::store::{ListOptions, Preconditions, StoreError};
use kube_core::typed::Api;
use serde_json::json;

use crate::events::{EventRecorder, EventType};
use crate::index::OwnerIndex;
use hash::without_hash;
use rolling::{
    ProportionalSize, RsCounts, new_rs_replicas, old_rs_replicas, proportional_sizes,
    surge_and_unavailable,
};
use status::{condition, set_condition};

/// The annotation holding a ReplicaSet's (and its Deployment's) revision number.
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// The annotation holding the Deployment's `replicas` when a ReplicaSet was last scaled.
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
/// The annotation holding the Deployment's `replicas + maxSurge` when a ReplicaSet was last
/// scaled: the base of proportional scaling.
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";

/// Reconciles Deployments (apps/v1) with Kubernetes' semantics: ReplicaSets by pod-template
/// hash, `RollingUpdate` (maxSurge, maxUnavailable, minReadySeconds copied to the ReplicaSets)
/// and `Recreate`, `paused`, revisions and `revisionHistoryLimit`, and status with the
/// `Available` and `Progressing` conditions (`progressDeadlineSeconds`) that
/// `kubectl rollout status` reads.
///
/// It needs a [`crate::ReplicaSetController`] to run the ReplicaSets, and a
/// [`crate::GarbageCollector`] for ReplicaSets owned by Deployments to clean up after deletion.
#[derive(Debug, Clone)]
pub struct DeploymentController {
    events: EventRecorder,
    sets: Arc<OwnerIndex>,
}

impl Default for DeploymentController {
    fn default() -> Self {
        Self::new()
    }
}

impl DeploymentController {
    /// A Deployment controller.
    pub fn new() -> Self {
        Self {
            events: EventRecorder::new("deployment-controller"),
            sets: Arc::new(OwnerIndex::new(GroupKind::REPLICA_SET)),
        }
    }
}

fn invalid(key: &ObjectKey, message: impl std::fmt::Display) -> ReconcileError {
    ReconcileError::Invalid(format!("Deployment {key}: {message}"))
}

/// A ReplicaSet's revision (0 if unset or malformed).
pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn desired(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// An integer annotation of a ReplicaSet.
fn int_annotation(rs: &ReplicaSet, name: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(name)?.parse().ok()
}

/// A Deployment's size limits: `(replicas, maxSurge, maxUnavailable, recreate)`.
fn limits(spec: &DeploymentSpec) -> (i32, i32, i32, bool) {
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let strategy = spec.strategy.clone().unwrap_or_default();
    let recreate = strategy.type_.as_deref() == Some("Recreate");
    let rolling = strategy.rolling_update.unwrap_or_default();
    let (max_surge, max_unavailable) = if recreate {
        (0, 0)
    } else {
        surge_and_unavailable(
            rolling.max_surge.as_ref(),
            rolling.max_unavailable.as_ref(),
            replicas,
        )
    };
    (replicas, max_surge, max_unavailable, recreate)
}

/// Whether the Deployment was scaled since its active ReplicaSets were (Kubernetes'
/// `isScalingEvent`): one of them records another `desired-replicas`.
fn is_scaling_event(replicas: i32, sets: &[&ReplicaSet]) -> bool {
    sets.iter()
        .filter(|rs| desired(rs) > 0)
        .any(|rs| int_annotation(rs, DESIRED_REPLICAS_ANNOTATION).is_some_and(|d| d != replicas))
}

/// Whether the new ReplicaSet holds the whole Deployment, available.
fn is_saturated(replicas: i32, rs: &ReplicaSet) -> bool {
    desired(rs) == replicas
        && int_annotation(rs, DESIRED_REPLICAS_ANNOTATION) == Some(replicas)
        && counts(rs).available == replicas
}

/// The size annotations a ReplicaSet of a Deployment of `replicas` with `max_surge` carries.
fn size_annotations(replicas: i32, max_surge: i32) -> [(String, String); 2] {
    [
        (
            DESIRED_REPLICAS_ANNOTATION.to_string(),
            replicas.to_string(),
        ),
        (
            MAX_REPLICAS_ANNOTATION.to_string(),
            replicas.saturating_add(max_surge).to_string(),
        ),
    ]
}

fn counts(rs: &ReplicaSet) -> RsCounts {
    RsCounts {
        desired: desired(rs),
        available: rs
            .status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0),
    }
}

fn status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

/// Whether the ReplicaSet's status describes its current spec (so its counts can be trusted
/// for scaling down others).
fn settled(rs: &ReplicaSet) -> bool {
    let observed = rs.status.as_ref().and_then(|s| s.observed_generation);
    observed >= rs.metadata.generation && status_replicas(rs) == desired(rs)
}

fn same_template(rs: &ReplicaSet, spec: &DeploymentSpec) -> bool {
    rs.spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .is_some_and(|t| without_hash(t) == without_hash(&spec.template))
}

/// Makes the Deployment's template that of `revision`'s ReplicaSet, as `kubectl rollout undo
/// --to-revision` does (0 means the previous revision). Returns the revision rolled back to.
pub async fn rollback(
    deployments: &Api<Deployment>,
    sets: &Api<ReplicaSet>,
    name: &str,
    to_revision: i64,
) -> Result<i64, ReconcileError> {
    let key = ObjectKey::cluster(name);
    let d = deployments.get(name).await?;
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let mut owned: Vec<ReplicaSet> = sets
        .list(&ListOptions::default())
        .await?
        .items
        .into_iter()
        .filter(|rs| controller_ref(&rs.metadata).is_some_and(|o| o.uid == uid))
        .collect();
    owned.sort_by_key(|rs| std::cmp::Reverse(revision(rs)));
    let target = if to_revision == 0 {
        owned.get(1)
    } else {
        owned.iter().find(|rs| revision(rs) == to_revision)
    }
    .ok_or_else(|| invalid(&key, format!("revision {to_revision} not found")))?;
    let mut template = target
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .ok_or_else(|| invalid(&key, "ReplicaSet has no template"))?;
    template = without_hash(&template);
    let rev = revision(target);
    deployments
        .patch_merge(name, &json!({"spec": {"template": template}}))
        .await?;
    Ok(rev)
}

#[async_trait::async_trait]
impl Controller for DeploymentController {
    fn name(&self) -> &str {
        "deployment"
    }

    fn watches(&self) -> Watches {
        Watches::primary(GroupKind::of::<Deployment>()).owns(GroupKind::REPLICA_SET)
    }

    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        let Some(namespace) = key.namespace.as_deref() else {
            return Ok(Action::await_change());
        };
        let deployments: Api<Deployment> = Api::namespaced(ctx.store.clone(), namespace);
        let sets: Api<ReplicaSet> = Api::namespaced(ctx.store.clone(), namespace);
        let Some(d) = deployments.get_opt(&key.name).await? else {
            return Ok(Action::await_change());
        };
        if d.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        Sync {
            key,
            ctx,
            events: &self.events,
            index: &self.sets,
            d: &d,
            deployments: &deployments,
            sets: &sets,
        }
        .run()
        .await
    }
}

/// One reconcile of one Deployment.
struct Sync<'a> {
    key: &'a ObjectKey,
    ctx: &'a ControllerContext,
    events: &'a EventRecorder,
    index: &'a OwnerIndex,
    d: &'a Deployment,
    deployments: &'a Api<Deployment>,
    sets: &'a Api<ReplicaSet>,
}

impl Sync<'_> {
    /// The Deployment's ReplicaSets, oldest first, adopting matching orphans.
    async fn owned(&self, selector: &Selector) -> Result<Vec<ReplicaSet>, ReconcileError> {
        let uid = self.d.metadata.uid.clone().unwrap_or_default();
        let mut owned = Vec::new();
        // The owner index names the candidates (ours and matching orphans) without listing
        // every ReplicaSet; each is then read from the store, so scaling decisions never rest
        // on a stale cache.
        let index = self.index.view(&self.ctx.informers);
        let mut names: Vec<String> = index
            .controlled_by(&uid)
            .into_iter()
            .chain(index.uncontrolled(self.key.namespace.as_deref()))
            .filter(|rs| selector.matches_object(rs))
            .filter_map(|rs| rs.metadata.name.clone())
            .collect();
        names.sort();
        names.dedup();
        let mut listed = Vec::with_capacity(names.len());
        for name in &names {
            if let Some(rs) = self.sets.get_opt(name).await? {
                let labels = rs.metadata.labels.clone().unwrap_or_default();
                if selector.matches(&labels) {
                    listed.push(rs);
                }
            }
        }
        for mut rs in listed {
            match controller_ref(&rs.metadata) {
                Some(o) if o.uid == uid => owned.push(rs),
                None if rs.metadata.deletion_timestamp.is_none() => {
                    if let Some(owner) = controller_owner_ref(self.d) {
                        rs.metadata
                            .owner_references
                            .get_or_insert_with(Vec::new)
                            .push(owner);
                        match self.sets.replace(&rs).await {
                            Ok(adopted) => owned.push(adopted),
                            Err(e) if e.is_conflict() || e.is_not_found() => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
                _ => {}
            }
        }
        owned.sort_by(|a, b| {
            (&a.metadata.creation_timestamp, &a.metadata.name)
                .cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
        });
        Ok(owned)
    }

    /// Sets a ReplicaSet's `spec.replicas`, and its size annotations to the Deployment's
    /// current size (as Kubernetes' `scaleReplicaSet`); records `ScalingReplicaSet` if the size
    /// changed. Returns whether it wrote anything.
    async fn scale(&self, rs: &mut ReplicaSet, replicas: i32) -> Result<bool, StoreError> {
        let name = rs.metadata.name.clone().unwrap_or_default();
        let before = desired(rs);
        let (d_replicas, max_surge, _, _) = self.d.spec.as_ref().map_or((0, 0, 0, false), limits);
        let annotations = size_annotations(d_replicas, max_surge);
        let annotated = annotations.iter().all(|(k, v)| {
            rs.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(k))
                .is_some_and(|have| have == v)
        });
        if before == replicas && annotated {
            return Ok(false);
        }
        let annotations: serde_json::Map<String, serde_json::Value> = annotations
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::from(v)))
            .collect();
        *rs = self
            .sets
            .patch_merge(
                &name,
                &json!({"metadata": {"annotations": annotations}, "spec": {"replicas": replicas}}),
            )
            .await?;
        if before == replicas {
            return Ok(true);
        }
        tracing::debug!(deployment = %self.key, replicaset = %name, replicas, "scaled");
        let direction = if replicas > before { "up" } else { "down" };
        self.events
            .record(
                &self.ctx.store,
                self.d,
                EventType::Normal,
                "ScalingReplicaSet",
                format!("Scaled {direction} replica set {name} from {before} to {replicas}"),
            )
            .await;
        Ok(true)
    }

    /// Scales the ReplicaSets to a changed `replicas` (or while paused), as Kubernetes' `scale`:
    /// a single active set (or, with none, the new one or else the newest) takes the whole
    /// size; a saturated new set means the old ones go; otherwise, in a rolling update, the
    /// change is shared out in proportion to the sets' sizes.
    async fn scale_to_size(
        &self,
        replicas: i32,
        max_surge: i32,
        recreate: bool,
        new: Option<&mut ReplicaSet>,
        olds: &mut [ReplicaSet],
    ) -> Result<bool, ReconcileError> {
        let mut all: Vec<(bool, &mut ReplicaSet)> = olds
            .iter_mut()
            .map(|rs| (false, rs))
            .chain(new.map(|rs| (true, rs)))
            .collect();
        // Oldest first, as the proportions' tie-breaks need.
        all.sort_by(|(_, a), (_, b)| {
            (&a.metadata.creation_timestamp, &a.metadata.name)
                .cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
        });
        let active: Vec<usize> = (0..all.len()).filter(|&i| desired(all[i].1) > 0).collect();
        let new_index = all.iter().position(|(is_new, _)| *is_new);
        let whole = match active.as_slice() {
            [] => new_index.or(all.len().checked_sub(1)),
            [one] => Some(*one),
            _ => None,
        };
        if let Some(i) = whole {
            return Ok(self.scale(all[i].1, replicas).await?);
        }
        let mut changed = false;
        if new_index.is_some_and(|i| is_saturated(replicas, all[i].1)) {
            for (is_new, rs) in all.iter_mut() {
                if !*is_new && desired(rs) > 0 {
                    changed |= self.scale(rs, 0).await?;
                }
            }
            return Ok(changed);
        }
        if recreate {
            return Ok(false);
        }
        let status_replicas = self.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let sizes: Vec<ProportionalSize> = all
            .iter()
            .map(|(_, rs)| ProportionalSize {
                desired: desired(rs),
                max_replicas: int_annotation(rs, MAX_REPLICAS_ANNOTATION),
            })
            .collect();
        let next = proportional_sizes(replicas, max_surge, status_replicas, &sizes);
        for ((_, rs), n) in all.iter_mut().zip(next) {
            // Active sets get the new size annotations even when their size stays.
            if desired(rs) > 0 || n > 0 {
                changed |= self.scale(rs, n).await?;
            }
        }
        Ok(changed)
    }

    /// Creates the new ReplicaSet. `Ok(None)` means a hash collision was recorded in the
    /// Deployment's status and the caller should retry with the next hash.
    async fn create_new(
        &self,
        spec: &DeploymentSpec,
        replicas: i32,
        rev: i64,
    ) -> Result<Option<ReplicaSet>, ReconcileError> {
        let collisions = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = pod_template_hash(&spec.template, collisions);
        let owner =
            controller_owner_ref(self.d).ok_or_else(|| invalid(self.key, "has no name or uid"))?;
        let mut template = spec.template.clone();
        let meta = template.metadata.get_or_insert_with(Default::default);
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut rs = ReplicaSet {
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template.clone()),
            }),
            ..ReplicaSet::default()
        };
        rs.metadata.name = Some(format!("{}-{hash}", self.key.name));
        rs.metadata.namespace = self.key.namespace.clone();
        rs.metadata.labels = template.metadata.and_then(|m| m.labels);
        let (replicas_now, max_surge, _, _) = limits(spec);
        let mut annotations: std::collections::BTreeMap<String, String> =
            size_annotations(replicas_now, max_surge).into();
        annotations.insert(REVISION_ANNOTATION.to_string(), rev.to_string());
        rs.metadata.annotations = Some(annotations);
        rs.metadata.owner_references = Some(vec![owner.clone()]);
        match self.sets.create(&rs).await {
            Ok(created) => {
                tracing::debug!(deployment = %self.key, replicaset = ?created.metadata.name, "created new ReplicaSet");
                Ok(Some(created))
            }
            Err(e) if e.is_already_exists() => {
                let name = rs.metadata.name.clone().unwrap_or_default();
                let existing = self.sets.get(&name).await?;
                let ours = controller_ref(&existing.metadata).is_some_and(|o| o.uid == owner.uid);
                if ours && same_template(&existing, spec) {
                    return Ok(Some(existing));
                }
                // Another template already has this name: salt the hash and try again.
                let mut d = self.d.clone();
                let status = d.status.get_or_insert_with(Default::default);
                status.collision_count = Some(collisions.unwrap_or(0).saturating_add(1));
                self.deployments.replace(&d).await?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn run(self) -> Result<Action, ReconcileError> {
        let key = self.key;
        let spec = self
            .d
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
            return Err(invalid(key, "spec.selector does not match template labels"));
        }
        let paused = spec.paused == Some(true);
        let (replicas, max_surge, max_unavailable, recreate) = limits(&spec);

        let all = self.owned(&selector).await?;
        let (mut news, mut olds): (Vec<ReplicaSet>, Vec<ReplicaSet>) =
            all.into_iter().partition(|rs| same_template(rs, &spec));
        // Several sets with one template (e.g. after a collision): the oldest is the new one.
        let mut new = if news.is_empty() {
            None
        } else {
            Some(news.remove(0))
        };
        olds.extend(news);
        let max_old_revision = olds.iter().map(revision).max().unwrap_or(0);
        let mut created_new = false;
        let mut progressed = false;
        // Scaled (not re-templated) since the sets were last sized: resize them first, as
        // Kubernetes does, and roll out in later passes.
        let scaling =
            !paused && is_scaling_event(replicas, &new.iter().chain(&olds).collect::<Vec<_>>());

        if new.is_none() && !paused && !scaling {
            let all_desired: i32 = olds.iter().map(desired).sum();
            let initial = if recreate {
                0
            } else {
                new_rs_replicas(replicas, max_surge, all_desired, 0)
            };
            match self
                .create_new(&spec, initial, max_old_revision + 1)
                .await?
            {
                Some(rs) => new = Some(rs),
                None => return Ok(Action::requeue(Duration::from_millis(10))),
            }
            created_new = true;
        } else if let Some(rs) = new.as_mut() {
            if revision(rs) <= max_old_revision {
                // A rollback: the template came back, so its set becomes the newest revision.
                let name = rs.metadata.name.clone().unwrap_or_default();
                let patch = json!({"metadata": {"annotations": {REVISION_ANNOTATION: (max_old_revision + 1).to_string()}}});
                *rs = self.sets.patch_merge(&name, &patch).await?;
                progressed = true;
            }
        }

        if paused || scaling {
            progressed |= self
                .scale_to_size(replicas, max_surge, recreate, new.as_mut(), &mut olds)
                .await?;
        } else if let Some(new) = new.as_mut() {
            progressed |= if recreate {
                self.recreate(replicas, new, &mut olds).await?
            } else {
                self.roll(replicas, max_surge, max_unavailable, new, &mut olds)
                    .await?
            };
        }

        self.clean_up_history(&spec, &mut olds).await?;
        self.write_status(
            replicas,
            max_unavailable,
            paused,
            &spec,
            new.as_ref(),
            &olds,
            created_new,
            progressed,
        )
        .await
    }

    /// Recreate: old sets to zero, then (once their pods are gone) the new set to `replicas`.
    async fn recreate(
        &self,
        replicas: i32,
        new: &mut ReplicaSet,
        olds: &mut [ReplicaSet],
    ) -> Result<bool, ReconcileError> {
        let mut progressed = false;
        let mut old_pods = false;
        for old in olds.iter_mut() {
            if desired(old) > 0 {
                self.scale(old, 0).await?;
                progressed = true;
            }
            old_pods |= status_replicas(old) > 0 || !settled(old);
        }
        if !old_pods && desired(new) != replicas {
            self.scale(new, replicas).await?;
            progressed = true;
        }
        Ok(progressed)
    }

    /// RollingUpdate: grow the new set within the surge, shrink old ones within availability.
    async fn roll(
        &self,
        replicas: i32,
        max_surge: i32,
        max_unavailable: i32,
        new: &mut ReplicaSet,
        olds: &mut [ReplicaSet],
    ) -> Result<bool, ReconcileError> {
        let mut progressed = false;
        let all_desired: i32 = desired(new) + olds.iter().map(desired).sum::<i32>();
        let target = new_rs_replicas(replicas, max_surge, all_desired, desired(new));
        if target != desired(new) {
            self.scale(new, target).await?;
            progressed = true;
        }
        // Old sets' available counts must describe their current size, or we could count pods
        // that an earlier scale-down is already deleting.
        if !olds.iter().all(settled) {
            return Ok(progressed);
        }
        let old_counts: Vec<RsCounts> = olds.iter().map(counts).collect();
        let next = old_rs_replicas(replicas, max_unavailable, &counts(new), &old_counts);
        for (old, n) in olds.iter_mut().zip(next) {
            if n != desired(old) {
                self.scale(old, n).await?;
                progressed = true;
            }
        }
        Ok(progressed)
    }

    /// Deletes the oldest fully scaled-down old sets beyond `revisionHistoryLimit`.
    async fn clean_up_history(
        &self,
        spec: &DeploymentSpec,
        olds: &mut Vec<ReplicaSet>,
    ) -> Result<(), ReconcileError> {
        let limit = usize::try_from(spec.revision_history_limit.unwrap_or(10)).unwrap_or(0);
        let mut idle: Vec<&ReplicaSet> = olds
            .iter()
            .filter(|rs| desired(rs) == 0 && status_replicas(rs) == 0 && settled(rs))
            .collect();
        if idle.len() <= limit {
            return Ok(());
        }
        idle.sort_by_key(|rs| revision(rs));
        let doomed: Vec<(String, String)> = idle[..idle.len() - limit]
            .iter()
            .map(|rs| {
                (
                    rs.metadata.name.clone().unwrap_or_default(),
                    rs.metadata.uid.clone().unwrap_or_default(),
                )
            })
            .collect();
        for (name, uid) in &doomed {
            match self
                .sets
                .delete(name, &Preconditions::uid(uid.clone()))
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
        }
        olds.retain(|rs| {
            !doomed
                .iter()
                .any(|(n, _)| rs.metadata.name.as_deref() == Some(n.as_str()))
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn write_status(
        &self,
        replicas: i32,
        max_unavailable: i32,
        paused: bool,
        spec: &DeploymentSpec,
        new: Option<&ReplicaSet>,
        olds: &[ReplicaSet],
        created_new: bool,
        progressed: bool,
    ) -> Result<Action, ReconcileError> {
        let all = new.into_iter().chain(olds.iter());
        let (mut total, mut ready, mut available) = (0, 0, 0);
        for rs in all {
            let s = rs.status.clone().unwrap_or_default();
            total += s.replicas;
            ready += s.ready_replicas.unwrap_or(0);
            available += s.available_replicas.unwrap_or(0);
        }
        let updated = new.map_or(0, status_replicas);
        let old = self.d.status.clone().unwrap_or_default();
        let mut status = old.clone();
        status.observed_generation = self.d.metadata.generation;
        status.replicas = Some(total);
        status.updated_replicas = Some(updated);
        status.ready_replicas = Some(ready);
        status.available_replicas = Some(available);
        status.unavailable_replicas = Some((replicas - available).max(0));
        let counts_changed = (old.replicas, old.updated_replicas, old.available_replicas)
            != (
                status.replicas,
                status.updated_replicas,
                status.available_replicas,
            );

        if available >= replicas - max_unavailable {
            set_condition(
                &mut status,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            );
        } else {
            set_condition(
                &mut status,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            );
        }
        let new_name = new
            .and_then(|rs| rs.metadata.name.clone())
            .unwrap_or_default();
        let complete = new.is_some()
            && updated == replicas
            && total == replicas
            && available == replicas
            && new.is_some_and(settled);
        let deadline = Duration::from_secs(
            u64::try_from(spec.progress_deadline_seconds.unwrap_or(600)).unwrap_or(600),
        );
        let mut requeue = None;
        if paused {
            set_condition(
                &mut status,
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
            );
        } else if complete {
            set_condition(
                &mut status,
                "Progressing",
                "True",
                NEW_RS_AVAILABLE,
                format!("ReplicaSet \"{new_name}\" has successfully progressed."),
            );
        } else if created_new {
            set_condition(
                &mut status,
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                format!("Created new replica set \"{new_name}\""),
            );
            requeue = Some(deadline);
        } else if progressed || counts_changed {
            set_condition(
                &mut status,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
            );
            requeue = Some(deadline);
        } else if let Some(c) = condition(&status, "Progressing").cloned() {
            let last = c.last_update_time.as_ref().map_or(0, |t| t.0.as_second());
            let now = kube_core::object::now().0.as_second();
            let elapsed = u64::try_from(now - last).unwrap_or(0);
            if c.status == "True" && c.reason.as_deref() != Some(NEW_RS_AVAILABLE) {
                if elapsed >= deadline.as_secs() {
                    set_condition(
                        &mut status,
                        "Progressing",
                        "False",
                        PROGRESS_DEADLINE_EXCEEDED,
                        format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                    );
                } else {
                    requeue = Some(deadline.saturating_sub(Duration::from_secs(elapsed)));
                }
            }
        }
        if status != old {
            let mut d = self.d.clone();
            d.status = Some(status);
            if let Some(rs) = new {
                let rev = revision(rs).to_string();
                let annotations = d.metadata.annotations.get_or_insert_with(Default::default);
                annotations.insert(REVISION_ANNOTATION.into(), rev);
            }
            self.deployments.replace(&d).await?;
        }
        Ok(requeue.map_or_else(Action::await_change, |after| {
            Action::requeue(after + Duration::from_secs(1))
        }))
    }
}
