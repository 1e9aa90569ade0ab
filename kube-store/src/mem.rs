//! [`MemStore`]: an in-memory [`Store`] with a global revision, optimistic concurrency and
//! resumable watches.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use kube_core::kind::Registry;
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::{
    ListOptions, ObjectList, Preconditions, Store, StoreError, WatchEvent, WatchOptions,
    WatchStream,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::prepare::{prepare_create, prepare_update};

/// Settings for [`MemStore`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MemStoreConfig {
    /// How many changes are kept for watches to resume from; a watch from an older revision
    /// gets [`StoreError::TooOld`].
    pub history: usize,
    /// The kinds the store accepts.
    pub registry: Registry,
}

impl Default for MemStoreConfig {
    fn default() -> Self {
        Self {
            history: 100_000,
            registry: Registry::builtin().clone(),
        }
    }
}

impl MemStoreConfig {
    /// Sets how many changes are kept for watches to resume from.
    pub fn history(mut self, changes: usize) -> Self {
        self.history = changes;
        self
    }

    /// Sets the kinds the store accepts.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }
}

/// One committed write: the object before and after (`None` when absent).
struct Change {
    revision: u64,
    kind: GroupKind,
    before: Option<Arc<DynamicObject>>,
    after: Option<Arc<DynamicObject>>,
}

struct Watcher {
    kind: GroupKind,
    namespace: Option<String>,
    filter: ListOptions,
    tx: mpsc::UnboundedSender<Result<WatchEvent, StoreError>>,
}

impl Watcher {
    fn selects(&self, object: &DynamicObject) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| object.metadata.namespace.as_deref() == Some(ns))
            && self.filter.matches(object)
    }

    /// The event this watcher sees for a change: objects moving into the filter are `Added`,
    /// out of it `Deleted`.
    fn event_for(&self, change: &Change) -> Option<WatchEvent> {
        if change.kind != self.kind {
            return None;
        }
        let before = change.before.as_deref().filter(|o| self.selects(o));
        let after = change.after.as_deref().filter(|o| self.selects(o));
        match (before, after) {
            (None, Some(after)) => Some(WatchEvent::Added(after.clone())),
            (Some(_), Some(after)) => Some(WatchEvent::Modified(after.clone())),
            (Some(before), None) => {
                let mut last = before.clone();
                last.metadata.resource_version = Some(change.revision.to_string());
                Some(WatchEvent::Deleted(last))
            }
            (None, None) => None,
        }
    }
}

#[derive(Default)]
struct State {
    revision: u64,
    objects: HashMap<GroupKind, BTreeMap<ObjectKey, Arc<DynamicObject>>>,
    history: VecDeque<Change>,
    /// Highest revision whose change is no longer retained: watches must start at or after it.
    compacted: u64,
    watchers: Vec<Watcher>,
}

impl State {
    fn commit(&mut self, change: Change, history_limit: usize) {
        self.watchers.retain(|w| match w.event_for(&change) {
            Some(event) => w.tx.send(Ok(event)).is_ok(),
            None => !w.tx.is_closed(),
        });
        self.history.push_back(change);
        while self.history.len() > history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.revision;
            }
        }
    }
}

/// An in-memory [`Store`]. Cheap to clone; clones share state.
///
/// Writes are serialized under one lock and each gets the next revision. Watchers receive
/// events in revision order through unbounded channels, so writers never wait for readers.
#[derive(Clone)]
pub struct MemStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    config: MemStoreConfig,
}

impl fmt::Debug for MemStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state();
        f.debug_struct("MemStore")
            .field("revision", &s.revision)
            .field("kinds", &s.objects.len())
            .field("watchers", &s.watchers.len())
            .finish()
    }
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// An empty store accepting the built-in kinds.
    pub fn new() -> Self {
        Self::with_config(MemStoreConfig::default())
    }

    /// An empty store with these settings.
    pub fn with_config(config: MemStoreConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                config,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every mutation completes before the guard drops, so a poisoned lock still holds
        // consistent state.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn not_found(kind: &GroupKind, key: &ObjectKey) -> StoreError {
        StoreError::NotFound {
            kind: kind.clone(),
            key: key.clone(),
        }
    }

    fn check_kind(&self, kind: &GroupKind) -> Result<(), StoreError> {
        if self.inner.config.registry.get(kind).is_some() {
            Ok(())
        } else {
            Err(StoreError::Invalid(format!("unknown kind {kind}")))
        }
    }
}

#[async_trait::async_trait]
impl Store for MemStore {
    async fn get(&self, kind: &GroupKind, key: &ObjectKey) -> Result<DynamicObject, StoreError> {
        self.check_kind(kind)?;
        let state = self.state();
        state
            .objects
            .get(kind)
            .and_then(|m| m.get(key))
            .map(|o| (**o).clone())
            .ok_or_else(|| Self::not_found(kind, key))
    }

