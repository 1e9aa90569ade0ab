//! The CronJob controller on Tokio's paused clock: minutes of schedule pass at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube_core::store::Store;
use kube_core::typed::Api;
use kube_ctrl::ControllerManager;
use kube_ctrl::cronjob::{Clock, CronJobController, SCHEDULED_TIMESTAMP_ANNOTATION, job_name};
use serde_json::json;

use crate::support::start;

/// Wall-clock time that follows Tokio's (paused) clock, plus a jump a test may add.
#[derive(Debug)]
struct TestClock {
    anchor: Timestamp,
    started: tokio::time::Instant,
    jump_seconds: AtomicI64,
}

impl TestClock {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            anchor: Timestamp::now(),
            started: tokio::time::Instant::now(),
            jump_seconds: AtomicI64::new(0),
        })
    }

    /// Moves the clock forward without Tokio's clock: the controller was not running.
    fn jump(&self, by: Duration) {
        let secs = i64::try_from(by.as_secs()).unwrap();
        self.jump_seconds.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        let elapsed = i64::try_from(self.started.elapsed().as_millis()).unwrap();
        let ms = self.anchor.as_millisecond()
            + elapsed
            + self.jump_seconds.load(Ordering::SeqCst) * 1000;
        Timestamp::from_millisecond(ms).unwrap()
    }
}

fn manager(clock: Arc<TestClock>) -> ControllerManager {
    ControllerManager::new().with(CronJobController::with_clock(clock))
}

fn cron_job(name: &str, spec: serde_json::Value) -> CronJob {
    let mut value = json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "schedule": "*/1 * * * *",
            "jobTemplate": {
                "metadata": {"labels": {"app": name}, "annotations": {"team": "a"}},
                "spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                    "containers": [{"name": "c", "image": "busybox"}]}}}
            }
        }
    });
    for (k, v) in spec.as_object().unwrap() {
        value["spec"][k] = v.clone();
    }
    serde_json::from_value(value).unwrap()
}

/// Polls `check` each virtual second for up to `secs` virtual seconds.
async fn within<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..secs {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("timed out after {secs} virtual seconds waiting for: {what}");
}

async fn jobs_of(store: &Arc<dyn Store>, app: &str) -> Vec<Job> {
    let jobs: Api<Job> = Api::namespaced(store.clone(), "default");
    let mut items: Vec<Job> = jobs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|j| {
            j.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.get("app").map(String::as_str) == Some(app))
        })
        .collect();
    items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    items
}

async fn event_reasons(store: &Arc<dyn Store>) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(store.clone(), "default");
    events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

