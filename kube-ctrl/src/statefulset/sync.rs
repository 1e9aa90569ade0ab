//! One pass over a StatefulSet's pods, as Kubernetes' `updateStatefulSet`: replicas first
//! (create the missing, recreate the failed, fix identities; `OrderedReady` stops at the
//! first pod not yet Running and available), then the scale-down (highest ordinal first),
//! then the rolling update.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_core::controller::{ControllerContext, ReconcileError};
use kube_core::object::ObjectKey;
use kube_core::store::Preconditions;
use kube_core::typed::Api;
use serde_json::json;

use super::status::{is_healthy, is_running_and_ready, is_terminating, running_and_available};
use super::{claims, history, identity};
use crate::events::{EventRecorder, EventType};
use crate::expectations::Expectations;
use crate::pods::phase;

/// How a pass ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Progress {
    /// Nothing left to do until something changes.
    Done,
    /// Waiting on pods (for this long, if known).
    Wait(Option<Duration>),
}

/// The pods in the set's ordinal range, by index (`None`: missing).
pub(super) type Slots = Vec<Option<Pod>>;
/// Pods outside the range, with their ordinals, lowest first.
pub(super) type Condemned = Vec<(i32, Pod)>;

/// What one pass works with.
pub(super) struct Sync<'a> {
    pub(super) key: &'a ObjectKey,
    pub(super) ctx: &'a ControllerContext,
    pub(super) set: &'a StatefulSet,
    pub(super) events: &'a EventRecorder,
    pub(super) expectations: &'a Expectations,
    pub(super) pods: &'a Api<Pod>,
    pub(super) current: &'a ControllerRevision,
    pub(super) update: &'a ControllerRevision,
}

