//! [`EndpointsController`]: keeps each Service's Endpoints equal to the pods it selects.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::selector::Selector;
use kube_core::store::Preconditions;
use kube_core::typed::Api;

use crate::pods::is_ready;

/// Maintains an Endpoints object per Service with a selector: ready pods under `addresses`,
/// not-ready ones under `notReadyAddresses`, ports resolved from each Service port's
/// `targetPort` (a number, or a container port name). Services without a selector are left to
/// their users, as in Kubernetes.
#[derive(Debug, Default, Clone)]
pub struct EndpointsController {
    _private: (),
}

impl EndpointsController {
    /// An Endpoints controller.
    pub fn new() -> Self {
        Self::default()
    }
}

pub(crate) fn target_port(pod: &Pod, target: Option<&IntOrString>, port: i32) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

/// A service port resolved against one pod: name, port number, protocol.
type ResolvedPort = (String, i32, String);
/// Ready and not-ready addresses of one subset.
type ReadyAndNot = (Vec<EndpointAddress>, Vec<EndpointAddress>);

/// The subsets for a service: pods grouped by their resolved port lists.
fn subsets(service: &Service, pods: &[Pod]) -> Vec<EndpointSubset> {
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut groups: BTreeMap<Vec<ResolvedPort>, ReadyAndNot> = BTreeMap::new();
    for pod in pods {
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
            continue;
        };
        let resolved: Vec<ResolvedPort> = ports
            .iter()
            .filter_map(|p| {
                let port = target_port(pod, p.target_port.as_ref(), p.port)?;
                Some((
                    p.name.clone().unwrap_or_default(),
                    port,
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ))
            })
            .collect();
        if resolved.is_empty() && !ports.is_empty() {
            continue;
        }
        let address = EndpointAddress {
            ip,
            hostname: crate::endpointslice::endpoint_hostname(
                pod,
                service.metadata.name.as_deref().unwrap_or_default(),
            ),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                namespace: pod.metadata.namespace.clone(),
                uid: pod.metadata.uid.clone(),
                ..ObjectReference::default()
            }),
        };
        let entry = groups.entry(resolved).or_default();
        if is_ready(pod) {
            entry.0.push(address);
        } else {
            entry.1.push(address);
        }
    }
    let by_name = |a: &EndpointAddress, b: &EndpointAddress| {
        (&a.ip, a.target_ref.as_ref().and_then(|r| r.name.as_ref()))
            .cmp(&(&b.ip, b.target_ref.as_ref().and_then(|r| r.name.as_ref())))
    };
    groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by(by_name);
            not_ready.sort_by(by_name);
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then(|| {
                    ports
                        .into_iter()
                        .map(|(name, port, protocol)| EndpointPort {
                            name: (!name.is_empty()).then_some(name),
                            port,
                            protocol: Some(protocol),
                            ..EndpointPort::default()
                        })
                        .collect()
                }),
            }
        })
        .collect()
}

#[async_trait::async_trait]
impl Controller for EndpointsController {
    fn name(&self) -> &str {
        "endpoints"
    }

    fn watches(&self) -> Watches {
        Watches::primary(GroupKind::SERVICE).related(GroupKind::POD)
    }

    fn map_related(
        &self,
        _kind: &GroupKind,
        pod: &DynamicObject,
        ctx: &ControllerContext,
    ) -> Vec<ObjectKey> {
        // A pod change can matter to any service in its namespace (its labels may have just
        // left a selector), so check them all; reconciles are cheap when nothing changed.
        let Some(namespace) = pod.metadata.namespace.as_deref() else {
            return Vec::new();
        };
        ctx.informers
            .informer(&GroupKind::SERVICE)
            .list_namespace(namespace)
            .iter()
            .map(|s| s.key())
            .collect()
    }

    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        let Some(namespace) = key.namespace.as_deref() else {
            return Ok(Action::await_change());
        };
        let endpoints: Api<Endpoints> = Api::namespaced(ctx.store.clone(), namespace);
        let services = ctx.informers.informer(&GroupKind::SERVICE);
        let Some(service) = services.get_typed::<Service>(key) else {
            match endpoints.delete(&key.name, &Preconditions::default()).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(Action::await_change());
        };
        let Some(selector) = service.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
            return Ok(Action::await_change());
        };
        let selector = Selector::from_labels(selector);
        let pods: Vec<Pod> = ctx
            .informers
            .informer(&GroupKind::POD)
            .list_namespace(namespace)
            .iter()
            .filter(|p| selector.matches_object(p) && p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.to_typed::<Pod>().ok())
            .filter(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded" | "Failed"))
            })
            .collect();
        let desired = subsets(&service, &pods);
        let current = endpoints.get_opt(&key.name).await?;
        match current {
            Some(existing) if existing.subsets.clone().unwrap_or_default() == desired => {}
            Some(mut existing) => {
                existing.subsets = Some(desired);
                existing.metadata.labels = service.metadata.labels.clone();
                endpoints.replace(&existing).await?;
            }
            None => {
                let mut fresh = Endpoints {
                    subsets: Some(desired),
                    ..Endpoints::default()
                };
                fresh.metadata.name = Some(key.name.clone());
                fresh.metadata.namespace = Some(namespace.to_string());
                fresh.metadata.labels = service.metadata.labels.clone();
                endpoints.create(&fresh).await?;
            }
        }
        Ok(Action::await_change())
    }
}
