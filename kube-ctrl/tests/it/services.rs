use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Service;
use kube_core::store::Preconditions;
use kube_core::typed::Api;
use kube_ctrl::{ControllerManager, ServiceAllocator};
use serde_json::json;

use crate::support::{eventually, start};

fn service(name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

fn ip(s: &Service) -> Option<String> {
    s.spec
        .as_ref()?
        .cluster_ip
        .clone()
        .filter(|ip| !ip.is_empty())
}

#[tokio::test]
async fn cluster_ips_and_node_ports_are_unique_and_released_on_delete() {
    let allocator = ServiceAllocator::new()
        .cluster_ip_range("10.0.0.0/29")
        .unwrap()
        .node_port_range(30000..=30002)
        .unwrap();
    let (store, running) = start(ControllerManager::new().workers(4).with(allocator));
    let services: Api<Service> = Api::namespaced(store.clone(), "default");
    let port = json!([{"port": 80}]);
    for i in 0..7 {
        services
            .create(&service(&format!("s{i}"), json!({"ports": port})))
            .await
            .unwrap();
    }
    services
        .create(&service(
            "headless",
            json!({"clusterIP": "None", "ports": port}),
        ))
        .await
        .unwrap();
    // A /29 has six usable addresses: six services get distinct ones, one waits.
    let ips = eventually("six addresses", || async {
        let all = services.list(&Default::default()).await.unwrap().items;
        let ips: Vec<String> = all
            .iter()
            .filter_map(ip)
            .filter(|ip| ip != "None")
            .collect();
        (ips.len() == 6).then_some(ips)
    })
    .await;
    let unique: BTreeSet<&String> = ips.iter().collect();
    assert_eq!(unique.len(), 6, "{ips:?}");
    assert!(
        ips.iter()
            .all(|ip| ip.starts_with("10.0.0.") && ip != "10.0.0.0" && ip != "10.0.0.7")
    );
    assert_eq!(
        ip(&services.get("headless").await.unwrap()).as_deref(),
        Some("None")
    );
    let waiting = services
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|s| ip(s).is_none())
        .unwrap();

    // Deleting a service frees its address for the one waiting.
    let victim = services.get("s0").await.unwrap();
    services
        .delete("s0", &Preconditions::default())
        .await
        .unwrap();
    let waiting_name = waiting.metadata.name.clone().unwrap();
    let got = eventually("freed address reused", || async {
        ip(&services.get(&waiting_name).await.unwrap())
    })
    .await;
    assert_eq!(Some(got), ip(&victim));

    // NodePorts: distinct per port, from the range.
    services
        .create(&service(
            "np",
            json!({"type": "NodePort", "clusterIP": "10.0.0.1", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}),
        ))
        .await
        .unwrap();
    let ports = eventually("node ports", || async {
        let s = services.get("np").await.unwrap();
        let ports: Vec<i32> = s.spec?.ports?.iter().filter_map(|p| p.node_port).collect();
        (ports.len() == 2).then_some(ports)
    })
    .await;
    assert_ne!(ports[0], ports[1]);
    assert!(ports.iter().all(|p| (30000..=30002).contains(p)));
    running.shutdown().await.unwrap();
}
