//! [`SchedulingQueue`]: pending pods, ordered by priority, with per-pod backoff and a parking
//! area for unschedulable pods until a cluster event may have made room for them.
//!
//! Time is passed in (`now`), so the queue is deterministic and needs no runtime.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_core::object::ObjectKey;

use crate::framework::PodInfo;
use crate::framework::fast_hash::FastMap;

/// Kubernetes' pod backoff: 1 s, doubling per failed attempt, at most 10 s.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// See [`DEFAULT_INITIAL_BACKOFF`].
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// An unschedulable pod is retried after this long even without an event (Kubernetes'
/// `podMaxInUnschedulablePodsDuration`).
pub const MAX_UNSCHEDULABLE_DURATION: Duration = Duration::from_secs(300);

/// Where a pod is in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Where {
    /// Ready to be popped.
    Active,
    /// Waiting out its backoff.
    Backoff,
    /// Parked until a cluster event.
    Unschedulable,
    /// Popped, being scheduled or bound.
    InFlight,
}

#[derive(Debug)]
struct Queued {
    pod: Arc<PodInfo>,
    attempts: u32,
    /// When it was first added (ordering among equal priorities).
    added: u64,
    parked_at: Option<Instant>,
    backoff_until: Option<Instant>,
    place: Where,
    /// Bumped when the pod moves, so stale heap entries are skipped.
    generation: u64,
    /// An event arrived while it was in flight (its spec changed): do not park it on failure.
    moved_while_in_flight: bool,
    /// The queue's move counter when it was popped: a later move-all event means something
    /// changed while it was in flight (Kubernetes' `moveRequestCycle`).
    popped_at_move: u64,
}

#[derive(Debug, PartialEq, Eq)]
struct ActiveEntry {
    priority: i32,
    added: u64,
    generation: u64,
    key: ObjectKey,
}

impl Ord for ActiveEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        // Highest priority first, then oldest first.
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.added.cmp(&self.added))
    }
}

impl PartialOrd for ActiveEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A popped pod.
#[derive(Clone, Debug)]
pub struct QueuedPod {
    /// The pod.
    pub pod: Arc<PodInfo>,
    /// Failed attempts so far.
    pub attempts: u32,
}

/// The scheduling queue: active (a priority heap), backoff, and unschedulable pods.
#[derive(Debug)]
pub struct SchedulingQueue {
    pods: FastMap<ObjectKey, Queued>,
    active: BinaryHeap<ActiveEntry>,
    backoff: BinaryHeap<Reverse<(Instant, u64, ObjectKey)>>,
    /// Parked pods by when they were parked, so a flush looks only at the ones parked too long.
    parked: BTreeSet<(Instant, u64, ObjectKey)>,
    seq: u64,
    /// Bumped by every move-all event.
    moves: u64,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl Default for SchedulingQueue {
    fn default() -> Self {
        Self::new(DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_BACKOFF)
    }
}

impl SchedulingQueue {
    /// A queue with these backoff bounds.
    pub fn new(initial_backoff: Duration, max_backoff: Duration) -> Self {
        Self {
            pods: FastMap::default(),
            active: BinaryHeap::new(),
            backoff: BinaryHeap::new(),
            parked: BTreeSet::new(),
            seq: 0,
            moves: 0,
            initial_backoff,
            max_backoff,
        }
    }

