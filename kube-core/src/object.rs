//! Object identity ([`GroupKind`], [`ObjectKey`], [`ObjectRef`]) and the kind-agnostic
//! [`DynamicObject`] that stores, informers and controllers pass around.

use std::borrow::Cow;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::fields::Fields;

/// A kind within an API group, e.g. `apps/ReplicaSet` or core `Pod` (empty group).
///
/// This is what stores key objects by: the version is a serialization concern.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKind {
    /// API group, empty for the core group.
    pub group: Cow<'static, str>,
    /// Kind in CamelCase, e.g. `Pod`.
    pub kind: Cow<'static, str>,
}

impl GroupKind {
    /// A group kind from static strings (usable in `const`).
    pub const fn from_static(group: &'static str, kind: &'static str) -> Self {
        Self {
            group: Cow::Borrowed(group),
            kind: Cow::Borrowed(kind),
        }
    }

    /// A group kind from owned strings.
    pub fn new(group: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            group: Cow::Owned(group.into()),
            kind: Cow::Owned(kind.into()),
        }
    }

    /// The group kind of a k8s-openapi resource type.
    pub const fn of<K: k8s_openapi::Resource>() -> Self {
        Self::from_static(K::GROUP, K::KIND)
    }

    /// The group kind named by an `apiVersion` and a `kind` (`"apps/v1"`, `"Deployment"`).
    pub fn from_api_version(api_version: &str, kind: &str) -> Self {
        let group = match api_version.split_once('/') {
            Some((group, _version)) => group,
            None => "",
        };
        Self::new(group, kind)
    }

    /// The core/v1 Pod kind.
    pub const POD: Self = Self::from_static("", "Pod");
    /// The core/v1 Node kind.
    pub const NODE: Self = Self::from_static("", "Node");
    /// The core/v1 Service kind.
    pub const SERVICE: Self = Self::from_static("", "Service");
    /// The core/v1 Endpoints kind.
    pub const ENDPOINTS: Self = Self::from_static("", "Endpoints");
    /// The apps/v1 ReplicaSet kind.
    pub const REPLICA_SET: Self = Self::from_static("apps", "ReplicaSet");
}

impl fmt::Display for GroupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.kind)
        } else {
            write!(f, "{}.{}", self.kind, self.group)
        }
    }
}

/// The name of an object within its kind: a namespace (for namespaced kinds) and a name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectKey {
    /// Namespace; `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    /// Object name.
    pub name: String,
}

impl ObjectKey {
    /// The key of a namespaced object.
    pub fn namespaced(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }

    /// The key of a cluster-scoped object.
    pub fn cluster(name: impl Into<String>) -> Self {
        Self {
            namespace: None,
            name: name.into(),
        }
    }

    /// The key of an object from its metadata (empty name if unset).
    pub fn from_meta(meta: &ObjectMeta) -> Self {
        Self {
            namespace: meta.namespace.clone().filter(|ns| !ns.is_empty()),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A reference to one object of one kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The object's kind.
    pub kind: GroupKind,
    /// The object's namespace and name.
    pub key: ObjectKey,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.key)
    }
}

/// An object of any kind: its type, its metadata, and every other field as JSON.
///
/// Serializes to exactly the Kubernetes wire form (`apiVersion`, `kind`, `metadata`, then the
/// kind's own fields such as `spec` and `status`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DynamicObject {
    /// `apiVersion`, e.g. `apps/v1`.
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    /// `kind`, e.g. `ReplicaSet`.
    #[serde(default)]
    pub kind: String,
    /// Standard object metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Every other top-level field (`spec`, `status`, `data`, ...), shared copy-on-write
    /// between clones (see [`Fields`]).
    #[serde(flatten)]
    pub data: Fields,
}

