//! The registry of kinds: for each kind its group, version, plural, short names and scope, from
//! which REST paths derive.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::object::{DynamicObject, GroupKind};

/// Checks that an object's own fields (`spec`, `status`, `data`, ...) decode as the kind's
/// typed form, naming the failing field. (`apiVersion`, `kind` and `metadata` are typed in
/// [`DynamicObject`] already.)
pub type KindValidator = fn(&DynamicObject) -> Result<(), FieldError>;

/// A field that failed to decode: its dotted path and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("field `{path}`: {message}")]
pub struct FieldError {
    /// Dotted path of the field, e.g. `spec.replicas` or `spec.containers[0].ports`.
    pub path: String,
    /// What was wrong with it.
    pub message: String,
}

/// Everything the system knows about one kind.
#[derive(Clone)]
pub struct KindInfo {
    /// API group; empty for the core group.
    pub group: String,
    /// API version within the group, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `ReplicaSet`.
    pub kind: String,
    /// Lower-case plural used in REST paths, e.g. `replicasets`.
    pub plural: String,
    /// Lower-case singular, e.g. `replicaset`.
    pub singular: String,
    /// Short names accepted by clients, e.g. `rs`.
    pub short_names: Vec<String>,
    /// Categories such as `all`.
    pub categories: Vec<String>,
    /// Whether objects of this kind live in a namespace.
    pub namespaced: bool,
    /// Strict decoder into the kind's typed form, if the kind has one.
    pub validator: Option<KindValidator>,
}

impl fmt::Debug for KindInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KindInfo")
            .field("group", &self.group)
            .field("version", &self.version)
            .field("kind", &self.kind)
            .field("plural", &self.plural)
            .field("short_names", &self.short_names)
            .field("namespaced", &self.namespaced)
            .finish_non_exhaustive()
    }
}

impl KindInfo {
    /// A kind with no short names, categories or validator.
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_ascii_lowercase(),
            short_names: Vec::new(),
            categories: Vec::new(),
            namespaced,
            validator: None,
        }
    }

    /// The group and kind.
    pub fn group_kind(&self) -> GroupKind {
        GroupKind::new(self.group.clone(), self.kind.clone())
    }

    /// `apiVersion` as written in objects: `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The REST path of the group version: `/api/v1` or `/apis/apps/v1`.
    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// The REST path of a collection, in a namespace or across all namespaces (`None`).
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => {
                format!(
                    "{}/namespaces/{ns}/{}",
                    self.group_version_path(),
                    self.plural
                )
            }
            _ => format!("{}/{}", self.group_version_path(), self.plural),
        }
    }

    /// The REST path of one object.
    pub fn item_path(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}/{name}", self.collection_path(namespace))
    }
}

/// Registration failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The kind, or its plural within the group, is already registered.
    #[error("kind {0} is already registered")]
    Duplicate(String),
}

/// A set of kinds, looked up by group and kind, by plural, or by short name.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    kinds: Vec<Arc<KindInfo>>,
    by_group_kind: HashMap<GroupKind, usize>,
    by_plural: HashMap<(String, String), usize>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The kinds this project serves (shared, built once).
    pub fn builtin() -> &'static Registry {
        static BUILTIN: OnceLock<Registry> = OnceLock::new();
        BUILTIN.get_or_init(|| {
            let mut registry = Registry::new();
            for info in builtin_kinds() {
                // The builtin table has no duplicates (a unit test checks it).
                let _ = registry.register(info);
            }
            registry
        })
    }

    /// Adds a kind; a kind or plural already present is rejected.
    pub fn register(&mut self, info: KindInfo) -> Result<(), RegistryError> {
        let gk = info.group_kind();
        let plural = (info.group.clone(), info.plural.clone());
        if self.by_group_kind.contains_key(&gk) || self.by_plural.contains_key(&plural) {
            return Err(RegistryError::Duplicate(gk.to_string()));
        }
        let index = self.kinds.len();
        self.kinds.push(Arc::new(info));
        self.by_group_kind.insert(gk, index);
        self.by_plural.insert(plural, index);
        Ok(())
    }

    /// The kind with this group and kind.
    pub fn get(&self, kind: &GroupKind) -> Option<&Arc<KindInfo>> {
        self.by_group_kind.get(kind).map(|&i| &self.kinds[i])
    }

    /// The kind with this plural in this group (as in REST paths).
    pub fn by_plural(&self, group: &str, plural: &str) -> Option<&Arc<KindInfo>> {
        self.by_plural
            .get(&(group.to_string(), plural.to_string()))
            .map(|&i| &self.kinds[i])
    }

    /// Resolves what a user types (`po`, `pods`, `pod`, `Pod`, `deployments.apps`).
    pub fn resolve(&self, name: &str) -> Option<&Arc<KindInfo>> {
        let (name, group) = match name.split_once('.') {
            Some((n, g)) => (n, Some(g)),
            None => (name, None),
        };
        self.kinds.iter().find(|k| {
            group.is_none_or(|g| g == k.group)
                && (k.plural == name
                    || k.singular == name
                    || k.kind == name
                    || k.short_names.iter().any(|s| s == name))
        })
    }

    /// Every registered kind, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<KindInfo>> {
        self.kinds.iter()
    }
}

