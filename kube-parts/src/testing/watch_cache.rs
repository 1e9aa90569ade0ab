//! [`NodeWatchCache`]: the node agents' pod watches served from one watch of every pod.
//!
//! Each node agent watches the pods bound to it (`spec.nodeName=<node>`). Straight on the
//! store, each of those N watches reads every change in the store and evaluates its field
//! selector, so every write costs O(N) and a 1,000-node cluster spends its time scanning.
//! kube-apiserver indexes pod watchers by `spec.nodeName`; so does this cache: one watch of
//! every pod, each change routed to the watchers of its node (a pod moving off a node is a
//! `Deleted` there). Everything else goes straight to the store. Adapted from the watch cache
//! of kube-ctrl's controllers bench (`BENCH_WATCH_CACHE=1`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::{
    ListOptions, ObjectList, Preconditions, Store, StoreError, WatchEvent, WatchOptions,
    WatchStream,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The node agents' view of the store: pod watches by node from one shared watch.
#[derive(Debug)]
pub(crate) struct NodeWatchCache {
    inner: Arc<dyn Store>,
    hub: Arc<Mutex<Hub>>,
}

/// Routed events kept for watches that start a little in the past (after their list).
const RECENT: usize = 50_000;

type Sender = mpsc::UnboundedSender<Result<WatchEvent, StoreError>>;

#[derive(Debug, Default)]
struct Hub {
    /// The node of every pod bound to one.
    nodes: HashMap<ObjectKey, String>,
    /// Recently routed `(revision, node, event)`.
    recent: VecDeque<(u64, String, WatchEvent)>,
    /// Every routed event after this revision is in `recent`.
    complete_after: u64,
    /// Last routed revision.
    position: u64,
    /// Watchers per node, each with the revision it watches from.
    watchers: HashMap<String, Vec<(u64, Sender)>>,
}

fn node_of(o: &DynamicObject) -> Option<String> {
    let node = o.data.get("spec")?.get("nodeName")?.as_str()?;
    (!node.is_empty()).then(|| node.to_string())
}

/// The node of a `spec.nodeName=<node>` pod watch.
fn node_filter(kind: &GroupKind, namespace: Option<&str>, options: &ListOptions) -> Option<String> {
    if *kind != GroupKind::POD || namespace.is_some() || options.label_selector.is_some() {
        return None;
    }
    match options.field_selector.as_ref()?.requirements() {
        [r] if r.path == "spec.nodeName" && !r.negated && !r.value.is_empty() => {
            Some(r.value.clone())
        }
        _ => None,
    }
}

impl Hub {
    fn lock(hub: &Mutex<Hub>) -> std::sync::MutexGuard<'_, Hub> {
        hub.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts over from a list at `revision`: current watchers must re-list.
    fn reset(&mut self, list: &ObjectList) {
        self.nodes = list
            .items
            .iter()
            .filter_map(|o| Some((o.key(), node_of(o)?)))
            .collect();
        self.recent.clear();
        self.complete_after = list.resource_version;
        self.position = list.resource_version;
        for (_, watchers) in self.watchers.drain() {
            for (_, tx) in watchers {
                let _ = tx.send(Err(StoreError::TooOld {
                    requested: 0,
                    oldest: list.resource_version,
                }));
            }
        }
    }

