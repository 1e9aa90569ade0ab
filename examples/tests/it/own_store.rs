//! A Store written here, not taken from kube-store: a map, a revision counter, and a full
//! change log that watches replay from.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::{
    ListOptions, ObjectList, Preconditions, Store, StoreError, WatchEvent, WatchOptions,
    WatchStream,
};
use tokio::sync::mpsc;

type Log = Vec<(u64, GroupKind, Option<DynamicObject>, Option<DynamicObject>)>;

/// A watch: kind, namespace, filter, and where its events go.
type Watcher = (
    GroupKind,
    Option<String>,
    ListOptions,
    mpsc::UnboundedSender<Result<WatchEvent, StoreError>>,
);

#[derive(Default)]
struct State {
    revision: u64,
    objects: BTreeMap<(GroupKind, ObjectKey), DynamicObject>,
    log: Log,
    watchers: Vec<Watcher>,
}

/// The test's own store. Counts calls so the test can show it was used.
#[derive(Default)]
pub(crate) struct OwnStore {
    state: Mutex<State>,
    next_name: AtomicU64,
    pub(crate) calls: AtomicU64,
}

impl std::fmt::Debug for OwnStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnStore")
    }
}

fn event_for(
    ns: &Option<String>,
    filter: &ListOptions,
    revision: u64,
    before: &Option<DynamicObject>,
    after: &Option<DynamicObject>,
) -> Option<WatchEvent> {
    let selects = |o: &&DynamicObject| {
        ns.as_ref()
            .is_none_or(|n| o.metadata.namespace.as_ref() == Some(n))
            && filter.matches(o)
    };
    match (
        before.as_ref().filter(selects),
        after.as_ref().filter(selects),
    ) {
        (None, Some(a)) => Some(WatchEvent::Added(Arc::new(a.clone()))),
        (Some(_), Some(a)) => Some(WatchEvent::Modified(Arc::new(a.clone()))),
        (Some(b), None) => {
            let mut b = b.clone();
            b.metadata.resource_version = Some(revision.to_string());
            Some(WatchEvent::Deleted(Arc::new(b)))
        }
        (None, None) => None,
    }
}

impl OwnStore {
    fn write(
        &self,
        kind: GroupKind,
        key: ObjectKey,
        after: Option<DynamicObject>,
        check: impl FnOnce(Option<&DynamicObject>) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let mut s = self.state.lock().unwrap();
        let before = s.objects.get(&(kind.clone(), key.clone())).cloned();
        check(before.as_ref())?;
        s.revision += 1;
        let revision = s.revision;
        let mut after = after;
        if let Some(a) = after.as_mut() {
            a.metadata.resource_version = Some(revision.to_string());
            s.objects.insert((kind.clone(), key), a.clone());
        } else {
            s.objects.remove(&(kind.clone(), key));
        }
        s.watchers.retain(|(k, ns, filter, tx)| {
            *k != kind
                || event_for(ns, filter, revision, &before, &after)
                    .is_none_or(|e| tx.send(Ok(e)).is_ok())
        });
        s.log.push((revision, kind, before, after));
        Ok(revision)
    }
}

#[async_trait::async_trait]
impl Store for OwnStore {
    async fn get(&self, kind: &GroupKind, key: &ObjectKey) -> Result<DynamicObject, StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let s = self.state.lock().unwrap();
        s.objects
            .get(&(kind.clone(), key.clone()))
            .cloned()
            .ok_or_else(|| StoreError::NotFound {
                kind: kind.clone(),
                key: key.clone(),
            })
    }

    async fn list(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ObjectList, StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let s = self.state.lock().unwrap();
        let items = s
            .objects
            .iter()
            .filter(|((k, key), o)| {
                k == kind
                    && namespace.is_none_or(|n| key.namespace.as_deref() == Some(n))
                    && options.matches(o)
            })
            .map(|(_, o)| o.clone())
            .collect();
        Ok(ObjectList::new(items, s.revision))
    }

    async fn create(&self, mut object: DynamicObject) -> Result<DynamicObject, StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if object.metadata.name.as_deref().unwrap_or("").is_empty() {
            let prefix = object.metadata.generate_name.clone().unwrap_or_default();
            object.metadata.name = Some(format!(
                "{prefix}{}",
                self.next_name.fetch_add(1, Ordering::Relaxed)
            ));
        }
        object.metadata.uid = Some(format!(
            "uid-{}",
            self.next_name.fetch_add(1, Ordering::Relaxed)
        ));
        object.metadata.generation = Some(1);
        let (kind, key) = (object.group_kind(), object.key());
        let stored = object.clone();
        let revision = self.write(
            kind.clone(),
            key.clone(),
            Some(stored),
            |before| match before {
                Some(_) => Err(StoreError::AlreadyExists { kind, key }),
                None => Ok(()),
            },
        )?;
        object.metadata.resource_version = Some(revision.to_string());
        Ok(object)
    }

    async fn update(&self, mut object: DynamicObject) -> Result<DynamicObject, StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let (kind, key) = (object.group_kind(), object.key());
        let current = self.get(&kind, &key).await?;
        if object.metadata.resource_version.is_some()
            && object.metadata.resource_version != current.metadata.resource_version
        {
            return Err(StoreError::Conflict {
                kind,
                key,
                message: "stale".into(),
            });
        }
        object.metadata.uid = current.metadata.uid.clone();
        let expected = current.metadata.resource_version.clone();
        let revision = self.write(kind.clone(), key.clone(), Some(object.clone()), |before| {
            if before.and_then(|b| b.metadata.resource_version.clone()) == expected {
                Ok(())
            } else {
                Err(StoreError::Conflict {
                    kind,
                    key,
                    message: "raced".into(),
                })
            }
        })?;
        object.metadata.resource_version = Some(revision.to_string());
        Ok(object)
    }

    async fn delete(
        &self,
        kind: &GroupKind,
        key: &ObjectKey,
        pre: &Preconditions,
    ) -> Result<DynamicObject, StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        let revision = self.write(kind.clone(), key.clone(), None, |before| match before {
            None => Err(StoreError::NotFound {
                kind: kind.clone(),
                key: key.clone(),
            }),
            Some(b) if pre.uid.is_some() && b.metadata.uid != pre.uid => {
                Err(StoreError::Conflict {
                    kind: kind.clone(),
                    key: key.clone(),
                    message: "uid".into(),
                })
            }
            Some(b) => {
                last = Some(b.clone());
                Ok(())
            }
        })?;
        let mut last = last.unwrap();
        last.metadata.resource_version = Some(revision.to_string());
        Ok(last)
    }

    async fn watch(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &WatchOptions,
    ) -> Result<WatchStream, StoreError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut s = self.state.lock().unwrap();
        let from = options.resource_version.unwrap_or(s.revision);
        let (tx, rx) = mpsc::unbounded_channel();
        let ns = namespace.map(str::to_string);
        for (revision, k, before, after) in &s.log {
            if *revision > from
                && k == kind
                && let Some(e) = event_for(&ns, &options.filter, *revision, before, after)
            {
                let _ = tx.send(Ok(e));
            }
        }
        s.watchers
            .push((kind.clone(), ns, options.filter.clone(), tx));
        Ok(tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed())
    }

    async fn current_revision(&self) -> Result<u64, StoreError> {
        Ok(self.state.lock().unwrap().revision)
    }
}
