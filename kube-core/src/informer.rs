//! Informers: watch-backed caches of one kind, shared by several consumers.
//!
//! An [`Informer`] lists, then watches from the list's revision, keeping a cache and telling
//! subscribers what changed. When the store says the watch's revision is too old, it re-lists and
//! tells subscribers the difference, so no change is ever lost. [`InformerFactory`] hands every
//! component the same informer per kind, so a cluster keeps one cache per kind.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::object::{DynamicObject, GroupKind, ObjectKey};
use crate::store::{ListOptions, Store, StoreError, WatchEvent, WatchOptions};

/// A change seen by an informer's subscriber.
#[derive(Clone, Debug, PartialEq)]
pub enum InformerEvent {
    /// The object was added or changed; this is its new state.
    Applied(Arc<DynamicObject>),
    /// The object was deleted; this is its last state.
    Deleted(Arc<DynamicObject>),
}

impl InformerEvent {
    /// The object the event is about.
    pub fn object(&self) -> &Arc<DynamicObject> {
        match self {
            Self::Applied(o) | Self::Deleted(o) => o,
        }
    }
}

struct Inner {
    store: Arc<dyn Store>,
    kind: GroupKind,
    namespace: Option<String>,
    filter: ListOptions,
    cache: RwLock<BTreeMap<ObjectKey, Arc<DynamicObject>>>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<InformerEvent>>>,
    synced: watch::Sender<bool>,
    revision: AtomicU64,
    started: AtomicBool,
}

/// A watch-backed cache of one kind. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct Informer {
    inner: Arc<Inner>,
}

impl fmt::Debug for Informer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Informer")
            .field("kind", &self.inner.kind)
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

impl Informer {
    /// An informer of every object of `kind`. Call [`Informer::start`] to fill it.
    pub fn new(store: Arc<dyn Store>, kind: GroupKind) -> Self {
        Self::with_filter(store, kind, None, ListOptions::default())
    }

    /// An informer restricted to a namespace and/or label and field selectors (e.g. a node
    /// agent's `spec.nodeName=<node>`).
    pub fn with_filter(
        store: Arc<dyn Store>,
        kind: GroupKind,
        namespace: Option<String>,
        filter: ListOptions,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                kind,
                namespace,
                filter,
                cache: RwLock::new(BTreeMap::new()),
                subscribers: Mutex::new(Vec::new()),
                synced: watch::channel(false).0,
                revision: AtomicU64::new(0),
                started: AtomicBool::new(false),
            }),
        }
    }

    /// The kind this informer caches.
    pub fn kind(&self) -> &GroupKind {
        &self.inner.kind
    }

    /// Starts listing and watching in a background task (once; later calls do nothing). The
    /// task stops when `shutdown` is cancelled.
    pub fn start(&self, shutdown: CancellationToken) {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = inner.run() => {}
            }
        });
    }

    /// Waits until the first list has been loaded.
    pub async fn wait_until_synced(&self) {
        let mut rx = self.inner.synced.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we hold it.
        let _ = rx.wait_for(|synced| *synced).await;
    }

    /// Whether the first list has been loaded.
    pub fn is_synced(&self) -> bool {
        *self.inner.synced.borrow()
    }

    /// The store revision the cache reflects.
    pub fn revision(&self) -> u64 {
        self.inner.revision.load(Ordering::SeqCst)
    }

    /// One cached object.
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<DynamicObject>> {
        self.inner.read_cache().get(key).cloned()
    }

    /// Every cached object, ordered by key.
    pub fn list(&self) -> Vec<Arc<DynamicObject>> {
        self.inner.read_cache().values().cloned().collect()
    }

    /// Cached objects in one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<DynamicObject>> {
        self.inner
            .read_cache()
            .values()
            .filter(|o| o.metadata.namespace.as_deref() == Some(namespace))
            .cloned()
            .collect()
    }

    /// One cached object decoded as `K` (`None` if absent or not decodable).
    pub fn get_typed<K: DeserializeOwned>(&self, key: &ObjectKey) -> Option<K> {
        self.get(key)?.to_typed().ok()
    }

    /// Every cached object decoded as `K` (objects that do not decode are skipped).
    pub fn list_typed<K: DeserializeOwned>(&self) -> Vec<K> {
        self.list()
            .iter()
            .filter_map(|o| o.to_typed().ok())
            .collect()
    }

    /// Subscribes to changes. The receiver first gets `Applied` for every cached object, then
    /// every later change, in order.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<InformerEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subscribers = self.inner.subscribers();
        for object in self.inner.read_cache().values() {
            let _ = tx.send(InformerEvent::Applied(object.clone()));
        }
        subscribers.push(tx);
        rx
    }
}

