//! [`CronJobController`]: creates a CronJob's Jobs on its schedule, as Kubernetes' CronJob
//! controller v2 (`pkg/controller/cronjob/cronjob_controllerv2.go`) does.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::cron::Schedule;
use kube_core::object::{GroupKind, ObjectKey, controller_owner_ref, controller_ref};
use kube_core::store::Preconditions;
use kube_core::typed::Api;

use crate::events::{EventRecorder, EventType};
use crate::index::OwnerIndex;

/// The annotation a CronJob's Job carries: its scheduled time, RFC 3339 in the CronJob's
/// time zone.
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// More missed start times than this are reported (event `TooManyMissedTimes`); only the
/// latest is started either way.
pub const MAX_MISSED_REPORTED: i64 = 100;

/// Slack added to the wait for the next scheduled time, as Kubernetes' `nextScheduleDelta`.
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);

/// Where the controller reads the time. [`SystemClock`] unless a test supplies its own (one on
/// Tokio's paused clock, say, so a test's minutes pass at once).
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Reconciles CronJobs (batch/v1), following Kubernetes' CronJob controller v2:
///
/// - The schedule is Kubernetes' cron syntax ([`kube_core::cron`]) in `spec.timeZone` (UTC
///   when unset). Each reconcile finds the most recent scheduled time not yet run, since
///   `status.lastScheduleTime` (or the CronJob's creation); missed runs, after an outage say,
///   start only the most recent, and more than [`MAX_MISSED_REPORTED`] missed also records a
///   `TooManyMissedTimes` warning. A time older than `startingDeadlineSeconds` is skipped
///   (`MissSchedule`).
/// - Its Job is named `<cronjob>-<scheduled time in minutes since the epoch>` (so one time
///   never makes two Jobs), carries the job template's labels and annotations plus
///   [`SCHEDULED_TIMESTAMP_ANNOTATION`], and is controlled by the CronJob.
/// - `concurrencyPolicy`: `Allow` runs Jobs side by side; `Forbid` skips a time while one is
///   active (`JobAlreadyActive`); `Replace` deletes the active ones first.
/// - `suspend` stops new Jobs; running ones go on.
/// - `status.active` lists unfinished Jobs, `lastScheduleTime` the last time started,
///   `lastSuccessfulTime` the last completion of a successful Job.
/// - Finished Jobs beyond `successfulJobsHistoryLimit` (3) and `failedJobsHistoryLimit` (1)
///   are deleted, oldest first.
///
/// It requeues each CronJob for its next scheduled time.
#[derive(Debug, Clone)]
pub struct CronJobController {
    clock: Arc<dyn Clock>,
    events: EventRecorder,
    jobs: Arc<OwnerIndex>,
}

impl Default for CronJobController {
    fn default() -> Self {
        Self::new()
    }
}

impl CronJobController {
    /// A CronJob controller on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// A CronJob controller reading the time from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            events: EventRecorder::new("cronjob-controller"),
            jobs: Arc::new(OwnerIndex::new(GroupKind::of::<Job>())),
        }
    }
}

/// What [`most_recent_schedule_time`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleCheck {
    /// The time the search started from: the last schedule time, the creation time, or the
    /// starting deadline, whichever is latest.
    pub earliest: Timestamp,
    /// The most recent scheduled time at or before now, if any.
    pub most_recent: Option<Timestamp>,
    /// How many scheduled times were missed since `earliest` (an estimate for irregular
    /// schedules, as Kubernetes' is).
    pub missed: i64,
}

