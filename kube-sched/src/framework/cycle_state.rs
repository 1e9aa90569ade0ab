//! [`CycleState`]: data one plugin computes in an early extension point (PreFilter, PreScore)
//! and reads in later ones (Filter, Score) during a single scheduling cycle.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// Per-cycle, per-pod state keyed by name (usually the plugin's).
///
/// Values are shared (`Arc`), so cloning the state for a what-if cycle (preemption) is cheap;
/// a plugin that changes its value writes a new one.
#[derive(Clone, Default)]
pub struct CycleState {
    /// A handful of entries (one per plugin at most), read once per node per Filter and Score
    /// call: a linear scan beats hashing the key.
    data: Vec<(&'static str, Arc<dyn Any + Send + Sync>)>,
    /// Plugins (by profile position) whose PreFilter said Skip: their Filter is not run.
    pub(crate) skip_filter: u64,
    /// Plugins whose PreScore said Skip: their Score is not run.
    pub(crate) skip_score: u64,
}

impl fmt::Debug for CycleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<_> = self.data.iter().map(|(k, _)| k).collect();
        keys.sort();
        f.debug_struct("CycleState").field("keys", &keys).finish()
    }
}

impl CycleState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    fn slot(&self, key: &str) -> Option<usize> {
        // Keys are string constants, usually the very same one: compare addresses first.
        self.data
            .iter()
            .position(|(k, _)| std::ptr::eq(*k, key))
            .or_else(|| self.data.iter().position(|(k, _)| *k == key))
    }

    /// Stores `value` under `key`, replacing what was there.
    pub fn write<T: Any + Send + Sync>(&mut self, key: &'static str, value: T) {
        let value: Arc<dyn Any + Send + Sync> = Arc::new(value);
        match self.slot(key) {
            Some(i) => self.data[i].1 = value,
            None => self.data.push((key, value)),
        }
    }

    /// The value under `key` if there is one of type `T`.
    #[inline]
    pub fn read<T: Any + Send + Sync>(&self, key: &'static str) -> Option<&T> {
        self.data[self.slot(key)?].1.downcast_ref()
    }

    /// Changes the value under `key` in place when it is of type `T` (copying it first if a
    /// clone of this state still shares it, so other copies are unaffected); returns whether
    /// there was such a value. PreFilter extensions use it on what-if copies of the state.
    pub fn modify<T: Any + Send + Sync + Clone>(
        &mut self,
        key: &'static str,
        f: impl FnOnce(&mut T),
    ) -> bool {
        let Some(i) = self.slot(key) else {
            return false;
        };
        let slot = &mut self.data[i].1;
        if Arc::get_mut(slot).is_none() {
            let Some(copy) = slot.downcast_ref::<T>().cloned() else {
                return false;
            };
            *slot = Arc::new(copy);
        }
        match Arc::get_mut(slot).and_then(|v| v.downcast_mut::<T>()) {
            Some(value) => {
                f(value);
                true
            }
            None => false,
        }
    }
}
