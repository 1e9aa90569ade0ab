use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube_core::store::Preconditions;
use kube_core::typed::Api;
use serde_json::json;

use crate::support::{eventually, standard, start};

fn pod(name: &str, ip: &str, ready: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": ip,
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    }))
    .unwrap()
}

#[tokio::test]
async fn endpoints_follow_ready_pods() {
    let (store, running) = start(standard());
    let services: Api<Service> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(store.clone(), "default");
    pods.create(&pod("a", "10.0.0.1", true)).await.unwrap();
    pods.create(&pod("b", "10.0.0.2", false)).await.unwrap();
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10",
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    }))
    .unwrap();
    services.create(&svc).await.unwrap();

    let ep = eventually("endpoints", || async {
        endpoints.get_opt("web").await.unwrap()
    })
    .await;
    let subset = &ep.subsets.unwrap()[0];
    assert_eq!(subset.addresses.as_ref().unwrap()[0].ip, "10.0.0.1");
    assert_eq!(
        subset.not_ready_addresses.as_ref().unwrap()[0].ip,
        "10.0.0.2"
    );
    assert_eq!(subset.ports.as_ref().unwrap()[0].port, 8080);

    pods.delete("a", &Preconditions::default()).await.unwrap();
    eventually("deleted pod leaves endpoints", || async {
        let ep = endpoints.get_opt("web").await.unwrap()?;
        let subset = ep.subsets?.into_iter().next()?;
        subset.addresses.is_none().then_some(())
    })
    .await;

    services
        .delete("web", &Preconditions::default())
        .await
        .unwrap();
    eventually("endpoints removed with the service", || async {
        endpoints
            .get_opt("web")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn pods_with_a_matching_subdomain_get_their_hostname_in_endpoints_and_slices() {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let (store, running) = start(standard().with(kube_ctrl::EndpointSliceController::new()));
    let services: Api<Service> = Api::namespaced(store.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(store.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(store.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(store.clone(), "default");
    for (name, ip, subdomain) in [("db-0", "10.0.0.1", "db"), ("db-1", "10.0.0.2", "other")] {
        let mut p = pod(name, ip, true);
        let spec = p.spec.as_mut().unwrap();
        spec.hostname = Some(name.into());
        spec.subdomain = Some(subdomain.into());
        pods.create(&p).await.unwrap();
    }
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"selector": {"app": "web"}, "clusterIP": "None", "ports": [{"name": "http", "port": 80}]}
    }))
    .unwrap();
    services.create(&svc).await.unwrap();
    let ep = eventually("endpoints with both pods", || async {
        let ep = endpoints.get_opt("db").await.unwrap()?;
        let n = ep.subsets.as_ref()?.first()?.addresses.as_ref()?.len();
        (n == 2).then_some(ep)
    })
    .await;
    let hostnames: Vec<_> = ep.subsets.unwrap()[0]
        .addresses
        .clone()
        .unwrap()
        .into_iter()
        .map(|a| (a.ip, a.hostname))
        .collect();
    // Only the pod whose subdomain names the Service is published under its hostname.
    assert_eq!(
        hostnames,
        [
            ("10.0.0.1".to_string(), Some("db-0".to_string())),
            ("10.0.0.2".to_string(), None)
        ]
    );
    let slice = eventually("a slice with both pods", || async {
        let list = slices.list(&Default::default()).await.unwrap().items;
        list.into_iter().find(|s| s.endpoints.len() == 2)
    })
    .await;
    let mut hostnames: Vec<_> = slice
        .endpoints
        .into_iter()
        .map(|e| (e.addresses[0].clone(), e.hostname))
        .collect();
    hostnames.sort();
    assert_eq!(
        hostnames,
        [
            ("10.0.0.1".to_string(), Some("db-0".to_string())),
            ("10.0.0.2".to_string(), None)
        ]
    );
    running.shutdown().await.unwrap();
}
