//! [`ManagerMetrics`]: queue depth, reconcile counts, errors and latency per controller.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube_core::object::ObjectKey;
use kube_core::workqueue::WorkQueue;

/// Counters of one controller.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    reconciles: AtomicU64,
    errors: AtomicU64,
    total_micros: AtomicU64,
    max_micros: AtomicU64,
    queue: Mutex<Option<WorkQueue<ObjectKey>>>,
}

impl Counters {
    pub(crate) fn set_queue(&self, queue: WorkQueue<ObjectKey>) {
        *self.queue.lock().unwrap_or_else(|p| p.into_inner()) = Some(queue);
    }

    pub(crate) fn observe(&self, took: Duration, failed: bool) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.total_micros.fetch_add(micros, Ordering::Relaxed);
        self.max_micros.fetch_max(micros, Ordering::Relaxed);
    }
}

/// A snapshot of one controller's metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControllerStats {
    /// The controller's name.
    pub name: String,
    /// Keys waiting in its queue now.
    pub queue_depth: usize,
    /// Reconciles finished (successful or not).
    pub reconciles: u64,
    /// Reconciles that returned an error.
    pub errors: u64,
    /// Mean reconcile latency.
    pub mean_latency: Duration,
    /// Longest reconcile.
    pub max_latency: Duration,
}

/// A handle on a [`crate::ControllerManager`]'s metrics; cheap to clone, live while it runs.
#[derive(Clone, Debug, Default)]
pub struct ManagerMetrics {
    controllers: Arc<Mutex<BTreeMap<String, Arc<Counters>>>>,
}

impl ManagerMetrics {
    pub(crate) fn counters(&self, name: &str) -> Arc<Counters> {
        self.controllers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Current metrics of every controller, by name.
    pub fn snapshot(&self) -> Vec<ControllerStats> {
        let controllers = self.controllers.lock().unwrap_or_else(|p| p.into_inner());
        controllers
            .iter()
            .map(|(name, c)| {
                let reconciles = c.reconciles.load(Ordering::Relaxed);
                let total = c.total_micros.load(Ordering::Relaxed);
                ControllerStats {
                    name: name.clone(),
                    queue_depth: c
                        .queue
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_ref()
                        .map_or(0, WorkQueue::len),
                    reconciles,
                    errors: c.errors.load(Ordering::Relaxed),
                    mean_latency: Duration::from_micros(total.checked_div(reconciles).unwrap_or(0)),
                    max_latency: Duration::from_micros(c.max_micros.load(Ordering::Relaxed)),
                }
            })
            .collect()
    }
}
