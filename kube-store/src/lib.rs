//! Cluster state for orchestrators built from kube-parts: implementations of
//! [`kube_core::store::Store`].
//!
//! - [`MemStore`]: in memory. MVCC history with compaction, watches from any retained
//!   revision, bookmarks, consistent paging, label and field selectors.
//! - [`DurableStore`]: the same, persisted in a directory: a checksummed, fsync'd log with group
//!   commit, snapshots, crash recovery, and a lock against a second process.
//! - `EtcdStore` (cargo feature `etcd`, needs `protoc` to build): the same trait over etcd v3.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), kube_core::StoreError> {
//! use std::sync::Arc;
//! use kube_core::api::ConfigMap;
//! use kube_core::store::Store;
//! use kube_core::typed::Api;
//! use kube_store::MemStore;
//!
//! let store: Arc<dyn Store> = Arc::new(MemStore::new());
//! let maps: Api<ConfigMap> = Api::namespaced(store, "default");
//! let mut cm = ConfigMap::default();
//! cm.metadata.name = Some("settings".into());
//! let created = maps.create(&cm).await?;
//! assert_eq!(created.metadata.resource_version.as_deref(), Some("1"));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod durable;
mod engine;
#[cfg(feature = "etcd")]
mod etcd;
mod huge_pages;
#[cfg(feature = "etcd")]
pub mod local_etcd;
mod mem;
mod paging;
mod prepare;
#[cfg(feature = "client")]
mod remote;
mod transition;

pub use durable::{DurableConfig, DurableStore};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdConfig, EtcdStore};
pub use huge_pages::disable_transparent_huge_pages;
pub use mem::{MemStore, StoreConfig};
pub use prepare::{prepare_create, prepare_update};
#[cfg(feature = "client")]
pub use remote::{RemoteAuth, RemoteError, RemoteStore};
