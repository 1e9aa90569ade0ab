//! Cluster state for orchestrators built from kube-parts: implementations of
//! [`kube_core::store::Store`].
//!
//! - [`MemStore`]: in memory, with a global revision, optimistic concurrency, label and field
//!   selectors, and watches that resume from any retained revision without gaps.
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

mod mem;
mod prepare;

pub use mem::{MemStore, MemStoreConfig};
pub use prepare::{prepare_create, prepare_update};
