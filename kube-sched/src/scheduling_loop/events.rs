//! Best-effort core/v1 Events about scheduling decisions (`kubectl describe pod` shows them).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_core::object::now;
use kube_core::store::Store;
use kube_core::typed::Api;

/// Event type of a normal occurrence.
pub(crate) const NORMAL: &str = "Normal";
/// Event type of a problem.
pub(crate) const WARNING: &str = "Warning";

/// Records an Event about `pod`. Failures are logged and otherwise ignored: an Event is a
/// courtesy to humans and must never hold up scheduling.
pub(crate) async fn record(
    store: &Arc<dyn Store>,
    component: &str,
    pod: &ObjectMeta,
    type_: &str,
    reason: &str,
    message: String,
) {
    let namespace = pod.namespace.clone().unwrap_or_default();
    let name = pod.name.clone().unwrap_or_default();
    let time = now();
    let event = Event {
        metadata: ObjectMeta {
            // Kubernetes' own naming: the object's name and the time in hex nanoseconds.
            name: Some(format!("{name}.{:x}", time.0.as_nanosecond())),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: Some(namespace.clone()),
            uid: pod.uid.clone(),
            resource_version: pod.resource_version.clone(),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some(type_.into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        reporting_component: Some(component.into()),
        first_timestamp: Some(time.clone()),
        last_timestamp: Some(time.clone()),
        count: Some(1),
        ..Event::default()
    };
    let events: Api<Event> = Api::namespaced(store.clone(), &namespace);
    if let Err(e) = events.create(&event).await {
        tracing::debug!(error = %e, reason, "could not record event");
    }
}
