//! kube-sched integration tests: the scheduler called directly, and the scheduling loop over an
//! in-memory store.
// Helpers outside #[test] functions unwrap too: a failing test should panic loudly.
#![allow(clippy::unwrap_used)]

mod embedding;
mod plugins;
mod properties;
mod scheduler;
mod scheduling_loop;
mod support;
mod volumes;
