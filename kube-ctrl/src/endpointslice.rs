//! [`EndpointSliceController`]: discovery/v1 EndpointSlices for Services with selectors.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey, controller_owner_ref};
use kube_core::selector::Selector;
use kube_core::store::{ListOptions, Preconditions};
use kube_core::typed::Api;

use crate::endpoints::target_port;
use crate::pods::is_ready;

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the slice's manager.
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY_LABEL`], as Kubernetes' controller.
const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// Maintains EndpointSlices for each Service with a selector: one slice per distinct set of
/// resolved ports (named ports resolve per pod), owned by the Service, labelled
/// `kubernetes.io/service-name`. Each endpoint's conditions come from the pod: `serving` is its
/// readiness, `terminating` whether it is being deleted, `ready` serving and not terminating.
#[derive(Debug, Default, Clone)]
pub struct EndpointSliceController {
    _private: (),
}

impl EndpointSliceController {
    /// An EndpointSlice controller.
    pub fn new() -> Self {
        Self::default()
    }
}

type PortKey = Vec<(String, i32, String)>;

/// The endpoint's DNS hostname: the pod's `spec.hostname` when its `spec.subdomain` names the
/// Service (as Kubernetes' controllers set it), so `<hostname>.<service>.<ns>.svc` resolves.
pub(crate) fn endpoint_hostname(pod: &Pod, service_name: &str) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_ref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == Some(service_name)).then(|| hostname.clone())
}

fn endpoint(pod: &Pod, ip: String, service_name: &str) -> Endpoint {
    let serving = is_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    Endpoint {
        addresses: vec![ip],
        hostname: endpoint_hostname(pod, service_name),
        conditions: Some(EndpointConditions {
            ready: Some(serving && !terminating),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    }
}

#[async_trait::async_trait]
impl Controller for EndpointSliceController {
    fn name(&self) -> &str {
        "endpointslice"
    }

    fn watches(&self) -> Watches {
        Watches::primary(GroupKind::SERVICE)
            .related(GroupKind::POD)
            .related(GroupKind::of::<EndpointSlice>())
    }

    fn map_related(
        &self,
        kind: &GroupKind,
        object: &DynamicObject,
        ctx: &ControllerContext,
    ) -> Vec<ObjectKey> {
        let Some(namespace) = object.metadata.namespace.as_deref() else {
            return Vec::new();
        };
        if *kind != GroupKind::POD {
            // A slice changed (perhaps by someone else): re-check its Service.
            return object
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(|s| ObjectKey::namespaced(namespace, s.clone()))
                .into_iter()
                .collect();
        }
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
        let slices: Api<EndpointSlice> = Api::namespaced(ctx.store.clone(), namespace);
        let ours = Selector::parse(&format!(
            "{SERVICE_NAME_LABEL}={},{MANAGED_BY_LABEL}={MANAGED_BY}",
            key.name
        ))
        .map_err(|e| ReconcileError::Invalid(e.to_string()))?;
        let existing = slices
            .list(&ListOptions::default().labels(ours))
            .await?
            .items;
        let service = ctx
            .informers
            .informer(&GroupKind::SERVICE)
            .get_typed::<Service>(key);
        let selector = service
            .as_ref()
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.selector.as_ref())
            .map(Selector::from_labels);
        let mut desired: BTreeMap<String, EndpointSlice> = BTreeMap::new();
        if let (Some(service), Some(selector)) = (service.as_ref(), selector) {
            let ports = service
                .spec
                .as_ref()
                .and_then(|s| s.ports.clone())
                .unwrap_or_default();
            let mut groups: BTreeMap<PortKey, Vec<Endpoint>> = BTreeMap::new();
            for object in ctx
                .informers
                .informer(&GroupKind::POD)
                .list_namespace(namespace)
            {
                if !selector.matches_object(&object) {
                    continue;
                }
                let Ok(pod) = object.to_typed::<Pod>() else {
                    continue;
                };
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                if matches!(phase, Some("Succeeded" | "Failed")) {
                    continue;
                }
                let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
                    continue;
                };
                let resolved: PortKey = ports
                    .iter()
                    .filter_map(|p| {
                        let port = target_port(&pod, p.target_port.as_ref(), p.port)?;
                        Some((
                            p.name.clone().unwrap_or_default(),
                            port,
                            p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        ))
                    })
                    .collect();
                let service_name = service.metadata.name.as_deref().unwrap_or_default();
                groups
                    .entry(resolved)
                    .or_default()
                    .push(endpoint(&pod, ip, service_name));
            }
            let owner = controller_owner_ref(service);
            for (i, (ports, mut endpoints)) in groups.into_iter().enumerate() {
                endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
                let mut slice = EndpointSlice {
                    address_type: "IPv4".into(),
                    endpoints,
                    ports: Some(
                        ports
                            .into_iter()
                            .map(|(name, port, protocol)| EndpointPort {
                                name: Some(name),
                                port: Some(port),
                                protocol: Some(protocol),
                                app_protocol: None,
                            })
                            .collect(),
                    ),
                    ..EndpointSlice::default()
                };
                let name = format!("{}-{i}", key.name);
                slice.metadata.name = Some(name.clone());
                slice.metadata.namespace = Some(namespace.to_string());
                slice.metadata.labels = Some(
                    [
                        (SERVICE_NAME_LABEL.to_string(), key.name.clone()),
                        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
                    ]
                    .into(),
                );
                slice.metadata.owner_references = owner.clone().map(|o| vec![o]);
                desired.insert(name, slice);
            }
        }
        for current in &existing {
            let name = current.metadata.name.clone().unwrap_or_default();
            match desired.remove(&name) {
                Some(mut want) => {
                    if (&want.endpoints, &want.ports) != (&current.endpoints, &current.ports) {
                        want.metadata.resource_version = current.metadata.resource_version.clone();
                        slices.replace(&want).await?;
                    }
                }
                None => {
                    let pre = Preconditions::uid(current.metadata.uid.clone().unwrap_or_default());
                    match slices.delete(&name, &pre).await {
                        Ok(_) => {}
                        Err(e) if e.is_not_found() || e.is_conflict() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        for slice in desired.values() {
            match slices.create(slice).await {
                Ok(_) => {}
                // Created by a concurrent pass: the next pass reconciles it.
                Err(e) if e.is_already_exists() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Action::await_change())
    }
}
