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