/// Decoded field by field, without `#[serde(flatten)]`: a flattened field makes serde buffer
/// the whole object and decode it twice, and this decode is on every request body, watch event
/// and log record.
impl<'de> Deserialize<'de> for DynamicObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;

        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = DynamicObject;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Kubernetes object (a JSON object)")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<DynamicObject, A::Error> {
                let mut object = DynamicObject::default();
                // Built here, shared once complete: no copy-on-write check per field.
                let mut data = Map::new();
                let mut seen = [false; 3];
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let field = match key.as_ref() {
                        "apiVersion" => 0,
                        "kind" => 1,
                        "metadata" => 2,
                        _ => {
                            // A repeated key keeps its last value, as Kubernetes' decoder does.
                            data.insert(key.into_owned(), map.next_value()?);
                            continue;
                        }
                    };
                    if std::mem::replace(&mut seen[field], true) {
                        return Err(serde::de::Error::duplicate_field(
                            ["apiVersion", "kind", "metadata"][field],
                        ));
                    }
                    match field {
                        0 => object.api_version = map.next_value()?,
                        1 => object.kind = map.next_value()?,
                        _ => object.metadata = map.next_value()?,
                    }
                }
                object.data = data.into();
                Ok(object)
            }
        }

        deserializer.deserialize_map(Fields)
    }
}

impl DynamicObject {
    /// Converts a typed object into its dynamic form.
    pub fn from_typed<K>(object: &K) -> Result<Self, serde_json::Error>
    where
        K: k8s_openapi::Resource + Serialize,
    {
        let mut value = serde_json::to_value(object)?;
        if let Value::Object(map) = &mut value {
            map.insert("apiVersion".into(), Value::from(K::API_VERSION));
            map.insert("kind".into(), Value::from(K::KIND));
        }
        serde_json::from_value(value)
    }

    /// Converts this object into a typed object.
    pub fn to_typed<K: DeserializeOwned>(&self) -> Result<K, serde_json::Error> {
        serde_json::from_value(serde_json::to_value(self)?)
    }

    /// The group and kind named by `apiVersion` and `kind`.
    pub fn group_kind(&self) -> GroupKind {
        GroupKind::from_api_version(&self.api_version, &self.kind)
    }

    /// The object's namespace and name.
    pub fn key(&self) -> ObjectKey {
        ObjectKey::from_meta(&self.metadata)
    }

    /// The object's reference (kind and key).
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            kind: self.group_kind(),
            key: self.key(),
        }
    }

    /// A core/v1 `ObjectReference` to this object (what Events name as `involvedObject`).
    pub fn object_reference(&self) -> k8s_openapi::api::core::v1::ObjectReference {
        k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(self.api_version.clone()),
            kind: Some(self.kind.clone()),
            name: self.metadata.name.clone(),
            namespace: self.metadata.namespace.clone(),
            uid: self.metadata.uid.clone(),
            resource_version: self.metadata.resource_version.clone(),
            field_path: None,
        }
    }

    /// `metadata.resourceVersion` parsed as a store revision, if present and numeric.
    pub fn revision(&self) -> Option<u64> {
        self.metadata.resource_version.as_deref()?.parse().ok()
    }

    /// The owner reference marked `controller: true`, if any.
    pub fn controller_ref(&self) -> Option<&OwnerReference> {
        controller_ref(&self.metadata)
    }

    /// Looks up a field by a dotted path (`spec.nodeName`, `metadata.name`, `status.phase`).
    ///
    /// `metadata.*`, `apiVersion` and `kind` are answered from the typed fields.
    pub fn field(&self, path: &str) -> Option<Value> {
        match path {
            "apiVersion" => return Some(Value::from(self.api_version.clone())),
            "kind" => return Some(Value::from(self.kind.clone())),
            "metadata.name" => return self.metadata.name.clone().map(Value::from),
            "metadata.namespace" => return self.metadata.namespace.clone().map(Value::from),
            _ => {}
        }
        let mut parts = path.split('.');
        let first = parts.next()?;
        if first == "metadata" {
            let metadata = serde_json::to_value(&self.metadata).ok()?;
            return parts
                .try_fold(&metadata, |current, part| current.get(part))
                .cloned();
        }
        // Walk by reference and copy only the answer: field selectors run this for every
        // object a watch or list examines, and a copy of `spec` per call dominated them.
        parts
            .try_fold(self.data.get(first)?, |current, part| current.get(part))
            .cloned()
    }
}

