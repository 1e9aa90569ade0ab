//! Whole-cluster tests: the hello_cluster flow on FakeRuntime, and a cluster composed from
//! trait implementations written here.
#![allow(clippy::unwrap_used, missing_docs)]

mod custom_parts;
mod hello_fake;
mod own_store;
