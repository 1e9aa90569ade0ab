//! [`HarnessError`]: what the test harness's operations can fail with.

use std::time::Duration;

use kube_core::orchestrator::OrchestratorError;
use kube_core::selector::SelectorError;
use kube_core::store::StoreError;

/// Errors from [`TestCluster`](super::TestCluster) and its builder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// A wait did not see its condition hold in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long it waited.
        after: Duration,
    },
    /// No node of this name is part of the cluster.
    #[error("no node named {0:?} in the test cluster")]
    UnknownNode(String),
    /// A node of this name already exists ([`TestCluster::add_node`](super::TestCluster::add_node)).
    #[error("a node named {0:?} already exists in the test cluster")]
    NodeExists(String),
    /// A label selector did not parse.
    #[error("invalid label selector")]
    Selector(#[source] SelectorError),
    /// The builder's settings are not usable (e.g. an unparsable quantity).
    #[error("invalid test cluster configuration")]
    Node(#[from] kube_node::Error),
    /// The cluster's temporary directory could not be created.
    #[error("creating the test cluster's directory")]
    Io(#[from] std::io::Error),
    /// A store call failed.
    #[error("store call failed")]
    Store(#[from] StoreError),
    /// A component of the cluster failed, or did not stop in time.
    #[error("the cluster's components failed")]
    Orchestrator(#[from] OrchestratorError),
    /// An object did not decode as the type asked for.
    #[error("an object did not decode as its kind")]
    Decode(#[source] serde_json::Error),
}

/// `Result` with [`HarnessError`].
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
