//! [`SchedError`]: the crate's error type.

/// What can go wrong building a framework or reading objects into it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedError {
    /// A plugin name was registered twice.
    #[error("plugin {0:?} is already registered")]
    DuplicatePlugin(String),
    /// A profile names a plugin the registry does not have.
    #[error("unknown plugin {0:?}")]
    UnknownPlugin(String),
    /// A plugin's arguments were rejected.
    #[error("invalid arguments for plugin {plugin:?}: {message}")]
    InvalidArgs {
        /// The plugin.
        plugin: String,
        /// What is wrong.
        message: String,
    },
    /// Two profiles have the same scheduler name, or none was given.
    #[error("invalid profiles: {0}")]
    InvalidProfiles(String),
    /// No profile serves the pod's `spec.schedulerName`.
    #[error("no profile for scheduler {0:?}")]
    UnknownProfile(String),
    /// The pod cannot be reasoned about (no spec, unparsable quantity or selector).
    #[error("invalid pod: {0}")]
    InvalidPod(String),
    /// Another object (a PodDisruptionBudget, …) cannot be reasoned about.
    #[error("invalid object: {0}")]
    InvalidObject(String),
}

/// The crate's result type.
pub type Result<T, E = SchedError> = std::result::Result<T, E>;
