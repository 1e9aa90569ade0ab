//! [`ServiceLbController`]: LoadBalancer Services get the Ready nodes' addresses as their
//! ingress, as k3s's ServiceLB (klipper-lb) gives them.
//!
//! k3s runs a `svclb` pod per node that forwards the service's ports from the node's address;
//! here the data planes serve `status.loadBalancer.ingress` IPs themselves (as external IPs,
//! `kube_core::proxy::ServiceEntry::external_ips`), so the controller only writes the status.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Node, Service, ServiceStatus,
};
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::typed::Api;

/// The node label that keeps a node out of every load balancer, as Kubernetes' service
/// controller honours it.
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// Gives every Service of `type: LoadBalancer` that names no other `spec.loadBalancerClass`
/// the InternalIP addresses of the Ready nodes as `status.loadBalancer.ingress`
/// (`{ip, ipMode: VIP}`, sorted, of the Service's `ipFamilies` when it names them), updated as
/// nodes come, go, turn ready or not. A Service that stops being a LoadBalancer has its ingress
/// cleared, as Kubernetes' service controller does. Nodes labelled [`EXCLUDE_LABEL`] are left
/// out.
#[derive(Debug, Default, Clone)]
pub struct ServiceLbController {
    class: Option<String>,
}

impl ServiceLbController {
    /// A controller for Services without a load balancer class.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also serves Services whose `spec.loadBalancerClass` is `class`.
    pub fn class(mut self, class: impl Into<String>) -> Self {
        self.class = Some(class.into());
        self
    }

    /// Whether `service` is one of ours: a LoadBalancer with no class or ours.
    fn serves(&self, service: &Service) -> bool {
        let Some(spec) = service.spec.as_ref() else {
            return false;
        };
        spec.type_.as_deref() == Some("LoadBalancer")
            && match spec.load_balancer_class.as_deref() {
                None => true,
                Some(class) => self.class.as_deref() == Some(class),
            }
    }

    /// Whether `service` belongs to another load balancer implementation, whose status is not
    /// ours to touch.
    fn foreign(&self, service: &Service) -> bool {
        let class = service
            .spec
            .as_ref()
            .and_then(|s| s.load_balancer_class.as_deref());
        class.is_some_and(|c| self.class.as_deref() != Some(c))
    }
}

/// Whether a node takes load-balanced traffic: Ready, not being deleted, not excluded.
fn eligible(node: &Node) -> bool {
    if node.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let excluded = node
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(EXCLUDE_LABEL));
    let ready = node
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ready && !excluded
}

/// The InternalIPs of the eligible nodes, of the service's families, sorted and deduplicated.
fn node_ips(nodes: &[Node], service: &Service) -> Vec<IpAddr> {
    let families = service.spec.as_ref().and_then(|s| s.ip_families.as_ref());
    let wanted = |ip: &IpAddr| match families {
        None => true,
        Some(f) if f.is_empty() => true,
        Some(f) => f.iter().any(|family| {
            (family == "IPv6") == ip.is_ipv6() && matches!(&**family, "IPv4" | "IPv6")
        }),
    };
    let mut ips: Vec<IpAddr> = nodes
        .iter()
        .filter(|n| eligible(n))
        .flat_map(|n| n.status.iter().flat_map(|s| s.addresses.iter().flatten()))
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .filter(wanted)
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

fn ingress(ips: &[IpAddr]) -> Vec<LoadBalancerIngress> {
    ips.iter()
        .map(|ip| LoadBalancerIngress {
            ip: Some(ip.to_string()),
            ip_mode: Some("VIP".into()),
            ..LoadBalancerIngress::default()
        })
        .collect()
}

fn current_ingress(service: &Service) -> Vec<LoadBalancerIngress> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl Controller for ServiceLbController {
    fn name(&self) -> &str {
        "service-lb"
    }

    fn watches(&self) -> Watches {
        Watches::primary(GroupKind::SERVICE).related(GroupKind::NODE)
    }

    fn map_related(
        &self,
        _kind: &GroupKind,
        _node: &DynamicObject,
        ctx: &ControllerContext,
    ) -> Vec<ObjectKey> {
        // Any node change may change every load balancer's address list; others are untouched.
        ctx.informers
            .informer(&GroupKind::SERVICE)
            .list()
            .iter()
            .filter(|s| {
                s.to_typed::<Service>()
                    .is_ok_and(|s| self.serves(&s) || !current_ingress(&s).is_empty())
            })
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
        let services = ctx.informers.informer(&GroupKind::SERVICE);
        let Some(mut service) = services.get_typed::<Service>(key) else {
            return Ok(Action::await_change());
        };
        if self.foreign(&service) {
            return Ok(Action::await_change());
        }
        let want = if self.serves(&service) {
            let nodes: Vec<Node> = ctx.informers.informer(&GroupKind::NODE).list_typed();
            ingress(&node_ips(&nodes, &service))
        } else {
            Vec::new()
        };
        if current_ingress(&service) == want {
            return Ok(Action::await_change());
        }
        tracing::debug!(service = %key, ingress = want.len(), "load balancer ingress");
        let status = service.status.get_or_insert_with(ServiceStatus::default);
        let lb = status
            .load_balancer
            .get_or_insert_with(LoadBalancerStatus::default);
        lb.ingress = (!want.is_empty()).then_some(want);
        // A conflict (the cache was behind) is retried by the error policy against a newer copy.
        Api::<Service>::namespaced(ctx.store.clone(), namespace)
            .replace(&service)
            .await?;
        Ok(Action::await_change())
    }
}
