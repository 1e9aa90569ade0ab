//! Placeholder; the workloads follow.
fn main() {}
