//! [`MemStore`]: the engine in memory, nothing persisted.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use kube_core::kind::Registry;
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::{
    ListOptions, ObjectList, Preconditions, SharedList, Store, StoreError, WatchOptions,
    WatchStream,
};

use crate::engine::{Change, Engine, EngineConfig, State, View, watch};

/// Settings shared by [`MemStore`] and [`DurableStore`](crate::DurableStore).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreConfig {
    /// How many changes are kept for watches and paged lists to resume from (default 100,000).
    pub history_limit: usize,
    /// How long changes are kept (default 5 minutes, as Kubernetes compacts etcd); `None` keeps
    /// them until `history_limit` is reached.
    pub history_max_age: Option<Duration>,
    /// How often a watch that asked for bookmarks gets one (default 1 s).
    pub bookmark_interval: Duration,
    /// The kinds the store accepts (default: the built-in kinds).
    pub registry: Registry,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            history_limit: 100_000,
            history_max_age: Some(Duration::from_secs(300)),
            bookmark_interval: Duration::from_secs(1),
            registry: Registry::builtin().clone(),
        }
    }
}

impl StoreConfig {
    /// Sets how many changes are kept.
    pub fn history(mut self, changes: usize) -> Self {
        self.history_limit = changes;
        self
    }

    /// Sets how long changes are kept (`None`: no age limit).
    pub fn history_max_age(mut self, age: Option<Duration>) -> Self {
        self.history_max_age = age;
        self
    }

    /// Sets the bookmark interval.
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// Sets the kinds the store accepts.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    pub(crate) fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            history_limit: self.history_limit.max(1),
            history_max_age: self.history_max_age,
            bookmark_interval: self.bookmark_interval,
            registry: self.registry.clone(),
        }
    }
}

/// An in-memory [`Store`]. Cheap to clone; clones share state.
///
/// MVCC: a global revision, a bounded history (by count and age, and [`Store::compact`] on
/// demand), watches from any retained revision, consistent paging. Writers never wait for
/// watchers: watches read the shared history at their own pace.
#[derive(Clone)]
pub struct MemStore {
    engine: Arc<Engine>,
}

impl fmt::Debug for MemStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.engine.read();
        f.debug_struct("MemStore")
            .field("revision", &s.revision)
            .field("history", &s.history.len())
            .finish()
    }
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// An empty store with default settings.
    pub fn new() -> Self {
        Self::with_config(StoreConfig::default())
    }

    /// An empty store with these settings.
    pub fn with_config(config: StoreConfig) -> Self {
        Self {
            engine: Arc::new(Engine::new(config.engine_config(), State::default())),
        }
    }

    fn write(
        &self,
        plan: impl FnOnce(&State, &Registry) -> Result<Change, StoreError>,
    ) -> Result<Arc<DynamicObject>, StoreError> {
        let change = {
            let mut state = self.engine.write();
            let change = plan(&state, &self.engine.config.registry)?;
            let change = state.apply(change);
            state.trim_history(&self.engine.config);
            change
        };
        // Built after the lock is released: a delete's result is a copy.
        Ok(result_of(&change))
    }
}

/// What a write returns: the new object, or for a delete the last state stamped with the
/// deletion's revision.
pub(crate) fn result_of(change: &Change) -> Arc<DynamicObject> {
    match (&change.after, &change.before) {
        (Some(after), _) => after.clone(),
        (None, Some(before)) => {
            let mut last = (**before).clone();
            last.metadata.resource_version = Some(change.revision.to_string());
            Arc::new(last)
        }
        (None, None) => Arc::default(),
    }
}

#[async_trait::async_trait]
impl Store for MemStore {
    async fn get(&self, kind: &GroupKind, key: &ObjectKey) -> Result<DynamicObject, StoreError> {
        self.engine.get(kind, key)
    }

    async fn get_shared(
        &self,
        kind: &GroupKind,
        key: &ObjectKey,
    ) -> Result<Arc<DynamicObject>, StoreError> {
        self.engine.get_shared(kind, key)
    }

    async fn list_shared(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<SharedList, StoreError> {
        self.engine.list_shared(kind, namespace, options)
    }

    async fn list(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ObjectList, StoreError> {
        self.engine.list(kind, namespace, options)
    }

    async fn create(&self, object: DynamicObject) -> Result<DynamicObject, StoreError> {
        self.create_shared(object).await.map(Arc::unwrap_or_clone)
    }

    async fn create_shared(&self, object: DynamicObject) -> Result<Arc<DynamicObject>, StoreError> {
        self.write(|state, registry| state.plan_create(object, registry))
    }

    async fn update(&self, object: DynamicObject) -> Result<DynamicObject, StoreError> {
        self.update_shared(object).await.map(Arc::unwrap_or_clone)
    }

    async fn update_shared(&self, object: DynamicObject) -> Result<Arc<DynamicObject>, StoreError> {
        self.write(|state, registry| state.plan_update(object, registry))
    }

    async fn delete(
        &self,
        kind: &GroupKind,
        key: &ObjectKey,
        preconditions: &Preconditions,
    ) -> Result<DynamicObject, StoreError> {
        self.write(|state, registry| state.plan_delete(kind, key, preconditions, registry))
            .map(Arc::unwrap_or_clone)
    }

    async fn watch(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &WatchOptions,
    ) -> Result<WatchStream, StoreError> {
        watch(&self.engine, kind, namespace, options)
    }

    async fn current_revision(&self) -> Result<u64, StoreError> {
        Ok(self.engine.read().revision)
    }

    async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        self.engine.write().compact(revision)
    }
}
