//! Watch cursors: a position in the shared history, advanced by the reader, woken by the writes
//! routed to it (see [`routes`](super::routes)).
//!
//! A cursor that keeps up reads the changes queued in its slot and takes no engine lock; one
//! that starts in the past, or whose slot overflowed, reads the history under the read lock
//! until it has caught up.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::StreamExt;
use kube_core::object::GroupKind;
use kube_core::store::{StoreError, WatchEvent, WatchStream};

use super::routes::Slot;
use super::{Change, Engine, State};
use crate::transition::Scope;

/// Most history entries (or routed changes) examined per lock acquisition, so a far-behind
/// watcher cannot hold the lock for long.
const SCAN_BATCH: usize = 1024;

struct Cursor {
    engine: Arc<Engine>,
    kind: GroupKind,
    scope: Scope,
    /// Every change up to here has been examined.
    position: u64,
    pending: VecDeque<WatchEvent>,
    bookmarks: bool,
    last_bookmark: (Instant, u64),
    slot: Arc<Slot>,
    slot_id: u64,
    /// The engine's latest routed revision (see [`State::routed`]).
    routed: Arc<AtomicU64>,
    /// Changes taken from the slot, examined once its lock is released (kept to reuse).
    batch: Vec<Arc<Change>>,
    finished: bool,
}

enum Scan {
    /// Events are pending.
    Events,
    /// Nothing yet, but more to examine without waiting.
    More,
    /// Caught up: wait for a write.
    Idle,
    TooOld(StoreError),
}

impl Cursor {
    fn examine(&mut self, change: &Change) {
        if change.kind == self.kind {
            if let Some(event) = self.scope.event(
                change.revision,
                change.before.as_ref(),
                change.after.as_ref(),
            ) {
                self.pending.push_back(event);
            }
        }
        self.position = change.revision;
    }

    /// Reads the history from `position` (catching up to where routing started, or after the
    /// slot overflowed).
    fn scan_history(&mut self, state: &State) -> bool {
        let start = state.history_after(self.position);
        for change in state.history.range(start..).take(SCAN_BATCH) {
            self.examine(change);
        }
        self.position >= state.revision
    }

    fn scan(&mut self) -> Scan {
        let slot = self.slot.clone();
        // Read before the queue: every change up to it is queued by the time the lock is ours.
        let routed = self.routed.load(Ordering::Acquire);
        let mut queue = slot.queue();
        if self.position < slot.registered_at || queue.overflowed {
            drop(queue);
            return self.scan_history_locked();
        }
        let take = queue.changes.len().min(SCAN_BATCH);
        let mut batch = std::mem::take(&mut self.batch);
        batch.extend(queue.changes.drain(..take));
        let caught_up = queue.changes.is_empty();
        drop(queue);
        for change in batch.drain(..) {
            if change.revision > self.position {
                self.examine(&change);
            }
        }
        self.batch = batch;
        if caught_up {
            // Nothing else up to `routed` concerns this watch: its progress, for bookmarks and
            // for a later catch-up from the history.
            self.position = self.position.max(routed);
        }
        self.outcome(caught_up)
    }

    /// Catches up from the history under the engine's read lock.
    fn scan_history_locked(&mut self) -> Scan {
        let engine = self.engine.clone();
        let state = engine.read();
        if self.position < state.compacted {
            return Scan::TooOld(StoreError::TooOld {
                requested: self.position,
                oldest: state.compacted,
            });
        }
        let done = self.scan_history(&state);
        if done {
            // Everything so far is read; writers cannot route while the read lock is held, so
            // routing resumes exactly from here.
            let mut queue = self.slot.queue();
            queue.changes.clear();
            queue.overflowed = false;
        }
        self.outcome(done)
    }

    fn outcome(&self, caught_up: bool) -> Scan {
        if !self.pending.is_empty() {
            Scan::Events
        } else if caught_up {
            Scan::Idle
        } else {
            Scan::More
        }
    }

