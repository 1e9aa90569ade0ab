//! Container logs by pod and container name, as the API server's `pods/log` asks for them
//! (`container`, `previous`, `tailLines`, `limitBytes`).

use bytes::Bytes;
use kube_core::runtime::{ContainerFilter, LogOptions, Runtime, RuntimeError};

use crate::agent::labels;

/// Returns the log of container `container` of pod `namespace/name`: the current instance, or
/// with `previous` the one before it (the instance that last exited and was restarted), found
/// through the identity labels the node agent puts on containers.
///
/// No such container (or no previous instance) is [`RuntimeError::NotFound`].
pub async fn pod_logs(
    runtime: &dyn Runtime,
    namespace: &str,
    name: &str,
    container: &str,
    previous: bool,
    options: &LogOptions,
) -> Result<Bytes, RuntimeError> {
    let mut instances: Vec<_> = runtime
        .list_containers(&ContainerFilter::default())
        .await?
        .into_iter()
        .filter(|c| {
            let l = &c.labels;
            l.get(labels::POD_NAMESPACE).map(String::as_str) == Some(namespace)
                && l.get(labels::POD_NAME).map(String::as_str) == Some(name)
                && l.get(labels::CONTAINER_NAME).map(String::as_str) == Some(container)
        })
        .collect();
    // Newest first: the highest attempt, then the latest creation.
    instances.sort_by_key(|c| std::cmp::Reverse((c.attempt, c.created_at)));
    let index = usize::from(previous);
    let Some(instance) = instances.get(index) else {
        return Err(RuntimeError::NotFound {
            what: "container",
            id: format!(
                "{namespace}/{name}/{container}{}",
                if previous { " (previous)" } else { "" }
            ),
        });
    };
    runtime.container_logs(&instance.id, options).await
}