/// The owner reference of `meta` marked `controller: true`, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()?
        .iter()
        .find(|owner| owner.controller == Some(true))
}

/// Builds an owner reference to `owner` with `controller: true` and `blockOwnerDeletion: true`.
pub fn controller_owner_ref<K>(owner: &K) -> Option<OwnerReference>
where
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    let meta = owner.metadata();
    Some(OwnerReference {
        api_version: K::API_VERSION.to_string(),
        kind: K::KIND.to_string(),
        name: meta.name.clone()?,
        uid: meta.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// The current time as a Kubernetes `Time` (what `creationTimestamp`, condition times and
/// container start times hold), in whole seconds.
pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    to_time(std::time::SystemTime::now())
}

/// Converts a `SystemTime` to a Kubernetes `Time`, truncated to whole seconds: that is all the
/// wire format keeps, so a value computed now compares equal to the same value read back.
/// Times before 1970 become the epoch.
pub fn to_time(t: std::time::SystemTime) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(secs).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    #[test]
    fn decodes_the_wire_form_field_by_field() {
        let text = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","namespace":"ns"},"data":{"a":"1"},"immutable":true}"#;
        let object: DynamicObject = serde_json::from_str(text).unwrap();
        assert_eq!(
            (object.api_version.as_str(), object.kind.as_str()),
            ("v1", "ConfigMap")
        );
        assert_eq!(object.key(), ObjectKey::namespaced("ns", "c"));
        assert_eq!(object.data.len(), 2);
        assert_eq!(object.data["immutable"], Value::Bool(true));
        // Same bytes back: the wire form survives a decode and encode.
        let back: Value = serde_json::to_value(&object).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(text).unwrap());
        // Decoding a Value gives the same object as decoding text.
        let from_value: DynamicObject =
            serde_json::from_value(serde_json::from_str(text).unwrap()).unwrap();
        assert_eq!(from_value, object);
        // Missing type fields are empty, as before.
        let bare: DynamicObject = serde_json::from_str(r#"{"spec":{}}"#).unwrap();
        assert!(bare.api_version.is_empty() && bare.kind.is_empty());
        // A repeated type field, a wrongly typed one, or a non-object is an error.
        for bad in [
            r#"{"kind":"Pod","kind":"Node"}"#,
            r#"{"metadata":{"name":7}}"#,
            r#"{"apiVersion":1}"#,
            r#"["not", "an", "object"]"#,
        ] {
            assert!(serde_json::from_str::<DynamicObject>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn typed_round_trip_keeps_wire_form() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], "nodeName": "n1"}
        }))
        .unwrap();
        let dynamic = DynamicObject::from_typed(&pod).unwrap();
        assert_eq!(dynamic.api_version, "v1");
        assert_eq!(dynamic.kind, "Pod");
        assert_eq!(dynamic.key(), ObjectKey::namespaced("ns", "p"));
        assert_eq!(dynamic.field("spec.nodeName"), Some(Value::from("n1")));
        assert_eq!(dynamic.field("metadata.name"), Some(Value::from("p")));
        let back: Pod = dynamic.to_typed().unwrap();
        assert_eq!(back, {
            let mut p = pod.clone();
            p.metadata.namespace = Some("ns".into());
            p
        });
        assert_eq!(GroupKind::of::<Pod>(), GroupKind::POD);
    }

    #[test]
    fn times_truncate_to_seconds_and_round_trip() {
        use std::time::{Duration, UNIX_EPOCH};
        let time = to_time(UNIX_EPOCH + Duration::from_millis(1_700_000_000_750));
        let json = serde_json::to_value(&time).unwrap();
        assert_eq!(json, serde_json::json!("2023-11-14T22:13:20Z"));
        let back: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time =
            serde_json::from_value(json).unwrap();
        assert_eq!(back, time);
    }
}
