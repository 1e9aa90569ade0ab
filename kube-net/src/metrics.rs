//! What the proxy loop reports about its work: sync latency and the size of what it programs.

use std::sync::Mutex;
use std::time::Duration;

/// A snapshot of [`ProxyLoop`](crate::ProxyLoop) metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyMetrics {
    /// Successful full syncs.
    pub full_syncs: u64,
    /// Successful incremental applies.
    pub increments: u64,
    /// Failed calls to the data plane.
    pub failures: u64,
    /// Duration of the last successful call.
    pub last_sync_latency: Duration,
    /// Longest successful call so far.
    pub max_sync_latency: Duration,
    /// Sum of all successful calls' durations (divide by the count for the mean).
    pub total_sync_latency: Duration,
    /// Services in the applied table.
    pub services: usize,
    /// Service ports in the applied table (each is one ClusterIP rule or listener).
    pub service_ports: usize,
    /// Endpoints over all ports (each is one DNAT target or backend).
    pub endpoints: usize,
}

/// Shared cell the loop writes and users read.
#[derive(Debug, Default)]
pub(crate) struct MetricsCell(Mutex<ProxyMetrics>);

impl MetricsCell {
    pub(crate) fn snapshot(&self) -> ProxyMetrics {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut ProxyMetrics)) {
        f(&mut self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    /// Records a successful call that took `took` and left `table` applied.
    pub(crate) fn synced<'a>(
        &self,
        full: bool,
        took: Duration,
        table: impl Iterator<Item = &'a kube_core::proxy::ServiceEntry>,
    ) {
        let (mut services, mut ports, mut endpoints) = (0, 0, 0);
        for entry in table {
            services += 1;
            ports += entry.ports.len();
            endpoints += entry.ports.iter().map(|p| p.endpoints.len()).sum::<usize>();
        }
        self.update(|m| {
            if full {
                m.full_syncs += 1;
            } else {
                m.increments += 1;
            }
            m.last_sync_latency = took;
            m.max_sync_latency = m.max_sync_latency.max(took);
            m.total_sync_latency += took;
            m.services = services;
            m.service_ports = ports;
            m.endpoints = endpoints;
        });
    }
}
