//! Watch cursors: a position in the shared history, advanced by the reader, woken by the writes
//! routed to it (see [`routes`](super::routes)).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use kube_core::object::GroupKind;
use kube_core::store::{StoreError, WatchEvent, WatchStream};

use super::routes::Slot;
use super::{Change, Engine, State};
use crate::transition::Scope;

/// Most history entries (or routed revisions) examined per lock acquisition, so a far-behind
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
        let engine = self.engine.clone();
        let state = engine.read();
        if self.position < state.compacted {
            return Scan::TooOld(StoreError::TooOld {
                requested: self.position,
                oldest: state.compacted,
            });
        }
        let slot = self.slot.clone();
        let mut queue = slot.queue();
        let caught_up = if self.position < slot.registered_at || queue.overflowed {
            let done = self.scan_history(&state);
            if done {
                // Everything so far is read; writers cannot route while the read lock is
                // held, so routing resumes exactly from here.
                queue.revisions.clear();
                queue.overflowed = false;
            }
            done
        } else {
            let mut examined = 0;
            while examined < SCAN_BATCH {
                let Some(revision) = queue.revisions.pop_front() else {
                    break;
                };
                examined += 1;
                if revision <= self.position {
                    continue;
                }
                let index = state.history_after(revision - 1);
                if let Some(change) = state.history.get(index) {
                    self.examine(change);
                }
            }
            if queue.revisions.is_empty() {
                // No other change since concerns this watch.
                self.position = self.position.max(state.revision);
                true
            } else {
                false
            }
        };
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
/// `slot` (registered with the engine's routes as `slot_id`).
pub(crate) fn watch_stream(
    engine: Arc<Engine>,
    kind: GroupKind,
    scope: Scope,
    from: u64,
    bookmarks: bool,
    (slot, slot_id): (Arc<Slot>, u64),
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
        finished: false,
    };
    futures::stream::unfold(cursor, |mut cursor| async move {
        let item = cursor.next().await?;
        Some((item, cursor))
    })
    .boxed()
}
