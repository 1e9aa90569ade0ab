//! Crash-loop back-off, per container, as the kubelet does it: the first restart is immediate,
//! then each restart waits `base × 2^n` (capped) counted from when the container exited.

use std::time::{Duration, Instant, SystemTime};

/// Back-off state of one container of one pod.
#[derive(Clone, Debug, Default)]
pub(crate) struct CrashBackoff {
    /// The delay the next restart must wait, once one restart has happened.
    delay: Option<Duration>,
    /// When the delay last grew; a long quiet spell resets it.
    updated: Option<Instant>,
}

impl CrashBackoff {
    /// How much longer a container that exited at `finished_at` must wait before its restart
    /// (`None`: restart now).
    pub(crate) fn remaining(
        &self,
        finished_at: Option<SystemTime>,
        max: Duration,
    ) -> Option<Duration> {
        let delay = self.current(max)?;
        let since_exit = finished_at
            .and_then(|f| SystemTime::now().duration_since(f).ok())
            .unwrap_or_default();
        delay.checked_sub(since_exit).filter(|d| !d.is_zero())
    }

    /// How much longer to wait before retrying something whose failure was recorded with
    /// [`CrashBackoff::step`] (`None`: retry now).
    pub(crate) fn remaining_since_step(&self, max: Duration) -> Option<Duration> {
        let delay = self.current(max)?;
        let since = self.updated?.elapsed();
        delay.checked_sub(since).filter(|d| !d.is_zero())
    }

    /// The delay in force, unless it has expired: like the kubelet, a container that has not
    /// needed a restart for twice the cap starts over.
    fn current(&self, max: Duration) -> Option<Duration> {
        let updated = self.updated?;
        if updated.elapsed() > max.saturating_mul(2) {
            return None;
        }
        self.delay
    }

    /// Records a restart (or a failed attempt): the next one waits longer.
    pub(crate) fn step(&mut self, base: Duration, max: Duration) {
        let next = match self.current(max) {
            None => base,
            Some(d) => d.saturating_mul(2),
        };
        self.delay = Some(next.min(max));
        self.updated = Some(Instant::now());
    }

    /// The delay in force, for messages.
    pub(crate) fn delay(&self, max: Duration) -> Duration {
        self.current(max).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_restart_is_immediate_then_doubles_to_the_cap() {
        let (base, max) = (Duration::from_secs(10), Duration::from_secs(300));
        let mut b = CrashBackoff::default();
        assert_eq!(b.remaining(Some(SystemTime::now()), max), None);
        let mut delays = Vec::new();
        for _ in 0..7 {
            b.step(base, max);
            delays.push(b.delay(max).as_secs());
        }
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
        let left = b.remaining(Some(SystemTime::now() - Duration::from_secs(100)), max);
        assert!(
            left.is_some_and(|d| d > Duration::from_secs(199) && d <= Duration::from_secs(200))
        );
        assert_eq!(b.remaining(Some(SystemTime::now() - max), max), None);
    }
}