impl Inner {
    fn read_cache(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<ObjectKey, Arc<DynamicObject>>> {
        self.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    fn subscribers(&self) -> MutexGuard<'_, Vec<mpsc::UnboundedSender<InformerEvent>>> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies changes to the cache and tells subscribers, under the subscriber lock so a new
    /// subscriber sees either the state before or after, never half.
    fn publish(&self, events: Vec<InformerEvent>) {
        let mut subscribers = self.subscribers();
        {
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            for event in &events {
                match event {
                    InformerEvent::Applied(o) => {
                        cache.insert(o.key(), o.clone());
                    }
                    InformerEvent::Deleted(o) => {
                        cache.remove(&o.key());
                    }
                }
            }
        }
        subscribers.retain(|tx| events.iter().all(|e| tx.send(e.clone()).is_ok()));
    }

    async fn list(&self) -> Result<u64, StoreError> {
        let list = self
            .store
            .list(&self.kind, self.namespace.as_deref(), &self.filter)
            .await?;
        let fresh: BTreeMap<ObjectKey, Arc<DynamicObject>> = list
            .items
            .into_iter()
            .map(|o| (o.key(), Arc::new(o)))
            .collect();
        let mut events = Vec::new();
        {
            let cache = self.read_cache();
            for (key, old) in cache.iter() {
                if !fresh.contains_key(key) {
                    events.push(InformerEvent::Deleted(old.clone()));
                }
            }
            for (key, new) in &fresh {
                let changed = cache.get(key).is_none_or(|old| {
                    old.metadata.resource_version != new.metadata.resource_version
                });
                if changed {
                    events.push(InformerEvent::Applied(new.clone()));
                }
            }
        }
        self.publish(events);
        self.revision.store(list.resource_version, Ordering::SeqCst);
        self.synced.send_replace(true);
        Ok(list.resource_version)
    }

    async fn run(self: Arc<Self>) {
        const RETRY: Duration = Duration::from_millis(200);
        let mut needs_list = true;
        loop {
            if needs_list {
                if let Err(e) = self.list().await {
                    tracing::warn!(kind = %self.kind, error = %e, "informer list failed; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
                needs_list = false;
            }
            let options = WatchOptions::from_revision(self.revision.load(Ordering::SeqCst))
                .filter(self.filter.clone());
            let mut stream = match self
                .store
                .watch(&self.kind, self.namespace.as_deref(), &options)
                .await
            {
                Ok(s) => s,
                Err(StoreError::TooOld { .. }) => {
                    needs_list = true;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(kind = %self.kind, error = %e, "informer watch failed; retrying");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            while let Some(item) = stream.next().await {
                let event = match item {
                    Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => {
                        Some((o.revision(), InformerEvent::Applied(o)))
                    }
                    Ok(WatchEvent::Deleted(o)) => Some((o.revision(), InformerEvent::Deleted(o))),
                    Ok(WatchEvent::Bookmark { resource_version }) => {
                        self.revision.store(resource_version, Ordering::SeqCst);
                        None
                    }
                    Err(StoreError::TooOld { .. }) => {
                        needs_list = true;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(kind = %self.kind, error = %e, "informer watch ended; resuming");
                        break;
                    }
                };
                if let Some((revision, event)) = event {
                    self.publish(vec![event]);
                    if let Some(r) = revision {
                        self.revision.store(r, Ordering::SeqCst);
                    }
                }
            }
        }
    }
}

/// Hands out one shared, started [`Informer`] per kind.
#[derive(Clone)]
pub struct InformerFactory {
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
    informers: Arc<Mutex<HashMap<GroupKind, Informer>>>,
}

impl fmt::Debug for InformerFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InformerFactory").finish_non_exhaustive()
    }
}

impl InformerFactory {
    /// A factory whose informers stop when `shutdown` is cancelled.
    pub fn new(store: Arc<dyn Store>, shutdown: CancellationToken) -> Self {
        Self {
            store,
            shutdown,
            informers: Arc::default(),
        }
    }

    /// The shared informer for `kind`, started on first use.
    pub fn informer(&self, kind: &GroupKind) -> Informer {
        let mut map = self.informers.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(kind.clone())
            .or_insert_with(|| {
                let informer = Informer::new(self.store.clone(), kind.clone());
                informer.start(self.shutdown.clone());
                informer
            })
            .clone()
    }

    /// The store the informers read.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}
