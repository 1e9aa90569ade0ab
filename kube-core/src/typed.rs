//! [`Api<K>`]: a typed view of one kind over any [`Store`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::object::{DynamicObject, GroupKind, ObjectKey};
use crate::store::{ListOptions, Preconditions, Store, StoreError, WatchEvent, WatchOptions};

/// What a type needs to be used with [`Api`]: a k8s-openapi resource with standard metadata.
pub trait Resource:
    k8s_openapi::Resource
    + k8s_openapi::Metadata<Ty = ObjectMeta>
    + Serialize
    + DeserializeOwned
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<K> Resource for K where
    K: k8s_openapi::Resource
        + k8s_openapi::Metadata<Ty = ObjectMeta>
        + Serialize
        + DeserializeOwned
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// A typed watch event.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<K> {
    /// Created (or started matching).
    Added(K),
    /// Updated.
    Modified(K),
    /// Deleted (or stopped matching).
    Deleted(K),
    /// Progress up to a revision.
    Bookmark(u64),
}

/// Typed list result.
#[derive(Clone, Debug, PartialEq)]
pub struct List<K> {
    /// The objects.
    pub items: Vec<K>,
    /// The revision the list reflects.
    pub resource_version: u64,
}

/// Typed access to one kind, in one namespace or across all, over any [`Store`].
///
/// ```no_run
/// # async fn demo(store: std::sync::Arc<dyn kube_core::store::Store>) -> Result<(), kube_core::store::StoreError> {
/// use kube_core::api::Pod;
/// use kube_core::typed::Api;
/// let pods: Api<Pod> = Api::namespaced(store, "default");
/// let list = pods.list(&Default::default()).await?;
/// println!("{} pods at revision {}", list.items.len(), list.resource_version);
/// # Ok(()) }
/// ```
pub struct Api<K> {
    store: Arc<dyn Store>,
    namespace: Option<String>,
    _kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            namespace: self.namespace.clone(),
            _kind: PhantomData,
        }
    }
}

impl<K> fmt::Debug for Api<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn decode_error(e: serde_json::Error) -> StoreError {
    StoreError::Invalid(format!("object does not decode as its kind: {e}"))
}

/// Applies an RFC 7386 JSON merge patch to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(patch_map) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            if let Value::Object(target_map) = target {
                for (k, v) in patch_map {
                    if v.is_null() {
                        target_map.remove(k);
                    } else {
                        merge_patch(target_map.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl<K: Resource> Api<K> {
    /// Objects in one namespace.
    pub fn namespaced(store: Arc<dyn Store>, namespace: &str) -> Self {
        Self {
            store,
            namespace: Some(namespace.to_string()),
            _kind: PhantomData,
        }
    }

    /// Objects across all namespaces (for listing and watching), or cluster-scoped objects.
    pub fn all(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            namespace: None,
            _kind: PhantomData,
        }
    }

    fn kind() -> GroupKind {
        GroupKind::of::<K>()
    }

    fn key(&self, name: &str) -> ObjectKey {
        ObjectKey {
            namespace: self.namespace.clone(),
            name: name.to_string(),
        }
    }

    fn to_dynamic(&self, object: &K) -> Result<DynamicObject, StoreError> {
        let mut d = DynamicObject::from_typed(object).map_err(decode_error)?;
        if d.metadata.namespace.is_none() {
            d.metadata.namespace = self.namespace.clone();
        }
        Ok(d)
    }

    /// The store this API works on.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Reads one object.
    pub async fn get(&self, name: &str) -> Result<K, StoreError> {
        self.store
            .get(&Self::kind(), &self.key(name))
            .await?
            .to_typed()
            .map_err(decode_error)
    }

    /// Reads one object, `None` if it does not exist.
    pub async fn get_opt(&self, name: &str) -> Result<Option<K>, StoreError> {
        match self.get(name).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists objects.
    pub async fn list(&self, options: &ListOptions) -> Result<List<K>, StoreError> {
        let list = self
            .store
            .list(&Self::kind(), self.namespace.as_deref(), options)
            .await?;
        let items = list
            .items
            .into_iter()
            .map(|o| o.to_typed())
            .collect::<Result<_, _>>()
            .map_err(decode_error)?;
        Ok(List {
            items,
            resource_version: list.resource_version,
        })
    }

    /// Creates an object.
    pub async fn create(&self, object: &K) -> Result<K, StoreError> {
        let d = self.to_dynamic(object)?;
        self.store.create(d).await?.to_typed().map_err(decode_error)
    }

    /// Replaces an object (optimistic concurrency if it carries a `resourceVersion`).
    pub async fn replace(&self, object: &K) -> Result<K, StoreError> {
        let d = self.to_dynamic(object)?;
        self.store.update(d).await?.to_typed().map_err(decode_error)
    }

    /// Applies a JSON merge patch (RFC 7386), retrying on concurrent writes.
    pub async fn patch_merge(&self, name: &str, patch: &Value) -> Result<K, StoreError> {
        let kind = Self::kind();
        let key = self.key(name);
        loop {
            let current = self.store.get(&kind, &key).await?;
            let mut value = serde_json::to_value(&current).map_err(decode_error)?;
            merge_patch(&mut value, patch);
            let mut next: DynamicObject = serde_json::from_value(value).map_err(decode_error)?;
            // The patch applies to the version read; a concurrent write means patch again.
            next.metadata.resource_version = current.metadata.resource_version.clone();
            // Validate it still decodes as K before writing.
            let _: K = next.to_typed().map_err(decode_error)?;
            match self.store.update(next).await {
                Ok(o) => return o.to_typed().map_err(decode_error),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes an object, returning its last state.
    pub async fn delete(&self, name: &str, preconditions: &Preconditions) -> Result<K, StoreError> {
        self.store
            .delete(&Self::kind(), &self.key(name), preconditions)
            .await?
            .to_typed()
            .map_err(decode_error)
    }

    /// Watches changes.
    pub async fn watch(
        &self,
        options: &WatchOptions,
    ) -> Result<
        impl Stream<Item = Result<Event<K>, StoreError>> + Send + 'static + use<K>,
        StoreError,
    > {
        let stream = self
            .store
            .watch(&Self::kind(), self.namespace.as_deref(), options)
            .await?;
        Ok(stream.map(|item| {
            Ok(match item? {
                WatchEvent::Added(o) => Event::Added(o.to_typed().map_err(decode_error)?),
                WatchEvent::Modified(o) => Event::Modified(o.to_typed().map_err(decode_error)?),
                WatchEvent::Deleted(o) => Event::Deleted(o.to_typed().map_err(decode_error)?),
                WatchEvent::Bookmark { resource_version } => Event::Bookmark(resource_version),
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut target = serde_json::json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(
            &mut target,
            &serde_json::json!({"a": "z", "c": {"f": null}}),
        );
        assert_eq!(target, serde_json::json!({"a": "z", "c": {"d": "e"}}));
    }
}
