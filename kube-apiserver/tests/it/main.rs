//! Integration tests of the API server, over real HTTP and TLS.
#![allow(clippy::unwrap_used, missing_docs)]

mod apiserver;
mod kubernetes_service;
mod network_policy;
mod quota_admission;
mod security;
mod storage;
