//! Integration tests of kube-store's backends.
#![allow(clippy::unwrap_used, missing_docs)]

mod machinery;
mod mem;
