//! The [`Proxy`] trait: a service data plane, and the service table it is handed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Service};

use crate::object::ObjectKey;

/// Errors from a [`Proxy`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The table or change cannot be applied as given.
    #[error("invalid service table: {0}")]
    Invalid(String),
    /// The data plane failed to apply it.
    #[error("proxy backend error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Transport protocol of a service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// From the Kubernetes protocol name (`TCP` when absent or unknown).
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("UDP") => Self::Udp,
            Some("SCTP") => Self::Sctp,
            _ => Self::Tcp,
        }
    }
}

/// One backend of a service port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// Pod IP.
    pub ip: IpAddr,
    /// Port on the pod.
    pub port: u16,
    /// Node the pod runs on.
    pub node_name: Option<String>,
    /// The pod is terminating but still serving: a data plane uses such endpoints only when a
    /// port has no ready endpoint (Kubernetes' "serving-terminating" fallback).
    pub terminating: bool,
}

/// One port of a service and its ready backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name (empty for a single unnamed port).
    pub name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// The service's port.
    pub port: u16,
    /// Node port, for NodePort and LoadBalancer services.
    pub node_port: Option<u16>,
    /// Ready backends, sorted.
    pub endpoints: Vec<Endpoint>,
}

/// What a proxy needs to know about one service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceEntry {
    /// The virtual IP, if allocated (`None` for headless services).
    pub cluster_ip: Option<IpAddr>,
    /// Ports with their backends.
    pub ports: Vec<ServicePort>,
    /// `sessionAffinity: ClientIP`: how long a client IP sticks to the endpoint it was last sent
    /// to (`None` without affinity).
    pub session_affinity: Option<Duration>,
    /// `internalTrafficPolicy: Local`: ClusterIP traffic goes only to endpoints on this node.
    pub internal_traffic_local: bool,
    /// `externalTrafficPolicy: Local`: NodePort and external-IP traffic goes only to endpoints
    /// on this node.
    pub external_traffic_local: bool,
    /// Addresses outside the cluster that also reach the service's ports, as its ClusterIP does:
    /// `spec.externalIPs` and the load balancer's `status.loadBalancer.ingress` IPs (sorted, no
    /// duplicates, the ClusterIP left out).
    pub external_ips: Vec<IpAddr>,
}

impl ServiceEntry {
    /// Reads the session affinity and traffic policies of `service` into this entry (the
    /// ClientIP timeout defaults to Kubernetes' 10800 s).
    pub fn with_policies(mut self, service: &Service) -> Self {
        let Some(spec) = service.spec.as_ref() else {
            return self;
        };
        self.session_affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            let seconds = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .and_then(|t| u64::try_from(t).ok())
                .unwrap_or(10800);
            Duration::from_secs(seconds)
        });
        self.internal_traffic_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        self.external_traffic_local = spec.external_traffic_policy.as_deref() == Some("Local");
        self.external_ips = external_ips(service, self.cluster_ip);
        self
    }
}

