//! [`JobController`]: runs pods of a Job's template to completion.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{
    Job, JobCondition, JobSpec, JobStatus, PodFailurePolicyRule, UncountedTerminatedPods,
};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{GroupKind, ObjectKey, controller_owner_ref, controller_ref, now};
use kube_core::selector::Selector;
use kube_core::store::{ListOptions, Preconditions};
use kube_core::typed::Api;

use crate::finalizers::remove_finalizer;
use crate::pods::{is_ready, phase};

/// The label tying a Job's pods to it (by UID, so a recreated Job never adopts old pods).
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The label naming a pod's Job.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// The finalizer that keeps a Job's pod until the controller has counted it in the Job's
/// status, so a pod deleted right after it finishes is never lost from the counts.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The annotation and label holding an Indexed Job pod's completion index.
pub const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
/// The annotation counting the failures of an index before this pod (`backoffLimitPerIndex`).
pub const INDEX_FAILURE_COUNT_ANNOTATION: &str = "batch.kubernetes.io/job-index-failure-count";
/// The environment variable holding an Indexed Job pod's completion index.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// Reconciles Jobs (batch/v1) as Kubernetes' Job controller does:
///
/// - Keeps up to `parallelism` pods running until `completions` have succeeded (condition
///   `Complete`, `completionTime`), or fails the Job (condition `Failed`) once more than
///   `backoffLimit` pods have failed (`BackoffLimitExceeded`) or it has been active longer
///   than `activeDeadlineSeconds` (`DeadlineExceeded`), deleting its running pods.
/// - `completionMode: Indexed`: each pod gets an index in `0..completions` (annotation and
///   label [`COMPLETION_INDEX_ANNOTATION`], environment variable [`COMPLETION_INDEX_ENV`],
///   hostname `<job>-<index>`, name `<job>-<index>-<random>`); the Job completes when every
///   index has succeeded, and `status.completedIndexes` lists them (`0-2,4`).
/// - `backoffLimitPerIndex` (Indexed): an index fails once its failures exceed the limit
///   (`status.failedIndexes`); the others go on; more than `maxFailedIndexes` failed indexes
///   fail the Job (`MaxFailedIndexesExceeded`), and at the end any failed index does
///   (`FailedIndexes`).
/// - `podFailurePolicy`: the first rule matching a failed pod (exit codes `In`/`NotIn` of
///   its containers, or its conditions) decides: `FailJob` fails the Job at once
///   (`PodFailurePolicy`), `Ignore` does not count the failure, `Count` counts it, `FailIndex`
///   fails the pod's index.
/// - `suspend`: no pods while true (active ones are deleted), condition `Suspended`; resuming
///   restarts the clock of `activeDeadlineSeconds`.
/// - Tracking with the [`TRACKING_FINALIZER`] pod finalizer: finished pods are first listed in
///   `status.uncountedTerminatedPods`, then their finalizer is removed, then they move to the
///   `succeeded`/`failed` counts, so no pod is counted twice or lost. A pod deleted before it
///   finished counts as failed.
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

/// Whether the Job has finished: a `Complete` or `Failed` condition that is `True`.
pub fn is_finished(status: &JobStatus) -> bool {
    finish_time(status).is_some()
}

/// When the Job finished: the transition time of its `Complete` or `Failed` condition (or
/// `completionTime`).
pub fn finish_time(status: &JobStatus) -> Option<k8s_openapi::jiff::Timestamp> {
    let condition = status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    condition
        .last_transition_time
        .as_ref()
        .or(status.completion_time.as_ref())
        .map(|t| t.0)
        .or(Some(k8s_openapi::jiff::Timestamp::UNIX_EPOCH))
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now()),
        last_transition_time: Some(now()),
    }
}

/// Sets a condition, keeping its transition time when its status does not change.
fn set_condition(status: &mut JobStatus, new: JobCondition) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(c) if c.status == new.status => {
            c.reason = new.reason;
            c.message = new.message;
        }
        Some(c) => *c = new,
        None => conditions.push(new),
    }
}

