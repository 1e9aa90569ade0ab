//! A StatefulSet's status from its pods, as Kubernetes' `computeReplicaStatus` and
//! `completeRollingUpdate`.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::Pod;

use super::identity::pod_revision;
use crate::pods::{availability, is_ready, phase};

/// Whether the pod is being deleted.
pub(crate) fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Running with its Ready condition true.
pub(crate) fn is_running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && is_ready(pod)
}

/// Running and ready for `min_ready_seconds`; if not yet, how long until it is (if ready).
pub(crate) fn running_and_available(
    pod: &Pod,
    min_ready_seconds: i32,
    now: SystemTime,
) -> (bool, Option<Duration>) {
    if phase(pod) != "Running" {
        return (false, None);
    }
    availability(pod, min_ready_seconds, now)
}

/// Available and not being deleted: what a rolling update may take down.
pub(crate) fn is_healthy(pod: &Pod, min_ready_seconds: i32, now: SystemTime) -> bool {
    running_and_available(pod, min_ready_seconds, now).0 && !is_terminating(pod)
}

/// The revisions status reports.
#[derive(Debug)]
pub(crate) struct Revisions<'a> {
    pub(crate) current: &'a str,
    pub(crate) update: &'a str,
    pub(crate) collision_count: Option<i32>,
}

/// The status of `set` whose pods are `pods`; also how long until the next pod becomes
/// available (to look again then).
pub(crate) fn compute<'a>(
    set: &StatefulSet,
    pods: impl IntoIterator<Item = &'a Pod>,
    revisions: &Revisions<'_>,
    now: SystemTime,
) -> (StatefulSetStatus, Option<Duration>) {
    let spec = set.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let old = set.status.clone().unwrap_or_default();
    let mut status = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        current_revision: Some(revisions.current.to_string()),
        update_revision: Some(revisions.update.to_string()),
        collision_count: revisions.collision_count,
        conditions: old.conditions,
        ready_replicas: Some(0),
        current_replicas: Some(0),
        updated_replicas: Some(0),
        available_replicas: Some(0),
        replicas: 0,
    };
    let mut next: Option<Duration> = None;
    let add = |n: &mut Option<i32>| *n = Some(n.unwrap_or(0).saturating_add(1));
    for pod in pods {
        // As Kubernetes, terminating pods still count as replicas (and ready ones as ready):
        // a rollout is not complete while an old pod is going away.
        status.replicas = status.replicas.saturating_add(1);
        if is_running_and_ready(pod) {
            add(&mut status.ready_replicas);
            match running_and_available(pod, min_ready, now) {
                (true, _) => add(&mut status.available_replicas),
                (false, Some(wait)) => next = Some(next.map_or(wait, |n| n.min(wait))),
                (false, None) => {}
            }
        }
        if is_terminating(pod) {
            continue;
        }
        let revision = pod_revision(pod);
        if revision == Some(revisions.current) {
            add(&mut status.current_replicas);
        }
        if revision == Some(revisions.update) {
            add(&mut status.updated_replicas);
        }
    }
    // A rolling update is complete when every pod is updated and ready: the update revision
    // becomes the current one.
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate");
    if rolling
        && status.updated_replicas == Some(status.replicas)
        && status.ready_replicas == Some(status.replicas)
    {
        status.current_replicas = status.updated_replicas;
        status.current_revision = status.update_revision.clone();
    }
    (status, next)
}