fn validate_as<K: serde::de::DeserializeOwned>(object: &DynamicObject) -> Result<(), FieldError> {
    // Decoded from the object's fields where they are: no JSON copy of the object is made.
    let fields = serde::de::value::MapDeserializer::<_, serde_json::Error>::new(
        object.data.iter().map(|(key, value)| (key.as_str(), value)),
    );
    if K::deserialize(fields).is_ok() {
        return Ok(());
    }
    // Only a failing object pays for tracking where the decoder is.
    let fields = serde::de::value::MapDeserializer::<_, serde_json::Error>::new(
        object.data.iter().map(|(key, value)| (key.as_str(), value)),
    );
    serde_path_to_error::deserialize::<_, K>(fields)
        .map(drop)
        .map_err(|err| FieldError {
            path: err.path().to_string(),
            message: err.inner().to_string(),
        })
}

macro_rules! kinds {
    ($( $ty:ty => $plural:literal, [$($short:literal),*], [$($cat:literal),*] );* $(;)?) => {
        fn builtin_kinds() -> Vec<KindInfo> {
            vec![$({
                use k8s_openapi::Resource as _;
                let namespaced = std::any::TypeId::of::<<$ty as k8s_openapi::Resource>::Scope>()
                    == std::any::TypeId::of::<k8s_openapi::NamespaceResourceScope>();
                let mut info = KindInfo::new(
                    <$ty>::GROUP, <$ty>::VERSION, <$ty>::KIND, $plural, namespaced);
                info.short_names = vec![$($short.to_string()),*];
                info.categories = vec![$($cat.to_string()),*];
                info.validator = Some(validate_as::<$ty>);
                info
            }),*]
        }
    };
}

use k8s_openapi::api::{
    apps, batch, coordination, core, discovery, networking, policy, rbac, scheduling, storage,
};

kinds! {
    core::v1::Pod => "pods", ["po"], ["all"];
    core::v1::Node => "nodes", ["no"], [];
    core::v1::Service => "services", ["svc"], ["all"];
    core::v1::Endpoints => "endpoints", ["ep"], [];
    core::v1::Namespace => "namespaces", ["ns"], [];
    core::v1::Event => "events", ["ev"], [];
    core::v1::ConfigMap => "configmaps", ["cm"], [];
    core::v1::Secret => "secrets", [], [];
    core::v1::ServiceAccount => "serviceaccounts", ["sa"], [];
    core::v1::ReplicationController => "replicationcontrollers", ["rc"], ["all"];
    core::v1::PodTemplate => "podtemplates", [], [];
    core::v1::PersistentVolume => "persistentvolumes", ["pv"], [];
    core::v1::PersistentVolumeClaim => "persistentvolumeclaims", ["pvc"], [];
    core::v1::ResourceQuota => "resourcequotas", ["quota"], [];
    core::v1::LimitRange => "limitranges", ["limits"], [];
    apps::v1::ReplicaSet => "replicasets", ["rs"], ["all"];
    apps::v1::Deployment => "deployments", ["deploy"], ["all"];
    apps::v1::DaemonSet => "daemonsets", ["ds"], ["all"];
    apps::v1::StatefulSet => "statefulsets", ["sts"], ["all"];
    apps::v1::ControllerRevision => "controllerrevisions", [], [];
    batch::v1::Job => "jobs", [], ["all"];
    batch::v1::CronJob => "cronjobs", ["cj"], ["all"];
    coordination::v1::Lease => "leases", [], [];
    discovery::v1::EndpointSlice => "endpointslices", [], [];
    networking::v1::NetworkPolicy => "networkpolicies", ["netpol"], [];
    policy::v1::PodDisruptionBudget => "poddisruptionbudgets", ["pdb"], [];
    rbac::v1::Role => "roles", [], [];
    rbac::v1::RoleBinding => "rolebindings", [], [];
    rbac::v1::ClusterRole => "clusterroles", [], [];
    rbac::v1::ClusterRoleBinding => "clusterrolebindings", [], [];
    scheduling::v1::PriorityClass => "priorityclasses", ["pc"], [];
    storage::v1::StorageClass => "storageclasses", ["sc"], [];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_registry_derives_rest_paths() {
        let registry = Registry::builtin();
        assert_eq!(registry.iter().count(), builtin_kinds().len());
        let rs = registry.resolve("rs").unwrap();
        assert_eq!(rs.api_version(), "apps/v1");
        assert_eq!(
            rs.item_path(Some("default"), "web"),
            "/apis/apps/v1/namespaces/default/replicasets/web"
        );
        let node = registry.get(&GroupKind::NODE).unwrap();
        assert!(!node.namespaced);
        assert_eq!(node.collection_path(Some("ignored")), "/api/v1/nodes");
        assert!(registry.get(&GroupKind::POD).unwrap().namespaced);
        assert_eq!(
            registry.resolve("deployments.apps").unwrap().kind,
            "Deployment"
        );
        assert!(
            registry
                .by_plural("rbac.authorization.k8s.io", "clusterroles")
                .is_some()
        );
        let rc = registry.resolve("rc").unwrap();
        assert_eq!(
            rc.item_path(Some("default"), "web"),
            "/api/v1/namespaces/default/replicationcontrollers/web"
        );
        assert!(rc.categories.iter().any(|c| c == "all"));
        assert_eq!(
            registry
                .resolve("cj")
                .unwrap()
                .collection_path(Some("default")),
            "/apis/batch/v1/namespaces/default/cronjobs"
        );
        assert!(registry.resolve("podtemplates").unwrap().namespaced);
    }

    #[test]
    fn duplicates_are_rejected() {
        let mut registry = Registry::new();
        registry
            .register(KindInfo::new(
                "example.com",
                "v1",
                "Widget",
                "widgets",
                true,
            ))
            .unwrap();
        let err = registry
            .register(KindInfo::new(
                "example.com",
                "v2",
                "Widget",
                "widgets",
                true,
            ))
            .unwrap_err();
        assert_eq!(err, RegistryError::Duplicate("Widget.example.com".into()));
    }
}
