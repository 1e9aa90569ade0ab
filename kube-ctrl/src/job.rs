//! [`JobController`]: runs pods of a Job's template to completion.

use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{GroupKind, ObjectKey, controller_owner_ref, controller_ref, now};
use kube_core::selector::Selector;
use kube_core::store::{ListOptions, Preconditions};
use kube_core::typed::Api;

use crate::pods::{is_ready, phase};

/// The label tying a Job's pods to it (by UID, so a recreated Job never adopts old pods).
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The label naming a pod's Job.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// Reconciles Jobs (batch/v1): keeps up to `parallelism` pods running until `completions`
/// have succeeded (condition `Complete`), or fails the Job (condition `Failed`) once more than
/// `backoffLimit` pods have failed (`BackoffLimitExceeded`) or it has been active longer than
/// `activeDeadlineSeconds` (`DeadlineExceeded`), deleting its running pods.
#[derive(Debug, Default, Clone)]
pub struct JobController {
    _private: (),
}

impl JobController {
    /// A Job controller.
    pub fn new() -> Self {
        Self::default()
    }
}

fn finished(status: &JobStatus) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

fn condition(type_: &str, reason: &str, message: &str) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now()),
        last_transition_time: Some(now()),
    }
}

#[async_trait::async_trait]
impl Controller for JobController {
    fn name(&self) -> &str {
        "job"
    }

    fn watches(&self) -> Watches {
        Watches::primary(GroupKind::of::<Job>()).owns(GroupKind::POD)
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
        let pods_api: Api<Pod> = Api::namespaced(ctx.store.clone(), namespace);
        let Some(job) = jobs.get_opt(&key.name).await? else {
            return Ok(Action::await_change());
        };
        let old = job.status.clone().unwrap_or_default();
        if finished(&old) || job.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let invalid = |m: &str| ReconcileError::Invalid(format!("Job {key}: {m}"));
        let spec = job
            .spec
            .clone()
            .ok_or_else(|| invalid("spec is required"))?;
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let selector = Selector::parse(&format!("{CONTROLLER_UID_LABEL}={uid}"))
            .map_err(|e| invalid(&e.to_string()))?;
        let pods: Vec<Pod> = pods_api
            .list(&ListOptions::default().labels(selector))
            .await?
            .items
            .into_iter()
            .filter(|p| controller_ref(&p.metadata).is_some_and(|o| o.uid == uid))
            .collect();
        let active: Vec<&Pod> = pods
            .iter()
            .filter(|p| !matches!(phase(p), "Succeeded" | "Failed"))
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count();
        // Failed pods are counted from status too: deleted failed pods still count.
        let failed_now = pods.iter().filter(|p| phase(p) == "Failed").count();
        let as_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let failed = as_i32(failed_now).max(old.failed.unwrap_or(0));

        let mut status = old.clone();
        let start_time = old.start_time.clone().unwrap_or_else(now);
        status.start_time = Some(start_time.clone());
        let parallelism = usize::try_from(spec.parallelism.unwrap_or(1)).unwrap_or(0);
        let completions = spec.completions.and_then(|c| usize::try_from(c).ok());
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let elapsed = u64::try_from(now().0.as_second() - start_time.0.as_second()).unwrap_or(0);
        let deadline = spec
            .active_deadline_seconds
            .and_then(|d| u64::try_from(d).ok());

        let failure = if failed > backoff_limit {
            Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ))
        } else if deadline.is_some_and(|d| elapsed >= d) {
            Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ))
        } else {
            None
        };
        let complete = match completions {
            Some(c) => succeeded >= c,
            // Without completions, one success and nothing running completes the Job.
            None => succeeded > 0 && active.is_empty(),
        };

        let mut keep_active = active.len();
        if let Some((reason, message)) = failure {
            for pod in &active {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let pre = Preconditions::uid(pod.metadata.uid.clone().unwrap_or_default());
                match pods_api.delete(&name, &pre).await {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() || e.is_conflict() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            keep_active = 0;
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(condition("Failed", reason, message));
        } else if complete {
            status.completion_time = Some(now());
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(condition(
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ));
        } else {
            let want = match completions {
                Some(c) => parallelism.min(c.saturating_sub(succeeded)),
                None if succeeded > 0 => 0,
                None => parallelism,
            };
            if active.len() < want {
                let template = spec.template.clone();
                let owner =
                    controller_owner_ref(&job).ok_or_else(|| invalid("has no name or uid"))?;
                let meta = template.metadata.clone().unwrap_or_default();
                let mut labels = meta.labels.unwrap_or_default();
                labels.insert(CONTROLLER_UID_LABEL.into(), uid.clone());
                labels.insert(JOB_NAME_LABEL.into(), key.name.clone());
                let mut pod = Pod {
                    spec: template.spec,
                    ..Pod::default()
                };
                pod.metadata.generate_name = Some(format!("{}-", key.name));
                pod.metadata.labels = Some(labels);
                pod.metadata.annotations = meta.annotations;
                pod.metadata.owner_references = Some(vec![owner]);
                for _ in active.len()..want {
                    pods_api.create(&pod).await?;
                }
                keep_active = want;
            } else if active.len() > want {
                // Parallelism lowered: delete the newest surplus pods.
                let mut surplus: Vec<&&Pod> = active.iter().collect();
                surplus.sort_by_key(|p| std::cmp::Reverse(p.metadata.creation_timestamp.clone()));
                for pod in surplus.into_iter().take(active.len() - want) {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let pre = Preconditions::uid(pod.metadata.uid.clone().unwrap_or_default());
                    match pods_api.delete(&name, &pre).await {
                        Ok(_) => {}
                        Err(e) if e.is_not_found() || e.is_conflict() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                keep_active = want;
            }
        }
        status.active = Some(as_i32(keep_active));
        status.succeeded = Some(as_i32(succeeded));
        status.failed = Some(failed);
        status.ready = Some(as_i32(active.iter().filter(|p| is_ready(p)).count()));
        if status != old {
            let mut updated = job.clone();
            updated.status = Some(status.clone());
            jobs.replace(&updated).await?;
        }
        if finished(&status) {
            return Ok(Action::await_change());
        }
        Ok(match deadline {
            Some(d) => Action::requeue(
                Duration::from_secs(d.saturating_sub(elapsed)) + Duration::from_millis(500),
            ),
            None => Action::await_change(),
        })
    }
}
