//! NetworkPolicy enforcement on nftables (being written).
