//! The MVCC engine shared by [`MemStore`](crate::MemStore) and
//! [`DurableStore`](crate::DurableStore): current objects, a bounded history of changes, and
//! watch cursors that read the history.
//!
//! Writes are planned against the current state ([`State::plan_create`] and friends) and then
//! applied ([`State::apply`]); the durable store puts its log write between the two. Watchers do
//! not get copies of objects: each watch is a cursor (a revision) into the shared history. A
//! write hands the shared change to the watches it may concern ([`routes`]: by kind, namespace
//! and `spec.nodeName`) and wakes only those, which read it without the engine's lock (or from
//! the history, under it, while catching up). So a writer's cost grows with the watches a change
//! concerns, not with all watches, and never with their speed; memory is bounded by the history
//! (and a short queue per watch); and a watcher that falls behind the compacted history gets
//! [`StoreError::TooOld`].

mod objects;
mod routes;
mod watch;

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{self, AtomicU64};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use kube_core::kind::Registry;
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::{
    ListOptions, ObjectList, Preconditions, SharedList, StoreError, WatchOptions, WatchStream,
};

use crate::paging::Continue;
use crate::prepare::{prepare_create, prepare_update};
use crate::transition::Scope;

pub(crate) use objects::KindObjects;
use watch::watch_stream;

/// How much history the engine keeps, and how watches report progress.
#[derive(Clone, Debug)]
pub(crate) struct EngineConfig {
    pub(crate) history_limit: usize,
    pub(crate) history_max_age: Option<Duration>,
    pub(crate) bookmark_interval: Duration,
    pub(crate) registry: Registry,
}

/// What a write leaves for after the engine's lock is released: waking the watches its changes
/// were routed to (a wake may make a syscall to unpark a thread) and freeing the history it
/// compacted (thousands of small frees). Declared before the lock guard, so it drops after it.
#[derive(Debug, Default)]
pub(crate) struct AfterUnlock {
    wakes: Vec<Arc<routes::Slot>>,
    freed: Vec<Arc<Change>>,
}

impl Drop for AfterUnlock {
    fn drop(&mut self) {
        for slot in self.wakes.drain(..) {
            slot.notify.notify_one();
        }
    }
}

/// One committed write.
#[derive(Debug)]
pub(crate) struct Change {
    pub(crate) revision: u64,
    pub(crate) kind: GroupKind,
    pub(crate) key: ObjectKey,
    pub(crate) before: Option<Arc<DynamicObject>>,
    pub(crate) after: Option<Arc<DynamicObject>>,
    pub(crate) at: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) revision: u64,
    pub(crate) objects: HashMap<GroupKind, KindObjects>,
    pub(crate) history: VecDeque<Arc<Change>>,
    /// Highest revision no longer in `history`: watches and continue tokens must be at or
    /// after it.
    pub(crate) compacted: u64,
    /// The watches, for routing changes to them.
    pub(crate) routes: routes::Routes,
    /// The revision of the latest change routed to the watches it concerns, read by watches
    /// without the lock (see [`watch`]).
    pub(crate) routed: Arc<AtomicU64>,
}

pub(crate) fn not_found(kind: &GroupKind, key: &ObjectKey) -> StoreError {
    StoreError::NotFound {
        kind: kind.clone(),
        key: key.clone(),
    }
}

/// What planning a write needs to see: the latest revision and the current objects. The
/// durable store plans a batch against the state plus the batch's earlier changes.
pub(crate) trait View {
    /// The revision of the latest change.
    fn revision(&self) -> u64;
    /// The current object at `key`, if any.
    fn current(&self, kind: &GroupKind, key: &ObjectKey) -> Option<Arc<DynamicObject>>;

    /// Plans a create at the next revision.
    fn plan_create(
        &self,
        mut object: DynamicObject,
        registry: &Registry,
    ) -> Result<Change, StoreError> {
        let kind = object.group_kind();
        let revision = self.revision() + 1;
        let namespace = object.metadata.namespace.clone();
        prepare_create(&mut object, registry, revision, |name| {
            let key = ObjectKey {
                namespace: namespace.clone(),
                name: name.to_string(),
            };
            self.current(&kind, &key).is_some()
        })?;
        let key = object.key();
        if self.current(&kind, &key).is_some() {
            return Err(StoreError::AlreadyExists { kind, key });
        }
        Ok(Change {
            revision,
            kind,
            key,
            before: None,
            after: Some(Arc::new(object)),
            at: Instant::now(),
        })
    }

    /// Plans an update at the next revision.
    fn plan_update(
        &self,
        mut object: DynamicObject,
        registry: &Registry,
    ) -> Result<Change, StoreError> {
        let kind = object.group_kind();
        check_kind(registry, &kind)?;
        let key = object.key();
        let current = self
            .current(&kind, &key)
            .ok_or_else(|| not_found(&kind, &key))?;
        let revision = self.revision() + 1;
        prepare_update(&mut object, &current, revision)?;
        Ok(Change {
            revision,
            kind,
            key,
            before: Some(current),
            after: Some(Arc::new(object)),
            at: Instant::now(),
        })
    }

