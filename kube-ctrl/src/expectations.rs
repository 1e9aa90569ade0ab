//! Controller expectations: what a controller has written but its cache has not shown yet.
//!
//! A controller that counts pods from a shared cache must not act on a count its own recent
//! writes have made stale, or it creates (or deletes) twice. As in Kubernetes' controller
//! expectations, it records the pods it created and deleted, and acts again for that owner only
//! once the cache shows them all (or the record expires, in case a watch event was lost).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use kube_core::object::ObjectKey;
use tokio::time::Instant;

use crate::index::IndexView;

/// After this long, pending expectations are given up on (Kubernetes uses 5 minutes).
const TTL: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Pending {
    /// Keys of created objects the cache must show.
    created: HashSet<ObjectKey>,
    /// UIDs (by key) of deleted objects the cache must stop showing.
    deleted: HashMap<ObjectKey, String>,
    since: Instant,
}

/// Per-owner expectations of creations and deletions of dependents.
#[derive(Debug, Default)]
pub(crate) struct Expectations {
    pending: Mutex<HashMap<ObjectKey, Pending>>,
}

impl Expectations {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<ObjectKey, Pending>) -> T) -> T {
        f(&mut self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn entry<'a>(map: &'a mut HashMap<ObjectKey, Pending>, owner: &ObjectKey) -> &'a mut Pending {
        map.entry(owner.clone()).or_insert_with(|| Pending {
            created: HashSet::new(),
            deleted: HashMap::new(),
            since: Instant::now(),
        })
    }

    /// Records that `owner`'s controller created `object`.
    pub(crate) fn created(&self, owner: &ObjectKey, object: ObjectKey) {
        self.with(|m| {
            Self::entry(m, owner).created.insert(object);
        });
    }

    /// Records that `owner`'s controller deleted `object` (with this UID).
    pub(crate) fn deleted(&self, owner: &ObjectKey, object: ObjectKey, uid: String) {
        self.with(|m| {
            Self::entry(m, owner).deleted.insert(object, uid);
        });
    }

    /// Whether `index` shows every write recorded for `owner` (clearing what it shows): the
    /// created objects indexed, the deleted ones gone from its cache.
    pub(crate) fn satisfied(&self, owner: &ObjectKey, index: &IndexView) -> bool {
        self.with(|m| {
            let Some(p) = m.get_mut(owner) else {
                return true;
            };
            p.created.retain(|k| !index.contains(k));
            p.deleted.retain(|k, uid| {
                index
                    .cache()
                    .get(k)
                    .is_some_and(|o| o.metadata.uid.as_deref() == Some(uid.as_str()))
            });
            let done = (p.created.is_empty() && p.deleted.is_empty()) || p.since.elapsed() > TTL;
            if done {
                m.remove(owner);
            }
            done
        })
    }

    /// Forgets `owner` (deleted).
    pub(crate) fn forget(&self, owner: &ObjectKey) {
        self.with(|m| {
            m.remove(owner);
        });
    }
}
