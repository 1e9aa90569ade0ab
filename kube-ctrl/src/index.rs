//! Owner indexes over a shared informer: which cached objects of one kind name a given owner.
//!
//! A controller that finds its dependents by scanning the whole cache (every pod of a
//! namespace, filtered by selector) does work proportional to the cluster per reconcile, so a
//! cluster of N owners costs O(N²). As client-go's indexers do, [`OwnerIndex`] keeps, per
//! owner UID, the keys of the objects whose owner references name it, and per namespace the
//! keys of objects with no controller (candidates for adoption), fed by a subscription to the
//! shared informer.
//!
//! The index holds keys only and reads objects through to the informer's cache, so what a
//! reconcile sees is never older than the event that triggered it. Membership can lag the
//! cache by the subscription's delivery; controllers that must count their own fresh writes use
//! [`IndexView::contains`] for their expectations.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use kube_core::informer::{Informer, InformerEvent, InformerFactory};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::Store;

/// Index entries of one object.
#[derive(Debug, Default)]
struct State {
    /// Object → the owner UIDs it is listed under.
    owners: HashMap<ObjectKey, Vec<String>>,
    /// Owner UID → objects whose owner references name it.
    by_owner: HashMap<String, HashSet<ObjectKey>>,
    /// Namespace → objects without a controller owner reference.
    uncontrolled: HashMap<Option<String>, HashSet<ObjectKey>>,
}

impl State {
    fn remove(&mut self, key: &ObjectKey) {
        if let Some(uids) = self.owners.remove(key) {
            for uid in uids {
                if let Some(set) = self.by_owner.get_mut(&uid) {
                    set.remove(key);
                    if set.is_empty() {
                        self.by_owner.remove(&uid);
                    }
                }
            }
        }
        if let Some(set) = self.uncontrolled.get_mut(&key.namespace) {
            set.remove(key);
            if set.is_empty() {
                self.uncontrolled.remove(&key.namespace);
            }
        }
    }

    fn apply(&mut self, event: &InformerEvent) {
        let object = event.object();
        let key = object.key();
        self.remove(&key);
        if matches!(event, InformerEvent::Deleted(_)) {
            return;
        }
        let uids: Vec<String> = object
            .metadata
            .owner_references
            .iter()
            .flatten()
            .map(|r| r.uid.clone())
            .collect();
        for uid in &uids {
            self.by_owner
                .entry(uid.clone())
                .or_default()
                .insert(key.clone());
        }
        if !uids.is_empty() {
            self.owners.insert(key.clone(), uids);
        }
        if object.controller_ref().is_none() {
            self.uncontrolled
                .entry(key.namespace.clone())
                .or_default()
                .insert(key);
        }
    }
}

#[derive(Debug)]
struct Shared {
    /// The store the indexed informer reads (identifies the orchestrator).
    store: Arc<dyn Store>,
    /// False once the informer is gone (its orchestrator stopped).
    alive: AtomicBool,
    state: RwLock<State>,
}

