//! One conformance suite, run against every backend.

mod cases;
mod linearizability;

use std::sync::Arc;
use std::time::Duration;

use kube_core::store::Store;
use kube_store::{DurableConfig, DurableStore, MemStore, StoreConfig};

/// A store under test and whatever keeps it alive.
pub(crate) struct Fixture {
    pub(crate) store: Arc<dyn Store>,
    _guard: Box<dyn std::any::Any + Send>,
}

fn config() -> StoreConfig {
    StoreConfig::default().bookmark_interval(Duration::from_millis(200))
}

pub(crate) async fn memory() -> Fixture {
    Fixture {
        store: Arc::new(MemStore::with_config(config())),
        _guard: Box::new(()),
    }
}

pub(crate) async fn durable() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store =
        DurableStore::open_with(dir.path(), DurableConfig::default().store(config())).unwrap();
    Fixture {
        store: Arc::new(store),
        _guard: Box::new(dir),
    }
}

#[cfg(feature = "etcd")]
pub(crate) async fn etcd() -> Fixture {
    let cluster = kube_store::local_etcd::LocalEtcd::single().unwrap();
    let store = kube_store::EtcdStore::connect(kube_store::EtcdConfig::new(cluster.endpoints()))
        .await
        .unwrap();
    Fixture {
        store: Arc::new(store),
        _guard: Box::new(cluster),
    }
}

/// The API server over a memory store, reached through `RemoteStore`: the client and the
/// server together must behave as a store.
#[cfg(feature = "client")]
pub(crate) async fn remote() -> Fixture {
    let backend = Arc::new(MemStore::with_config(config()));
    // The cases write to namespaces they never create.
    let mut api = kube_apiserver::ApiServerConfig::default();
    api.namespace_lifecycle = false;
    let server = kube_apiserver::ApiServer::with_config(
        backend,
        kube_core::kind::Registry::builtin().clone(),
        api,
    );
    let running = server.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let store = kube_store::RemoteStore::new(&running.url()).unwrap();
    Fixture {
        store: Arc::new(store),
        _guard: Box::new(running),
    }
}

macro_rules! suite {
    ($backend:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let fixture = super::$backend().await;
                    super::cases::$case(fixture.store.clone()).await;
                }
            )*
        }
    };
}

macro_rules! all_cases {
    ($backend:ident) => {
        suite!($backend: crud, conflicts, watch_order_and_resume, compaction, selectors, paging,
            concurrent_writers, unconditional_races, linearizable, bookmarks);
    };
}

all_cases!(memory);
all_cases!(durable);
#[cfg(feature = "etcd")]
all_cases!(etcd);
// Compaction is not part of the Kubernetes API; everything else is.
#[cfg(feature = "client")]
suite!(remote: crud, conflicts, watch_order_and_resume, selectors, paging, concurrent_writers,
    unconditional_races, linearizable, bookmarks);