impl Sync<'_> {
    fn spec(&self) -> k8s_openapi::api::apps::v1::StatefulSetSpec {
        self.set.spec.clone().unwrap_or_default()
    }

    fn start(&self) -> i32 {
        self.spec()
            .ordinals
            .and_then(|o| o.start)
            .unwrap_or(0)
            .max(0)
    }

    fn replicas(&self) -> usize {
        usize::try_from(self.spec().replicas.unwrap_or(1)).unwrap_or(0)
    }

    fn rolling(&self) -> bool {
        self.spec()
            .update_strategy
            .and_then(|s| s.type_)
            .is_none_or(|t| t == "RollingUpdate")
    }

    fn partition(&self) -> usize {
        let partition = self
            .spec()
            .update_strategy
            .and_then(|s| s.rolling_update)
            .and_then(|r| r.partition)
            .unwrap_or(0);
        usize::try_from(partition).unwrap_or(0)
    }

    fn min_ready(&self) -> i32 {
        self.spec().min_ready_seconds.unwrap_or(0)
    }

    /// Splits the set's pods into the replicas (by index in the ordinal range) and the
    /// condemned (other ordinals, lowest first); pods whose names carry no ordinal are ignored.
    pub(super) fn split(&self, pods: Vec<Pod>) -> (Slots, Condemned) {
        let start = i64::from(self.start());
        let count = self.replicas();
        let mut slots: Slots = vec![None; count];
        let mut condemned = Condemned::new();
        for pod in pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let Some(ordinal) = identity::ordinal_of(&self.key.name, &name) else {
                continue;
            };
            let index = usize::try_from(i64::from(ordinal) - start).ok();
            match index.filter(|&i| i < count) {
                Some(i) => slots[i] = Some(pod),
                None => condemned.push((ordinal, pod)),
            }
        }
        condemned.sort_by_key(|(ordinal, _)| *ordinal);
        (slots, condemned)
    }

    /// The revision (template and name) the pod at `index` is made from: below the partition
    /// of a rolling update the current one, else the update revision.
    fn revision_for(&self, index: usize) -> (PodTemplateSpec, &str) {
        let revision = if self.rolling() && index < self.partition() {
            self.current
        } else {
            self.update
        };
        let template = history::template_of(revision).unwrap_or_else(|| self.spec().template);
        (
            template,
            revision.metadata.name.as_deref().unwrap_or_default(),
        )
    }

    async fn event(&self, kind: EventType, reason: &str, message: String) {
        self.events
            .record(&self.ctx.store, self.set, kind, reason, message)
            .await;
    }

    fn claims_api(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(
            self.ctx.store.clone(),
            self.key.namespace.as_deref().unwrap_or_default(),
        )
    }

    /// Creates missing claims of the pod of `ordinal` and fixes their owners; true if a claim
    /// is still being deleted.
    async fn claims(
        &self,
        ordinal: i32,
        pod: Option<&Pod>,
        condemned: bool,
    ) -> Result<bool, ReconcileError> {
        let cache = self.ctx.informers.informer(&claims::kind());
        let result = claims::ensure(
            &self.claims_api(),
            &cache,
            self.set,
            ordinal,
            pod,
            condemned,
        )
        .await?;
        let pod_name = identity::pod_name(&self.key.name, ordinal);
        for claim in &result.created {
            self.event(
                EventType::Normal,
                "SuccessfulCreate",
                format!(
                    "create Claim {claim} Pod {pod_name} in StatefulSet {} success",
                    self.key.name
                ),
            )
            .await;
        }
        Ok(result.stale)
    }

    /// Creates the pod at `index` (its claims first). `Ok(false)` if it cannot be yet (a
    /// claim or the previous pod of that name is still going away).
    async fn create(&self, index: usize) -> Result<bool, ReconcileError> {
        let ordinal = self
            .start()
            .saturating_add(i32::try_from(index).unwrap_or(i32::MAX));
        if self.claims(ordinal, None, false).await? {
            return Ok(false);
        }
        let (template, revision) = self.revision_for(index);
        let pod = identity::new_pod(self.set, &template, ordinal, revision);
        let name = pod.metadata.name.clone().unwrap_or_default();
        match self.pods.create(&pod).await {
            Ok(created) => {
                self.expectations
                    .created(self.key, ObjectKey::from_meta(&created.metadata));
                self.event(
                    EventType::Normal,
                    "SuccessfulCreate",
                    format!(
                        "create Pod {name} in StatefulSet {} successful",
                        self.key.name
                    ),
                )
                .await;
                Ok(true)
            }
            Err(e) if e.is_already_exists() => Ok(false),
            Err(e) => {
                self.event(
                    EventType::Warning,
                    "FailedCreate",
                    format!(
                        "create Pod {name} in StatefulSet {} failed error: {e}",
                        self.key.name
                    ),
                )
                .await;
                Err(e.into())
            }
        }
    }

    async fn delete(&self, pod: &Pod) -> Result<(), ReconcileError> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        match self
            .pods
            .delete(&name, &Preconditions::uid(uid.clone()))
            .await
        {
            Ok(_) => {
                self.expectations
                    .deleted(self.key, ObjectKey::from_meta(&pod.metadata), uid);
                self.event(
                    EventType::Normal,
                    "SuccessfulDelete",
                    format!(
                        "delete Pod {name} in StatefulSet {} successful",
                        self.key.name
                    ),
                )
                .await;
                Ok(())
            }
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => {
                self.event(
                    EventType::Warning,
                    "FailedDelete",
                    format!(
                        "delete Pod {name} in StatefulSet {} failed error: {e}",
                        self.key.name
                    ),
                )
                .await;
                Err(e.into())
            }
        }
    }

    /// Runs the pass.
    pub(super) async fn run(
        &self,
        mut slots: Slots,
        condemned: Condemned,
    ) -> Result<Progress, ReconcileError> {
        let monotonic = self.spec().pod_management_policy.as_deref() != Some("Parallel");
        let min_ready = self.min_ready();
        let now = SystemTime::now();
        let start = self.start();

        for (index, slot) in slots.iter_mut().enumerate() {
            let ordinal = start.saturating_add(i32::try_from(index).unwrap_or(i32::MAX));
            if let Some(pod) = slot.as_ref() {
                if matches!(phase(pod), "Failed" | "Succeeded") {
                    // Recreate pods that finished, whatever their exit: a replica runs forever.
                    if !is_terminating(pod) {
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        let reason = if phase(pod) == "Failed" {
                            "RecreatingFailedPod"
                        } else {
                            "RecreatingTerminatedPod"
                        };
                        self.event(
                            EventType::Warning,
                            reason,
                            format!(
                                "StatefulSet {} is recreating {} Pod {name}",
                                self.key,
                                if reason == "RecreatingFailedPod" {
                                    "failed"
                                } else {
                                    "terminated"
                                },
                            ),
                        )
                        .await;
                        self.delete(pod).await?;
                    }
                    *slot = None;
                }
            }
            let Some(pod) = slot.as_ref() else {
                let created = self.create(index).await?;
                if monotonic || !created {
                    // OrderedReady: the next pod waits for this one.
                    return Ok(Progress::Wait(
                        (!created).then_some(Duration::from_millis(500)),
                    ));
                }
                continue;
            };
            if phase(pod) == "Pending" && self.claims(ordinal, Some(pod), false).await? {
                return Ok(Progress::Wait(Some(Duration::from_secs(1))));
            }
            if monotonic {
                if is_terminating(pod) || !is_running_and_ready(pod) {
                    return Ok(Progress::Wait(None));
                }
                if let (false, wait) = running_and_available(pod, min_ready, now) {
                    return Ok(Progress::Wait(wait.map(|w| w + Duration::from_millis(100))));
                }
            }
            // The invariants: identity labels and the claims' owners.
            if !identity::identity_matches(pod, ordinal) && !is_terminating(pod) {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let mut labels = serde_json::Map::new();
                labels.insert(identity::POD_NAME_LABEL.into(), json!(name));
                labels.insert(identity::POD_INDEX_LABEL.into(), json!(ordinal.to_string()));
                match self
                    .pods
                    .patch_merge(&name, &json!({"metadata": {"labels": labels}}))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let cache = self.ctx.informers.informer(&claims::kind());
            if !claims::match_policy(&cache, self.set, ordinal, Some(pod), false) {
                self.claims(ordinal, Some(pod), false).await?;
            }
        }

        // Scale down: highest ordinal first; OrderedReady one at a time, each gone before the
        // next, and only while every replica is healthy (the loop above returned otherwise).
        let first_unhealthy = condemned
            .iter()
            .find(|(_, p)| is_terminating(p) || !is_running_and_ready(p))
            .map(|(ordinal, _)| *ordinal);
        let mut deleted_any = false;
        for (ordinal, pod) in condemned.iter().rev() {
            if is_terminating(pod) {
                if monotonic {
                    return Ok(Progress::Wait(None));
                }
                continue;
            }
            let healthy = running_and_available(pod, min_ready, now).0;
            if monotonic && !healthy && first_unhealthy != Some(*ordinal) {
                return Ok(Progress::Wait(None));
            }
            // With `whenScaled: Delete` the claims now belong to the pod, so they go with it.
            self.claims(*ordinal, Some(pod), true).await?;
            self.delete(pod).await?;
            deleted_any = true;
            if monotonic {
                return Ok(Progress::Wait(None));
            }
        }
        if deleted_any {
            return Ok(Progress::Wait(None));
        }

        if !self.rolling() {
            // OnDelete: pods are replaced when the user deletes them.
            return Ok(Progress::Done);
        }
        self.roll(&slots, min_ready, now).await
    }

    /// The rolling update: pods not at the update revision are deleted from the highest
    /// ordinal down to the partition, at most `maxUnavailable` unavailable at a time; the
    /// replica loop recreates them at the update revision.
    async fn roll(
        &self,
        slots: &Slots,
        min_ready: i32,
        now: SystemTime,
    ) -> Result<Progress, ReconcileError> {
        let update = self.update.metadata.name.as_deref().unwrap_or_default();
        let max_unavailable = self.max_unavailable(slots.len());
        let unavailable = slots
            .iter()
            .filter(|p| p.as_ref().is_none_or(|p| !is_healthy(p, min_ready, now)))
            .count();
        let outdated = slots
            .iter()
            .skip(self.partition())
            .flatten()
            .any(|p| identity::pod_revision(p) != Some(update));
        if !outdated {
            return Ok(Progress::Done);
        }
        if unavailable >= max_unavailable {
            return Ok(Progress::Wait(None));
        }
        let mut budget = max_unavailable - unavailable;
        for pod in slots.iter().skip(self.partition()).rev().flatten() {
            if budget == 0 {
                break;
            }
            if identity::pod_revision(pod) != Some(update) && !is_terminating(pod) {
                tracing::debug!(set = %self.key, pod = ?pod.metadata.name, "deleting for update");
                self.delete(pod).await?;
                budget -= 1;
            }
        }
        Ok(Progress::Wait(None))
    }

    /// `rollingUpdate.maxUnavailable` of `replicas` (a percentage rounds down), at least 1.
    fn max_unavailable(&self, replicas: usize) -> usize {
        let value = self
            .spec()
            .update_strategy
            .and_then(|s| s.rolling_update)
            .and_then(|r| r.max_unavailable);
        let n = match value {
            Some(IntOrString::Int(n)) => usize::try_from(n).unwrap_or(0),
            Some(IntOrString::String(p)) => {
                let pct: usize = p.trim_end_matches('%').parse().unwrap_or(0);
                replicas * pct / 100
            }
            None => 1,
        };
        n.max(1)
    }
}
