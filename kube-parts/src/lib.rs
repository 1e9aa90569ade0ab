//! The kube-parts crates in one dependency, and a whole cluster for your tests.
//!
//! `kube-parts` re-exports every crate of the family under a short name, as kube-rs's `kube`
//! crate re-exports `kube-client` and `kube-runtime`:
//!
//! | module | crate | what |
//! |---|---|---|
//! | [`core`] | `kube-core` | API types, the five traits (`Store`, `Scheduler`, `Controller`, `Runtime`, `Proxy`), `Api<K>`, informers, the `Orchestrator` builder |
//! | [`store`] | `kube-store` | `MemStore`, `DurableStore`, `EtcdStore` (feature `etcd` of kube-store), `RemoteStore` (feature `client`) |
//! | `apiserver` | `kube-apiserver` | `ApiServer`, the Kubernetes REST API over any `Store` (feature `server`) |
//! | [`sched`] | `kube-sched` | the scheduling framework, `DefaultScheduler`, `SchedulingLoop` |
//! | [`ctrl`] | `kube-ctrl` | `ControllerManager` and the controllers |
//! | [`node`] | `kube-node` | `NodeAgent` and the runtimes (`FakeRuntime`, `ProcessRuntime`, …) |
//! | [`net`] | `kube-net` | `ProxyLoop`, `MemoryProxy`, the userspace and nftables proxies, DNS |
//!
//! # Feature flags
//!
//! - `testing`: [`testing::TestCluster`], a whole cluster in one process (in-memory store,
//!   scheduler, controllers, node agents on simulated runtimes, in-memory proxy) with helpers
//!   to wait for conditions, kill or partition nodes and read Events. Enable it in
//!   `[dev-dependencies]`: `kube-parts = { version = "0.1", features = ["testing"] }`.
//! - `server`: the Kubernetes REST API server (`kube-apiserver`), as `apiserver`.
//! - `client`: kube-store's `RemoteStore`, and [`remote`]: what components need to run as
//!   clients of an API server ([`remote::ApiBinder`] for a scheduler,
//!   [`remote::RemoteTokenSource`] for a node agent's projected ServiceAccount tokens).
//!
//! # A cluster in a unit test
//!
//! With the `testing` feature, a test starts a cluster, creates a Deployment through the typed
//! API and waits, on watch events rather than sleeps, for its pods to run. Under
//! `#[tokio::test(start_paused = true)]` the cluster runs on Tokio's paused clock, so
//! heartbeats, grace periods and tolerations of minutes pass instantly (see
//! [`testing`] for details):
//!
//! ```
//! # #[cfg(feature = "testing")]
//! # mod demo {
//! use std::time::Duration;
//!
//! use kube_parts::core::api::{Deployment, Pod};
//! use kube_parts::testing::{TestCluster, conditions};
//!
//! // In your crate: `#[tokio::test(start_paused = true)]`.
//! # #[allow(dead_code)]
//! pub async fn web_rolls_out() -> Result<(), Box<dyn std::error::Error>> {
//!     let cluster = TestCluster::builder()
//!         .nodes(3)
//!         .node_capacity("4", "8Gi")
//!         .wait_timeout(Duration::from_secs(600)) // cluster time: free on paused time
//!         .start()
//!         .await?;
//!
//!     let web: Deployment = serde_json::from_value(serde_json::json!({
//!         "metadata": {"name": "web"},
//!         "spec": {
//!             "replicas": 3,
//!             "selector": {"matchLabels": {"app": "web"}},
//!             "template": {
//!                 "metadata": {"labels": {"app": "web"}},
//!                 "spec": {"containers": [{"name": "web", "image": "nginx"}]}
//!             }
//!         }
//!     }))?;
//!     cluster.api::<Deployment>("default").create(&web).await?;
//!     cluster.wait_until_deployment_available("default", "web").await?;
//!     let pods = cluster.wait_until_pods_running("default", "app=web", 3).await?;
//!
//!     // A node dies. After the node grace period (20 s) and the pods' toleration of an
//!     // unreachable node (300 s by default) they run elsewhere.
//!     let dead = conditions::pod_node(&pods[0]).unwrap_or_default().to_string();
//!     cluster.kill_node(&dead).await?;
//!     cluster.wait_until_node_not_ready(&dead).await?;
//!     cluster
//!         .wait_for::<Pod>(
//!             Some("default"),
//!             |pods| {
//!                 let running = pods.iter().filter(|p| conditions::is_pod_running(p));
//!                 running.clone().count() == 3
//!                     && running.clone().all(|p| conditions::pod_node(p) != Some(dead.as_str()))
//!             },
//!             Duration::from_secs(600),
//!         )
//!         .await?;
//!
//!     cluster.shutdown().await?;
//!     Ok(())
//! }
//! # }
//! # #[cfg(feature = "testing")]
//! # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build()
//! #     .unwrap().block_on(demo::web_rolls_out()).unwrap();
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The Kubernetes REST API server (feature `server`).
#[cfg(feature = "server")]
pub use kube_apiserver as apiserver;
pub use kube_core as core;
pub use kube_ctrl as ctrl;
pub use kube_net as net;
pub use kube_node as node;
pub use kube_sched as sched;
pub use kube_store as store;

#[cfg(feature = "client")]
pub mod remote;
#[cfg(feature = "testing")]
pub mod testing;