/// Kubernetes' `mostRecentScheduleTime`: from the later of `last_schedule` (else `created`)
/// and `now - starting_deadline`, the latest scheduled time at or before `now` and how many
/// were missed. Errs for a schedule whose consecutive times are under a second apart or that
/// never fires.
pub fn most_recent_schedule_time(
    schedule: &Schedule,
    tz: &TimeZone,
    created: Timestamp,
    last_schedule: Option<Timestamp>,
    starting_deadline: Option<i64>,
    now: Timestamp,
) -> Result<ScheduleCheck, String> {
    let mut earliest = last_schedule.unwrap_or(created);
    if let Some(deadline) = starting_deadline {
        if let Ok(limit) = Timestamp::from_second(now.as_second().saturating_sub(deadline)) {
            if limit > earliest {
                earliest = limit;
            }
        }
    }
    let none = |missed| ScheduleCheck {
        earliest,
        most_recent: None,
        missed,
    };
    let Some(t1) = schedule.next_after(earliest, tz) else {
        return Ok(none(0));
    };
    if now < t1 {
        return Ok(none(0));
    }
    let Some(t2) = schedule.next_after(t1, tz) else {
        return Ok(ScheduleCheck {
            earliest,
            most_recent: Some(t1),
            missed: 1,
        });
    };
    if now < t2 {
        return Ok(ScheduleCheck {
            earliest,
            most_recent: Some(t1),
            missed: 1,
        });
    }
    let between = t2.as_second() - t1.as_second();
    if between < 1 {
        return Err("time difference between two schedules is less than 1 second".into());
    }
    let elapsed = now.as_second() - t1.as_second();
    let missed = elapsed / between + 1;
    // Start from a little before the estimate and walk to now, so irregular schedules
    // (`30 6-16/4 * * 1-5`) land on their real most recent time.
    let back = (missed - 2).saturating_mul(between);
    let mut t = Timestamp::from_second(t1.as_second().saturating_add(back)).unwrap_or(t1);
    let mut most_recent = None;
    while let Some(next) = schedule.next_after(t, tz) {
        if next > now {
            break;
        }
        most_recent = Some(next);
        t = next;
    }
    if most_recent.is_none() {
        // The estimate overshot: the schedule has gaps longer than the interval between its
        // first two times (weekdays only, say). Kubernetes then starts nothing; walk from the
        // first missed time instead (t1 is at or before now), bounded.
        let mut t = t1;
        most_recent = Some(t1);
        for _ in 0..100_000 {
            match schedule.next_after(t, tz) {
                Some(next) if next <= now => {
                    most_recent = Some(next);
                    t = next;
                }
                _ => break,
            }
        }
    }
    Ok(ScheduleCheck {
        earliest,
        most_recent,
        missed,
    })
}

/// The name of the Job for a scheduled time: `<cronjob>-<minutes since the epoch>`.
pub fn job_name(cron_job: &str, scheduled: Timestamp) -> String {
    format!("{cron_job}-{}", scheduled.as_second().div_euclid(60))
}

/// RFC 3339 in `tz`, as Go's `time.RFC3339` writes it (`Z` for UTC).
fn rfc3339_in(t: Timestamp, tz: &TimeZone) -> String {
    let zoned = t.to_zoned(tz.clone());
    if zoned.offset().seconds() == 0 {
        zoned.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// How a Job ended, if it has: `Complete` or `Failed` (a `True` condition).
fn finished(job: &Job) -> Option<&'static str> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some("Complete"),
            "Failed" => Some("Failed"),
            _ => None,
        })
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

fn new_job(cron_job: &CronJob, scheduled: Timestamp, tz: &TimeZone) -> Result<Job, ReconcileError> {
    let name = cron_job.metadata.name.clone().unwrap_or_default();
    let template = cron_job
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP_ANNOTATION.into(),
        rfc3339_in(scheduled, tz),
    );
    let owner = controller_owner_ref(cron_job)
        .ok_or_else(|| ReconcileError::Invalid(format!("CronJob {name} has no name or uid")))?;
    let mut job = Job {
        spec: template.spec,
        ..Job::default()
    };
    job.metadata.name = Some(job_name(&name, scheduled));
    job.metadata.namespace = cron_job.metadata.namespace.clone();
    job.metadata.labels = meta.labels;
    job.metadata.annotations = Some(annotations);
    job.metadata.owner_references = Some(vec![owner]);
    Ok(job)
}

fn to_timestamp(t: &Time) -> Timestamp {
    t.0
}

