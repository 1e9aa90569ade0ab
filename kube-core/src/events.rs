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
//! [`EventRecorder::record_detached`] does not even wait for the store (a node agent starting
//! containers records its `Created` and `Started` without slowing the start down).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::object::now;
use crate::store::Store;
use crate::typed::{Api, Resource};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use tokio::time::Instant;

/// How many similar events (different messages) before they are combined.
pub const AGGREGATE_AFTER: usize = 10;
/// The window in which similar events are counted.
pub const AGGREGATE_WINDOW: Duration = Duration::from_secs(600);
/// Most remembered events; beyond it the memory is reset (events then start new objects).
const CACHE_LIMIT: usize = 4096;
/// Most events waiting to be written by [`EventRecorder::record_detached`].
const QUEUE_LIMIT: usize = 1024;

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
    /// Exact event → the Event object last written for it. Updates are written from this,
    /// without reading the Event back: a node agent may create and update Events, not read
    /// them (as in Kubernetes' node authorizer).
    events: HashMap<ExactKey, Event>,
    /// Similar events (object, type, reason) → when each distinct message was seen.
    similar: HashMap<SimilarKey, Vec<(Instant, String)>>,
}

/// An event recorded by [`EventRecorder::record_detached`], not written yet.
#[derive(Debug)]
struct Pending {
    regarding: ObjectReference,
    type_: EventType,
    reason: String,
    message: String,
    at: Time,
}

/// Events waiting to be written, and whether a task is writing them.
#[derive(Debug, Default)]
struct Queue {
    events: VecDeque<Pending>,
    writing: bool,
}

/// Records Events for one component (e.g. `deployment-controller`). Cheap to clone; clones
/// share the deduplication memory.
#[derive(Debug, Clone)]
pub struct EventRecorder {
    component: String,
    host: Option<String>,
    memory: Arc<Mutex<Memory>>,
    queue: Arc<Mutex<Queue>>,
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
            host: None,
            memory: Arc::default(),
            queue: Arc::default(),
        }
    }

    /// Names the node the component runs on as the Events' `source.host` (as the kubelet's
    /// Events do).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Records an event about `object` in a task of its own, returning at once. Events about
    /// one object are written in the order they were recorded.
    pub fn record_detached<K: Resource>(
        &self,
        store: &Arc<dyn Store>,
        object: &K,
        type_: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        let event = Pending {
            regarding: reference(object),
            type_,
            reason: reason.to_string(),
            message: message.into(),
            at: now(),
        };
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.events.len() >= QUEUE_LIMIT {
            // The store is unreachable or far behind: an Event is a courtesy, memory is not.
            tracing::debug!(component = %self.component, reason, "event queue full; event dropped");
            return;
        }
        queue.events.push_back(event);
        if queue.writing {
            // The task already writing drains the queue, this event included.
            return;
        }
        queue.writing = true;
        drop(queue);
        let (recorder, store) = (self.clone(), store.clone());
        tokio::spawn(async move { recorder.drain(&store).await });
    }

    /// Writes queued events until the queue is empty.
    async fn drain(&self, store: &Arc<dyn Store>) {
        loop {
            let next = {
                let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                let next = queue.events.pop_front();
                if next.is_none() {
                    queue.writing = false;
                }
                next
            };
            let Some(e) = next else { return };
            self.write_logged(store, e.regarding, e.type_, &e.reason, e.message, e.at)
                .await;
        }
    }

    /// [`Self::write`], with a failure logged instead of returned: recording never fails the
    /// caller's work.
    async fn write_logged(
        &self,
        store: &Arc<dyn Store>,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        message: String,
        stamp: Time,
    ) {
        if let Err(e) = self
            .write(store, regarding, type_, reason, message, stamp)
            .await
        {
            tracing::warn!(component = %self.component, reason, error = %e, "recording event failed");
        }
    }

    /// Records an event about the object `regarding` names (for objects at hand only in
    /// dynamic form: see [`DynamicObject::object_reference`](crate::object::DynamicObject::object_reference)).
    pub async fn record_reference(
        &self,
        store: &Arc<dyn Store>,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.write_logged(store, regarding, type_, reason, message.into(), now())
            .await;
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
        self.record_reference(store, reference(object), type_, reason, message)
            .await;
    }

    /// Decides the message (aggregated or not) and whether an Event already exists for it.
    fn plan(
        &self,
        object: &str,
        type_: EventType,
        reason: &str,
        message: String,
    ) -> (String, Option<Event>, ExactKey) {
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
        stamp: Time,
    ) -> Result<(), crate::store::StoreError> {
        let object_id = format!(
            "{}/{}/{}/{}",
            regarding.kind.as_deref().unwrap_or(""),
            regarding.namespace.as_deref().unwrap_or(""),
            regarding.name.as_deref().unwrap_or(""),
            regarding.uid.as_deref().unwrap_or("")
        );
        let (message, existing, key) = self.plan(&object_id, type_, reason, message);
        if let Some(mut event) = existing {
            let namespace = event.metadata.namespace.clone().unwrap_or_default();
            let events: Api<Event> = Api::namespaced(store.clone(), &namespace);
            event.count = Some(event.count.unwrap_or(1).saturating_add(1));
            event.last_timestamp = Some(stamp.clone());
            event.message = Some(message.clone());
            // Unconditional: this recorder is the Event's only writer.
            event.metadata.resource_version = None;
            match events.replace(&event).await {
                Ok(updated) => {
                    self.remember(key, updated);
                    return Ok(());
                }
                // Deleted meanwhile (e.g. expired): record afresh below.
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let event = Event {
            metadata: ObjectMeta {
                // Kubernetes' naming: the object's name and the time in hex nanoseconds, so
                // that Events listed by name (and tied on their timestamps, which have whole
                // seconds) come in the order they happened.
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or("object"),
                    stamp.0.as_nanosecond()
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
                host: self.host.clone(),
            }),
            reporting_instance: self.host.clone(),
            reporting_component: Some(self.component.clone()),
            ..Event::default()
        };
        let events: Api<Event> = Api::namespaced(store.clone(), &namespace);
        let created = match events.create(&event).await {
            Err(e) if e.is_already_exists() => {
                // Two events about one object in the same nanosecond: let the store name it.
                let mut event = event;
                event.metadata.generate_name = event.metadata.name.take().map(|n| n + ".");
                events.create(&event).await?
            }
            other => other?,
        };
        self.remember(key, created);
        Ok(())
    }

    fn remember(&self, key: ExactKey, event: Event) {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .events
            .insert(key, event);
    }
}