    async fn list(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ObjectList, StoreError> {
        self.check_kind(kind)?;
        let state = self.state();
        let items = match state.objects.get(kind) {
            None => Vec::new(),
            Some(objects) => match namespace {
                Some(ns) => {
                    let start = ObjectKey::namespaced(ns, "");
                    objects
                        .range(start..)
                        .take_while(|(k, _)| k.namespace.as_deref() == Some(ns))
                        .filter(|(_, o)| options.matches(o))
                        .map(|(_, o)| (**o).clone())
                        .collect()
                }
                None => objects
                    .values()
                    .filter(|o| options.matches(o))
                    .map(|o| (**o).clone())
                    .collect(),
            },
        };
        Ok(ObjectList {
            items,
            resource_version: state.revision,
        })
    }

    async fn create(&self, mut object: DynamicObject) -> Result<DynamicObject, StoreError> {
        let kind = object.group_kind();
        let mut state = self.state();
        let revision = state.revision + 1;
        {
            let existing = state.objects.get(&kind);
            let namespace = object.metadata.namespace.clone();
            prepare_create(&mut object, &self.inner.config.registry, revision, |name| {
                existing.is_some_and(|m| {
                    m.contains_key(&ObjectKey {
                        namespace: namespace.clone(),
                        name: name.to_string(),
                    })
                })
            })?;
        }
        let key = object.key();
        let objects = state.objects.entry(kind.clone()).or_default();
        if objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists { kind, key });
        }
        let object = Arc::new(object);
        objects.insert(key, object.clone());
        state.revision = revision;
        let change = Change {
            revision,
            kind,
            before: None,
            after: Some(object.clone()),
        };
        state.commit(change, self.inner.config.history);
        Ok((*object).clone())
    }

    async fn update(&self, mut object: DynamicObject) -> Result<DynamicObject, StoreError> {
        let kind = object.group_kind();
        self.check_kind(&kind)?;
        let key = object.key();
        let mut state = self.state();
        let revision = state.revision + 1;
        let current = state
            .objects
            .get(&kind)
            .and_then(|m| m.get(&key))
            .cloned()
            .ok_or_else(|| Self::not_found(&kind, &key))?;
        prepare_update(&mut object, &current, revision)?;
        let object = Arc::new(object);
        state
            .objects
            .entry(kind.clone())
            .or_default()
            .insert(key, object.clone());
        state.revision = revision;
        let change = Change {
            revision,
            kind,
            before: Some(current),
            after: Some(object.clone()),
        };
        state.commit(change, self.inner.config.history);
        Ok((*object).clone())
    }

    async fn delete(
        &self,
        kind: &GroupKind,
        key: &ObjectKey,
        preconditions: &Preconditions,
    ) -> Result<DynamicObject, StoreError> {
        self.check_kind(kind)?;
        let mut state = self.state();
        let current = state
            .objects
            .get(kind)
            .and_then(|m| m.get(key))
            .cloned()
            .ok_or_else(|| Self::not_found(kind, key))?;
        let conflict = |message: String| StoreError::Conflict {
            kind: kind.clone(),
            key: key.clone(),
            message,
        };
        if let Some(uid) = &preconditions.uid {
            if current.metadata.uid.as_ref() != Some(uid) {
                return Err(conflict(format!(
                    "precondition failed: uid {uid} does not match {}",
                    current.metadata.uid.as_deref().unwrap_or("")
                )));
            }
        }
        if let Some(rv) = &preconditions.resource_version {
            if current.metadata.resource_version.as_ref() != Some(rv) {
                return Err(conflict(format!(
                    "precondition failed: resourceVersion {rv} does not match {}",
                    current.metadata.resource_version.as_deref().unwrap_or("")
                )));
            }
        }
        let revision = state.revision + 1;
        if let Some(m) = state.objects.get_mut(kind) {
            m.remove(key);
        }
        state.revision = revision;
        let mut last = (*current).clone();
        last.metadata.resource_version = Some(revision.to_string());
        let change = Change {
            revision,
            kind: kind.clone(),
            before: Some(current),
            after: None,
        };
        state.commit(change, self.inner.config.history);
        Ok(last)
    }

    async fn watch(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &WatchOptions,
    ) -> Result<WatchStream, StoreError> {
        self.check_kind(kind)?;
        let mut state = self.state();
        let start = options.resource_version.unwrap_or(state.revision);
        if start < state.compacted {
            return Err(StoreError::TooOld {
                requested: start,
                oldest: state.compacted,
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = Watcher {
            kind: kind.clone(),
            namespace: namespace.map(str::to_string),
            filter: options.filter.clone(),
            tx,
        };
        // Replay retained history after `start`, then register, under one lock: no gap and no
        // duplicate between the two.
        let first = state.history.partition_point(|c| c.revision <= start);
        for change in state.history.range(first..) {
            if let Some(event) = watcher.event_for(change) {
                let _ = watcher.tx.send(Ok(event));
            }
        }
        state.watchers.push(watcher);
        Ok(UnboundedReceiverStream::new(rx).boxed())
    }

    async fn current_revision(&self) -> Result<u64, StoreError> {
        Ok(self.state().revision)
    }
}
