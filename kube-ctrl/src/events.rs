//! [`EventRecorder`]: Kubernetes `Event` objects about what controllers did, deduplicated and
//! aggregated as client-go's recorder does.
//!
//! - The same event again (same object, type, reason, message) updates the existing Event's
//!   `count` and `lastTimestamp` instead of creating another.
//! - More than [`AGGREGATE_AFTER`] events with the same object, type and reason but different
//!   messages within [`AGGREGATE_WINDOW`] are folded into one Event whose message starts with
//!   `(combined from similar events): `, so a flapping controller cannot flood the store.
//!
//! Recording never fails a reconcile: store errors are logged and dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_core::object::now;
use kube_core::store::Store;
use kube_core::typed::{Api, Resource};
use tokio::time::Instant;

/// How many similar events (different messages) before they are combined.
pub const AGGREGATE_AFTER: usize = 10;
/// The window in which similar events are counted.
pub const AGGREGATE_WINDOW: Duration = Duration::from_secs(600);
/// Most remembered events; beyond it the memory is reset (events then start new objects).
const CACHE_LIMIT: usize = 4096;

/// `Normal` or `Warning`, as Kubernetes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something may need attention.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::Warning => "Warning",
        }
    }
}

/// Object, type and reason of an event.
type SimilarKey = (String, &'static str, String);
/// Object, type, reason and message of an event.
type ExactKey = (String, &'static str, String, String);

#[derive(Debug, Default)]
struct Memory {
    /// Exact event → the Event object's namespace and name.
    events: HashMap<ExactKey, (String, String)>,
    /// Similar events (object, type, reason) → when each distinct message was seen.
    similar: HashMap<SimilarKey, Vec<(Instant, String)>>,
}

/// Records Events for one component (e.g. `deployment-controller`). Cheap to clone; clones
/// share the deduplication memory.
#[derive(Debug, Clone)]
pub struct EventRecorder {
    component: String,
    memory: Arc<Mutex<Memory>>,
}

fn reference<K: Resource>(object: &K) -> ObjectReference {
    let meta = object.metadata();
    ObjectReference {
        api_version: Some(K::API_VERSION.to_string()),
        kind: Some(K::KIND.to_string()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

impl EventRecorder {
    /// A recorder whose Events name `component` as their source.
    pub fn new(component: impl Into<String>) -> Self {
        Self {
            component: component.into(),
            memory: Arc::default(),
        }
    }

    /// Records an event about `object`.
    pub async fn record<K: Resource>(
        &self,
        store: &Arc<dyn Store>,
        object: &K,
        type_: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        let regarding = reference(object);
        if let Err(e) = self
            .write(store, regarding, type_, reason, message.into())
            .await
        {
            tracing::warn!(component = %self.component, reason, error = %e, "recording event failed");
        }
    }

    /// Decides the message (aggregated or not) and whether an Event already exists for it.
    fn plan(
        &self,
        object: &str,
        type_: EventType,
        reason: &str,
        message: String,
    ) -> (String, Option<(String, String)>, ExactKey) {
        let now = Instant::now();
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        if memory.events.len() > CACHE_LIMIT || memory.similar.len() > CACHE_LIMIT {
            *memory = Memory::default();
        }
        let similar = memory
            .similar
            .entry((object.to_string(), type_.as_str(), reason.to_string()))
            .or_default();
        similar.retain(|(at, _)| now.duration_since(*at) < AGGREGATE_WINDOW);
        if !similar.iter().any(|(_, m)| *m == message) {
            similar.push((now, message.clone()));
        }
        let message = if similar.len() > AGGREGATE_AFTER {
            format!("(combined from similar events): {message}")
        } else {
            message
        };
        // Once aggregating, every similar event lands on one Event object.
        let exact_key = if similar.len() > AGGREGATE_AFTER {
            (
                object.to_string(),
                type_.as_str(),
                reason.to_string(),
                String::new(),
            )
        } else {
            (
                object.to_string(),
                type_.as_str(),
                reason.to_string(),
                message.clone(),
            )
        };
        let existing = memory.events.get(&exact_key).cloned();
        (message, existing, exact_key)
    }

    async fn write(
        &self,
        store: &Arc<dyn Store>,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        message: String,
    ) -> Result<(), kube_core::store::StoreError> {
        let object_id = format!(
            "{}/{}/{}/{}",
            regarding.kind.as_deref().unwrap_or(""),
            regarding.namespace.as_deref().unwrap_or(""),
            regarding.name.as_deref().unwrap_or(""),
            regarding.uid.as_deref().unwrap_or("")
        );
        let (message, existing, key) = self.plan(&object_id, type_, reason, message);
        let stamp = now();
        if let Some((namespace, name)) = existing {
            let events: Api<Event> = Api::namespaced(store.clone(), &namespace);
            // If it was deleted meanwhile (e.g. expired), record afresh below.
            if let Some(mut event) = events.get_opt(&name).await? {
                event.count = Some(event.count.unwrap_or(1).saturating_add(1));
                event.last_timestamp = Some(stamp);
                event.message = Some(message);
                events.replace(&event).await?;
                return Ok(());
            }
        }
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!(
                    "{}.",
                    regarding.name.as_deref().unwrap_or("object")
                )),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: regarding,
            reason: Some(reason.to_string()),
            message: Some(message),
            type_: Some(type_.as_str().to_string()),
            count: Some(1),
            first_timestamp: Some(stamp.clone()),
            last_timestamp: Some(stamp),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            reporting_component: Some(self.component.clone()),
            ..Event::default()
        };
        let events: Api<Event> = Api::namespaced(store.clone(), &namespace);
        let created = events.create(&event).await?;
        let name = created.metadata.name.unwrap_or_default();
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .events
            .insert(key, (namespace, name));
        Ok(())
    }
}
