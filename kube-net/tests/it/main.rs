//! kube-net integration tests: the proxy loop over an in-memory store, feeding a MemoryProxy.
// Helpers outside #[test] functions unwrap too: a failing test should panic loudly.
#![allow(clippy::unwrap_used)]

mod proxy_loop;
mod support;
