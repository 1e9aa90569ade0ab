//! [`ServiceAllocator`]: ClusterIPs and NodePorts for Services, never handed out twice and
//! released when the Service goes.
//!
//! Kubernetes allocates these in the API server, inside the create call. Our stores have no
//! admission step, so this controller fills `spec.clusterIP` (and `clusterIPs`) and each port's
//! `nodePort` right after a Service is created. Allocations live in one table behind a lock,
//! rebuilt from the Service cache on first use, so concurrent reconciles cannot collide.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Service;
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{GroupKind, ObjectKey};
use kube_core::typed::Api;

/// Errors configuring a [`ServiceAllocator`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AllocatorError {
    /// The ClusterIP range is not an IPv4 CIDR with room for addresses.
    #[error("invalid service CIDR {0:?} (want an IPv4 CIDR of /30 or larger, e.g. 10.96.0.0/12)")]
    InvalidCidr(String),
    /// The NodePort range is empty or outside 1..=65535.
    #[error("invalid node port range {0:?}")]
    InvalidPorts(RangeInclusive<i32>),
}

/// How often a Service waiting for a full range is looked at again.
const FULL_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

#[derive(Debug, Default)]
struct Table {
    loaded: bool,
    ips: HashMap<u32, ObjectKey>,
    ports: HashMap<i32, ObjectKey>,
    next_ip: u32,
    next_port: i32,
}

impl Table {
    fn release(&mut self, key: &ObjectKey) {
        self.ips.retain(|_, k| k != key);
        self.ports.retain(|_, k| k != key);
    }

    fn record(&mut self, key: &ObjectKey, service: &Service) {
        let Some(spec) = service.spec.as_ref() else {
            return;
        };
        if let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        {
            self.ips.entry(u32::from(ip)).or_insert_with(|| key.clone());
        }
        for port in spec.ports.iter().flatten() {
            if let Some(p) = port.node_port {
                self.ports.entry(p).or_insert_with(|| key.clone());
            }
        }
    }
}

/// Allocates ClusterIPs from a CIDR (default `10.96.0.0/12`, as kube-apiserver) and NodePorts
/// from a range (default 30000-32767) to Services that lack them.
#[derive(Debug)]
pub struct ServiceAllocator {
    /// First and last allocatable address (network and broadcast addresses excluded).
    ips: RangeInclusive<u32>,
    ports: RangeInclusive<i32>,
    table: Mutex<Table>,
}

impl Default for ServiceAllocator {
    fn default() -> Self {
        Self {
            // 10.96.0.1 ..= 10.111.255.254
            ips: 0x0A60_0001..=0x0A6F_FFFE,
            ports: 30000..=32767,
            table: Mutex::default(),
        }
    }
}

impl ServiceAllocator {
    /// An allocator with Kubernetes' default ranges.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allocates ClusterIPs from `cidr` (IPv4, e.g. `10.0.0.0/24`).
    pub fn cluster_ip_range(mut self, cidr: &str) -> Result<Self, AllocatorError> {
        let bad = || AllocatorError::InvalidCidr(cidr.to_string());
        let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let len: u32 = len.parse().map_err(|_| bad())?;
        if len > 30 {
            return Err(bad());
        }
        let size = 1u32 << (32 - len);
        let network = u32::from(addr) & !(size - 1);
        self.ips = network + 1..=network + size - 2;
        Ok(self)
    }

    /// Allocates NodePorts from `range`.
    pub fn node_port_range(mut self, range: RangeInclusive<i32>) -> Result<Self, AllocatorError> {
        if range.is_empty() || *range.start() < 1 || *range.end() > 65535 {
            return Err(AllocatorError::InvalidPorts(range));
        }
        self.ports = range;
        Ok(self)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next free address after the last one handed out, wrapping around.
    fn take_ip(&self, table: &mut Table, key: &ObjectKey) -> Option<Ipv4Addr> {
        let (start, end) = (*self.ips.start(), *self.ips.end());
        let size = end - start + 1;
        for i in 0..size {
            let candidate = start + (table.next_ip.wrapping_add(i) % size);
            if let std::collections::hash_map::Entry::Vacant(slot) = table.ips.entry(candidate) {
                slot.insert(key.clone());
                table.next_ip = (candidate - start + 1) % size;
                return Some(Ipv4Addr::from(candidate));
            }
        }
        None
    }

    fn take_port(&self, table: &mut Table, key: &ObjectKey) -> Option<i32> {
        let (start, end) = (*self.ports.start(), *self.ports.end());
        let size = end - start + 1;
        for i in 0..size {
            let candidate = start + (table.next_port + i) % size;
            if let std::collections::hash_map::Entry::Vacant(slot) = table.ports.entry(candidate) {
                slot.insert(key.clone());
                table.next_port = (candidate - start + 1) % size;
                return Some(candidate);
            }
        }
        None
    }
}

#[async_trait::async_trait]
impl Controller for ServiceAllocator {
    fn name(&self) -> &str {
        "service-allocator"
    }

    fn watches(&self) -> Watches {
        Watches::primary(GroupKind::SERVICE)
    }

    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        let Some(namespace) = key.namespace.as_deref() else {
            return Ok(Action::await_change());
        };
        let api: Api<Service> = Api::namespaced(ctx.store.clone(), namespace);
        let Some(mut service) = api.get_opt(&key.name).await? else {
            self.table().release(key);
            return Ok(Action::await_change());
        };
        let mut changed = false;
        {
            let mut table = self.table();
            if !table.loaded {
                for s in ctx
                    .informers
                    .informer(&GroupKind::SERVICE)
                    .list_typed::<Service>()
                {
                    table.record(&ObjectKey::from_meta(&s.metadata), &s);
                }
                table.loaded = true;
            }
            // This key's entries mirror the stored object; anything a failed earlier pass took
            // but never wrote is given back here.
            table.release(key);
            table.record(key, &service);
            let spec = service.spec.get_or_insert_with(Default::default);
            let type_ = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
            let needs_ip =
                type_ != "ExternalName" && spec.cluster_ip.as_deref().is_none_or(str::is_empty);
            if needs_ip {
                let ip = self
                    .take_ip(&mut table, key)
                    .ok_or_else(|| {
                        ReconcileError::Invalid("service ClusterIP range is full".into())
                    })?
                    .to_string();
                spec.cluster_ip = Some(ip.clone());
                spec.cluster_ips = Some(vec![ip]);
                changed = true;
            }
            if type_ == "NodePort" || type_ == "LoadBalancer" {
                for port in spec.ports.iter_mut().flatten() {
                    if port.node_port.is_none() {
                        let Some(p) = self.take_port(&mut table, key) else {
                            tracing::warn!(service = %key, "node port range is full");
                            return Ok(Action::requeue(FULL_RETRY));
                        };
                        port.node_port = Some(p);
                        changed = true;
                    }
                }
            }
        }
        if changed {
            if let Err(e) = api.replace(&service).await {
                // Not written: give back what this pass took, keeping what the stored object
                // holds.
                let current = api.get_opt(&key.name).await.ok().flatten();
                let mut table = self.table();
                table.release(key);
                if let Some(current) = current {
                    table.record(key, &current);
                }
                return Err(e.into());
            }
        }
        Ok(Action::await_change())
    }
}
