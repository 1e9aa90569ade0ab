//! Routes to other nodes' pod CIDRs (being written).
