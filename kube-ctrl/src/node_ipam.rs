//! The node IPAM controller (being written).
