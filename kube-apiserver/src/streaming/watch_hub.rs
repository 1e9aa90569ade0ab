//! Plain watches of one scope share their work.
//!
//! A plain watch is the JSON watch of a kind (in one namespace or all) with no label or field
//! selector, with or without bookmarks: what informers of a whole kind ask for, and what the
//! apiserver bench's 64 watchers ask for. Watches of the same scope share a [`Hub`]: one store watch, whose
//! events one task encodes and joins into chunks kept in a short log; each watch sends the
//! chunks after its revision as they are, the same bytes for all (kube-apiserver's watch cache
//! has the same shape: one watch of etcd per resource, dispatched to its watchers). Without it,
//! each of 64 watchers read, filtered, looked up and copied every event itself, a fifth of the
//! server's CPU under that bench.
//!
//! A watch that would start before what the log holds takes its own store watch instead (see
//! [`watch`](crate::streaming::watch)); one that falls so far behind that the log drops what it has not
//! sent is ended, as kube-apiserver ends a watcher that does not keep up, and its client
//! watches again from the last revision it saw.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt, stream};
use kube_core::object::GroupKind;
use kube_core::store::{WatchEvent, WatchStream};
use tokio::sync::Notify;

use crate::encoding::status::ApiError;

/// What a hub serves: a kind, in one namespace or (`None`) all.
pub(crate) type Scope = (GroupKind, Option<String>);

/// The events a hub's task takes (see [`hub_events`]).
pub(crate) type HubEvents = stream::BoxStream<'static, HubEvent>;

/// The hubs, by scope.
#[derive(Debug, Default)]
pub(crate) struct Hubs {
    by_scope: Mutex<HashMap<Scope, Weak<Hub>>>,
}

/// One scope's shared store watch and log. Dropped (and its task stopped) with its last watch.
#[derive(Debug)]
pub(crate) struct Hub {
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug, Default)]
struct Shared {
    log: Mutex<Log>,
    /// Woken when a chunk is added or the store watch ends.
    appended: Notify,
}

/// The chunks of the latest events.
#[derive(Debug, Default)]
struct Log {
    /// Every change after this revision (of the hub's scope) is in `chunks`.
    start: u64,
    chunks: VecDeque<Chunk>,
    /// Events in `chunks`, and their bytes.
    events: usize,
    bytes: usize,
    /// The store watch ended: with this `ERROR` event line if it failed.
    ended: Option<Option<Bytes>>,
}

/// Event lines encoded and joined once for every watch of the hub.
#[derive(Debug)]
struct Chunk {
    bytes: Bytes,
    /// Each event's revision and where its line ends in `bytes`.
    ends: Vec<(u64, usize)>,
    /// One bookmark line, not events.
    bookmark: bool,
}

impl Chunk {
    fn last(&self) -> u64 {
        self.ends.last().map_or(0, |(revision, _)| *revision)
    }

    /// The lines of the events after `revision`.
    fn after(&self, revision: u64) -> Bytes {
        let first = self.ends.partition_point(|(r, _)| *r <= revision);
        let start = if first == 0 {
            0
        } else {
            self.ends[first - 1].1
        };
        self.bytes.slice(start..)
    }
}

/// Events the log keeps (and at most this many bytes of them); a watch further behind is ended.
const RETAINED_EVENTS: usize = 8192;
const RETAINED_BYTES: usize = 64 << 20;

/// One encoded event as the hub's task is given it: its revision and line (`None` for an event
/// that has none, such as a bookmark), or the watch's end with an `ERROR` line.
pub(crate) enum HubEvent {
    /// An event at a revision, as its line.
    Line(u64, Bytes),
    /// A bookmark at a revision, as its line: sent to the watches that asked for bookmarks.
    Bookmark(u64, Bytes),
    /// The store watch failed; its `ERROR` event line.
    Failed(Bytes),
}

impl Hubs {
    /// The hub of `scope`, if one is running and holds every change after `from`; or a new one
    /// over the store watch `start` makes (called only when no hub can serve).
    pub(crate) async fn join<F, Fut>(
        &self,
        scope: Scope,
        from: u64,
        start: F,
    ) -> Result<Option<Arc<Hub>>, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<HubEvents>, ApiError>>,
    {
        if let Some(hub) = self.running(&scope) {
            let log = hub.shared.lock();
            if log.ended.is_none() {
                let serves = from >= log.start;
                drop(log);
                // Older than what the hub's log holds: a watch of its own.
                return Ok(serves.then_some(hub));
            }
            // The hub's store watch ended: a new hub replaces it.
        }
        let Some(events) = start().await? else {
            return Ok(None);
        };
        let shared = Arc::new(Shared::default());
        shared.lock().start = from;
        let task = tokio::spawn(run(events, shared.clone())).abort_handle();
        let hub = Arc::new(Hub { shared, task });
        let mut hubs = self.by_scope.lock().unwrap_or_else(|p| p.into_inner());
        // Two first watches may both start one; the later replaces the earlier in the map, and
        // each keeps serving the watches it has.
        hubs.retain(|_, hub| hub.strong_count() > 0);
        hubs.insert(scope, Arc::downgrade(&hub));
        Ok(Some(hub))
    }

