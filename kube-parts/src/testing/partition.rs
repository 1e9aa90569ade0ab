//! [`Link`]: a node agent's connection to the store, which a test can cut and restore.
//!
//! Each node agent of a [`TestCluster`](super::TestCluster) reaches the store through a
//! [`LinkedStore`]. While its link is cut every call fails as an unreachable API server would,
//! and open watches end with an error: the agent's heartbeats and status writes stop, so the
//! control plane sees the node go silent, while the agent and its (simulated) containers keep
//! running. When the link is restored the agent's informer re-lists and the agent catches up.

use std::sync::Arc;

use futures::StreamExt;
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::{
    ListOptions, ObjectList, Preconditions, Store, StoreError, WatchOptions, WatchStream,
};
use tokio::sync::watch;

/// Whether a node can reach the store. Cheap to clone; clones share the state.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    cut: Arc<watch::Sender<bool>>,
}

impl Link {
    /// A link that is up.
    pub(crate) fn new() -> Self {
        Self {
            cut: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Cuts (`true`) or restores (`false`) the link.
    pub(crate) fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }

    /// Whether the link is cut now.
    pub(crate) fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.is_cut() {
            return Err(StoreError::Backend(
                "network partition (kube-parts testing): the node cannot reach the store".into(),
            ));
        }
        Ok(())
    }
}

/// A [`Store`] seen through a [`Link`]: calls fail while the link is cut.
#[derive(Debug)]
pub(crate) struct LinkedStore {
    inner: Arc<dyn Store>,
    link: Link,
}

impl LinkedStore {
    pub(crate) fn new(inner: Arc<dyn Store>, link: Link) -> Self {
        Self { inner, link }
    }
}

#[async_trait::async_trait]
impl Store for LinkedStore {
    async fn get(&self, kind: &GroupKind, key: &ObjectKey) -> Result<DynamicObject, StoreError> {
        self.link.check()?;
        self.inner.get(kind, key).await
    }

    async fn list(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ObjectList, StoreError> {
        self.link.check()?;
        self.inner.list(kind, namespace, options).await
    }

    async fn create(&self, object: DynamicObject) -> Result<DynamicObject, StoreError> {
        self.link.check()?;
        self.inner.create(object).await
    }

    async fn update(&self, object: DynamicObject) -> Result<DynamicObject, StoreError> {
        self.link.check()?;
        self.inner.update(object).await
    }

    async fn delete(
        &self,
        kind: &GroupKind,
        key: &ObjectKey,
        preconditions: &Preconditions,
    ) -> Result<DynamicObject, StoreError> {
        self.link.check()?;
        self.inner.delete(kind, key, preconditions).await
    }

    async fn watch(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &WatchOptions,
    ) -> Result<WatchStream, StoreError> {
        self.link.check()?;
        let stream = self.inner.watch(kind, namespace, options).await?;
        let mut cut = self.link.cut.subscribe();
        let link = self.link.clone();
        // The stream ends when the link is cut, with an error item as a broken connection
        // would give; the watcher then retries (and fails) until the link is restored.
        let until_cut = async move {
            let _ = cut.wait_for(|cut| *cut).await;
        };
        let tail = futures::stream::once(async move { link.check().err().map(Err) })
            .filter_map(futures::future::ready);
        Ok(stream.take_until(until_cut).chain(tail).boxed())
    }

    async fn current_revision(&self) -> Result<u64, StoreError> {
        self.link.check()?;
        self.inner.current_revision().await
    }

    async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        self.link.check()?;
        self.inner.compact(revision).await
    }
}
