//! The ServiceLB controller (being written).