    /// Plans a delete at the next revision.
    fn plan_delete(
        &self,
        kind: &GroupKind,
        key: &ObjectKey,
        preconditions: &Preconditions,
        registry: &Registry,
    ) -> Result<Change, StoreError> {
        check_kind(registry, kind)?;
        let current = self
            .current(kind, key)
            .ok_or_else(|| not_found(kind, key))?;
        check_preconditions(&current, preconditions)?;
        Ok(Change {
            revision: self.revision() + 1,
            kind: kind.clone(),
            key: key.clone(),
            before: Some(current),
            after: None,
            at: Instant::now(),
        })
    }
}

impl View for State {
    fn revision(&self) -> u64 {
        self.revision
    }

    fn current(&self, kind: &GroupKind, key: &ObjectKey) -> Option<Arc<DynamicObject>> {
        self.objects.get(kind).and_then(|m| m.get(key)).cloned()
    }
}

impl State {
    /// The index in `history` of the first change after `revision`. Revisions in the history are
    /// consecutive (every write takes the next one; compaction drops from the front), so this is
    /// arithmetic, not a search.
    pub(crate) fn history_after(&self, revision: u64) -> usize {
        match self.history.front() {
            Some(front) if revision >= front.revision => {
                usize::try_from(revision + 1 - front.revision)
                    .map_or(self.history.len(), |i| i.min(self.history.len()))
            }
            _ => 0,
        }
    }

    /// Applies a planned change (which must be at `revision + 1`). The watches it concerns
    /// are woken when `after` drops, after the lock is released.
    pub(crate) fn apply(&mut self, change: Change, after: &mut AfterUnlock) -> Arc<Change> {
        let objects = self.objects.entry(change.kind.clone()).or_default();
        match &change.after {
            Some(after) => objects.insert(&change.key, after.clone()),
            None => objects.remove(&change.key),
        }
        self.revision = change.revision;
        let change = Arc::new(change);
        self.routes.route(&change, &mut after.wakes);
        // After routing: a watch that reads this revision finds every change up to it queued.
        self.routed
            .store(change.revision, atomic::Ordering::Release);
        self.history.push_back(change.clone());
        change
    }

    /// Drops history beyond the configured count and age (freed when `after` drops).
    pub(crate) fn trim_history(&mut self, config: &EngineConfig, after: &mut AfterUnlock) {
        let now = Instant::now();
        while let Some(front) = self.history.front() {
            let too_many = self.history.len() > config.history_limit;
            let too_old = config
                .history_max_age
                .is_some_and(|age| now.duration_since(front.at) > age);
            if !(too_many || too_old) {
                break;
            }
            self.compacted = front.revision;
            after.freed.extend(self.history.pop_front());
        }
    }

    /// Drops history up to and including `revision`.
    pub(crate) fn compact(&mut self, revision: u64) -> Result<(), StoreError> {
        if revision > self.revision {
            return Err(StoreError::Invalid(format!(
                "cannot compact to revision {revision}: the store is at {}",
                self.revision
            )));
        }
        while self.history.front().is_some_and(|c| c.revision <= revision) {
            self.history.pop_front();
        }
        self.compacted = self.compacted.max(revision);
        Ok(())
    }