fn wait_until(now: Timestamp, at: Timestamp) -> Duration {
    let ms = at.as_millisecond().saturating_sub(now.as_millisecond());
    Duration::from_millis(u64::try_from(ms).unwrap_or(0)) + NEXT_SCHEDULE_DELTA
}

impl CronJobController {
    async fn warn(&self, ctx: &ControllerContext, cj: &CronJob, reason: &str, message: String) {
        self.events
            .record(&ctx.store, cj, EventType::Warning, reason, message)
            .await;
    }

    async fn normal(&self, ctx: &ControllerContext, cj: &CronJob, reason: &str, message: String) {
        self.events
            .record(&ctx.store, cj, EventType::Normal, reason, message)
            .await;
    }

    /// The time until the next scheduled time after the most recent one (Kubernetes'
    /// `nextScheduleTimeDuration`).
    fn next_wait(
        &self,
        cj: &CronJob,
        status: &CronJobStatus,
        schedule: &Schedule,
        tz: &TimeZone,
        now: Timestamp,
    ) -> Option<Duration> {
        let created = cj
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(now, to_timestamp);
        let last = status.last_schedule_time.as_ref().map(to_timestamp);
        let check = most_recent_schedule_time(schedule, tz, created, last, None, now).ok()?;
        let from = match check.most_recent {
            Some(t) => t,
            None if check.missed == 0 => check.earliest,
            None => now,
        };
        let next = schedule.next_after(from, tz)?;
        Some(wait_until(now, next))
    }