    fn running(&self, scope: &Scope) -> Option<Arc<Hub>> {
        let hubs = self.by_scope.lock().unwrap_or_else(|p| p.into_inner());
        hubs.get(scope).and_then(Weak::upgrade)
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        // Every change to the log is complete before the guard drops.
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Most events joined into one chunk.
const EVENTS_PER_CHUNK: usize = 512;

/// The hub's task: collects the events that are ready together, joins their lines into one
/// chunk, and adds it to the log.
async fn run(mut events: HubEvents, shared: Arc<Shared>) {
    loop {
        // Once to the back of the runtime's queue before waiting: a busy server answers the
        // requests already waiting while events gather, so each chunk (and the wake of every
        // watch it brings) carries more of them. In the bench, without it the hub made a chunk
        // per event and served half as many requests; with three, watch events waited twice as
        // long for no more requests served.
        tokio::task::yield_now().await;
        let Some(first) = events.next().await else {
            end(&shared, None);
            return;
        };
        let mut chunks = Vec::new();
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        let mut failed = None;
        let mut next = Some(first);
        while let Some(event) = next.take() {
            match event {
                HubEvent::Line(revision, line) => {
                    bytes.extend_from_slice(&line);
                    ends.push((revision, bytes.len()));
                }
                HubEvent::Bookmark(revision, line) => {
                    if !ends.is_empty() {
                        chunks.push(Chunk {
                            bytes: Bytes::from(std::mem::take(&mut bytes)),
                            ends: std::mem::take(&mut ends),
                            bookmark: false,
                        });
                    }
                    chunks.push(Chunk {
                        ends: vec![(revision, line.len())],
                        bytes: line,
                        bookmark: true,
                    });
                }
                HubEvent::Failed(line) => {
                    failed = Some(line);
                    break;
                }
            }
            if ends.len() < EVENTS_PER_CHUNK {
                next = events.next().now_or_never().flatten();
            }
        }
        if !ends.is_empty() {
            chunks.push(Chunk {
                bytes: Bytes::from(bytes),
                ends,
                bookmark: false,
            });
        }
        {
            let mut log = shared.lock();
            for chunk in chunks {
                log.events += chunk.ends.len();
                log.bytes += chunk.bytes.len();
                log.chunks.push_back(chunk);
            }
            // The latest chunk always stays.
            while (log.events > RETAINED_EVENTS || log.bytes > RETAINED_BYTES)
                && log.chunks.len() > 1
            {
                let Some(dropped) = log.chunks.pop_front() else {
                    break;
                };
                log.events -= dropped.ends.len();
                log.bytes -= dropped.bytes.len();
                log.start = dropped.last();
            }
        }
        if let Some(line) = failed {
            end(&shared, Some(line));
            return;
        }
        shared.appended.notify_waiters();
    }
}

fn end(shared: &Shared, error: Option<Bytes>) {
    shared.lock().ended = Some(error);
    shared.appended.notify_waiters();
}

/// The chunks of `hub` after `from` (with its bookmarks if `bookmarks`), as they come; ends
/// when the hub's store watch ends (with its `ERROR` line, if it failed) or when the log has
/// dropped what this watch has not sent.
pub(crate) fn subscribe(
    hub: Arc<Hub>,
    from: u64,
    bookmarks: bool,
) -> impl Stream<Item = Bytes> + Send + 'static {
    stream::unfold(
        (hub, from, false),
        move |(hub, mut position, done)| async move {
            if done {
                return None;
            }
            loop {
                let appended = hub.shared.appended.notified();
                tokio::pin!(appended);
                // Registered before the log is read, so an append after the read wakes it.
                appended.as_mut().enable();
                {
                    let log = hub.shared.lock();
                    if position < log.start {
                        // Fell behind what the log keeps: ended, as a watcher that does not keep up.
                        return None;
                    }
                    let mut pieces: Vec<Bytes> = Vec::new();
                    for chunk in &log.chunks {
                        if chunk.last() > position {
                            if bookmarks || !chunk.bookmark {
                                pieces.push(chunk.after(position));
                            }
                            position = chunk.last();
                        }
                    }
                    if !pieces.is_empty() {
                        let bytes = if pieces.len() == 1 {
                            pieces.pop().unwrap_or_default()
                        } else {
                            Bytes::from(pieces.concat())
                        };
                        return Some((bytes, (hub.clone(), position, false)));
                    }
                    if let Some(ended) = &log.ended {
                        return ended
                            .clone()
                            .map(|line| (line, (hub.clone(), position, true)));
                    }
                }
                appended.await;
            }
        },
    )
}

/// The events of a store watch as the hub takes them: each object event encoded by `encode`
/// (which returns its line), a bookmark as `bookmark_line` makes it, an error as its `ERROR`
/// line.
pub(crate) fn hub_events(
    events: WatchStream,
    encode: impl Fn(&'static str, &Arc<kube_core::object::DynamicObject>) -> Bytes + Send + 'static,
    bookmark_line: impl Fn(u64) -> Bytes + Send + 'static,
    error_line: impl Fn(kube_core::store::StoreError) -> Bytes + Send + 'static,
) -> HubEvents {
    events
        .filter_map(move |event| {
            let item = match event {
                Ok(WatchEvent::Added(o)) => Some(HubEvent::Line(
                    o.revision().unwrap_or(0),
                    encode("ADDED", &o),
                )),
                Ok(WatchEvent::Modified(o)) => Some(HubEvent::Line(
                    o.revision().unwrap_or(0),
                    encode("MODIFIED", &o),
                )),
                Ok(WatchEvent::Deleted(o)) => Some(HubEvent::Line(
                    o.revision().unwrap_or(0),
                    encode("DELETED", &o),
                )),
                Ok(WatchEvent::Bookmark { resource_version }) => Some(HubEvent::Bookmark(
                    resource_version,
                    bookmark_line(resource_version),
                )),
                Err(e) => Some(HubEvent::Failed(error_line(e))),
            };
            futures::future::ready(item)
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(revision: u64) -> HubEvent {
        HubEvent::Line(revision, Bytes::from(format!("{revision}\n")))
    }

    /// A hub over events sent through the returned channel.
    async fn hub(
        hubs: &Hubs,
        from: u64,
    ) -> (Arc<Hub>, tokio::sync::mpsc::UnboundedSender<HubEvent>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let events = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).boxed();
        let hub = hubs
            .join((GroupKind::POD, None), from, || async { Ok(Some(events)) })
            .await
            .unwrap()
            .unwrap();
        (hub, tx)
    }

    #[tokio::test]
    async fn watches_share_one_hub_and_get_the_lines_after_their_revision() {
        let hubs = Hubs::default();
        let (first, tx) = hub(&hubs, 10).await;
        let second = hubs
            .join((GroupKind::POD, None), 12, || async {
                panic!("the hub is shared")
            })
            .await
            .unwrap()
            .unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        let older = hubs
            .join((GroupKind::POD, None), 9, || async {
                panic!("not started")
            })
            .await
            .unwrap();
        assert!(older.is_none(), "a watch from before the log takes its own");

        for revision in 11..=14 {
            tx.send(line(revision)).unwrap();
        }
        tx.send(HubEvent::Failed(Bytes::from_static(b"error\n")))
            .unwrap();
        let read = |hub, from| async move {
            let chunks: Vec<Bytes> = subscribe(hub, from, false).collect().await;
            String::from_utf8(chunks.concat()).unwrap()
        };
        assert_eq!(read(first, 10).await, "11\n12\n13\n14\nerror\n");
        assert_eq!(read(second, 12).await, "13\n14\nerror\n");
    }

    #[tokio::test]
    async fn bookmarks_go_only_to_the_watches_that_asked() {
        let hubs = Hubs::default();
        let (hub, tx) = hub(&hubs, 10).await;
        tx.send(line(11)).unwrap();
        tx.send(HubEvent::Bookmark(12, Bytes::from_static(b"bookmark 12\n")))
            .unwrap();
        tx.send(line(13)).unwrap();
        drop(tx);
        let read = |bookmarks| {
            let hub = hub.clone();
            async move {
                let chunks: Vec<Bytes> = subscribe(hub, 10, bookmarks).collect().await;
                String::from_utf8(chunks.concat()).unwrap()
            }
        };
        assert_eq!(read(true).await, "11\nbookmark 12\n13\n");
        assert_eq!(read(false).await, "11\n13\n");
    }

    #[tokio::test]
    async fn a_watch_the_log_has_left_behind_is_ended() {
        let hubs = Hubs::default();
        let (hub, tx) = hub(&hubs, 0).await;
        let mut slow = Box::pin(subscribe(hub.clone(), 0, false));
        for revision in 1..=(RETAINED_EVENTS as u64 + 600) {
            tx.send(line(revision)).unwrap();
            if revision % 500 == 0 {
                // Let the hub's task take them in chunks.
                tokio::task::yield_now().await;
                tokio::task::yield_now().await;
            }
        }
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while hub.shared.lock().start == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the log drops its oldest chunks");
        assert!(slow.next().await.is_none(), "ended, not sent with a gap");
    }
}
