use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_core::store::Preconditions;
use kube_core::typed::Api;
use kube_ctrl::{ControllerManager, EndpointSliceController};
use serde_json::json;

use crate::support::{eventually, start};

fn pod(name: &str, ip: &str, ready: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": ip,
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    }))
    .unwrap()
}

/// (ip, ready, serving, terminating) per endpoint.
fn conditions(slice: &EndpointSlice) -> Vec<(String, bool, bool, bool)> {
    slice
        .endpoints
        .iter()
        .map(|e| {
            let c = e.conditions.clone().unwrap();
            (
                e.addresses[0].clone(),
                c.ready.unwrap(),
                c.serving.unwrap(),
                c.terminating.unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn slices_carry_ready_serving_and_terminating() {
    let (store, running) = start(ControllerManager::new().with(EndpointSliceController::new()));
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let services: Api<Service> = Api::namespaced(store.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(store.clone(), "default");
    pods.create(&pod("a", "10.0.0.1", true)).await.unwrap();
    pods.create(&pod("b", "10.0.0.2", false)).await.unwrap();
    let mut leaving = pods.create(&pod("c", "10.0.0.3", true)).await.unwrap();
    leaving.metadata.deletion_timestamp = Some(kube_core::object::now());
    pods.replace(&leaving).await.unwrap();
    services
        .create(
            &serde_json::from_value(json!({
                "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let slice = eventually("slice", || async {
        slices
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(
        conditions(&slice),
        vec![
            ("10.0.0.1".into(), true, true, false),
            ("10.0.0.2".into(), false, false, false),
            ("10.0.0.3".into(), false, true, true),
        ]
    );
    let port = &slice.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port),
        (Some("http"), Some(8080))
    );
    assert_eq!(
        slice.metadata.labels.as_ref().unwrap()["kubernetes.io/service-name"],
        "web"
    );

    pods.delete("a", &Preconditions::default()).await.unwrap();
    eventually("deleted pod leaves the slice", || async {
        let s = slices
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .next()?;
        (s.endpoints.len() == 2).then_some(())
    })
    .await;
    services
        .delete("web", &Preconditions::default())
        .await
        .unwrap();
    eventually("slices removed with the service", || async {
        slices
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    running.shutdown().await.unwrap();
}