/// Marks a Job finished as the Job controller would: `Complete` or `Failed`.
async fn finish(store: &Arc<dyn Store>, job: &Job, outcome: &str) {
    let jobs: Api<Job> = Api::namespaced(store.clone(), "default");
    let mut job = jobs
        .get(job.metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    let now = kube_core::object::now();
    let mut status = json!({
        "startTime": now,
        "conditions": [{"type": outcome, "status": "True"}],
    });
    if outcome == "Complete" {
        status["completionTime"] = json!(now);
        status["succeeded"] = json!(1);
    } else {
        status["failed"] = json!(1);
    }
    job.status = Some(serde_json::from_value(status).unwrap());
    jobs.replace(&job).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_every_minute_cron_job_runs_on_schedule_and_forbid_skips_while_one_runs() {
    let clock = TestClock::new();
    let (store, running) = start(manager(clock.clone()));
    let cron_jobs: Api<CronJob> = Api::namespaced(store.clone(), "default");
    let created = cron_jobs
        .create(&cron_job("tick", json!({"concurrencyPolicy": "Forbid"})))
        .await
        .unwrap();

    let first = within("the first Job", 70, || async {
        jobs_of(&store, "tick").await.into_iter().next()
    })
    .await;
    // Named after its scheduled minute, which is a whole minute.
    let scheduled: Timestamp = first.metadata.annotations.as_ref().unwrap()
        [SCHEDULED_TIMESTAMP_ANNOTATION]
        .parse()
        .unwrap();
    assert_eq!(scheduled.as_second() % 60, 0);
    assert_eq!(first.metadata.name, Some(job_name("tick", scheduled)));
    assert_eq!(first.metadata.annotations.as_ref().unwrap()["team"], "a");
    let owner = &first.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), Some(&owner.uid), owner.controller),
        ("CronJob", created.metadata.uid.as_ref(), Some(true))
    );
    let status = within("status.active", 10, || async {
        let s = cron_jobs.get("tick").await.unwrap().status?;
        (s.active.as_ref()?.len() == 1).then_some(s)
    })
    .await;
    assert_eq!(status.last_schedule_time.unwrap().0, scheduled);

    // Forbid: while it runs, the next three minutes start nothing.
    tokio::time::sleep(Duration::from_secs(180)).await;
    assert_eq!(jobs_of(&store, "tick").await.len(), 1);
    assert!(
        event_reasons(&store)
            .await
            .contains(&"JobAlreadyActive".to_string())
    );

    // Once it completes, the next minute starts another.
    finish(&store, &first, "Complete").await;
    let second = within("a second Job after the first completed", 70, || async {
        let jobs = jobs_of(&store, "tick").await;
        (jobs.len() == 2).then(|| jobs[1].clone())
    })
    .await;
    let status = within("the new Job active, the success recorded", 10, || async {
        let s = cron_jobs.get("tick").await.unwrap().status?;
        let active = s.active.clone()?;
        (active.len() == 1
            && active[0].name == second.metadata.name
            && s.last_successful_time.is_some())
        .then_some(s)
    })
    .await;
    assert!(status.last_schedule_time.unwrap().0 > scheduled);
    running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn after_an_outage_only_the_most_recent_missed_run_starts() {
    let clock = TestClock::new();
    let (store, running) = start(manager(clock.clone()));
    let cron_jobs: Api<CronJob> = Api::namespaced(store.clone(), "default");
    cron_jobs
        .create(&cron_job("catch", json!({})))
        .await
        .unwrap();
    within("the first Job", 70, || async {
        (jobs_of(&store, "catch").await.len() == 1).then_some(())
    })
    .await;

    // Five minutes pass with no controller: one Job, for the latest of them.
    clock.jump(Duration::from_secs(300));
    let jobs = within("one Job for the missed minutes", 70, || async {
        let jobs = jobs_of(&store, "catch").await;
        (jobs.len() >= 2).then_some(jobs)
    })
    .await;
    assert_eq!(jobs.len(), 2, "{:?}", names(&jobs));
    let now_minute = clock.now().as_second() / 60;
    let latest = jobs[1].metadata.name.clone().unwrap();
    let minute: i64 = latest.rsplit('-').next().unwrap().parse().unwrap();
    assert!(now_minute - minute <= 1, "{latest} vs minute {now_minute}");
    assert!(
        !event_reasons(&store)
            .await
            .contains(&"TooManyMissedTimes".to_string())
    );

    // Three hours: more than 100 missed, reported, and still only the latest started.
    clock.jump(Duration::from_secs(3 * 3600));
    let jobs = within("one Job after a long outage", 70, || async {
        let jobs = jobs_of(&store, "catch").await;
        (jobs.len() >= 3).then_some(jobs)
    })
    .await;
    assert_eq!(jobs.len(), 3, "{:?}", names(&jobs));
    within("the TooManyMissedTimes warning", 10, || async {
        event_reasons(&store)
            .await
            .contains(&"TooManyMissedTimes".to_string())
            .then_some(())
    })
    .await;
    running.shutdown().await.unwrap();
}

