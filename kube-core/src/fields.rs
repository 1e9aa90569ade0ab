//! [`Fields`]: an object's own fields (`spec`, `status`, `data`, ...), shared copy-on-write.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The top-level fields of a [`DynamicObject`](crate::object::DynamicObject) other than
/// `apiVersion`, `kind` and `metadata`, as a JSON map that clones share.
///
/// Cloning an object does not copy its `spec` or `status`: the clone shares them until one
/// side changes them, and the first change through [`DerefMut`] (`insert`, `get_mut`,
/// `entry`, `obj["spec"]["x"] = …`) copies the map for that side alone. So a write that
/// changes only metadata (labels, annotations, finalizers, owners) copies only the metadata,
/// and a store's versions of an object share the fields that did not change.
///
/// It dereferences to [`serde_json::Map`], so reading and writing look like a map's:
///
/// ```
/// use kube_core::object::DynamicObject;
/// use serde_json::json;
///
/// let mut pod: DynamicObject = serde_json::from_value(json!({
///     "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
///     "spec": {"containers": [{"name": "app", "image": "nginx"}]}
/// })).unwrap();
/// let copy = pod.clone();
/// assert!(copy.data.shares_with(&pod.data));
///
/// pod.data["spec"]["nodeName"] = json!("n1");
/// assert!(!copy.data.shares_with(&pod.data));
/// assert_eq!(copy.data["spec"].get("nodeName"), None);
/// ```
#[derive(Clone, Default)]
pub struct Fields(Arc<Map<String, Value>>);

impl Fields {
    /// No fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// The map, copied only if another object still shares it.
    pub fn into_map(self) -> Map<String, Value> {
        Arc::unwrap_or_clone(self.0)
    }

    /// Whether `self` and `other` are the same shared map (so equal without comparing).
    pub fn shares_with(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Deref for Fields {
    type Target = Map<String, Value>;

    fn deref(&self) -> &Map<String, Value> {
        &self.0
    }
}

impl DerefMut for Fields {
    /// Copies the map first if another object shares it.
    fn deref_mut(&mut self) -> &mut Map<String, Value> {
        Arc::make_mut(&mut self.0)
    }
}

impl From<Map<String, Value>> for Fields {
    fn from(map: Map<String, Value>) -> Self {
        Self(Arc::new(map))
    }
}

impl From<Fields> for Map<String, Value> {
    fn from(fields: Fields) -> Self {
        fields.into_map()
    }
}

impl FromIterator<(String, Value)> for Fields {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        Self::from(Map::from_iter(iter))
    }
}

impl PartialEq for Fields {
    fn eq(&self, other: &Self) -> bool {
        self.shares_with(other) || *self.0 == *other.0
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Fields {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Map::deserialize(deserializer).map(Self::from)
    }
}
