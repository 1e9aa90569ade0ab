//! File helpers shared by the runtimes that keep container logs on disk.

use std::path::Path;

use bytes::Bytes;
use kube_core::runtime::{LogOptions, RuntimeError, trim_log};

/// Removes a file; one that is already gone is not an error.
pub(crate) async fn remove_file_if_exists(path: &Path) -> Result<(), RuntimeError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Reads a container's log file, trimmed to `options`; a container that has not started yet
/// has written nothing.
pub(crate) async fn read_log_file(
    path: &Path,
    options: &LogOptions,
) -> Result<Bytes, RuntimeError> {
    match tokio::fs::read(path).await {
        Ok(log) => Ok(trim_log(&log, options)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Bytes::new()),
        Err(e) => Err(e.into()),
    }
}
