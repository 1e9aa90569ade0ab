//! [`MemStore`]: the engine in memory, nothing persisted.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_core::kind::Registry;
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::{
    ListOptions, ObjectList, Preconditions, SharedList, Store, StoreError, WatchOptions,
    WatchStream,
};

use crate::engine::{
    AfterUnlock, Change, Engine, EngineConfig, State, View, check_kind, not_found, watch,
};
use crate::prepare::{prepare_create, prepare_update};

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

/// A write prepared against an object that was replaced before it committed: the write, given
/// back to be prepared again.
struct Stale {
    object: DynamicObject,
    kind: GroupKind,
    key: ObjectKey,
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
            let mut after = AfterUnlock::default();
            let mut state = self.engine.write();
            let change = plan(&state, &self.engine.config.registry)?;
            let change = state.apply(change, &mut after);
            state.trim_history(&self.engine.config, &mut after);
            change
        };
        // Built after the lock is released: a delete's result is a copy.
        Ok(result_of(&change))
    }

    /// Commits `object` (prepared against `before`, all but its resourceVersion) at the next
    /// revision if `before` is still the current object; gives the object back otherwise.
    fn commit(
        &self,
        kind: GroupKind,
        key: ObjectKey,
        before: Option<Arc<DynamicObject>>,
        object: DynamicObject,
    ) -> Result<Arc<DynamicObject>, Box<Stale>> {
        // Allocated before the lock is taken; stamped under it (the Arc is not shared yet).
        let mut prepared = Arc::new(object);
        let mut after = AfterUnlock::default();
        let mut state = self.engine.write();
        let current = state.current(&kind, &key);
        let unchanged = match (&current, &before) {
            (Some(current), Some(before)) => Arc::ptr_eq(current, before),
            (None, None) => true,
            _ => false,
        };
        if !unchanged {
            drop(state);
            return Err(Box::new(Stale {
                object: Arc::unwrap_or_clone(prepared),
                kind,
                key,
            }));
        }
        let revision = state.revision + 1;
        if let Some(object) = Arc::get_mut(&mut prepared) {
            object.metadata.resource_version = Some(revision.to_string());
        }
        let change = state.apply(
            Change {
                revision,
                kind,
                key,
                before,
                after: Some(prepared.clone()),
                at: Instant::now(),
            },
            &mut after,
        );
        state.trim_history(&self.engine.config, &mut after);
        drop(state);
        drop(change);
        Ok(prepared)
    }

    /// A create, prepared (name, uid, timestamps, validation) without holding the lock, so
    /// writers serialize only on the commit itself.
    fn create_optimistic(
        &self,
        mut object: DynamicObject,
    ) -> Result<Arc<DynamicObject>, StoreError> {
        let generated = object.metadata.name.as_deref().is_none_or(str::is_empty);
        loop {
            let kind = object.group_kind();
            let namespace = object.metadata.namespace.clone();
            prepare_create(&mut object, &self.engine.config.registry, 0, |name| {
                let key = ObjectKey {
                    namespace: namespace.clone(),
                    name: name.to_string(),
                };
                self.engine.read().current(&kind, &key).is_some()
            })?;
            let key = object.key();
            match self.commit(kind, key, None, object) {
                Ok(created) => return Ok(created),
                // The generated name was taken meanwhile: generate another.
                Err(stale) if generated => {
                    object = stale.object;
                    object.metadata.name = None;
                    object.metadata.resource_version = None;
                }
                Err(stale) => {
                    let Stale { kind, key, .. } = *stale;
                    return Err(StoreError::AlreadyExists { kind, key });
                }
            }
        }
    }

    /// An update, prepared against the current object (store-owned metadata carried over,
    /// specs compared for `generation`) without holding the lock, and committed if that
    /// object is still current; tried again against the newer one otherwise.
    fn update_optimistic(
        &self,
        mut object: DynamicObject,
    ) -> Result<Arc<DynamicObject>, StoreError> {
        let mut kind = object.group_kind();
        check_kind(&self.engine.config.registry, &kind)?;
        let mut key = object.key();
        // What the caller asked for, checked against each object tried.
        let requested_version = object
            .metadata
            .resource_version
            .take()
            .filter(|rv| !rv.is_empty());
        let requested_uid = object.metadata.uid.clone();
        let requested_deletion = object.metadata.deletion_timestamp.clone();
        loop {
            let current = self
                .engine
                .read()
                .current(&kind, &key)
                .ok_or_else(|| not_found(&kind, &key))?;
            // `clone_from` reuses the strings the object holds (the same ones, the first time).
            let meta = &mut object.metadata;
            meta.resource_version.clone_from(&requested_version);
            meta.uid.clone_from(&requested_uid);
            meta.deletion_timestamp.clone_from(&requested_deletion);
            prepare_update(&mut object, &current, 0)?;
            match self.commit(kind, key, Some(current), object) {
                Ok(updated) => return Ok(updated),
                Err(stale) => (object, kind, key) = (stale.object, stale.kind, stale.key),
            }
        }
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
        self.create_optimistic(object)
    }

    async fn update(&self, object: DynamicObject) -> Result<DynamicObject, StoreError> {
        self.update_shared(object).await.map(Arc::unwrap_or_clone)
    }

    async fn update_shared(&self, object: DynamicObject) -> Result<Arc<DynamicObject>, StoreError> {
        self.update_optimistic(object)
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