    /// Deletes the oldest finished Jobs beyond the history limits.
    async fn clean_up(
        &self,
        ctx: &ControllerContext,
        cj: &CronJob,
        jobs_api: &Api<Job>,
        jobs: &[Job],
    ) -> Result<(), ReconcileError> {
        let spec = cj.spec.as_ref();
        let limits = [
            (
                "Complete",
                spec.and_then(|s| s.successful_jobs_history_limit),
            ),
            ("Failed", spec.and_then(|s| s.failed_jobs_history_limit)),
        ];
        for (outcome, limit) in limits {
            let Some(limit) = limit else { continue };
            let mut done: Vec<&Job> = jobs
                .iter()
                .filter(|j| j.metadata.deletion_timestamp.is_none())
                .filter(|j| finished(j) == Some(outcome))
                .collect();
            let keep = usize::try_from(limit).unwrap_or(0);
            if done.len() <= keep {
                continue;
            }
            // Oldest first: by start time (Jobs without one last), then name.
            done.sort_by(|a, b| {
                let start = |j: &Job| {
                    j.status
                        .as_ref()
                        .and_then(|s| s.start_time.as_ref())
                        .map(to_timestamp)
                };
                match (start(a), start(b)) {
                    (Some(x), Some(y)) if x != y => x.cmp(&y),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    _ => a.metadata.name.cmp(&b.metadata.name),
                }
            });
            for job in &done[..done.len() - keep] {
                let name = job.metadata.name.clone().unwrap_or_default();
                let uid = job.metadata.uid.clone().unwrap_or_default();
                match jobs_api.delete(&name, &Preconditions::uid(uid)).await {
                    Ok(_) => {
                        self.normal(ctx, cj, "SuccessfulDelete", format!("Deleted job {name}"))
                            .await;
                    }
                    Err(e) if e.is_not_found() || e.is_conflict() => {}
                    Err(e) => {
                        self.warn(ctx, cj, "FailedDelete", format!("Deleted job: {e}"))
                            .await;
                        return Err(e.into());
                    }
                }
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Controller for CronJobController {
    fn name(&self) -> &str {
        "cronjob"
    }

    fn watches(&self) -> Watches {
        Watches::primary(GroupKind::of::<CronJob>()).owns(GroupKind::of::<Job>())
    }

    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        let Some(namespace) = key.namespace.as_deref() else {
            return Ok(Action::await_change());
        };
        let cron_jobs: Api<CronJob> = Api::namespaced(ctx.store.clone(), namespace);
        let jobs_api: Api<Job> = Api::namespaced(ctx.store.clone(), namespace);
        let Some(cj) = cron_jobs.get_opt(&key.name).await? else {
            return Ok(Action::await_change());
        };
        let now = self.clock.now();
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let old_status = cj.status.clone().unwrap_or_default();
        let mut status = old_status.clone();

        // The Jobs this CronJob controls, from the shared cache.
        let jobs: Vec<Job> = self
            .jobs
            .view(&ctx.informers)
            .controlled_by(&uid)
            .into_iter()
            .filter_map(|o| o.to_typed::<Job>().ok())
            .filter(|j| controller_ref(&j.metadata).is_some_and(|o| o.uid == uid))
            .collect();
        let in_active = |status: &CronJobStatus, uid: Option<&String>| {
            status
                .active
                .iter()
                .flatten()
                .any(|r| r.uid.as_ref() == uid && uid.is_some())
        };
        for job in &jobs {
            let name = job.metadata.name.clone().unwrap_or_default();
            let found = in_active(&status, job.metadata.uid.as_ref());
            let outcome = finished(job);
            if !found && outcome.is_none() {
                self.warn(
                    ctx,
                    &cj,
                    "UnexpectedJob",
                    format!("Saw a job that the controller did not create or forgot: {name}"),
                )
                .await;
            } else if found && outcome.is_some() {
                if let Some(active) = status.active.as_mut() {
                    active.retain(|r| r.uid != job.metadata.uid);
                }
                self.normal(
                    ctx,
                    &cj,
                    "SawCompletedJob",
                    format!(
                        "Saw completed job: {name}, condition: {}",
                        outcome.unwrap_or_default()
                    ),
                )
                .await;
            }
            if outcome == Some("Complete") {
                let completed = job.status.as_ref().and_then(|s| s.completion_time.clone());
                if let Some(completed) = completed {
                    let later = status
                        .last_successful_time
                        .as_ref()
                        .is_none_or(|t| completed.0 > t.0);
                    if later {
                        status.last_successful_time = Some(completed);
                    }
                }
            }
        }
        // Active Jobs that are gone (deleted by someone) leave the list.
        let mut gone = Vec::new();
        for reference in status.active.iter().flatten() {
            if jobs.iter().any(|j| j.metadata.uid == reference.uid) {
                continue;
            }
            let name = reference.name.clone().unwrap_or_default();
            // The cache may lag: ask the store before declaring it missing.
            match jobs_api.get_opt(&name).await? {
                Some(j) if j.metadata.uid == reference.uid => {}
                _ => gone.push((reference.uid.clone(), name)),
            }
        }
        for (uid, name) in gone {
            self.normal(
                ctx,
                &cj,
                "MissingJob",
                format!("Active job went missing: {name}"),
            )
            .await;
            if let Some(active) = status.active.as_mut() {
                active.retain(|r| r.uid != uid);
            }
        }

        let requeue = self.schedule(ctx, &cj, &jobs_api, &mut status, now).await?;

        if status.active.as_ref().is_some_and(Vec::is_empty) {
            status.active = None;
        }
        if status != old_status {
            let mut updated = cj.clone();
            updated.status = Some(status);
            cron_jobs.replace(&updated).await?;
        }
        self.clean_up(ctx, &cj, &jobs_api, &jobs).await?;
        Ok(match requeue {
            Some(wait) => Action::requeue(wait),
            None => Action::await_change(),
        })
    }
}

impl CronJobController {
    /// Starts the Job due now, if any; returns how long until the next scheduled time.
    async fn schedule(
        &self,
        ctx: &ControllerContext,
        cj: &CronJob,
        jobs_api: &Api<Job>,
        status: &mut CronJobStatus,
        now: Timestamp,
    ) -> Result<Option<Duration>, ReconcileError> {
        if cj.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let Some(spec) = cj.spec.as_ref() else {
            return Ok(None);
        };
        let tz = match kube_core::cron::time_zone(spec.time_zone.as_deref()) {
            Ok(tz) => tz,
            Err(e) => {
                let zone = spec.time_zone.clone().unwrap_or_default();
                self.warn(
                    ctx,
                    cj,
                    "UnknownTimeZone",
                    format!("invalid timeZone: {zone:?}: {e}"),
                )
                .await;
                return Ok(None);
            }
        };
        if spec.suspend == Some(true) {
            return Ok(None);
        }
        let schedule = match Schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                self.warn(
                    ctx,
                    cj,
                    "UnparseableSchedule",
                    format!("unparseable schedule: {:?} : {e}", spec.schedule),
                )
                .await;
                return Ok(None);
            }
        };
        let created = cj
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(now, to_timestamp);
        let last = status.last_schedule_time.as_ref().map(to_timestamp);
        let check = match most_recent_schedule_time(
            &schedule,
            &tz,
            created,
            last,
            spec.starting_deadline_seconds,
            now,
        ) {
            Ok(check) => check,
            Err(e) => {
                self.warn(
                    ctx,
                    cj,
                    "InvalidSchedule",
                    format!("invalid schedule: {} : {e}", spec.schedule),
                )
                .await;
                return Ok(None);
            }
        };
        let next = self.next_wait(cj, status, &schedule, &tz, now);
        let Some(scheduled) = check.most_recent else {
            return Ok(next);
        };
        if check.missed > MAX_MISSED_REPORTED {
            self.warn(
                ctx,
                cj,
                "TooManyMissedTimes",
                format!(
                    "too many missed start times: {}. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
                    check.missed
                ),
            )
            .await;
        }
        if let Some(deadline) = spec.starting_deadline_seconds {
            if scheduled.as_second().saturating_add(deadline) < now.as_second() {
                self.warn(
                    ctx,
                    cj,
                    "MissSchedule",
                    format!(
                        "Missed scheduled time to start a job: {}",
                        scheduled.strftime("%a, %d %b %Y %H:%M:%S +0000")
                    ),
                )
                .await;
                return Ok(next);
            }
        }
        let cj_name = cj.metadata.name.clone().unwrap_or_default();
        let name = job_name(&cj_name, scheduled);
        let already = status
            .active
            .iter()
            .flatten()
            .any(|r| r.name.as_deref() == Some(name.as_str()))
            || last == Some(scheduled);
        if already {
            return Ok(next);
        }
        let active = status.active.as_ref().map_or(0, Vec::len);
        match spec.concurrency_policy.as_deref() {
            Some("Forbid") if active > 0 => {
                self.normal(
                    ctx,
                    cj,
                    "JobAlreadyActive",
                    "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
                )
                .await;
                return Ok(next);
            }
            Some("Replace") => {
                for reference in status.active.take().unwrap_or_default() {
                    let job_name = reference.name.clone().unwrap_or_default();
                    let pre = Preconditions::uid(reference.uid.clone().unwrap_or_default());
                    match jobs_api.delete(&job_name, &pre).await {
                        Ok(_) => {
                            self.normal(
                                ctx,
                                cj,
                                "SuccessfulDelete",
                                format!("Deleted job {job_name}"),
                            )
                            .await;
                        }
                        Err(e) if e.is_not_found() => {}
                        Err(e) => {
                            self.warn(ctx, cj, "FailedDelete", format!("Deleted job: {e}"))
                                .await;
                            return Err(e.into());
                        }
                    }
                }
            }
            _ => {}
        }
        let job = new_job(cj, scheduled, &tz)?;
        let created_job = match jobs_api.create(&job).await {
            Ok(created) => {
                self.normal(ctx, cj, "SuccessfulCreate", format!("Created job {name}"))
                    .await;
                created
            }
            Err(e) if e.is_already_exists() => {
                // Made before, its status update lost: adopt it into the list if it is ours.
                let existing = jobs_api.get(&name).await?;
                let ours = controller_ref(&existing.metadata)
                    .is_some_and(|o| Some(&o.uid) == cj.metadata.uid.as_ref());
                if !ours
                    || status
                        .active
                        .iter()
                        .flatten()
                        .any(|r| r.uid == existing.metadata.uid)
                {
                    return Ok(next);
                }
                existing
            }
            Err(e) => {
                self.warn(ctx, cj, "FailedCreate", format!("Error creating job: {e}"))
                    .await;
                return Err(e.into());
            }
        };
        status
            .active
            .get_or_insert_with(Vec::new)
            .push(reference(&created_job));
        status.last_schedule_time = Some(Time(scheduled));
        Ok(self.next_wait(cj, status, &schedule, &tz, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn check(
        spec: &str,
        created: &str,
        last: Option<&str>,
        deadline: Option<i64>,
        now: &str,
    ) -> ScheduleCheck {
        most_recent_schedule_time(
            &Schedule::parse(spec).unwrap(),
            &TimeZone::UTC,
            ts(created),
            last.map(ts),
            deadline,
            ts(now),
        )
        .unwrap()
    }

    #[test]
    fn nothing_is_due_before_the_first_time() {
        let c = check(
            "*/5 * * * *",
            "2026-01-01T10:01:00Z",
            None,
            None,
            "2026-01-01T10:04:59Z",
        );
        assert_eq!((c.most_recent, c.missed), (None, 0));
    }

    #[test]
    fn one_due_time_is_the_most_recent() {
        let c = check(
            "*/5 * * * *",
            "2026-01-01T10:01:00Z",
            None,
            None,
            "2026-01-01T10:06:00Z",
        );
        assert_eq!(c.most_recent, Some(ts("2026-01-01T10:05:00Z")));
        assert_eq!(c.missed, 1);
    }

    #[test]
    fn after_an_outage_only_the_latest_missed_time_is_due() {
        let c = check(
            "*/1 * * * *",
            "2026-01-01T00:00:00Z",
            Some("2026-01-01T10:00:00Z"),
            None,
            "2026-01-01T10:30:30Z",
        );
        assert_eq!(c.most_recent, Some(ts("2026-01-01T10:30:00Z")));
        assert_eq!(c.missed, 30);
        let c = check(
            "0 * * * *",
            "2026-01-01T00:00:00Z",
            Some("2026-01-01T00:00:00Z"),
            None,
            "2026-01-06T12:10:00Z",
        );
        assert_eq!(c.most_recent, Some(ts("2026-01-06T12:00:00Z")));
        assert!(c.missed > MAX_MISSED_REPORTED, "{}", c.missed);
    }

    #[test]
    fn irregular_schedules_land_on_their_real_most_recent_time() {
        // 06:30, 10:30, 14:30 on weekdays; 2026-01-09 is a Friday.
        let c = check(
            "30 6-16/4 * * 1-5",
            "2026-01-01T00:00:00Z",
            Some("2026-01-05T06:30:00Z"),
            None,
            "2026-01-10T12:00:00Z",
        );
        assert_eq!(c.most_recent, Some(ts("2026-01-09T14:30:00Z")));
    }

    #[test]
    fn the_starting_deadline_moves_the_search_forward() {
        let c = check(
            "0 * * * *",
            "2026-01-01T00:00:00Z",
            Some("2026-01-01T00:00:00Z"),
            Some(600),
            "2026-01-01T05:20:00Z",
        );
        // Nothing within the last 10 minutes was scheduled.
        assert_eq!(c.most_recent, None);
        assert_eq!(c.earliest, ts("2026-01-01T05:10:00Z"));
    }

    #[test]
    fn job_names_and_scheduled_timestamps_follow_kubernetes() {
        assert_eq!(
            job_name("tick", ts("2026-01-01T00:01:00Z")),
            format!("tick-{}", 1_767_225_660 / 60)
        );
        let berlin = kube_core::cron::time_zone(Some("Europe/Berlin")).unwrap();
        assert_eq!(
            rfc3339_in(ts("2026-01-01T08:00:00Z"), &berlin),
            "2026-01-01T09:00:00+01:00"
        );
        assert_eq!(
            rfc3339_in(ts("2026-01-01T08:00:00Z"), &TimeZone::UTC),
            "2026-01-01T08:00:00Z"
        );
    }
}
