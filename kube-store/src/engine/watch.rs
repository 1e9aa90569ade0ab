//! Watch cursors: a position in the shared history, advanced by the reader, woken by writers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use kube_core::object::GroupKind;
use kube_core::store::{StoreError, WatchEvent, WatchStream};

use super::Engine;
use crate::transition::Scope;

/// Most history entries scanned per lock acquisition, so a far-behind watcher cannot hold the
/// lock for long.
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
    latest: tokio::sync::watch::Receiver<u64>,
    finished: bool,
}

enum Scan {
    Events,
    Nothing,
    TooOld(StoreError),
}

impl Cursor {
    fn scan(&mut self) -> Scan {
        let state = self.engine.read();
        if self.position < state.compacted {
            return Scan::TooOld(StoreError::TooOld {
                requested: self.position,
                oldest: state.compacted,
            });
        }
        let start = state.history_after(self.position);
        for change in state.history.range(start..).take(SCAN_BATCH) {
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
        if self.pending.is_empty() {
            Scan::Nothing
        } else {
            Scan::Events
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
            // Mark the latest revision seen *before* scanning, so a write landing after the scan
            // wakes the wait below.
            let latest = *self.latest.borrow_and_update();
            match self.scan() {
                Scan::Events => continue,
                Scan::TooOld(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
                Scan::Nothing if latest > self.position => continue,
                Scan::Nothing => {}
            }
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
                    changed = self.latest.changed() => if changed.is_err() { self.finished = true },
                    () = tokio::time::sleep(wait) => {
                        // Progress may have been made on other kinds only: still report it.
                        let _ = self.scan();
                    }
                }
            } else if self.latest.changed().await.is_err() {
                // The store is gone.
                self.finished = true;
            }
        }
    }
}

/// A watch of `kind` within `scope`, delivering every change after `from`.
pub(crate) fn watch_stream(
    engine: Arc<Engine>,
    kind: GroupKind,
    scope: Scope,
    from: u64,
    bookmarks: bool,
) -> WatchStream {
    let latest = engine.subscribe();
    let cursor = Cursor {
        engine,
        kind,
        scope,
        position: from,
        pending: VecDeque::new(),
        bookmarks,
        last_bookmark: (Instant::now(), from),
        latest,
        finished: false,
    };
    futures::stream::unfold(cursor, |mut cursor| async move {
        let item = cursor.next().await?;
        Some((item, cursor))
    })
    .boxed()
}