    async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.finished {
                return None;
            }
            match self.scan() {
                Scan::Events | Scan::More => continue,
                Scan::TooOld(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
                Scan::Idle => {}
            }
            // A write routed after the scan leaves a permit, so this cannot miss it.
            let interval = self.engine.config.bookmark_interval;
            if self.bookmarks {
                let (at, revision) = self.last_bookmark;
                if at.elapsed() >= interval && self.position > revision {
                    self.last_bookmark = (Instant::now(), self.position);
                    return Some(Ok(WatchEvent::Bookmark {
                        resource_version: self.position,
                    }));
                }
                let wait = interval.saturating_sub(at.elapsed());
                tokio::select! {
                    () = self.slot.notify.notified() => {}
                    () = tokio::time::sleep(wait) => {
                        // Progress may have been made on other kinds only: still report it.
                        let _ = self.scan();
                    }
                }
            } else {
                self.slot.notify.notified().await;
            }
        }
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        self.engine.write().routes.remove(&self.kind, self.slot_id);
    }
}

/// A watch of `kind` within `scope`, delivering every change after `from`, woken through
/// `slot` (registered with the engine's routes as `slot_id`; `routed` is the engine's).
pub(crate) fn watch_stream(
    engine: Arc<Engine>,
    kind: GroupKind,
    scope: Scope,
    from: u64,
    bookmarks: bool,
    (slot, slot_id, routed): (Arc<Slot>, u64, Arc<AtomicU64>),
) -> WatchStream {
    let cursor = Cursor {
        engine,
        kind,
        scope,
        position: from,
        pending: VecDeque::new(),
        bookmarks,
        last_bookmark: (Instant::now(), from),
        slot,
        slot_id,
        routed,
        batch: Vec::new(),
        finished: false,
    };
    futures::stream::unfold(cursor, |mut cursor| async move {
        let item = cursor.next().await?;
        Some((item, cursor))
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kube_core::object::DynamicObject;
    use kube_core::store::WatchOptions;

    use super::*;
    use crate::StoreConfig;
    use crate::engine::{AfterUnlock, View};

    fn pod(name: &str) -> DynamicObject {
        let mut pod = DynamicObject {
            api_version: "v1".into(),
            kind: "Pod".into(),
            ..DynamicObject::default()
        };
        pod.metadata.name = Some(name.into());
        pod.metadata.namespace = Some("default".into());
        pod
    }

    #[tokio::test]
    async fn a_watch_that_keeps_up_reads_its_changes_while_a_writer_holds_the_lock() {
        let engine = Arc::new(Engine::new(
            StoreConfig::default().engine_config(),
            State::default(),
        ));
        let mut events = super::super::watch(
            &engine,
            &GroupKind::POD,
            None,
            &WatchOptions::from_revision(0),
        )
        .unwrap();
        for name in ["a", "b"] {
            let mut after = AfterUnlock::default();
            let mut state = engine.write();
            let change = state
                .plan_create(pod(name), &engine.config.registry)
                .unwrap();
            state.apply(change, &mut after);
        }

        // A writer (a compaction, a burst of creates) holds the lock meanwhile.
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let _state = engine.write();
                locked_tx.send(()).unwrap();
                // Released in any case, so that a watch that does wait fails rather than hangs.
                let _ = release_rx.recv_timeout(Duration::from_secs(3));
            })
        };
        locked_rx.recv().unwrap();
        let started = std::time::Instant::now();
        for name in ["a", "b"] {
            let event = tokio::time::timeout(Duration::from_secs(5), events.next())
                .await
                .expect("an event");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "the routed change is read without waiting for the engine's lock"
            );
            match event {
                Some(Ok(WatchEvent::Added(o))) => {
                    assert_eq!(o.metadata.name.as_deref(), Some(name))
                }
                other => panic!("expected ADDED {name}, got {other:?}"),
            }
        }
        release_tx.send(()).unwrap();
        holder.join().unwrap();
    }
}
