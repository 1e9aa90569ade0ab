//! Pod volumes on the node: a directory per volume under `<root>/<pod uid>/volumes/`, filled
//! for configMap, secret, downwardAPI and projected volumes (a projected volume merges its
//! sources' files, the ServiceAccount token among them); emptyDir starts empty; hostPath is
//! used as is (a `DirectoryOrCreate` one made when missing); a persistentVolumeClaim volume is
//! its bound volume's hostPath or local directory ([`super::claims`]). Containers get them as [`Mount`](kube_core::runtime::Mount)s.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod};

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

/// The tokens of a pod's projected volumes, by volume name and file path; a token missing
/// here (no token source) is not written.
pub(crate) type Tokens = HashMap<(String, String), String>;

/// The files of a ConfigMap or Secret as a volume shows them: all keys, or just `items`.
fn selected(
    data: &BTreeMap<String, String>,
    items: Option<&Vec<KeyToPath>>,
) -> BTreeMap<String, String> {
    match items {
        Some(items) => items
            .iter()
            .filter_map(|i| Some((i.path.clone(), data.get(&i.key)?.clone())))
            .collect(),
        None => data.clone(),
    }
}

/// A `metadata.*` field as a downwardAPI volume file holds it; maps are `key="value"` lines,
/// sorted, as the kubelet writes them.
fn downward_field(pod: &Pod, path: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let lines = |map: Option<&BTreeMap<String, String>>| {
        map.into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let value = match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "metadata.labels" => Some(lines(meta.labels.as_ref())),
        "metadata.annotations" => Some(lines(meta.annotations.as_ref())),
        _ => {
            let Some((map, key)) = path.strip_suffix("']").and_then(|p| p.split_once("['")) else {
                return Err(format!(
                    "unsupported fieldPath {path:?} in a downwardAPI volume"
                ));
            };
            match map {
                "metadata.labels" => meta.labels.as_ref().and_then(|l| l.get(key).cloned()),
                "metadata.annotations" => {
                    meta.annotations.as_ref().and_then(|a| a.get(key).cloned())
                }
                _ => {
                    return Err(format!(
                        "unsupported fieldPath {path:?} in a downwardAPI volume"
                    ));
                }
            }
        }
    };
    Ok(value.unwrap_or_default())
}

/// The files of downwardAPI items.
fn downward_files(
    pod: &Pod,
    items: Option<&Vec<DownwardAPIVolumeFile>>,
) -> Result<BTreeMap<String, String>, String> {
    let mut files = BTreeMap::new();
    for item in items.into_iter().flatten() {
        let Some(field) = &item.field_ref else {
            return Err(format!(
                "downwardAPI volume file {:?}: only fieldRef is supported",
                item.path
            ));
        };
        files.insert(item.path.clone(), downward_field(pod, &field.field_path)?);
    }
    Ok(files)
}

/// Prepares the pod's volumes under `pod_dir`; returns each volume's host directory by name.
/// Unsupported volume types are left out (a container mounting one fails to be created).
pub(crate) fn prepare(
    pod_dir: &Path,
    pod: &Pod,
    sources: &Sources,
    tokens: &Tokens,
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
        } else if let Some(downward) = &v.downward_api {
            write_files(&dir, &downward_files(pod, downward.items.as_ref())?, None)?;
        } else if let Some(projected) = &v.projected {
            let mut files = BTreeMap::new();
            for source in projected.sources.iter().flatten() {
                if let Some(cm) = &source.config_map {
                    match sources.data(false, &cm.name) {
                        Some(data) => files.extend(selected(data, cm.items.as_ref())),
                        None if cm.optional.unwrap_or(false) => {}
                        None => return Err(format!("configmap \"{}\" not found", cm.name)),
                    }
                }
                if let Some(secret) = &source.secret {
                    match sources.data(true, &secret.name) {
                        Some(data) => files.extend(selected(data, secret.items.as_ref())),
                        None if secret.optional.unwrap_or(false) => {}
                        None => return Err(format!("secret \"{}\" not found", secret.name)),
                    }
                }
                if let Some(downward) = &source.downward_api {
                    files.extend(downward_files(pod, downward.items.as_ref())?);
                }
                if let Some(token) = &source.service_account_token {
                    let key = (v.name.clone(), token.path.clone());
                    if let Some(token) = tokens.get(&key) {
                        files.insert(key.1, token.clone());
                    }
                }
            }
            write_files(&dir, &files, None)?;
        } else if let Some(host) = &v.host_path {
            out.insert(v.name.clone(), host_dir(&host.path, host.type_.as_deref())?);
            continue;
        } else {
            continue;
        }
        out.insert(v.name.clone(), dir);
    }
    Ok(out)
}

/// A hostPath volume's directory after the kubelet's type check: `DirectoryOrCreate` makes
/// a missing directory (mode 0755, as the kubelet), `Directory` must exist; other types are
/// used as they are.
pub(crate) fn host_dir(path: &str, type_: Option<&str>) -> Result<PathBuf, String> {
    let dir = PathBuf::from(path);
    match type_ {
        Some("DirectoryOrCreate") if !dir.is_dir() => {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{path}: {e}"))?;
        }
        Some("Directory") if !dir.is_dir() => {
            return Err(format!(
                "hostPath type check failed: {path} is not a directory"
            ));
        }
        _ => {}
    }
    Ok(dir)
}

/// Removes a pod's directory (volumes and all); a missing one is fine.
pub(crate) fn remove(pod_dir: &Path) {
    match std::fs::remove_dir_all(pod_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %pod_dir.display(), error = %e, "pod directory not removed"),
    }
}