/// Parses `0-2,4` into its indexes.
pub fn parse_indexes(text: &str) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.trim().parse::<i32>(), b.trim().parse::<i32>()) {
            for i in a..=b.min(a.saturating_add(1_000_000)) {
                set.insert(i);
            }
        }
    }
    set
}

/// Writes indexes as Kubernetes does: ascending, consecutive runs as ranges (`0-2,4`).
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut run: Option<(i32, i32)> = None;
    for &i in set {
        run = match run {
            Some((a, b)) if i == b + 1 => Some((a, i)),
            Some((a, b)) => {
                parts.push(if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                });
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    if let Some((a, b)) = run {
        parts.push(if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        });
    }
    parts.join(",")
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// An Indexed Job pod's completion index.
fn index_of(pod: &Pod) -> Option<i32> {
    annotation(pod, COMPLETION_INDEX_ANNOTATION).and_then(|i| i.parse().ok())
}

fn has_tracking_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING_FINALIZER)
}

/// How a failed pod is treated, by the Job's pod failure policy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Count,
    Ignore,
    FailIndex,
    FailJob(String),
}

fn rule_matches(rule: &PodFailurePolicyRule, pod: &Pod) -> Option<String> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let status = pod.status.as_ref()?;
    if let Some(codes) = &rule.on_exit_codes {
        let statuses = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for container in statuses {
            if codes
                .container_name
                .as_ref()
                .is_some_and(|n| *n != container.name)
            {
                continue;
            }
            let Some(code) = container
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code)
            else {
                continue;
            };
            // Successful containers never match.
            if code == 0 {
                continue;
            }
            let listed = codes.values.contains(&code);
            let matched = match codes.operator.as_str() {
                "In" => listed,
                "NotIn" => !listed,
                _ => false,
            };
            if matched {
                return Some(format!(
                    "Container {} for pod {namespace}/{name} failed with exit code {code}",
                    container.name
                ));
            }
        }
        return None;
    }
    for wanted in rule.on_pod_conditions.iter().flatten() {
        // The API server defaults an unset status to True.
        let want_status = match wanted.status.as_str() {
            "" => "True",
            s => s,
        };
        let present = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == wanted.type_ && c.status == want_status);
        if present {
            return Some(format!(
                "Pod {namespace}/{name} has condition {} matching",
                wanted.type_
            ));
        }
    }
    None
}

/// The first matching rule's action for a failed pod (`Count` when none matches).
fn verdict(spec: &JobSpec, pod: &Pod) -> Verdict {
    let Some(policy) = &spec.pod_failure_policy else {
        return Verdict::Count;
    };
    for (i, rule) in policy.rules.iter().enumerate() {
        if let Some(what) = rule_matches(rule, pod) {
            return match rule.action.as_str() {
                "FailJob" => Verdict::FailJob(format!("{what} matching FailJob rule at index {i}")),
                "Ignore" => Verdict::Ignore,
                "FailIndex" => Verdict::FailIndex,
                _ => Verdict::Count,
            };
        }
    }
    Verdict::Count
}

/// Whether a pod has ended for the Job, and succeeded: terminal, or deleted before it
/// finished (failed). With a pod failure policy, as in Kubernetes, a deleted pod counts only
/// once terminal, so the policy sees how its containers ended.
fn terminal(pod: &Pod, spec: &JobSpec) -> Option<bool> {
    match phase(pod) {
        "Succeeded" => Some(true),
        "Failed" => Some(false),
        _ if pod.metadata.deletion_timestamp.is_some() && spec.pod_failure_policy.is_none() => {
            Some(false)
        }
        _ => None,
    }
}

fn invalid(key: &ObjectKey, message: &str) -> ReconcileError {
    ReconcileError::Invalid(format!("Job {key}: {message}"))
}