    fn route(&mut self, event: WatchEvent) {
        let mut out: Vec<(String, WatchEvent)> = Vec::new();
        let rev = match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                let rev = o.revision().unwrap_or(self.position + 1);
                let key = o.key();
                let new = node_of(&o);
                let old = match &new {
                    Some(n) => self.nodes.insert(key, n.clone()),
                    None => self.nodes.remove(&key),
                };
                match (old, new) {
                    (Some(a), Some(b)) if a == b => out.push((b, WatchEvent::Modified(o))),
                    (old, new) => {
                        if let Some(a) = old {
                            let mut last = (*o).clone();
                            last.metadata.resource_version = Some(rev.to_string());
                            out.push((a, WatchEvent::Deleted(Arc::new(last))));
                        }
                        if let Some(b) = new {
                            out.push((b, WatchEvent::Added(o)));
                        }
                    }
                }
                rev
            }
            WatchEvent::Deleted(o) => {
                let rev = o.revision().unwrap_or(self.position + 1);
                if let Some(a) = self.nodes.remove(&o.key()) {
                    out.push((a, WatchEvent::Deleted(o)));
                }
                rev
            }
            WatchEvent::Bookmark { .. } => return,
        };
        self.position = rev;
        for (node, event) in out {
            if let Some(watchers) = self.watchers.get_mut(&node) {
                watchers.retain(|(from, tx)| rev <= *from || tx.send(Ok(event.clone())).is_ok());
            }
            self.recent.push_back((rev, node, event));
            if self.recent.len() > RECENT {
                if let Some((r, _, _)) = self.recent.pop_front() {
                    self.complete_after = r;
                }
            }
        }
    }

    fn register(&mut self, node: String, from: Option<u64>) -> Result<WatchStream, StoreError> {
        let from = from.unwrap_or(self.position);
        if from < self.complete_after {
            return Err(StoreError::TooOld {
                requested: from,
                oldest: self.complete_after,
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        for (rev, n, event) in &self.recent {
            if *rev > from && *n == node {
                let _ = tx.send(Ok(event.clone()));
            }
        }
        self.watchers.entry(node).or_default().push((from, tx));
        Ok(
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
                .boxed(),
        )
    }
}

impl NodeWatchCache {
    /// A cache over `inner`, following it from now on until `stop` is cancelled.
    pub(crate) async fn new(
        inner: Arc<dyn Store>,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, StoreError> {
        let hub = Arc::new(Mutex::new(Hub::default()));
        let list = inner
            .list(&GroupKind::POD, None, &ListOptions::default())
            .await?;
        Hub::lock(&hub).reset(&list);
        let following = follow(inner.clone(), hub.clone(), list.resource_version);
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = following => {}
            }
        });
        Ok(Arc::new(Self { inner, hub }))
    }
}

/// Routes every pod change; after falling behind the store's history, starts over.
async fn follow(inner: Arc<dyn Store>, hub: Arc<Mutex<Hub>>, mut from: u64) {
    loop {
        let options = WatchOptions::from_revision(from);
        if let Ok(mut stream) = inner.watch(&GroupKind::POD, None, &options).await {
            while let Some(Ok(event)) = stream.next().await {
                Hub::lock(&hub).route(event);
            }
        }
        match inner
            .list(&GroupKind::POD, None, &ListOptions::default())
            .await
        {
            Ok(list) => {
                Hub::lock(&hub).reset(&list);
                from = list.resource_version;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

#[async_trait::async_trait]
impl Store for NodeWatchCache {
    async fn get(&self, kind: &GroupKind, key: &ObjectKey) -> Result<DynamicObject, StoreError> {
        self.inner.get(kind, key).await
    }

    async fn list(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ObjectList, StoreError> {
        self.inner.list(kind, namespace, options).await
    }

    async fn create(&self, object: DynamicObject) -> Result<DynamicObject, StoreError> {
        self.inner.create(object).await
    }

    async fn update(&self, object: DynamicObject) -> Result<DynamicObject, StoreError> {
        self.inner.update(object).await
    }

    async fn delete(
        &self,
        kind: &GroupKind,
        key: &ObjectKey,
        preconditions: &Preconditions,
    ) -> Result<DynamicObject, StoreError> {
        self.inner.delete(kind, key, preconditions).await
    }

    async fn watch(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &WatchOptions,
    ) -> Result<WatchStream, StoreError> {
        match node_filter(kind, namespace, &options.filter) {
            Some(node) if !options.bookmarks => {
                Hub::lock(&self.hub).register(node, options.resource_version)
            }
            _ => self.inner.watch(kind, namespace, options).await,
        }
    }

    async fn current_revision(&self) -> Result<u64, StoreError> {
        self.inner.current_revision().await
    }

    async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
}
