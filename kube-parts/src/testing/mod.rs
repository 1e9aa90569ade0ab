//! A whole cluster in one process for your tests: [`TestCluster`].
//!
//! Neither Kubernetes (envtest needs real binaries, KWOK a real API server) nor kube-rs (no
//! fake client) gives a test a running cluster; here one starts in milliseconds:
//! an in-memory store, the scheduler, every built-in controller, N node agents on simulated
//! runtimes ([`FakeRuntime`]: nothing is executed, containers run
//! until stopped or as scripted) and an in-memory service proxy.
//!
//! | concern | API |
//! |---|---|
//! | build | [`TestCluster::builder`] → [`TestClusterBuilder`]: `nodes`, `node_capacity`, `fake_behavior`, `fake_image`, `heartbeat_interval`, `node_grace_period`, `default_toleration`, `controller`, `scheduler`, `component`, … → `start().await` |
//! | objects | [`TestCluster::api`], [`TestCluster::api_all`], [`TestCluster::store`] |
//! | waiting | [`TestCluster::wait_for`], [`TestCluster::wait_for_object`], [`TestCluster::wait_until_pods_running`], [`TestCluster::wait_until_deployment_available`], [`TestCluster::wait_until_nodes_ready`], [`TestCluster::wait_until_node_not_ready`], [`TestCluster::wait_until_deleted`]; predicates in [`conditions`] |
//! | failures | [`TestCluster::kill_node`], [`TestCluster::restart_node`], [`TestCluster::partition_node`], [`TestCluster::heal_node`], [`TestCluster::add_node`]; per-node scripting with [`TestCluster::runtime`] |
//! | events | [`TestCluster::events_for`], [`TestCluster::wait_for_event`] |
//! | services | [`TestCluster::proxy`]: the service table the proxy applied |
//!
//! # Waiting without sleeping
//!
//! Every `wait_*` method subscribes to the control plane's shared informer of the kind and
//! checks its condition after each change, so it returns as soon as the cluster gets there.
//! The `wait_until_*` helpers give up after the builder's
//! [`wait_timeout`](TestClusterBuilder::wait_timeout) (default 30 s) with
//! [`HarnessError::Timeout`]; `wait_for`, `wait_for_object` and `wait_for_event` take their
//! timeout as an argument.
//!
//! # Paused time
//!
//! Every interval in the cluster — heartbeats, the node grace period, tolerations, pod
//! re-syncs, back-offs, the waits' timeouts — is measured on Tokio's clock
//! ([`tokio::time`]). A test run on paused time therefore sees minutes of cluster time pass
//! in milliseconds: when every task is idle, Tokio jumps the clock to the next timer. Run the
//! test with
//!
//! ```text
//! #[tokio::test(start_paused = true)]
//! async fn pods_leave_a_dead_node() { /* TestCluster::builder()...start().await ... */ }
//! ```
//!
//! which needs tokio's `test-util` feature in your `[dev-dependencies]`
//! (`tokio = { version = "1", features = ["macros", "rt", "test-util"] }`) and the
//! current-thread runtime (`#[tokio::test]`'s default; paused time does not work with
//! `flavor = "multi_thread"`). `tokio::time::pause()` at the start of a current-thread test
//! does the same. With the defaults (5 s heartbeats, 20 s node grace period, 300 s
//! toleration) a dead node's pods move after about 320 s of cluster time — instantly on paused
//! time; on real time, shorten them with the builder (e.g. `heartbeat_interval(100 ms)`,
//! `node_grace_period(500 ms)`, `default_toleration(0 s)`).
//!
//! Wall-clock timestamps in objects (`creationTimestamp`, `lastHeartbeatTime`, Events) come
//! from the system clock and do not jump with paused time; nothing in the cluster decides on
//! them, so this only shows in what a test reads.
//!
//! # Scale
//!
//! A simulated node costs a few idle tasks and a container a map entry, and the node agents'
//! pod watches are served from one watch of every pod routed by `spec.nodeName` (as
//! kube-apiserver's watch cache does for kubelets) rather than by N store watchers each
//! reading every change. A 1,000-node cluster is Ready in 150–350 ms and a 1,000-pod
//! Deployment runs 1.6–4 s later (release build, 2 cores shared with other builds, load ≈ 4.3):
//! `cargo bench -p kube-parts --bench harness --features testing`.
//!

mod builder;
mod cluster;
pub mod conditions;
mod error;
mod events;
mod nodes;
mod partition;
mod runtime;
mod wait;

pub use builder::{ConfigureNode, TestClusterBuilder};
pub use cluster::TestCluster;
pub use error::{HarnessError, Result};
pub use kube_node::{FakeBehavior, FakeRuntime};
