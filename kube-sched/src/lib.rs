//! A Kubernetes-style pod scheduler in two parts.
//!
//! - [`DefaultScheduler`] implements [`kube_core::scheduler::Scheduler`]: a pure function from a
//!   pod and a [`Snapshot`](kube_core::scheduler::Snapshot) to a node name, or a
//!   [`ScheduleError`](kube_core::scheduler::ScheduleError) saying, per node, why nothing fits.
//!   No runtime, no store: call it from a plain `#[test]`.
//! - [`SchedulingLoop`] implements [`kube_core::orchestrator::Component`]: it watches pods and
//!   nodes through the orchestrator's shared informers, runs any `Arc<dyn Scheduler>` on each
//!   pending pod, and writes the binding.
//!
//! # Placement policy
//!
//! Filters (first failure per node is its reason, worded as Kubernetes words it):
//!
//! | filter | rejects with |
//! |---|---|
//! | NodeUnschedulable | [`node(s) were unschedulable`](filter::REASON_UNSCHEDULABLE) |
//! | NodeName | [`node(s) didn't match the requested node name`](filter::REASON_NODE_NAME) |
//! | node selector | [`node(s) didn't match Pod's node selector`](filter::REASON_NODE_SELECTOR) |
//! | NodeResourcesFit | `Insufficient cpu`, `Insufficient memory`, ..., [`Too many pods`](filter::REASON_TOO_MANY_PODS) |
//!
//! Score: LeastAllocated over CPU and memory; containers without requests count
//! [`100m`](score::DEFAULT_MILLI_CPU_REQUEST) and [`200Mi`](score::DEFAULT_MEMORY_REQUEST)
//! so request-less pods spread. Equally scored nodes are taken in turn.
//!
//! # Usage
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn kube_core::store::Store>) -> Result<(), kube_core::OrchestratorError> {
//! use std::sync::Arc;
//! use kube_core::Orchestrator;
//! use kube_sched::{DefaultScheduler, SchedulingLoop};
//!
//! let running = Orchestrator::builder()
//!     .store(store)
//!     .scheduler(SchedulingLoop::new(Arc::new(DefaultScheduler::new())))
//!     .build()?
//!     .start();
//! // Pods created in the store now get `spec.nodeName` set.
//! running.shutdown().await
//! # }
//! ```
//!
//! # What it does not do (yet)
//!
//! Taints other than the unschedulable one, affinity, host ports, topology spread, preemption,
//! priority ordering of the queue.
#![forbid(unsafe_code)]

mod default_scheduler;
pub mod filter;
mod scheduling_loop;
pub mod score;

pub use default_scheduler::{DEFAULT_SCHEDULER_NAME, DefaultScheduler};
pub use scheduling_loop::{SchedulingConfig, SchedulingLoop};

#[cfg(test)]
mod assertions {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        send_sync::<DefaultScheduler>();
        send_sync::<SchedulingLoop>();
        send_sync::<SchedulingConfig>();
    }
}
