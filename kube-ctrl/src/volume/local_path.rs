//! [`LocalPathProvisioner`]: k3s's `rancher.io/local-path` provisioner — a directory per
//! volume on the node its first pod was scheduled to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{DEFAULT_CLASS, ProvisionError, Provisioner};

/// The provisioner name StorageClasses use.
pub const LOCAL_PATH_PROVISIONER: &str = "rancher.io/local-path";

/// The node label a local volume's node affinity requires.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// k3s's local-path provisioner: each volume is the directory
/// `<root>/pvc-<claim uid>_<namespace>_<claim name>` on the selected node, served as a
/// `hostPath` volume of type `DirectoryOrCreate` with node affinity for that node
/// (`kubernetes.io/hostname`). The root is per node (k3s's `nodePathMap`), with a default for
/// nodes not listed.
///
/// Where the directory is made: the node agent creates it when it first mounts the volume
/// (`DirectoryOrCreate`), since it runs where the node's filesystem is. Where it is removed:
/// the provisioner removes it when a released volume with reclaim policy `Delete` is deleted
/// ([`Provisioner::delete`]), which assumes the provisioner shares the node's filesystem (one
/// host, as in-process clusters; k3s runs a helper pod on the node instead). A directory not
/// under a configured root is never removed.
///
/// Volume binding must wait for the first consumer (k3s's class does): without a selected node
/// provisioning fails with k3s's "configuration error, no node was specified".
///
/// ```
/// use std::sync::Arc;
/// use kube_ctrl::ControllerManager;
/// use kube_ctrl::volume::{LocalPathProvisioner, with_provisioner};
/// let provisioner = LocalPathProvisioner::new("/var/lib/kube-parts/storage")
///     .node_root("node-2", "/mnt/disk/storage");
/// let manager = with_provisioner(ControllerManager::new(), Arc::new(provisioner));
/// assert!(format!("{manager:?}").contains("provisioner/rancher.io/local-path"));
/// ```
#[derive(Debug, Clone)]
pub struct LocalPathProvisioner {
    default_root: PathBuf,
    node_roots: BTreeMap<String, PathBuf>,
}

impl LocalPathProvisioner {
    /// A provisioner whose volumes go under `root` on every node.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            default_root: root.into(),
            node_roots: BTreeMap::new(),
        }
    }

    /// Volumes on `node` go under `root` instead.
    pub fn node_root(mut self, node: impl Into<String>, root: impl Into<PathBuf>) -> Self {
        self.node_roots.insert(node.into(), root.into());
        self
    }

    /// The root directory on `node`.
    pub fn root_for(&self, node: &str) -> &Path {
        self.node_roots.get(node).unwrap_or(&self.default_root)
    }

    /// Whether `path` is a volume directory under one of the roots.
    fn owns(&self, path: &Path) -> bool {
        let named = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("pvc-") && !n.contains('/'));
        let parent = path.parent();
        named
            && std::iter::once(&self.default_root)
                .chain(self.node_roots.values())
                .any(|root| parent == Some(root.as_path()))
    }
}

/// k3s's default StorageClass for this provisioner: `local-path`, the default class
/// (`storageclass.kubernetes.io/is-default-class: "true"`), `WaitForFirstConsumer`, reclaim
/// policy `Delete`.
pub fn local_path_storage_class() -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some("local-path".into()),
            annotations: Some([(DEFAULT_CLASS.to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        provisioner: LOCAL_PATH_PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..Default::default()
    }
}

impl Provisioner for LocalPathProvisioner {
    fn name(&self) -> &str {
        LOCAL_PATH_PROVISIONER
    }

    fn provision(
        &self,
        name: &str,
        claim: &PersistentVolumeClaim,
        _class: &StorageClass,
        node: Option<&str>,
    ) -> Result<PersistentVolume, ProvisionError> {
        let Some(node) = node else {
            return Err("configuration error, no node was specified".into());
        };
        let folder = format!(
            "{name}_{}_{}",
            claim.metadata.namespace.as_deref().unwrap_or_default(),
            claim.metadata.name.as_deref().unwrap_or_default()
        );
        if folder.contains('/') || folder.contains("..") {
            return Err(format!("invalid volume directory name {folder:?}").into());
        }
        let path = self.root_for(node).join(folder);
        Ok(PersistentVolume {
            metadata: ObjectMeta::default(),
            spec: Some(PersistentVolumeSpec {
                host_path: Some(HostPathVolumeSource {
                    path: path.to_string_lossy().into_owned(),
                    type_: Some("DirectoryOrCreate".into()),
                }),
                node_affinity: Some(VolumeNodeAffinity {
                    required: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: HOSTNAME_LABEL.into(),
                                operator: "In".into(),
                                values: Some(vec![node.to_string()]),
                            }]),
                            match_fields: None,
                        }],
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        })
    }

    fn delete(&self, volume: &PersistentVolume) -> Result<(), ProvisionError> {
        let Some(path) = volume
            .spec
            .as_ref()
            .and_then(|s| s.host_path.as_ref().map(|h| h.path.clone()))
        else {
            return Ok(());
        };
        let path = PathBuf::from(path);
        if !self.owns(&path) {
            tracing::warn!(path = %path.display(), "not removing a directory outside the local-path roots");
            return Ok(());
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {}: {e}", path.display()).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_directories_on_the_selected_node() {
        let p = LocalPathProvisioner::new("/srv/a").node_root("n2", "/srv/b");
        let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "data", "namespace": "web", "uid": "u1"}}))
        .expect("claim");
        let class = local_path_storage_class();
        let v = p
            .provision("pvc-u1", &claim, &class, Some("n2"))
            .expect("volume");
        let spec = v.spec.expect("spec");
        assert_eq!(
            spec.host_path.expect("hostPath").path,
            "/srv/b/pvc-u1_web_data"
        );
        let term = &spec
            .node_affinity
            .expect("affinity")
            .required
            .expect("required")
            .node_selector_terms[0];
        assert_eq!(
            term.match_expressions.as_ref().expect("exprs")[0].values,
            Some(vec!["n2".to_string()])
        );
        assert!(p.provision("pvc-u1", &claim, &class, None).is_err());
        assert!(p.owns(Path::new("/srv/a/pvc-u1_web_data")));
        assert!(!p.owns(Path::new("/etc/pvc-x")));
        assert!(!p.owns(Path::new("/srv/a/etc")));
    }
}
