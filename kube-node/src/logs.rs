//! Container logs by pod and container name, as the API server's `pods/log` asks for them
//! (`container`, `previous`, `tailLines`, `limitBytes`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use kube_core::runtime::{
    ContainerFilter, ContainerState, ContainerStatus, LogOptions, Runtime, RuntimeError, trim_log,
};

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
    node_pod_logs(runtime, None, namespace, name, container, previous, options).await
}

/// [`pod_logs`], among the containers created by the agent of `node` only (all with `None`).
pub(crate) async fn node_pod_logs(
    runtime: &dyn Runtime,
    node: Option<&str>,
    namespace: &str,
    name: &str,
    container: &str,
    previous: bool,
    options: &LogOptions,
) -> Result<Bytes, RuntimeError> {
    let instance = find_instance(runtime, node, namespace, name, container, previous).await?;
    runtime.container_logs(&instance.id, options).await
}

/// The container instance `pods/log` reads: the newest, or the one before it.
pub(crate) async fn find_instance(
    runtime: &dyn Runtime,
    node: Option<&str>,
    namespace: &str,
    name: &str,
    container: &str,
    previous: bool,
) -> Result<ContainerStatus, RuntimeError> {
    let mut instances: Vec<_> = runtime
        .list_containers(&ContainerFilter::default())
        .await?
        .into_iter()
        .filter(|c| {
            let l = &c.labels;
            l.get(labels::POD_NAMESPACE).map(String::as_str) == Some(namespace)
                && l.get(labels::POD_NAME).map(String::as_str) == Some(name)
                && l.get(labels::CONTAINER_NAME).map(String::as_str) == Some(container)
                && node.is_none_or(|n| l.get(labels::NODE_NAME).map(String::as_str) == Some(n))
        })
        .collect();
    // Newest first: the highest attempt, then the latest creation.
    instances.sort_by_key(|c| std::cmp::Reverse((c.attempt, c.created_at)));
    let index = usize::from(previous);
    if index < instances.len() {
        Ok(instances.swap_remove(index))
    } else {
        Err(RuntimeError::NotFound {
            what: "container",
            id: format!(
                "{namespace}/{name}/{container}{}",
                if previous { " (previous)" } else { "" }
            ),
        })
    }
}

/// How often a followed log is re-read.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

#[derive(Debug)]
enum Follow {
    Start,
    Tailing { id: String, seen: usize },
    Done,
}

/// `pods/log?follow=true`: the current container's log (with `options` applied to what is
/// already there), then whatever it writes next, until it exits. Errors end the stream.
pub fn follow_pod_logs(
    runtime: Arc<dyn Runtime>,
    namespace: String,
    name: String,
    container: String,
    options: LogOptions,
) -> BoxStream<'static, Result<Bytes, RuntimeError>> {
    follow_node_pod_logs(runtime, None, namespace, name, container, options)
}

/// [`follow_pod_logs`], among the containers created by the agent of `node` only.
pub(crate) fn follow_node_pod_logs(
    runtime: Arc<dyn Runtime>,
    node: Option<String>,
    namespace: String,
    name: String,
    container: String,
    options: LogOptions,
) -> BoxStream<'static, Result<Bytes, RuntimeError>> {
    let step = move |state: Follow| {
        let runtime = runtime.clone();
        let (namespace, name, container) = (namespace.clone(), name.clone(), container.clone());
        let node = node.clone();
        let options = options.clone();
        async move {
            match state {
                Follow::Done => None,
                Follow::Start => {
                    let first = async {
                        let c = find_instance(
                            &*runtime,
                            node.as_deref(),
                            &namespace,
                            &name,
                            &container,
                            false,
                        )
                        .await?;
                        let full = runtime
                            .container_logs(&c.id, &LogOptions::default())
                            .await?;
                        Ok::<_, RuntimeError>((c.id, trim_log(&full, &options), full.len()))
                    };
                    Some(match first.await {
                        Ok((id, chunk, seen)) => (Ok(chunk), Follow::Tailing { id, seen }),
                        Err(e) => (Err(e), Follow::Done),
                    })
                }
                Follow::Tailing { id, seen } => loop {
                    // Read the state before the log: bytes written before an exit are sent.
                    let exited = match runtime.container_status(&id).await {
                        Ok(s) => s.state == ContainerState::Exited,
                        Err(e) => break Some((Err(e), Follow::Done)),
                    };
                    let full = match runtime.container_logs(&id, &LogOptions::default()).await {
                        Ok(full) => full,
                        Err(e) => break Some((Err(e), Follow::Done)),
                    };
                    if full.len() > seen {
                        let next = if exited {
                            Follow::Done
                        } else {
                            Follow::Tailing {
                                id,
                                seen: full.len(),
                            }
                        };
                        break Some((Ok(full.slice(seen..)), next));
                    }
                    if exited {
                        break None;
                    }
                    tokio::time::sleep(FOLLOW_POLL).await;
                },
            }
        }
    };
    Box::pin(futures::stream::unfold(Follow::Start, step))
}
