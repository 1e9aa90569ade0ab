//! Which watches a change can concern. Each watch registers a [`Slot`] with its kind, namespace
//! and required `spec.nodeName` (the filters worth indexing: a node agent's watch of its pods,
//! the scheduler's watch of unscheduled ones). A write hands its revision to the slots it may
//! concern and wakes only those; every other watch neither wakes nor reads it. With a thousand
//! node agents watching pods, a pod write costs one wake, not a thousand. The slot holds the
//! change itself, so a watch that keeps up reads its changes without taking the engine's lock,
//! which writers and reads need: with 64 watchers of busy pods, their reads were most of the
//! lock's traffic and made writers wait.
//!
//! Routing is conservative: label selectors and other field selectors are not indexed, so a
//! slot may receive revisions its watch then filters out, but never misses one. A slot whose
//! queue overflows (a watcher far behind) drops it and falls back to scanning the history from
//! where it is, so a slow watcher costs writers nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use kube_core::object::{DynamicObject, GroupKind};
use tokio::sync::Notify;

use super::Change;

/// Most changes a slot holds before it falls back to scanning the history (fewer if the
/// history keeps fewer: a watcher that far behind is told it is too old, as before routing).
const QUEUE_LIMIT: usize = 1024;

/// One watch's registration.
#[derive(Debug)]
pub(crate) struct Slot {
    kind: GroupKind,
    namespace: Option<String>,
    node_name: Option<String>,
    /// The store's revision when the slot was registered: later changes are routed to it,
    /// earlier ones the watch reads from the history.
    pub(crate) registered_at: u64,
    /// Most changes queued before the slot overflows.
    limit: usize,
    queue: Mutex<Queue>,
    /// Woken when a change is queued (or the queue overflows).
    pub(crate) notify: Notify,
}

/// Changes routed to a slot, in revision order.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    pub(crate) changes: VecDeque<Arc<Change>>,
    /// Changes were dropped: the watch must scan the history instead.
    pub(crate) overflowed: bool,
}

fn node_name(object: Option<&Arc<DynamicObject>>) -> &str {
    object
        .and_then(|o| o.data.get("spec")?.get("nodeName")?.as_str())
        .unwrap_or("")
}

impl Slot {
    pub(crate) fn new(
        kind: GroupKind,
        namespace: Option<String>,
        node_name: Option<String>,
        registered_at: u64,
        history_limit: usize,
    ) -> Self {
        Self {
            kind,
            namespace,
            node_name,
            registered_at,
            limit: QUEUE_LIMIT.min(history_limit),
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
        }
    }

    pub(crate) fn queue(&self) -> MutexGuard<'_, Queue> {
        // The queue is consistent after every operation, so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `change` may concern the watch (before or after the change).
    fn concerns(&self, change: &Change) -> bool {
        if let Some(ns) = &self.namespace {
            if change.key.namespace.as_deref() != Some(ns.as_str()) {
                return false;
            }
        }
        match &self.node_name {
            // A missing nodeName reads as "", as the field selector reads it.
            Some(node) => {
                node_name(change.before.as_ref()) == node
                    || node_name(change.after.as_ref()) == node
            }
            None => true,
        }
    }

    /// Queues `change`; the caller wakes the watch once the engine's lock is released.
    fn deliver(&self, change: &Arc<Change>) {
        let mut queue = self.queue();
        if !queue.overflowed {
            if queue.changes.len() >= self.limit {
                queue.overflowed = true;
                queue.changes.clear();
            } else {
                queue.changes.push_back(change.clone());
            }
        }
    }
}

/// The registered slots, by kind. Lives in the engine's state: writers route under the write
/// lock, so every revision a reader can see has been routed.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    next_id: u64,
    by_kind: HashMap<GroupKind, Vec<(u64, Arc<Slot>)>>,
}

impl Routes {
    /// Registers a slot; the id removes it.
    pub(crate) fn add(&mut self, slot: Arc<Slot>) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.by_kind
            .entry(slot.kind.clone())
            .or_default()
            .push((id, slot));
        id
    }

    pub(crate) fn remove(&mut self, kind: &GroupKind, id: u64) {
        if let Some(slots) = self.by_kind.get_mut(kind) {
            slots.retain(|(i, _)| *i != id);
            if slots.is_empty() {
                self.by_kind.remove(kind);
            }
        }
    }

    /// Hands `change` to the slots it may concern, and lists them in `wakes`.
    pub(crate) fn route(&self, change: &Arc<Change>, wakes: &mut Vec<Arc<Slot>>) {
        if let Some(slots) = self.by_kind.get(&change.kind) {
            for (_, slot) in slots {
                if slot.concerns(change) {
                    slot.deliver(change);
                    // A slot listed twice is woken twice, which is harmless.
                    if !wakes.last().is_some_and(|w| Arc::ptr_eq(w, slot)) {
                        wakes.push(slot.clone());
                    }
                }
            }
        }
    }
}