    /// The backoff after `attempts` failures.
    pub fn backoff_for(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(20);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// Pods in the queue (any state).
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether the queue holds no pod.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Where a pod is.
    pub fn position(&self, key: &ObjectKey) -> Option<Where> {
        self.pods.get(key).map(|q| q.place)
    }

    /// Takes `q` out of the parked set if it is there.
    fn unpark(parked: &mut BTreeSet<(Instant, u64, ObjectKey)>, q: &mut Queued, key: &ObjectKey) {
        if let Some(at) = q.parked_at.take() {
            parked.remove(&(at, q.generation, key.clone()));
        }
    }

    fn push_active(&mut self, key: &ObjectKey) {
        if let Some(q) = self.pods.get_mut(key) {
            Self::unpark(&mut self.parked, q, key);
            q.generation += 1;
            q.place = Where::Active;
            self.active.push(ActiveEntry {
                priority: q.pod.priority,
                added: q.added,
                generation: q.generation,
                key: key.clone(),
            });
        }
    }

    fn push_backoff(&mut self, key: &ObjectKey, until: Instant) {
        if let Some(q) = self.pods.get_mut(key) {
            Self::unpark(&mut self.parked, q, key);
            q.generation += 1;
            q.place = Where::Backoff;
            q.backoff_until = Some(until);
            self.backoff
                .push(Reverse((until, q.generation, key.clone())));
        }
    }

    /// Adds a pending pod, or updates one already queued. An updated parked pod is retried
    /// (its spec may now fit), respecting its backoff.
    pub fn add(&mut self, pod: Arc<PodInfo>, now: Instant) {
        let key = pod.key.clone();
        match self.pods.get_mut(&key) {
            Some(q) => {
                q.pod = pod;
                match q.place {
                    Where::Unschedulable => self.requeue_after_event(&key, now),
                    Where::InFlight => q.moved_while_in_flight = true,
                    Where::Active | Where::Backoff => {}
                }
            }
            None => {
                self.seq += 1;
                self.pods.insert(
                    key.clone(),
                    Queued {
                        pod,
                        attempts: 0,
                        added: self.seq,
                        parked_at: None,
                        backoff_until: None,
                        place: Where::Active,
                        generation: 0,
                        moved_while_in_flight: false,
                        popped_at_move: 0,
                    },
                );
                self.push_active(&key);
            }
        }
    }

    /// Forgets a pod (deleted, bound elsewhere, no longer ours).
    pub fn delete(&mut self, key: &ObjectKey) {
        if let Some(mut q) = self.pods.remove(key) {
            Self::unpark(&mut self.parked, &mut q, key);
        }
    }

    fn requeue_after_event(&mut self, key: &ObjectKey, now: Instant) {
        let until = self.pods.get(key).and_then(|q| q.backoff_until);
        match until {
            Some(t) if t > now => self.push_backoff(key, t),
            _ => self.push_active(key),
        }
    }

    /// Moves backoff pods whose time has come, and pods parked too long, to active.
    pub fn flush(&mut self, now: Instant) {
        while let Some(Reverse((t, generation, key))) = self.backoff.peek().cloned() {
            if t > now {
                break;
            }
            self.backoff.pop();
            if self
                .pods
                .get(&key)
                .is_some_and(|q| q.generation == generation && q.place == Where::Backoff)
            {
                self.push_active(&key);
            }
        }
        while let Some((at, generation, key)) = self.parked.first().cloned() {
            if now.saturating_duration_since(at) < MAX_UNSCHEDULABLE_DURATION {
                break;
            }
            self.parked.pop_first();
            if let Some(q) = self.pods.get_mut(&key) {
                if q.generation == generation && q.place == Where::Unschedulable {
                    q.parked_at = None;
                    self.push_active(&key);
                }
            }
        }
    }

    /// The next pod to schedule (highest priority, then oldest), marked in flight.
    pub fn pop(&mut self, now: Instant) -> Option<QueuedPod> {
        self.flush(now);
        while let Some(entry) = self.active.pop() {
            let Some(q) = self.pods.get_mut(&entry.key) else {
                continue;
            };
            if q.generation != entry.generation || q.place != Where::Active {
                continue;
            }
            q.place = Where::InFlight;
            q.moved_while_in_flight = false;
            q.popped_at_move = self.moves;
            return Some(QueuedPod {
                pod: q.pod.clone(),
                attempts: q.attempts,
            });
        }
        None
    }

    /// How long until a backoff pod becomes ready, if any is waiting.
    pub fn next_ready_in(&self, now: Instant) -> Option<Duration> {
        self.backoff
            .peek()
            .map(|Reverse((t, _, _))| t.saturating_duration_since(now))
    }

    /// The popped pod was bound (or given up on): it leaves the queue.
    pub fn done(&mut self, key: &ObjectKey) {
        self.delete(key);
    }

    /// The popped pod fits nowhere: park it until an event (or, if an event came while it was
    /// in flight, retry after its backoff).
    pub fn unschedulable(&mut self, key: &ObjectKey, now: Instant) {
        let backoff = match self.pods.get_mut(key) {
            Some(q) => {
                q.attempts += 1;
                q.attempts
            }
            None => return,
        };
        let until = now + self.backoff_for(backoff);
        if let Some(q) = self.pods.get_mut(key) {
            q.backoff_until = Some(until);
            if q.moved_while_in_flight || q.popped_at_move != self.moves {
                self.push_backoff(key, until);
            } else {
                Self::unpark(&mut self.parked, q, key);
                q.generation += 1;
                q.place = Where::Unschedulable;
                q.parked_at = Some(now);
                self.parked.insert((now, q.generation, key.clone()));
            }
        }
    }

    /// The popped pod failed for another reason (binding error): retry after its backoff.
    pub fn retry(&mut self, key: &ObjectKey, now: Instant) {
        let attempts = match self.pods.get_mut(key) {
            Some(q) => {
                q.attempts += 1;
                q.attempts
            }
            None => return,
        };
        let until = now + self.backoff_for(attempts);
        self.push_backoff(key, until);
    }

    /// A cluster event (node added or changed, pod deleted) may have made room: every parked
    /// pod goes back, to backoff if its backoff has not passed, else to active.
    pub fn move_all_to_active_or_backoff(&mut self, now: Instant) {
        self.moves += 1;
        let parked: Vec<ObjectKey> = std::mem::take(&mut self.parked)
            .into_iter()
            .map(|(_, _, key)| key)
            .collect();
        for key in parked {
            if let Some(q) = self.pods.get_mut(&key) {
                if q.place != Where::Unschedulable {
                    continue;
                }
                q.parked_at = None;
            }
            self.requeue_after_event(&key, now);
        }
    }

    /// Pods parked as unschedulable.
    pub fn parked_len(&self) -> usize {
        self.parked.len()
    }

    /// Puts a popped pod back after `delay` without counting a failed attempt (e.g. this
    /// process is not the leader right now).
    pub fn requeue_after(&mut self, key: &ObjectKey, delay: Duration, now: Instant) {
        self.push_backoff(key, now + delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, priority: i32) -> Arc<PodInfo> {
        Arc::new(
            PodInfo::from_pod(
                serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d"},
                    "spec": {"containers": [], "priority": priority}}))
                .unwrap(),
            )
            .unwrap(),
        )
    }

