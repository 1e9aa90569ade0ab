//! The errors of this crate's data planes.

use std::net::SocketAddr;

use kube_core::proxy::{Protocol, ProxyError};

/// What can go wrong programming a data plane.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A listener could not be opened (address not local, port taken, …).
    #[error("cannot listen on {protocol:?} {addr}")]
    Bind {
        /// The protocol of the listener.
        protocol: Protocol,
        /// The address it wanted.
        addr: SocketAddr,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A helper program (`ip`, `nft`) could not be started.
    #[error("cannot run `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A helper program ran and failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// An address range that is not `address/prefix`.
    #[error("invalid CIDR {0:?}")]
    Cidr(String),
    /// Several listeners or addresses failed in one sync; the first error is kept.
    #[error("{count} operations failed in one sync; first: {first}")]
    Many {
        /// How many failed.
        count: usize,
        /// The first failure.
        #[source]
        first: Box<Error>,
    },
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for ProxyError {
    fn from(e: Error) -> Self {
        ProxyError::Backend(Box::new(e))
    }
}

impl Error {
    /// Folds a list of failures into one error (`None` when there were none).
    pub(crate) fn collect(mut errors: Vec<Error>) -> Option<Error> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            count => Some(Error::Many {
                count,
                first: Box::new(errors.swap_remove(0)),
            }),
        }
    }
}
