//! Integration tests of the API server, over real HTTP and TLS.
#![allow(clippy::unwrap_used, missing_docs)]

mod apiserver;
mod network_policy;
mod security;
