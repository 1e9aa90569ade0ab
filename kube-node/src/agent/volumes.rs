//! Pod volumes on the node: a directory per volume under `<root>/<pod uid>/volumes/`, filled
//! for configMap and secret volumes; emptyDir starts empty; hostPath is used as is. Containers
//! get them as [`Mount`](kube_core::runtime::Mount)s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{KeyToPath, Pod};

use super::spec::Sources;

/// A file name from a key or item path: relative, no `..` (it must stay in the volume).
fn safe(path: &str) -> Option<&str> {
    let ok = !path.is_empty() && !path.starts_with('/') && !path.split('/').any(|p| p == "..");
    ok.then_some(path)
}

/// Writes the data (all keys, or just `items`) as files in `dir`.
fn write_files(
    dir: &Path,
    data: &std::collections::BTreeMap<String, String>,
    items: Option<&Vec<KeyToPath>>,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let files: Vec<(&String, &str)> = match items {
        Some(items) => items
            .iter()
            .filter_map(|i| Some((data.get(&i.key)?, i.path.as_str())))
            .collect(),
        None => data.iter().map(|(k, v)| (v, k.as_str())).collect(),
    };
    for (value, path) in files {
        let Some(path) = safe(path) else {
            return Err(format!("invalid volume file path {path:?}"));
        };
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        // Volumes are refreshed on every sync while containers read them: unchanged files
        // are left alone, changed ones replaced atomically (write aside, then rename).
        if std::fs::read(&file).is_ok_and(|old| old == value.as_bytes()) {
            continue;
        }
        let aside = file.with_file_name(format!(
            ".{}.tmp",
            file.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        std::fs::write(&aside, value)
            .and_then(|()| std::fs::rename(&aside, &file))
            .map_err(|e| format!("writing {}: {e}", file.display()))?;
    }
    Ok(())
}

/// Prepares the pod's volumes under `pod_dir`; returns each volume's host directory by name.
/// Unsupported volume types are left out (a container mounting one fails to be created).
pub(crate) fn prepare(
    pod_dir: &Path,
    pod: &Pod,
    sources: &Sources,
) -> Result<HashMap<String, PathBuf>, String> {
    let mut out = HashMap::new();
    let Some(spec) = &pod.spec else {
        return Ok(out);
    };
    for v in spec.volumes.iter().flatten() {
        let Some(name) = safe(&v.name) else {
            return Err(format!("invalid volume name {:?}", v.name));
        };
        let dir = pod_dir.join("volumes").join(name);
        if v.empty_dir.is_some() {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        } else if let Some(cm) = &v.config_map {
            match sources.data(false, &cm.name) {
                Some(data) => write_files(&dir, data, cm.items.as_ref())?,
                None if cm.optional.unwrap_or(false) => {
                    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                }
                None => return Err(format!("configmap \"{}\" not found", cm.name)),
            }
        } else if let Some(secret) = &v.secret {
            let secret_name = secret.secret_name.clone().unwrap_or_default();
            match sources.data(true, &secret_name) {
                Some(data) => write_files(&dir, data, secret.items.as_ref())?,
                None if secret.optional.unwrap_or(false) => {
                    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                }
                None => return Err(format!("secret \"{secret_name}\" not found")),
            }
        } else if let Some(host) = &v.host_path {
            out.insert(v.name.clone(), PathBuf::from(&host.path));
            continue;
        } else {
            continue;
        }
        out.insert(v.name.clone(), dir);
    }
    Ok(out)
}

/// Removes a pod's directory (volumes and all); a missing one is fine.
pub(crate) fn remove(pod_dir: &Path) {
    match std::fs::remove_dir_all(pod_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %pod_dir.display(), error = %e, "pod directory not removed"),
    }
}
