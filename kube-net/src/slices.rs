//! Service entries from EndpointSlices (`discovery.k8s.io/v1`), the successor of Endpoints.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_core::object::{DynamicObject, ObjectKey};
use kube_core::proxy::{Endpoint, ServiceEntry};

/// The label naming the Service a slice belongs to.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The Service a slice belongs to, from its label.
pub(crate) fn service_of(slice: &DynamicObject) -> Option<ObjectKey> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    let namespace = slice.metadata.namespace.as_ref()?;
    Some(ObjectKey::namespaced(namespace.clone(), name.clone()))
}

/// The entry for `service` with endpoints from its `slices`: per port, the slice port with the
/// same name; ready endpoints, plus serving-terminating ones flagged `terminating` (a data plane
/// uses them only when nothing is ready).
pub(crate) fn entry(service: &Service, slices: &[EndpointSlice]) -> ServiceEntry {
    let mut entry = ServiceEntry::from_objects(service, None);
    for port in &mut entry.ports {
        let mut backends = Vec::new();
        for slice in slices {
            if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
                continue;
            }
            let Some(target) = slice.ports.iter().flatten().find(|p| {
                p.name.as_deref().unwrap_or_default() == port.name
                    && kube_core::proxy::Protocol::parse(p.protocol.as_deref()) == port.protocol
            }) else {
                continue;
            };
            let Some(target_port) = target.port.and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            for endpoint in &slice.endpoints {
                let conditions = endpoint.conditions.clone().unwrap_or_default();
                // Kubernetes: a missing condition means ready / serving = ready / not terminating.
                let ready = conditions.ready.unwrap_or(true);
                let serving = conditions.serving.unwrap_or(ready);
                let terminating = conditions.terminating.unwrap_or(false);
                if !(ready || (serving && terminating)) {
                    continue;
                }
                // Kubernetes uses the first address; the others are duplicates of the same pod.
                let Some(ip) = endpoint.addresses.first().and_then(|a| a.parse().ok()) else {
                    continue;
                };
                backends.push(Endpoint {
                    ip,
                    port: target_port,
                    node_name: endpoint.node_name.clone(),
                    terminating: !ready,
                });
            }
        }
        backends.sort();
        backends.dedup();
        port.endpoints = backends;
    }
    entry
}