/// `spec.externalIPs` and the IPs of `status.loadBalancer.ingress` (hostname-only ingress
/// entries carry no IP to serve), parsed, sorted and deduplicated; unparsable ones are skipped
/// because the API server may hold addresses written by an older validation.
fn external_ips(service: &Service, cluster_ip: Option<IpAddr>) -> Vec<IpAddr> {
    let spec_ips = service
        .spec
        .iter()
        .flat_map(|s| s.external_ips.iter().flatten());
    let ingress_ips = service
        .status
        .iter()
        .flat_map(|s| s.load_balancer.iter())
        .flat_map(|lb| lb.ingress.iter().flatten())
        .filter_map(|i| i.ip.as_ref());
    let mut ips: Vec<IpAddr> = spec_ips
        .chain(ingress_ips)
        .filter_map(|ip| ip.parse().ok())
        .filter(|ip| Some(*ip) != cluster_ip)
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

impl ServiceEntry {
    /// Builds the entry from a Service and its Endpoints (ready addresses only).
    pub fn from_objects(service: &Service, endpoints: Option<&Endpoints>) -> Self {
        let spec = service.spec.clone().unwrap_or_default();
        let cluster_ip = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| *ip != "None")
            .and_then(|ip| ip.parse().ok());
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let name = p.name.clone().unwrap_or_default();
                let mut backends = Vec::new();
                for subset in endpoints.iter().flat_map(|e| e.subsets.iter().flatten()) {
                    let Some(ep_port) = subset
                        .ports
                        .iter()
                        .flatten()
                        .find(|ep| ep.name.clone().unwrap_or_default() == name)
                    else {
                        continue;
                    };
                    for address in subset.addresses.iter().flatten() {
                        if let (Ok(ip), Ok(port)) =
                            (address.ip.parse(), u16::try_from(ep_port.port))
                        {
                            backends.push(Endpoint {
                                ip,
                                port,
                                node_name: address.node_name.clone(),
                                terminating: false,
                            });
                        }
                    }
                }
                backends.sort();
                backends.dedup();
                Some(ServicePort {
                    name,
                    protocol: Protocol::parse(p.protocol.as_deref()),
                    port: u16::try_from(p.port).ok()?,
                    node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
                    endpoints: backends,
                })
            })
            .collect();
        Self {
            cluster_ip,
            ports,
            ..Self::default()
        }
        .with_policies(service)
    }
}

/// The desired (or applied) state of a data plane: every service and its backends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceTable {
    /// Services by namespace and name.
    pub services: BTreeMap<ObjectKey, ServiceEntry>,
}

impl ServiceTable {
    /// Applies incremental changes to this table.
    pub fn apply(&mut self, changes: &[TableChange]) {
        for change in changes {
            match change {
                TableChange::Upsert(key, entry) => {
                    self.services.insert(key.clone(), entry.clone());
                }
                TableChange::Remove(key) => {
                    self.services.remove(key);
                }
            }
        }
    }
}

/// An increment to a [`ServiceTable`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableChange {
    /// Add or replace a service.
    Upsert(ObjectKey, ServiceEntry),
    /// Remove a service.
    Remove(ObjectKey),
}

/// A service data plane: it is handed the desired table, applies it, and reports what it has
/// applied.
///
/// ```
/// use std::sync::Arc;
/// use kube_core::proxy::Proxy;
/// fn object_safe(_: Arc<dyn Proxy>) {}
/// ```
#[async_trait::async_trait]
pub trait Proxy: Send + Sync + std::fmt::Debug {
    /// Replaces everything applied with `table`.
    async fn sync(&self, table: &ServiceTable) -> Result<(), ProxyError>;
    /// Applies increments on top of what is applied.
    async fn apply(&self, changes: &[TableChange]) -> Result<(), ProxyError>;
    /// What is applied now.
    async fn applied(&self) -> Result<ServiceTable, ProxyError>;
    /// Removes everything this data plane installed (rules, listeners, addresses); called once
    /// by the loop that feeds it when the orchestrator shuts down. The default does nothing.
    async fn shutdown(&self) -> Result<(), ProxyError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ips_join_spec_and_load_balancer_ingress() {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "type": "LoadBalancer",
                "clusterIP": "10.96.0.20",
                "externalIPs": ["192.0.2.9", "not-an-ip", "10.96.0.20"],
                "ports": [{"port": 80}]
            },
            "status": {"loadBalancer": {"ingress": [
                {"ip": "192.0.2.3", "ipMode": "VIP"},
                {"hostname": "lb.example"},
                {"ip": "192.0.2.9"}
            ]}}
        }))
        .expect("service");
        let entry = ServiceEntry::from_objects(&service, None);
        let want: Vec<IpAddr> = vec![
            "192.0.2.3".parse().expect("ip"),
            "192.0.2.9".parse().expect("ip"),
        ];
        assert_eq!(entry.external_ips, want);
    }
}
