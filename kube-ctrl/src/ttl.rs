//! [`TtlAfterFinishedController`]: deletes finished Jobs once their
//! `ttlSecondsAfterFinished` has passed, as Kubernetes' TTL-after-finished controller does.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{GroupKind, ObjectKey};
use kube_core::store::Preconditions;
use kube_core::typed::Api;

use crate::events::{EventRecorder, EventType};
use crate::job::finish_time;

/// Deletes a Job `ttlSecondsAfterFinished` seconds after it finished (its `Complete` or
/// `Failed` condition's transition time); its pods then go to the garbage collector. Jobs
/// without the field are kept. A Job not yet due is requeued for its time; the Job is read
/// again just before deletion, so a TTL raised meanwhile is honoured.
///
/// ```
/// use kube_ctrl::{ControllerManager, TtlAfterFinishedController};
/// let manager = ControllerManager::new().with(TtlAfterFinishedController::new());
/// assert!(format!("{manager:?}").contains("ttl-after-finished"));
/// ```
#[derive(Debug, Clone)]
pub struct TtlAfterFinishedController {
    events: EventRecorder,
}

impl Default for TtlAfterFinishedController {
    fn default() -> Self {
        Self::new()
    }
}

impl TtlAfterFinishedController {
    /// A TTL-after-finished controller.
    pub fn new() -> Self {
        Self {
            events: EventRecorder::new("ttl-after-finished-controller"),
        }
    }
}

/// How long until `job` expires: `None` if it has no TTL, is not finished or is being
/// deleted; zero if due.
fn remaining(job: &Job, now: k8s_openapi::jiff::Timestamp) -> Option<Duration> {
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let finished = finish_time(job.status.as_ref()?)?;
    let expires = finished.as_second().saturating_add(i64::from(ttl));
    let left = expires.saturating_sub(now.as_second());
    Some(Duration::from_secs(u64::try_from(left).unwrap_or(0)))
}

#[async_trait::async_trait]
impl Controller for TtlAfterFinishedController {
    fn name(&self) -> &str {
        "ttl-after-finished"
    }

    fn watches(&self) -> Watches {
        Watches::primary(GroupKind::of::<Job>())
    }

    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        let Some(namespace) = key.namespace.as_deref() else {
            return Ok(Action::await_change());
        };
        let jobs: Api<Job> = Api::namespaced(ctx.store.clone(), namespace);
        let Some(job) = jobs.get_opt(&key.name).await? else {
            return Ok(Action::await_change());
        };
        let Some(left) = remaining(&job, k8s_openapi::jiff::Timestamp::now()) else {
            return Ok(Action::await_change());
        };
        if !left.is_zero() {
            // Whole seconds on the wire: wake just past the second it expires.
            return Ok(Action::requeue(left + Duration::from_millis(100)));
        }
        let uid = job.metadata.uid.clone().unwrap_or_default();
        match jobs.delete(&key.name, &Preconditions::uid(uid)).await {
            Ok(_) => {
                tracing::debug!(job = %key, "deleted finished job after its TTL");
                self.events
                    .record(
                        &ctx.store,
                        &job,
                        EventType::Normal,
                        "Deleted",
                        "Job deleted after ttlSecondsAfterFinished",
                    )
                    .await;
            }
            Err(e) if e.is_not_found() || e.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Action::await_change())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_finished_jobs_with_a_ttl_expire() {
        let job = |ttl: Option<i32>, finished: bool| -> Job {
            let mut value =
                serde_json::json!({"metadata": {"name": "j"}, "spec": {"template": {}}});
            if let Some(ttl) = ttl {
                value["spec"]["ttlSecondsAfterFinished"] = ttl.into();
            }
            if finished {
                value["status"] = serde_json::json!({"conditions": [{"type": "Complete",
                    "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
            }
            serde_json::from_value(value).unwrap()
        };
        let at = |s: &str| s.parse::<k8s_openapi::jiff::Timestamp>().unwrap();
        let now = at("2026-01-01T00:00:30Z");
        assert_eq!(remaining(&job(None, true), now), None);
        assert_eq!(remaining(&job(Some(60), false), now), None);
        assert_eq!(
            remaining(&job(Some(60), true), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(remaining(&job(Some(10), true), now), Some(Duration::ZERO));
    }
}
