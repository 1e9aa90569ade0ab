use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube_parts::testing::TestCluster;

#[tokio::test]
async fn events_of_a_rollout_are_inspectable() {
    let cluster = TestCluster::builder().nodes(2).start().await.unwrap();
    let created = cluster
        .api::<Deployment>("default")
        .create(&crate::deployment("api", 2, None))
        .await
        .unwrap();
    cluster
        .wait_until_deployment_available("default", "api")
        .await
        .unwrap();

    // Scaled, the Deployment controller scales its ReplicaSet up and says so.
    cluster
        .api::<Deployment>("default")
        .patch_merge("api", &serde_json::json!({"spec": {"replicas": 3}}))
        .await
        .unwrap();
    let scaled = cluster
        .wait_for_event(&created, "ScalingReplicaSet", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(scaled.type_.as_deref(), Some("Normal"));
    assert!(
        scaled
            .message
            .as_deref()
            .unwrap_or("")
            .contains("from 2 to 3"),
        "{scaled:?}"
    );
    let events = cluster.events_for(&created).await.unwrap();
    assert!(
        events
            .iter()
            .all(|e| e.involved_object.name.as_deref() == Some("api"))
    );

    // The ReplicaSet controller created the pods; the scheduler placed each.
    let sets = cluster
        .api::<ReplicaSet>("default")
        .list(&Default::default())
        .await
        .unwrap();
    assert_eq!(sets.items.len(), 1);
    let created_pods = cluster
        .wait_for_event(&sets.items[0], "SuccessfulCreate", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(created_pods.message.unwrap_or_default().contains("api-"));
    let pods = cluster
        .wait_until_pods_running("default", "app=api", 3)
        .await
        .unwrap();
    for pod in &pods {
        let scheduled = cluster
            .wait_for_event::<Pod>(pod, "Scheduled", Duration::from_secs(10))
            .await
            .unwrap();
        let node = pod.spec.as_ref().unwrap().node_name.clone().unwrap();
        assert!(
            scheduled.message.unwrap_or_default().contains(&node),
            "the Scheduled event names {node}"
        );
    }
    cluster.shutdown().await.unwrap();
}