/// Removes the tracking finalizer (as the controller does before deleting a pod itself, so
/// that pod is not counted as failed) and deletes the pod.
async fn delete_pod(
    ctx: &ControllerContext,
    pods: &Api<Pod>,
    pod: &Pod,
) -> Result<(), ReconcileError> {
    let key = ObjectKey::from_meta(&pod.metadata);
    if has_tracking_finalizer(pod) {
        remove_finalizer(
            ctx.store.as_ref(),
            &GroupKind::POD,
            &key,
            TRACKING_FINALIZER,
        )
        .await?;
    }
    let name = pod.metadata.name.clone().unwrap_or_default();
    let pre = Preconditions::uid(pod.metadata.uid.clone().unwrap_or_default());
    match pods.delete(&name, &pre).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Lets go of pods that still carry the tracking finalizer though their Job is gone or done.
async fn release_pods(ctx: &ControllerContext, pods: &[Pod]) -> Result<(), ReconcileError> {
    for pod in pods.iter().filter(|p| has_tracking_finalizer(p)) {
        let key = ObjectKey::from_meta(&pod.metadata);
        remove_finalizer(
            ctx.store.as_ref(),
            &GroupKind::POD,
            &key,
            TRACKING_FINALIZER,
        )
        .await?;
    }
    Ok(())
}

fn new_pod(
    job: &Job,
    key: &ObjectKey,
    uid: &str,
    index: Option<(i32, i32)>,
) -> Result<Pod, ReconcileError> {
    let spec = job
        .spec
        .as_ref()
        .ok_or_else(|| invalid(key, "spec is required"))?;
    let template = spec.template.clone();
    let owner = controller_owner_ref(job).ok_or_else(|| invalid(key, "has no name or uid"))?;
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(CONTROLLER_UID_LABEL.into(), uid.to_string());
    labels.insert(JOB_NAME_LABEL.into(), key.name.clone());
    let mut annotations = meta.annotations.unwrap_or_default();
    let mut pod_spec = template.spec.unwrap_or_default();
    let mut generate_name = format!("{}-", key.name);
    if let Some((index, failures)) = index {
        labels.insert(COMPLETION_INDEX_ANNOTATION.into(), index.to_string());
        annotations.insert(COMPLETION_INDEX_ANNOTATION.into(), index.to_string());
        if spec.backoff_limit_per_index.is_some() {
            annotations.insert(INDEX_FAILURE_COUNT_ANNOTATION.into(), failures.to_string());
        }
        generate_name = format!("{}-{index}-", key.name);
        if pod_spec.hostname.is_none() {
            pod_spec.hostname = Some(format!("{}-{index}", key.name));
        }
        let env = EnvVar {
            name: COMPLETION_INDEX_ENV.into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: format!("metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"),
                }),
                ..EnvVarSource::default()
            }),
        };
        for container in pod_spec
            .init_containers
            .iter_mut()
            .flatten()
            .chain(pod_spec.containers.iter_mut())
        {
            let vars = container.env.get_or_insert_with(Vec::new);
            if !vars.iter().any(|v| v.name == COMPLETION_INDEX_ENV) {
                vars.push(env.clone());
            }
        }
    }
    let mut pod = Pod {
        spec: Some(pod_spec),
        ..Pod::default()
    };
    pod.metadata.generate_name = Some(generate_name);
    pod.metadata.labels = Some(labels);
    pod.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    pod.metadata.owner_references = Some(vec![owner]);
    pod.metadata.finalizers = Some(vec![TRACKING_FINALIZER.into()]);
    Ok(pod)
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
        let Some(mut job) = jobs.get_opt(&key.name).await? else {
            // Gone: its pods must not keep the tracking finalizer.
            let selector = Selector::parse(&format!("{JOB_NAME_LABEL}={}", key.name))
                .map_err(|e| invalid(key, &e.to_string()))?;
            let orphans = pods_api
                .list(&ListOptions::default().labels(selector))
                .await?
                .items;
            release_pods(ctx, &orphans).await?;
            return Ok(Action::await_change());
        };
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let selector = Selector::parse(&format!("{CONTROLLER_UID_LABEL}={uid}"))
            .map_err(|e| invalid(key, &e.to_string()))?;
        let pods: Vec<Pod> = pods_api
            .list(&ListOptions::default().labels(selector))
            .await?
            .items
            .into_iter()
            .filter(|p| controller_ref(&p.metadata).is_some_and(|o| o.uid == uid))
            .collect();
        let old = job.status.clone().unwrap_or_default();
        if is_finished(&old) || job.metadata.deletion_timestamp.is_some() {
            release_pods(ctx, &pods).await?;
            return Ok(Action::await_change());
        }
        let spec = job
            .spec
            .clone()
            .ok_or_else(|| invalid(key, "spec is required"))?;
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let as_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let mut status = old.clone();

        if status.uncounted_terminated_pods.is_none() {
            // A Job from before tracking (its status has no uncountedTerminatedPods yet):
            // count its finished pods that carry no finalizer, once, as they were counted.
            let legacy: Vec<&Pod> = pods.iter().filter(|p| !has_tracking_finalizer(p)).collect();
            let count = |want: &str| as_i32(legacy.iter().filter(|p| phase(p) == want).count());
            status.succeeded = Some(status.succeeded.unwrap_or(0).max(count("Succeeded")));
            status.failed = Some(status.failed.unwrap_or(0).max(count("Failed")));
            if indexed {
                let mut done = parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
                done.extend(
                    legacy
                        .iter()
                        .filter(|p| phase(p) == "Succeeded")
                        .filter_map(|p| index_of(p)),
                );
                status.completed_indexes = Some(format_indexes(&done));
            }
        }
        // Tracking, step 1: finished pods still holding the finalizer go into
        // uncountedTerminatedPods (once).
        let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
        let mut listed: BTreeSet<String> = uncounted
            .succeeded
            .iter()
            .flatten()
            .chain(uncounted.failed.iter().flatten())
            .cloned()
            .collect();
        let mut newly = false;
        for pod in pods.iter().filter(|p| has_tracking_finalizer(p)) {
            let (Some(succeeded), Some(pod_uid)) = (terminal(pod, &spec), pod.metadata.uid.clone())
            else {
                continue;
            };
            if listed.insert(pod_uid.clone()) {
                let list = if succeeded {
                    uncounted.succeeded.get_or_insert_with(Vec::new)
                } else {
                    uncounted.failed.get_or_insert_with(Vec::new)
                };
                list.push(pod_uid);
                newly = true;
            }
        }
        if newly {
            status.uncounted_terminated_pods = Some(uncounted.clone());
            job.status = Some(status.clone());
            job = jobs.replace(&job).await?;
        }
        // Step 2: their finalizers go.
        for pod in pods.iter().filter(|p| has_tracking_finalizer(p)) {
            if pod
                .metadata
                .uid
                .as_ref()
                .is_some_and(|u| listed.contains(u))
            {
                let pod_key = ObjectKey::from_meta(&pod.metadata);
                remove_finalizer(
                    ctx.store.as_ref(),
                    &GroupKind::POD,
                    &pod_key,
                    TRACKING_FINALIZER,
                )
                .await?;
            }
        }
        // Step 3: they move into the counts (with their indexes and failure verdicts).
        let by_uid: BTreeMap<&str, &Pod> = pods
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref().map(|u| (u, p)))
            .collect();
        let mut completed = parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
        let mut failed_indexes = parse_indexes(status.failed_indexes.as_deref().unwrap_or(""));
        let mut succeeded = status.succeeded.unwrap_or(0);
        let mut failed = status.failed.unwrap_or(0);
        let mut fail_job: Option<String> = None;
        for pod_uid in uncounted.succeeded.iter().flatten() {
            succeeded = succeeded.saturating_add(1);
            if let Some(i) = by_uid.get(pod_uid.as_str()).and_then(|p| index_of(p)) {
                completed.insert(i);
            }
        }
        for pod_uid in uncounted.failed.iter().flatten() {
            let pod = by_uid.get(pod_uid.as_str());
            let verdict = pod.map_or(Verdict::Count, |p| verdict(&spec, p));
            match verdict {
                Verdict::Ignore => continue,
                Verdict::FailJob(message) => {
                    fail_job.get_or_insert(message);
                }
                Verdict::FailIndex => {
                    if let Some(i) = pod.and_then(|p| index_of(p)) {
                        failed_indexes.insert(i);
                    }
                }
                Verdict::Count => {}
            }
            failed = failed.saturating_add(1);
        }
        status.succeeded = Some(succeeded);
        status.failed = Some(failed);
        status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());
        let completions = spec.completions;

        // Per-index failure counts: the latest counted failure of each index.
        let mut index_failures: BTreeMap<i32, i32> = BTreeMap::new();
        if let Some(limit) = spec.backoff_limit_per_index {
            for pod in pods.iter().filter(|p| phase(p) == "Failed") {
                let Some(i) = index_of(pod) else { continue };
                let before: i32 = annotation(pod, INDEX_FAILURE_COUNT_ANNOTATION)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                let counted = !matches!(verdict(&spec, pod), Verdict::Ignore);
                let count = before + i32::from(counted);
                let entry = index_failures.entry(i).or_insert(0);
                *entry = (*entry).max(count);
                if count > limit {
                    failed_indexes.insert(i);
                }
            }
            failed_indexes.retain(|i| !completed.contains(i));
            status.failed_indexes = Some(format_indexes(&failed_indexes));
        }
        if indexed {
            let total = completions.unwrap_or(0);
            completed.retain(|i| (0..total).contains(i));
            status.completed_indexes = Some(format_indexes(&completed));
        }

        let active: Vec<&Pod> = pods
            .iter()
            .filter(|p| terminal(p, &spec).is_none() && p.metadata.deletion_timestamp.is_none())
            .collect();
        let terminating = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_some())
            .filter(|p| !matches!(phase(p), "Succeeded" | "Failed"))
            .count();

        // Suspension: no pods; the clock of activeDeadlineSeconds stops.
        let suspended = spec.suspend == Some(true);
        let was_suspended = old
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Suspended" && c.status == "True");
        if suspended {
            for pod in &active {
                delete_pod(ctx, &pods_api, pod).await?;
            }
            set_condition(
                &mut status,
                condition("Suspended", "True", "JobSuspended", "Job suspended"),
            );
            status.start_time = None;
            status.active = Some(0);
            status.ready = Some(0);
            status.terminating = Some(as_i32(terminating + active.len()));
            if status != old {
                job.status = Some(status);
                jobs.replace(&job).await?;
            }
            return Ok(Action::await_change());
        }
        if was_suspended {
            set_condition(
                &mut status,
                condition("Suspended", "False", "JobResumed", "Job resumed"),
            );
            status.start_time = None;
        }
        let start_time = status.start_time.clone().unwrap_or_else(now);
        status.start_time = Some(start_time.clone());
        let parallelism = usize::try_from(spec.parallelism.unwrap_or(1)).unwrap_or(0);
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let elapsed = u64::try_from(now().0.as_second() - start_time.0.as_second()).unwrap_or(0);
        let deadline = spec
            .active_deadline_seconds
            .and_then(|d| u64::try_from(d).ok());

        let total = usize::try_from(completions.unwrap_or(0)).unwrap_or(0);
        let failure: Option<(&str, String)> = if let Some(message) = fail_job {
            Some(("PodFailurePolicy", message))
        } else if spec.backoff_limit_per_index.is_some() {
            let too_many = spec
                .max_failed_indexes
                .is_some_and(|max| as_i32(failed_indexes.len()) > max);
            if too_many {
                Some((
                    "MaxFailedIndexesExceeded",
                    "Job has exceeded the specified maximal number of failed indexes".into(),
                ))
            } else if !failed_indexes.is_empty()
                && completed.len() + failed_indexes.len() >= total
                && active.is_empty()
            {
                Some(("FailedIndexes", "Job has failed indexes".into()))
            } else {
                None
            }
        } else if failed > backoff_limit {
            Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".into(),
            ))
        } else {
            None
        };
        let failure = failure.or_else(|| {
            deadline.filter(|d| elapsed >= *d).map(|_| {
                (
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline".to_string(),
                )
            })
        });
        let complete = if indexed {
            completed.len() >= total
        } else {
            match completions.and_then(|c| usize::try_from(c).ok()) {
                Some(c) => usize::try_from(succeeded).unwrap_or(0) >= c,
                // Without completions, one success and nothing running completes the Job.
                None => succeeded > 0 && active.is_empty(),
            }
        };

        let mut keep_active = active.len();
        if let Some((reason, message)) = failure {
            for pod in &active {
                delete_pod(ctx, &pods_api, pod).await?;
            }
            keep_active = 0;
            set_condition(&mut status, condition("Failed", "True", reason, &message));
        } else if complete {
            for pod in &active {
                delete_pod(ctx, &pods_api, pod).await?;
            }
            keep_active = 0;
            status.completion_time = Some(now());
            set_condition(
                &mut status,
                condition(
                    "Complete",
                    "True",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ),
            );
        } else {
            // With podReplacementPolicy Failed, a terminating pod is replaced only once gone.
            let blocking = if spec.pod_replacement_policy.as_deref() == Some("Failed") {
                terminating
            } else {
                0
            };
            if indexed {
                let running: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
                let room = parallelism.saturating_sub(active.len() + blocking);
                let pending: Vec<i32> = (0..completions.unwrap_or(0))
                    .filter(|i| {
                        !completed.contains(i)
                            && !failed_indexes.contains(i)
                            && !running.contains(i)
                    })
                    .take(room)
                    .collect();
                for i in &pending {
                    let failures = index_failures.get(i).copied().unwrap_or(0);
                    let pod = new_pod(&job, key, &uid, Some((*i, failures)))?;
                    pods_api.create(&pod).await?;
                }
                keep_active = active.len() + pending.len();
            } else {
                let succeeded = usize::try_from(succeeded).unwrap_or(0);
                let want = match completions.and_then(|c| usize::try_from(c).ok()) {
                    Some(c) => parallelism.min(c.saturating_sub(succeeded)),
                    None if succeeded > 0 => 0,
                    None => parallelism,
                };
                if active.len() + blocking < want {
                    let pod = new_pod(&job, key, &uid, None)?;
                    for _ in active.len() + blocking..want {
                        pods_api.create(&pod).await?;
                    }
                    keep_active = want.saturating_sub(blocking);
                } else if active.len() > want {
                    // Parallelism lowered: delete the newest surplus pods.
                    let mut surplus: Vec<&&Pod> = active.iter().collect();
                    surplus
                        .sort_by_key(|p| std::cmp::Reverse(p.metadata.creation_timestamp.clone()));
                    for pod in surplus.into_iter().take(active.len() - want) {
                        delete_pod(ctx, &pods_api, pod).await?;
                    }
                    keep_active = want;
                }
            }
        }
        status.active = Some(as_i32(keep_active));
        status.ready = Some(as_i32(active.iter().filter(|p| is_ready(p)).count()));
        status.terminating = Some(as_i32(terminating));
        if status != old {
            job.status = Some(status.clone());
            jobs.replace(&job).await?;
        }
        if is_finished(&status) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_read_and_write_as_ranges() {
        let set = parse_indexes("0-2,4,6-7");
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 4, 6, 7]);
        assert_eq!(format_indexes(&set), "0-2,4,6-7");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert_eq!(format_indexes(&[3].into_iter().collect()), "3");
        assert!(parse_indexes("x,-").is_empty());
    }

    fn failed_pod(exit_code: i32, conditions: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default"},
            "status": {"phase": "Failed", "conditions": conditions, "containerStatuses": [
                {"name": "main", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": exit_code}}}]},
        }))
        .unwrap()
    }

    #[test]
    fn the_first_matching_pod_failure_rule_decides() {
        let spec: JobSpec = serde_json::from_value(serde_json::json!({
            "template": {},
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}},
            ]},
        }))
        .unwrap();
        let fail = verdict(&spec, &failed_pod(42, serde_json::json!([])));
        assert!(
            matches!(&fail, Verdict::FailJob(m) if m.contains("Container main for pod default/p failed with exit code 42 matching FailJob rule at index 0")),
            "{fail:?}"
        );
        let disrupted = failed_pod(
            1,
            serde_json::json!([{"type": "DisruptionTarget", "status": "True"}]),
        );
        assert_eq!(verdict(&spec, &disrupted), Verdict::Ignore);
        assert_eq!(
            verdict(&spec, &failed_pod(3, serde_json::json!([]))),
            Verdict::Count
        );
        // No rule matches exit code 1: counted by default.
        assert_eq!(
            verdict(&spec, &failed_pod(1, serde_json::json!([]))),
            Verdict::Count
        );
    }
}
