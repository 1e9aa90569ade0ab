//! Kubernetes Events about an object: what the controllers, the scheduler and the node
//! lifecycle controller said about it.

use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube_core::typed::Resource;

use super::cluster::TestCluster;
use super::error::{HarnessError, Result};

/// Whether `event` is about `object` (same UID when both have one, else same kind and name).
fn is_about<K: Resource>(event: &Event, object: &K) -> bool {
    let meta = object.metadata();
    let involved = &event.involved_object;
    if let (Some(uid), Some(theirs)) = (meta.uid.as_deref(), involved.uid.as_deref()) {
        return uid == theirs;
    }
    involved.kind.as_deref() == Some(K::KIND)
        && involved.name == meta.name
        && involved.namespace == meta.namespace
}

/// Where Events about `object` live: its namespace, or `default` for cluster-scoped objects.
fn events_namespace<K: Resource>(object: &K) -> String {
    object
        .metadata()
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string())
}

/// Orders events by when they were first seen (then by name, for a stable order).
fn sort(events: &mut [Event]) {
    events.sort_by(|a, b| {
        let first = |e: &Event| {
            e.first_timestamp
                .clone()
                .or_else(|| e.metadata.creation_timestamp.clone())
        };
        first(a)
            .cmp(&first(b))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

impl TestCluster {
    /// The Events recorded about `object` so far, oldest first. Repeated events are counted
    /// in one Event's `count`, as in Kubernetes.
    ///
    /// ```no_run
    /// # async fn demo(cluster: &kube_parts::testing::TestCluster, deployment: &kube_parts::core::api::Deployment) -> Result<(), kube_parts::testing::HarnessError> {
    /// let reasons: Vec<String> = cluster
    ///     .events_for(deployment)
    ///     .await?
    ///     .into_iter()
    ///     .filter_map(|e| e.reason)
    ///     .collect();
    /// assert!(reasons.contains(&"ScalingReplicaSet".to_string()));
    /// # Ok(()) }
    /// ```
    pub async fn events_for<K: Resource>(&self, object: &K) -> Result<Vec<Event>> {
        let list = self
            .api::<Event>(&events_namespace(object))
            .list(&Default::default())
            .await?;
        let mut events: Vec<Event> = list
            .items
            .into_iter()
            .filter(|e| is_about(e, object))
            .collect();
        sort(&mut events);
        Ok(events)
    }

    /// Waits until an Event with `reason` is recorded about `object`, and returns it.
    pub async fn wait_for_event<K: Resource>(
        &self,
        object: &K,
        reason: &str,
        timeout: Duration,
    ) -> Result<Event> {
        let namespace = events_namespace(object);
        let matching = |e: &Event| is_about(e, object) && e.reason.as_deref() == Some(reason);
        let events = self
            .wait_for::<Event>(
                Some(&namespace),
                |events| events.iter().any(matching),
                timeout,
            )
            .await?;
        let mut found: Vec<Event> = events.into_iter().filter(matching).collect();
        sort(&mut found);
        found
            .into_iter()
            .next()
            .ok_or_else(|| HarnessError::Timeout {
                what: format!("a {reason} event"),
                after: timeout,
            })
    }
}