    /// A page of objects as of the list's revision (the current one, or a continue token's).
    pub(crate) fn list(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<SharedList, StoreError> {
        let (revision, after) = match options.continue_token.as_deref() {
            Some(token) => {
                let c = Continue::decode(token)?;
                if c.revision < self.compacted {
                    return Err(StoreError::TooOld {
                        requested: c.revision,
                        oldest: self.compacted,
                    });
                }
                (c.revision, Some(c.after))
            }
            None => (self.revision, None),
        };
        // Objects changed after `revision` read as they were then: the `before` of their first
        // later change.
        let mut past: BTreeMap<&ObjectKey, Option<&Arc<DynamicObject>>> = BTreeMap::new();
        if revision < self.revision {
            let first = self.history_after(revision);
            for change in self.history.range(first..).filter(|c| c.kind == *kind) {
                past.entry(&change.key).or_insert(change.before.as_ref());
            }
        }
        let empty = KindObjects::default();
        let current = self.objects.get(kind).unwrap_or(&empty);
        let lower = match &after {
            Some(key) => Bound::Excluded(key.clone()),
            None => match namespace {
                Some(ns) => Bound::Included(ObjectKey::namespaced(ns, "")),
                None => Bound::Unbounded,
            },
        };
        let in_scope =
            |key: &ObjectKey| namespace.is_none_or(|ns| key.namespace.as_deref() == Some(ns));
        let mut now_iter = current.range(lower.clone()).peekable();
        let mut past_iter = past
            .iter()
            .filter(|(k, _)| match &lower {
                Bound::Excluded(l) => **k > l,
                Bound::Included(l) => **k >= l,
                Bound::Unbounded => true,
            })
            .peekable();
        let limit = options.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut last_key = None;
        let mut more = false;
        loop {
            // Merge the two sorted key streams; the past wins where both have a key.
            let order = match (now_iter.peek(), past_iter.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((now_key, _)), Some((past_key, _))) => (*now_key).cmp(**past_key),
            };
            let (key, object): (&ObjectKey, Option<&Arc<DynamicObject>>) = match order {
                Ordering::Less => match now_iter.next() {
                    Some((k, o)) => (k, Some(o)),
                    None => break,
                },
                Ordering::Equal | Ordering::Greater => {
                    if order == Ordering::Equal {
                        now_iter.next();
                    }
                    match past_iter.next() {
                        Some((k, o)) => (*k, *o),
                        None => break,
                    }
                }
            };
            if namespace.is_some() && key.namespace.as_deref() > namespace {
                // Keys are ordered by namespace: past ours, nothing more can match.
                break;
            }
            if !in_scope(key) {
                continue;
            }
            let Some(object) = object else { continue };
            if !options.matches(object) {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(object.clone());
            last_key = Some(key.clone());
        }
        Ok(ObjectList {
            items,
            resource_version: revision,
            continue_token: match (more, last_key) {
                (true, Some(after)) => Some(Continue { revision, after }.encode()),
                _ => None,
            },
        })
    }
}

pub(crate) fn check_kind(registry: &Registry, kind: &GroupKind) -> Result<(), StoreError> {
    if registry.get(kind).is_some() {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!("unknown kind {kind}")))
    }
}

pub(crate) fn check_preconditions(
    current: &DynamicObject,
    preconditions: &Preconditions,
) -> Result<(), StoreError> {
    let conflict = |message: String| StoreError::Conflict {
        kind: current.group_kind(),
        key: current.key(),
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
    Ok(())
}

/// The engine: state behind a lock.
#[derive(Debug)]
pub(crate) struct Engine {
    state: RwLock<State>,
    pub(crate) config: EngineConfig,
}

impl Engine {
    pub(crate) fn new(config: EngineConfig, state: State) -> Self {
        Self {
            state: RwLock::new(state),
            config,
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, State> {
        // Mutations complete (or are reverted) before the guard drops, so a poisoned lock still
        // guards consistent state.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get_shared(
        &self,
        kind: &GroupKind,
        key: &ObjectKey,
    ) -> Result<Arc<DynamicObject>, StoreError> {
        check_kind(&self.config.registry, kind)?;
        self.read()
            .current(kind, key)
            .ok_or_else(|| not_found(kind, key))
    }

    /// A copy of one object, made after the lock is released.
    pub(crate) fn get(
        &self,
        kind: &GroupKind,
        key: &ObjectKey,
    ) -> Result<DynamicObject, StoreError> {
        self.get_shared(kind, key).map(Arc::unwrap_or_clone)
    }

    pub(crate) fn list_shared(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<SharedList, StoreError> {
        check_kind(&self.config.registry, kind)?;
        self.read().list(kind, namespace, options)
    }

    /// Copies of the listed objects, made after the lock is released.
    pub(crate) fn list(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ObjectList, StoreError> {
        Ok(self
            .list_shared(kind, namespace, options)?
            .map(Arc::unwrap_or_clone))
    }
}

/// Starts a watch on `engine` (shared by every engine-backed store).
pub(crate) fn watch(
    engine: &Arc<Engine>,
    kind: &GroupKind,
    namespace: Option<&str>,
    options: &WatchOptions,
) -> Result<WatchStream, StoreError> {
    check_kind(&engine.config.registry, kind)?;
    let node_name = options
        .filter
        .field_selector
        .as_ref()
        .and_then(|s| s.required("spec.nodeName"))
        .map(str::to_string);
    // Registered under the write lock: every change after `registered_at` is routed to it.
    let (from, routing) = {
        let mut state = engine.write();
        let from = options.resource_version.unwrap_or(state.revision);
        if from < state.compacted {
            return Err(StoreError::TooOld {
                requested: from,
                oldest: state.compacted,
            });
        }
        let slot = Arc::new(routes::Slot::new(
            kind.clone(),
            namespace.map(str::to_string),
            node_name,
            state.revision,
            engine.config.history_limit,
        ));
        let id = state.routes.add(slot.clone());
        (from, (slot, id, state.routed.clone()))
    };
    let scope = Scope {
        namespace: namespace.map(str::to_string),
        filter: options.filter.clone(),
    };
    Ok(watch_stream(
        engine.clone(),
        kind.clone(),
        scope,
        from,
        options.bookmarks,
        routing,
    ))
}
