//! The crate's error type.

use kube_core::runtime::RuntimeError;
use kube_core::store::StoreError;

/// Errors from the node agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The builder was given a configuration that cannot work (empty node name, bad quantity).
    #[error("invalid node agent configuration: {0}")]
    InvalidConfig(String),
    /// The kubelet server's address could not be bound.
    #[error("binding the kubelet server to {addr}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A store request failed.
    #[error("store request failed")]
    Store(#[from] StoreError),
    /// A container runtime request failed.
    #[error("container runtime request failed")]
    Runtime(#[from] RuntimeError),
    /// An object read from the store does not decode as its kind.
    #[error("{what} does not decode")]
    Decode {
        /// What was being decoded, e.g. `pod default/web`.
        what: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

/// A result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