    #[test]
    fn pops_by_priority_then_age() {
        let now = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add(pod("low", 0), now);
        q.add(pod("high", 10), now);
        q.add(pod("low2", 0), now);
        let names: Vec<String> = std::iter::from_fn(|| q.pop(now))
            .map(|p| p.pod.key.name.clone())
            .collect();
        assert_eq!(names, ["high", "low", "low2"]);
    }

    #[test]
    fn unschedulable_pods_wait_for_an_event_and_their_backoff() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::default();
        let p = pod("p", 0);
        q.add(p.clone(), t0);
        assert!(q.pop(t0).is_some());
        q.unschedulable(&p.key, t0);
        assert_eq!(q.position(&p.key), Some(Where::Unschedulable));
        assert!(
            q.pop(t0 + Duration::from_secs(30)).is_none(),
            "parked, not retried on a timer"
        );
        // An event during the backoff (1 s) sends it to backoff, then active.
        q.move_all_to_active_or_backoff(t0 + Duration::from_millis(500));
        assert_eq!(q.position(&p.key), Some(Where::Backoff));
        assert!(q.pop(t0 + Duration::from_millis(900)).is_none());
        let again = q.pop(t0 + Duration::from_millis(1000)).unwrap();
        assert_eq!(again.attempts, 1);
        // Backoff doubles up to 10 s.
        assert_eq!(q.backoff_for(1), Duration::from_secs(1));
        assert_eq!(q.backoff_for(2), Duration::from_secs(2));
        assert_eq!(q.backoff_for(5), Duration::from_secs(10));
        assert_eq!(q.backoff_for(50), Duration::from_secs(10));
    }

    #[test]
    fn an_event_while_in_flight_is_not_lost() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::default();
        let p = pod("p", 0);
        q.add(p.clone(), t0);
        q.pop(t0).unwrap();
        q.move_all_to_active_or_backoff(t0);
        q.unschedulable(&p.key, t0);
        assert_eq!(q.position(&p.key), Some(Where::Backoff));
    }

    #[test]
    fn parked_pods_are_retried_after_five_minutes() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::default();
        let p = pod("p", 0);
        q.add(p.clone(), t0);
        q.pop(t0).unwrap();
        q.unschedulable(&p.key, t0);
        assert!(q.pop(t0 + MAX_UNSCHEDULABLE_DURATION).is_some());
    }
}
