use k8s_openapi::api::core::v1::{Node, Service};
use kube_core::typed::Api;
use kube_ctrl::{ControllerManager, ServiceLbController};
use serde_json::{Value, json};

use crate::support::{eventually, start};

fn node(name: &str, ip: &str, ready: bool) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "status": {
            "addresses": [
                {"type": "Hostname", "address": name},
                {"type": "InternalIP", "address": ip}
            ],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
        }
    }))
    .unwrap()
}

fn service(name: &str, spec: Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

fn lb(ports: Value) -> Value {
    json!({"type": "LoadBalancer", "clusterIP": "10.96.0.50", "ports": ports})
}

/// `status.loadBalancer.ingress` as `(ip, ipMode)` pairs.
fn ingress(service: &Service) -> Vec<(String, String)> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|i| (i.ip.unwrap_or_default(), i.ip_mode.unwrap_or_default()))
        .collect()
}

fn vips(ips: &[&str]) -> Vec<(String, String)> {
    ips.iter()
        .map(|ip| (ip.to_string(), "VIP".into()))
        .collect()
}

async fn wait_ingress(services: &Api<Service>, name: &str, want: &[&str]) {
    let want = vips(want);
    eventually(&format!("{name} ingress {want:?}"), || async {
        let s = services.get(name).await.unwrap();
        (ingress(&s) == want).then_some(())
    })
    .await;
}

#[tokio::test]
async fn load_balancers_get_ready_node_addresses_and_follow_nodes() {
    let (store, running) = start(ControllerManager::new().with(ServiceLbController::new()));
    let nodes: Api<Node> = Api::all(store.clone());
    let services: Api<Service> = Api::namespaced(store.clone(), "default");
    nodes
        .create(&node("n2", "192.168.1.12", true))
        .await
        .unwrap();
    nodes
        .create(&node("n1", "192.168.1.11", true))
        .await
        .unwrap();
    nodes
        .create(&node("n3", "192.168.1.13", false))
        .await
        .unwrap();
    let ports = json!([{"name": "http", "port": 80}]);
    services
        .create(&service("web", lb(ports.clone())))
        .await
        .unwrap();
    let mut plain = service("plain", json!({"clusterIP": "10.96.0.51", "ports": ports}));
    plain.metadata.name = Some("plain".into());
    services.create(&plain).await.unwrap();
    // Another implementation's Service: its status is not ours.
    let mut foreign = lb(ports.clone());
    foreign["loadBalancerClass"] = json!("example.com/other");
    let mut foreign = service("foreign", foreign);
    foreign.status = Some(
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.1"}]}}))
            .unwrap(),
    );
    services.create(&foreign).await.unwrap();

    // Ready nodes only, sorted.
    wait_ingress(&services, "web", &["192.168.1.11", "192.168.1.12"]).await;

    // A node turns ready, another is excluded, one goes away.
    nodes
        .replace(&node("n3", "192.168.1.13", true))
        .await
        .unwrap();
    wait_ingress(
        &services,
        "web",
        &["192.168.1.11", "192.168.1.12", "192.168.1.13"],
    )
    .await;
    let mut excluded = nodes.get("n1").await.unwrap();
    excluded.metadata.labels = Some(
        [(
            kube_ctrl::service_lb::EXCLUDE_LABEL.to_string(),
            String::new(),
        )]
        .into_iter()
        .collect(),
    );
    nodes.replace(&excluded).await.unwrap();
    nodes
        .delete("n2", &kube_core::store::Preconditions::default())
        .await
        .unwrap();
    wait_ingress(&services, "web", &["192.168.1.13"]).await;

    // The Service stops being a LoadBalancer: its ingress is cleared.
    let mut web = services.get("web").await.unwrap();
    web.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
    services.replace(&web).await.unwrap();
    wait_ingress(&services, "web", &[]).await;

    assert!(ingress(&services.get("plain").await.unwrap()).is_empty());
    let foreign = services.get("foreign").await.unwrap();
    assert_eq!(
        ingress(&foreign),
        vec![("203.0.113.1".into(), String::new())]
    );
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_named_class_is_served_and_ip_families_filter_addresses() {
    let manager = ControllerManager::new().with(ServiceLbController::new().class("kube-parts/lb"));
    let (store, running) = start(manager);
    let nodes: Api<Node> = Api::all(store.clone());
    let services: Api<Service> = Api::namespaced(store.clone(), "default");
    let mut dual = node("n1", "192.168.1.11", true);
    let addresses = dual.status.as_mut().unwrap().addresses.as_mut().unwrap();
    addresses.push(
        serde_json::from_value(json!({"type": "InternalIP", "address": "fd00::11"})).unwrap(),
    );
    addresses.push(
        serde_json::from_value(json!({"type": "ExternalIP", "address": "198.51.100.1"})).unwrap(),
    );
    nodes.create(&dual).await.unwrap();
    let mut spec = lb(json!([{"port": 443}]));
    spec["loadBalancerClass"] = json!("kube-parts/lb");
    spec["ipFamilies"] = json!(["IPv6"]);
    services.create(&service("v6", spec)).await.unwrap();
    services
        .create(&service("both", lb(json!([{"port": 443}]))))
        .await
        .unwrap();
    wait_ingress(&services, "v6", &["fd00::11"]).await;
    wait_ingress(&services, "both", &["192.168.1.11", "fd00::11"]).await;
    running.shutdown().await.unwrap();
}
