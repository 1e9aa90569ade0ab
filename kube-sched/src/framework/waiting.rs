//! [`WaitingPods`]: pods a Permit plugin holds, until every waiting plugin allows them, one
//! rejects them, or the timeout passes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kube_core::object::ObjectKey;

use super::status::Status;

#[derive(Debug, Default)]
struct Waiting {
    pending: HashSet<String>,
    verdict: Option<Status>,
}

#[derive(Debug, Default)]
struct Entry {
    state: Mutex<Waiting>,
    wake: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent at every step, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The pods Permit is holding. Plugins (or anyone with the framework) allow or reject them.
#[derive(Debug, Default)]
pub struct WaitingPods {
    pods: Mutex<HashMap<ObjectKey, Arc<Entry>>>,
}

impl WaitingPods {
    /// Holds `pod` for `plugins`.
    pub(crate) fn add(&self, pod: ObjectKey, plugins: Vec<String>) {
        let entry = Arc::new(Entry {
            state: Mutex::new(Waiting {
                pending: plugins.into_iter().collect(),
                verdict: None,
            }),
            wake: Condvar::new(),
        });
        lock(&self.pods).insert(pod, entry);
    }

    /// The pods being held.
    pub fn keys(&self) -> Vec<ObjectKey> {
        lock(&self.pods).keys().cloned().collect()
    }

    /// `plugin` allows `pod`; once every waiting plugin has, the pod goes on to bind.
    pub fn allow(&self, pod: &ObjectKey, plugin: &str) {
        if let Some(entry) = lock(&self.pods).get(pod).cloned() {
            let mut w = lock(&entry.state);
            w.pending.remove(plugin);
            if w.pending.is_empty() && w.verdict.is_none() {
                w.verdict = Some(Status::success());
                entry.wake.notify_all();
            }
        }
    }

    /// Rejects `pod`: it will not be bound in this cycle.
    pub fn reject(&self, pod: &ObjectKey, plugin: &str, reason: impl Into<String>) {
        if let Some(entry) = lock(&self.pods).get(pod).cloned() {
            let mut w = lock(&entry.state);
            if w.verdict.is_none() {
                w.verdict = Some(Status::unschedulable(reason.into()).with_plugin(plugin));
                entry.wake.notify_all();
            }
        }
    }

    /// Blocks until `pod` is allowed or rejected, or `timeout` passes (then it is rejected).
    pub fn wait(&self, pod: &ObjectKey, timeout: Duration) -> Status {
        let Some(entry) = lock(&self.pods).get(pod).cloned() else {
            return Status::success();
        };
        let deadline = Instant::now() + timeout;
        let mut w = lock(&entry.state);
        let verdict = loop {
            if let Some(v) = w.verdict.clone() {
                break v;
            }
            let now = Instant::now();
            if now >= deadline {
                break Status::unschedulable("rejected due to timeout after waiting at permit");
            }
            w = entry
                .wake
                .wait_timeout(w, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        };
        drop(w);
        lock(&self.pods).remove(pod);
        verdict
    }
}
