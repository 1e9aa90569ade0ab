use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube_core::typed::Api;
use kube_ctrl::{ControllerManager, JobController};
use serde_json::json;

use crate::support::{eventually, eventually_within, start};

fn job(name: &str, spec: serde_json::Value) -> Job {
    let mut spec = spec;
    spec["template"] =
        json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "task"}]}});
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

async fn running(pods: &Api<Pod>) -> Vec<Pod> {
    pods.list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()).is_none())
        .collect()
}

async fn finish(pods: &Api<Pod>, pod: &Pod, phase: &str) {
    pods.patch_merge(
        pod.metadata.name.as_deref().unwrap(),
        &json!({"status": {"phase": phase}}),
    )
    .await
    .unwrap();
}

fn condition(job: &Job, type_: &str) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .and_then(|c| c.reason.clone())
}

#[tokio::test]
async fn completions_run_with_bounded_parallelism() {
    let (store, orchestrator) = start(ControllerManager::new().with(JobController::new()));
    let jobs: Api<Job> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    jobs.create(&job("batch", json!({"completions": 3, "parallelism": 2})))
        .await
        .unwrap();
    for round in 0..3 {
        let active = eventually("active pods", || async {
            let r = running(&pods).await;
            (r.len() == 2.min(3 - round)).then_some(r)
        })
        .await;
        assert!(active.len() <= 2, "parallelism exceeded");
        finish(&pods, &active[0], "Succeeded").await;
    }
    let done = eventually("complete", || async {
        let j = jobs.get("batch").await.unwrap();
        condition(&j, "Complete").map(|_| j)
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!((status.succeeded, status.active), (Some(3), Some(0)));
    assert!(status.completion_time.is_some());
    assert_eq!(
        pods.list(&Default::default()).await.unwrap().items.len(),
        3,
        "no extra pods"
    );
    orchestrator.shutdown().await.unwrap();
}

#[tokio::test]
async fn failures_beyond_the_backoff_limit_fail_the_job() {
    let (store, orchestrator) = start(ControllerManager::new().with(JobController::new()));
    let jobs: Api<Job> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    jobs.create(&job("flaky", json!({"backoffLimit": 1})))
        .await
        .unwrap();
    for _ in 0..2 {
        let active = eventually("a pod", || async {
            let r = running(&pods).await;
            (r.len() == 1).then_some(r)
        })
        .await;
        finish(&pods, &active[0], "Failed").await;
    }
    let failed = eventually("failed", || async {
        condition(&jobs.get("flaky").await.unwrap(), "Failed")
    })
    .await;
    assert_eq!(failed, "BackoffLimitExceeded");
    assert!(running(&pods).await.is_empty());
    orchestrator.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_active_deadline_stops_the_job() {
    let (store, orchestrator) = start(ControllerManager::new().with(JobController::new()));
    let jobs: Api<Job> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    jobs.create(&job(
        "slow",
        json!({"activeDeadlineSeconds": 1, "parallelism": 2, "completions": 4}),
    ))
    .await
    .unwrap();
    eventually("pods running", || async {
        (running(&pods).await.len() == 2).then_some(())
    })
    .await;
    let reason = eventually_within("deadline", std::time::Duration::from_secs(5), || async {
        condition(&jobs.get("slow").await.unwrap(), "Failed")
    })
    .await;
    assert_eq!(reason, "DeadlineExceeded");
    eventually("running pods deleted", || async {
        running(&pods).await.is_empty().then_some(())
    })
    .await;
    orchestrator.shutdown().await.unwrap();
}

fn index(pod: &Pod) -> i32 {
    pod.metadata.annotations.as_ref().unwrap()[kube_ctrl::job::COMPLETION_INDEX_ANNOTATION]
        .parse()
        .unwrap()
}

/// Ends a pod as a node agent would, its container exiting with `code`.
async fn exit(pods: &Api<Pod>, pod: &Pod, code: i32, conditions: serde_json::Value) {
    let phase = if code == 0 { "Succeeded" } else { "Failed" };
    pods.patch_merge(
        pod.metadata.name.as_deref().unwrap(),
        &json!({"status": {"phase": phase, "conditions": conditions, "containerStatuses": [
            {"name": "c", "image": "task", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"terminated": {"exitCode": code}}}]}}),
    )
    .await
    .unwrap();
}

fn job_manager() -> ControllerManager {
    ControllerManager::new()
        .with(JobController::new())
        .with(kube_ctrl::TtlAfterFinishedController::new())
}

#[tokio::test]
async fn an_indexed_jobs_pods_get_their_indexes_and_complete_each_index() {
    let (store, orchestrator) = start(job_manager());
    let jobs: Api<Job> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    jobs.create(&job(
        "idx",
        json!({"completionMode": "Indexed", "completions": 3, "parallelism": 3}),
    ))
    .await
    .unwrap();
    let created = eventually("3 indexed pods", || async {
        let r = running(&pods).await;
        (r.len() == 3).then_some(r)
    })
    .await;
    let mut indexes: Vec<i32> = created.iter().map(index).collect();
    indexes.sort_unstable();
    assert_eq!(indexes, [0, 1, 2]);
    for pod in &created {
        let i = index(pod);
        let meta = &pod.metadata;
        assert!(
            meta.name
                .as_ref()
                .unwrap()
                .starts_with(&format!("idx-{i}-"))
        );
        assert_eq!(
            meta.labels.as_ref().unwrap()[kube_ctrl::job::COMPLETION_INDEX_ANNOTATION],
            i.to_string()
        );
        assert_eq!(
            meta.finalizers.as_deref(),
            Some(&[kube_ctrl::job::TRACKING_FINALIZER.to_string()][..])
        );
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(format!("idx-{i}").as_str()));
        let env = &spec.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, "JOB_COMPLETION_INDEX");
        assert_eq!(
            env.value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        );
    }
    let by_index = |i: i32| created.iter().find(|p| index(p) == i).unwrap().clone();
    exit(&pods, &by_index(1), 0, json!([])).await;
    eventually("index 1 completed and its pod released", || async {
        let status = jobs.get("idx").await.unwrap().status?;
        let pod = pods
            .get(by_index(1).metadata.name.as_deref().unwrap())
            .await
            .ok()?;
        (status.completed_indexes.as_deref() == Some("1")
            && pod.metadata.finalizers.unwrap_or_default().is_empty())
        .then_some(())
    })
    .await;
    exit(&pods, &by_index(0), 0, json!([])).await;
    exit(&pods, &by_index(2), 0, json!([])).await;
    let done = eventually("complete", || async {
        let j = jobs.get("idx").await.unwrap();
        condition(&j, "Complete").map(|_| j)
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(status.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(status.succeeded, Some(3));
    let uncounted = status.uncounted_terminated_pods.unwrap_or_default();
    assert!(uncounted.succeeded.unwrap_or_default().is_empty());
    assert_eq!(pods.list(&Default::default()).await.unwrap().items.len(), 3);
    orchestrator.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_suspended_job_runs_no_pods_until_resumed() {
    let (store, orchestrator) = start(job_manager());
    let jobs: Api<Job> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    jobs.create(&job(
        "later",
        json!({"suspend": true, "parallelism": 2, "completions": 2}),
    ))
    .await
    .unwrap();
    eventually("Suspended", || async {
        condition(&jobs.get("later").await.unwrap(), "Suspended")
    })
    .await;
    assert!(
        pods.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    jobs.patch_merge("later", &json!({"spec": {"suspend": false}}))
        .await
        .unwrap();
    eventually("2 pods once resumed", || async {
        (running(&pods).await.len() == 2).then_some(())
    })
    .await;
    let resumed = jobs.get("later").await.unwrap();
    let suspended = resumed
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Suspended")
        .unwrap();
    assert_eq!(
        (suspended.status.as_str(), suspended.reason.as_deref()),
        ("False", Some("JobResumed"))
    );

    // Suspending again deletes the running pods.
    jobs.patch_merge("later", &json!({"spec": {"suspend": true}}))
        .await
        .unwrap();
    eventually("pods deleted", || async {
        pods.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    let status = jobs.get("later").await.unwrap().status.unwrap();
    assert_eq!((status.active, status.failed), (Some(0), Some(0)));
    orchestrator.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_finished_job_is_deleted_after_its_ttl() {
    let (store, orchestrator) = start(job_manager());
    let jobs: Api<Job> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    jobs.create(&job("brief", json!({"ttlSecondsAfterFinished": 1})))
        .await
        .unwrap();
    let pod = eventually("a pod", || async {
        running(&pods).await.into_iter().next()
    })
    .await;
    exit(&pods, &pod, 0, json!([])).await;
    eventually("complete", || async {
        condition(&jobs.get("brief").await.ok()?, "Complete")
    })
    .await;
    eventually_within(
        "the Job deleted after its TTL",
        std::time::Duration::from_secs(5),
        || async { jobs.get_opt("brief").await.unwrap().is_none().then_some(()) },
    )
    .await;
    orchestrator.shutdown().await.unwrap();
}

#[tokio::test]
async fn pod_failure_policy_fails_the_job_or_ignores_the_failure() {
    let (store, orchestrator) = start(job_manager());
    let jobs: Api<Job> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    jobs.create(&job(
        "policy",
        json!({"backoffLimit": 0, "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]}}),
    ))
    .await
    .unwrap();
    // A disruption is ignored (backoffLimit 0 would fail the Job otherwise): replaced.
    let first = eventually("a pod", || async {
        running(&pods).await.into_iter().next()
    })
    .await;
    exit(
        &pods,
        &first,
        137,
        json!([{"type": "DisruptionTarget", "status": "True"}]),
    )
    .await;
    let second = eventually("a replacement", || async {
        running(&pods)
            .await
            .into_iter()
            .find(|p| p.metadata.name != first.metadata.name)
    })
    .await;
    let status = jobs.get("policy").await.unwrap().status.unwrap();
    assert_eq!(status.failed, Some(0));
    assert!(condition(&jobs.get("policy").await.unwrap(), "Failed").is_none());
    // Exit code 42 fails the Job at once.
    exit(&pods, &second, 42, json!([])).await;
    let reason = eventually("failed", || async {
        condition(&jobs.get("policy").await.unwrap(), "Failed")
    })
    .await;
    assert_eq!(reason, "PodFailurePolicy");
    let message = jobs
        .get("policy")
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .unwrap()
        .message
        .unwrap();
    assert!(
        message.contains("failed with exit code 42 matching FailJob rule at index 0"),
        "{message}"
    );
    orchestrator.shutdown().await.unwrap();
}

#[tokio::test]
async fn backoff_limit_per_index_fails_only_that_index() {
    let (store, orchestrator) = start(job_manager());
    let jobs: Api<Job> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    jobs.create(&job(
        "per-index",
        json!({"completionMode": "Indexed", "completions": 2, "parallelism": 2,
               "backoffLimitPerIndex": 1}),
    ))
    .await
    .unwrap();
    let first = eventually("2 pods", || async {
        let r = running(&pods).await;
        (r.len() == 2).then_some(r)
    })
    .await;
    let zero = first.iter().find(|p| index(p) == 0).unwrap().clone();
    let one = first.iter().find(|p| index(p) == 1).unwrap().clone();
    exit(&pods, &zero, 1, json!([])).await;
    // The retry of index 0 carries its failure count.
    let retry = eventually("index 0 retried", || async {
        running(&pods)
            .await
            .into_iter()
            .find(|p| index(p) == 0 && p.metadata.name != zero.metadata.name)
    })
    .await;
    assert_eq!(
        retry.metadata.annotations.as_ref().unwrap()
            [kube_ctrl::job::INDEX_FAILURE_COUNT_ANNOTATION],
        "1"
    );
    exit(&pods, &retry, 1, json!([])).await;
    eventually("index 0 failed, not retried", || async {
        let status = jobs.get("per-index").await.unwrap().status?;
        (status.failed_indexes.as_deref() == Some("0")).then_some(())
    })
    .await;
    assert!(running(&pods).await.iter().all(|p| index(p) == 1));
    exit(&pods, &one, 0, json!([])).await;
    let reason = eventually("failed with failed indexes", || async {
        condition(&jobs.get("per-index").await.unwrap(), "Failed")
    })
    .await;
    assert_eq!(reason, "FailedIndexes");
    let status = jobs.get("per-index").await.unwrap().status.unwrap();
    assert_eq!(status.completed_indexes.as_deref(), Some("1"));
    assert_eq!(status.failed, Some(2));
    orchestrator.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_job_from_before_tracking_counts_its_finished_pods_once() {
    use kube_core::orchestrator::Orchestrator;
    let store: std::sync::Arc<dyn kube_core::store::Store> =
        std::sync::Arc::new(kube_store::MemStore::new());
    let jobs: Api<Job> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let old = jobs
        .create(&job("legacy", json!({"completions": 2})))
        .await
        .unwrap();
    let uid = old.metadata.uid.clone().unwrap();
    // One pod finished under the old controller: no finalizer, not in any count yet.
    let owner = kube_core::object::controller_owner_ref(&old).unwrap();
    let done: Pod = serde_json::from_value(json!({
        "metadata": {"name": "legacy-a", "labels": {
            "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": "legacy"},
            "ownerReferences": [owner]},
        "spec": {"containers": [{"name": "c", "image": "task"}]},
        "status": {"phase": "Succeeded"},
    }))
    .unwrap();
    pods.create(&done).await.unwrap();
    let orchestrator = Orchestrator::builder()
        .store(store.clone())
        .controllers(ControllerManager::new().with(JobController::new()))
        .build()
        .unwrap()
        .start();
    let next = eventually("one more pod", || async {
        running(&pods).await.into_iter().next()
    })
    .await;
    assert_eq!(
        jobs.get("legacy").await.unwrap().status.unwrap().succeeded,
        Some(1)
    );
    exit(&pods, &next, 0, json!([])).await;
    let finished = eventually("complete", || async {
        let j = jobs.get("legacy").await.unwrap();
        condition(&j, "Complete").map(|_| j)
    })
    .await;
    assert_eq!(finished.status.unwrap().succeeded, Some(2));
    orchestrator.shutdown().await.unwrap();
}