fn names(jobs: &[Job]) -> Vec<String> {
    jobs.iter()
        .filter_map(|j| j.metadata.name.clone())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn history_limits_keep_the_newest_finished_jobs() {
    let clock = TestClock::new();
    let (store, running) = start(manager(clock.clone()));
    let cron_jobs: Api<CronJob> = Api::namespaced(store.clone(), "default");
    cron_jobs
        .create(&cron_job(
            "hist",
            json!({"successfulJobsHistoryLimit": 2, "failedJobsHistoryLimit": 1}),
        ))
        .await
        .unwrap();
    // Each run succeeds, four times, then fails twice.
    let mut finished = Vec::new();
    for outcome in [
        "Complete", "Complete", "Complete", "Complete", "Failed", "Failed",
    ] {
        let job = within("an unfinished Job", 70, || async {
            jobs_of(&store, "hist")
                .await
                .into_iter()
                .find(|j| !finished.contains(&j.metadata.name) && j.status.is_none())
        })
        .await;
        finish(&store, &job, outcome).await;
        finished.push(job.metadata.name.clone());
    }
    let expected: Vec<String> = [2, 3, 5]
        .iter()
        .map(|&i| finished[i].clone().unwrap())
        .collect();
    let left = within("the oldest finished Jobs deleted", 10, || async {
        let jobs = jobs_of(&store, "hist").await;
        let done: Vec<String> = jobs
            .iter()
            .filter(|j| j.status.is_some())
            .filter_map(|j| j.metadata.name.clone())
            .collect();
        (done == expected).then_some(done)
    })
    .await;
    assert_eq!(left.len(), 3);
    running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn suspend_stops_new_runs_and_replace_swaps_the_running_job() {
    let clock = TestClock::new();
    let (store, running) = start(manager(clock.clone()));
    let cron_jobs: Api<CronJob> = Api::namespaced(store.clone(), "default");
    cron_jobs
        .create(&cron_job(
            "swap",
            json!({"suspend": true, "concurrencyPolicy": "Replace"}),
        ))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(150)).await;
    assert!(jobs_of(&store, "swap").await.is_empty());

    cron_jobs
        .patch_merge("swap", &json!({"spec": {"suspend": false}}))
        .await
        .unwrap();
    let first = within("a Job once resumed", 70, || async {
        jobs_of(&store, "swap").await.into_iter().next()
    })
    .await;
    // The next run deletes the running one and starts its own.
    let second = within("the replacement", 70, || async {
        let jobs = jobs_of(&store, "swap").await;
        (jobs.len() == 1 && jobs[0].metadata.name != first.metadata.name).then(|| jobs[0].clone())
    })
    .await;
    within("only the replacement active", 10, || async {
        let s = cron_jobs.get("swap").await.unwrap().status?;
        let active = s.active?;
        (active.len() == 1 && active[0].name == second.metadata.name).then_some(())
    })
    .await;
    running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn runs_missed_by_more_than_the_starting_deadline_are_skipped() {
    let clock = TestClock::new();
    let (store, running) = start(manager(clock.clone()));
    let cron_jobs: Api<CronJob> = Api::namespaced(store.clone(), "default");
    cron_jobs
        .create(&cron_job("late", json!({"startingDeadlineSeconds": 10})))
        .await
        .unwrap();
    let scheduled = |job: &Job| -> i64 {
        job.metadata.annotations.as_ref().unwrap()[SCHEDULED_TIMESTAMP_ANNOTATION]
            .parse::<Timestamp>()
            .unwrap()
            .as_second()
    };
    let first = within("the first Job", 70, || async {
        jobs_of(&store, "late").await.into_iter().next()
    })
    .await;
    // Five and a half minutes pass unseen: the controller next wakes 30 s after a scheduled
    // minute, past the 10 s deadline, so that run is skipped and the next minute's starts.
    clock.jump(Duration::from_secs(330));
    let jobs = within("the next Job", 130, || async {
        let jobs = jobs_of(&store, "late").await;
        (jobs.len() >= 2).then_some(jobs)
    })
    .await;
    assert_eq!(jobs.len(), 2, "{:?}", names(&jobs));
    let second = jobs
        .iter()
        .find(|j| j.metadata.name != first.metadata.name)
        .unwrap();
    assert_eq!(scheduled(second) - scheduled(&first), 420);
    running.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_time_zone_places_the_schedule_and_stamps_the_job_in_its_offset() {
    let clock = TestClock::new();
    let (store, running) = start(manager(clock.clone()));
    let cron_jobs: Api<CronJob> = Api::namespaced(store.clone(), "default");
    // Every minute at :30 past the hour in India (UTC+05:30) is :00 past the hour in UTC.
    cron_jobs
        .create(&cron_job(
            "zoned",
            json!({"schedule": "30 * * * *", "timeZone": "Asia/Kolkata"}),
        ))
        .await
        .unwrap();
    let job = within("the zone's hourly Job", 3700, || async {
        jobs_of(&store, "zoned").await.into_iter().next()
    })
    .await;
    let stamp = &job.metadata.annotations.as_ref().unwrap()[SCHEDULED_TIMESTAMP_ANNOTATION];
    assert!(stamp.ends_with(":30:00+05:30"), "{stamp}");
    let at: Timestamp = stamp.parse().unwrap();
    assert_eq!(at.as_second() % 3600, 0, "{stamp} is on the UTC hour");
    running.shutdown().await.unwrap();
}
