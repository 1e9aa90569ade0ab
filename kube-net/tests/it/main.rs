//! kube-net integration tests: the proxy loop over an in-memory store feeding a MemoryProxy, a
//! UserspaceProxy carrying real traffic to real processes, and the nftables data plane inside
//! network namespaces.
// Helpers outside #[test] functions unwrap too: a failing test should panic loudly.
#![allow(clippy::unwrap_used)]

mod dns;
mod netns;
mod nft;
mod pods;
mod policy;
mod proxy_loop;
mod routes;
mod support;
mod userspace;