impl Shared {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// An index of one kind's objects by owner UID, built on first use from the shared informer
/// of that kind and kept up to date by a task fed by the informer.
#[derive(Debug)]
pub(crate) struct OwnerIndex {
    kind: GroupKind,
    slot: Mutex<Option<Arc<Shared>>>,
}

fn same_store(a: &Arc<dyn Store>, b: &Arc<dyn Store>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

impl OwnerIndex {
    /// An index of objects of `kind`.
    pub(crate) fn new(kind: GroupKind) -> Self {
        Self {
            kind,
            slot: Mutex::new(None),
        }
    }

    /// The index over `informers`' cache of the kind (built on first use; must be called
    /// within a Tokio runtime).
    pub(crate) fn view(&self, informers: &InformerFactory) -> IndexView {
        let cache = informers.informer(&self.kind);
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        let current = slot
            .as_ref()
            .filter(|s| s.alive.load(Ordering::SeqCst) && same_store(&s.store, informers.store()));
        let shared = match current {
            Some(s) => s.clone(),
            None => {
                let shared = Arc::new(Shared {
                    store: informers.store().clone(),
                    alive: AtomicBool::new(true),
                    state: RwLock::default(),
                });
                // `subscribe` queues every cached object first: index those now, so the first
                // reader sees the whole cache, then follow changes in the background.
                let mut events = cache.subscribe();
                {
                    let mut state = shared.write();
                    while let Ok(event) = events.try_recv() {
                        state.apply(&event);
                    }
                }
                let task = shared.clone();
                tokio::spawn(async move {
                    while let Some(event) = events.recv().await {
                        let mut state = task.write();
                        state.apply(&event);
                        while let Ok(event) = events.try_recv() {
                            state.apply(&event);
                        }
                    }
                    task.alive.store(false, Ordering::SeqCst);
                });
                *slot = Some(shared.clone());
                shared
            }
        };
        IndexView { shared, cache }
    }
}

/// A handle to read an [`OwnerIndex`] together with the informer cache it indexes.
#[derive(Debug, Clone)]
pub(crate) struct IndexView {
    shared: Arc<Shared>,
    cache: Informer,
}

impl IndexView {
    /// The cache the index reads objects from.
    pub(crate) fn cache(&self) -> &Informer {
        &self.cache
    }

    /// Whether the index lists the object at `key`.
    pub(crate) fn contains(&self, key: &ObjectKey) -> bool {
        let state = self.shared.read();
        state.owners.contains_key(key)
            || state
                .uncontrolled
                .get(&key.namespace)
                .is_some_and(|s| s.contains(key))
    }

    /// Cached objects with an owner reference to `uid` (current state from the cache).
    pub(crate) fn owned_by(&self, uid: &str) -> Vec<Arc<DynamicObject>> {
        let keys: Vec<ObjectKey> = self
            .shared
            .read()
            .by_owner
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        keys.iter()
            .filter_map(|k| self.cache.get(k))
            .filter(|o| {
                o.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == uid)
            })
            .collect()
    }

    /// Cached objects whose controller owner reference is to `uid`.
    pub(crate) fn controlled_by(&self, uid: &str) -> Vec<Arc<DynamicObject>> {
        let mut objects = self.owned_by(uid);
        objects.retain(|o| o.controller_ref().is_some_and(|r| r.uid == uid));
        objects
    }

    /// Cached objects in `namespace` without a controller owner reference.
    pub(crate) fn uncontrolled(&self, namespace: Option<&str>) -> Vec<Arc<DynamicObject>> {
        let keys: Vec<ObjectKey> = self
            .shared
            .read()
            .uncontrolled
            .get(&namespace.map(str::to_string))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        keys.iter()
            .filter_map(|k| self.cache.get(k))
            .filter(|o| o.controller_ref().is_none())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, owners: &[(&str, bool)]) -> Arc<DynamicObject> {
        let refs: Vec<serde_json::Value> = owners
            .iter()
            .map(|(uid, controller)| {
                serde_json::json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                    "uid": uid, "controller": controller})
            })
            .collect();
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "default", "ownerReferences": refs}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn follows_owner_changes_and_deletions() {
        let mut state = State::default();
        let key = ObjectKey::namespaced("default", "p");
        state.apply(&InformerEvent::Applied(pod("p", &[])));
        assert!(state.uncontrolled[&Some("default".into())].contains(&key));
        // Adopted: leaves the uncontrolled set, indexed under its owner.
        state.apply(&InformerEvent::Applied(pod(
            "p",
            &[("a", true), ("b", false)],
        )));
        assert!(!state.uncontrolled.contains_key(&Some("default".into())));
        assert!(state.by_owner["a"].contains(&key) && state.by_owner["b"].contains(&key));
        // Released from `a`.
        state.apply(&InformerEvent::Applied(pod("p", &[("b", false)])));
        assert!(!state.by_owner.contains_key("a"));
        assert!(state.uncontrolled[&Some("default".into())].contains(&key));
        state.apply(&InformerEvent::Deleted(pod("p", &[("b", false)])));
        assert!(state.by_owner.is_empty() && state.owners.is_empty());
        assert!(state.uncontrolled.is_empty());
    }
}
