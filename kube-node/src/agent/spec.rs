//! Translates a pod and its spec containers into runtime sandbox and container configs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube_core::quantity::{parse_bytes, parse_millicores};
use kube_core::runtime::{
    ContainerConfig, ContainerResources, Mount, PodSandboxConfig, PodSandboxMetadata, PortMapping,
};

use super::labels;

/// Identity labels of a pod's sandbox (and, with the container name, of its containers).
pub(crate) fn pod_labels(pod: &Pod, node: &str) -> BTreeMap<String, String> {
    let meta = &pod.metadata;
    [
        (labels::POD_NAME, meta.name.clone().unwrap_or_default()),
        (
            labels::POD_NAMESPACE,
            meta.namespace.clone().unwrap_or_default(),
        ),
        (labels::POD_UID, meta.uid.clone().unwrap_or_default()),
        (labels::NODE_NAME, node.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The sandbox for attempt `attempt` of `pod`.
pub(crate) fn sandbox_config(pod: &Pod, node: &str, attempt: u32) -> PodSandboxConfig {
    let meta = &pod.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let hostname = super::dns::hostname(pod);
    PodSandboxConfig {
        metadata: PodSandboxMetadata {
            name,
            namespace: meta.namespace.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            attempt,
        },
        hostname,
        labels: pod_labels(pod, node),
        annotations: meta.annotations.clone().unwrap_or_default(),
        host_network: pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false),
        port_mappings: port_mappings(pod),
    }
}

/// The `hostPort`s of every container (init containers' too, as the kubelet), for the
/// runtime to publish on the node.
fn port_mappings(pod: &Pod) -> Vec<PortMapping> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let host_port = u16::try_from(p.host_port?).ok().filter(|h| *h > 0)?;
            Some(PortMapping {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                container_port: u16::try_from(p.container_port).ok()?,
                host_port,
                host_ip: p.host_ip.clone().unwrap_or_default(),
            })
        })
        .collect()
}

/// Facts a container's environment can refer to with `valueFrom.fieldRef`, the ConfigMaps and
/// Secrets it may read, and the pod's prepared volumes.
#[derive(Debug)]
pub(crate) struct PodFacts<'a> {
    pub(crate) pod: &'a Pod,
    pub(crate) node_name: &'a str,
    pub(crate) host_ip: &'a str,
    pub(crate) pod_ip: Option<&'a str>,
    pub(crate) sources: &'a Sources,
    /// Host directory of each volume, by volume name.
    pub(crate) volumes: &'a HashMap<String, PathBuf>,
    /// Why the volumes could not be prepared, if they could not.
    pub(crate) volume_error: Option<&'a str>,
    /// Mounts every container gets unless it mounts something at the same path itself: the
    /// pod's `/etc/resolv.conf` and `/etc/hosts`.
    pub(crate) pod_mounts: &'a [Mount],
}

/// The data of the ConfigMaps and Secrets a pod refers to, by name (`None`: not found).
#[derive(Debug, Default)]
pub(crate) struct Sources {
    pub(crate) config_maps: HashMap<String, Option<BTreeMap<String, String>>>,
    pub(crate) secrets: HashMap<String, Option<BTreeMap<String, String>>>,
}

impl Sources {
    /// One key of a ConfigMap (`secret` false) or Secret; `Err` says what is missing.
    fn key(&self, secret: bool, name: &str, key: &str) -> Result<Option<&String>, String> {
        let (map, kind) = if secret {
            (&self.secrets, "secret")
        } else {
            (&self.config_maps, "configmap")
        };
        match map.get(name).and_then(Option::as_ref) {
            None => Err(format!("{kind} \"{name}\" not found")),
            Some(data) => Ok(data.get(key)),
        }
    }

    /// All data of a ConfigMap or Secret.
    pub(crate) fn data(&self, secret: bool, name: &str) -> Option<&BTreeMap<String, String>> {
        let map = if secret {
            &self.secrets
        } else {
            &self.config_maps
        };
        map.get(name).and_then(Option::as_ref)
    }
}

/// The ConfigMaps and Secrets `pod` refers to (env, envFrom, volumes), by name.
pub(crate) fn referenced(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut cms, mut secrets) = (BTreeSet::new(), BTreeSet::new());
    let Some(spec) = &pod.spec else {
        return (cms, secrets);
    };
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    for c in containers {
        for var in c.env.iter().flatten() {
            let from = var.value_from.as_ref();
            if let Some(r) = from.and_then(|f| f.config_map_key_ref.as_ref()) {
                cms.insert(r.name.clone());
            }
            if let Some(r) = from.and_then(|f| f.secret_key_ref.as_ref()) {
                secrets.insert(r.name.clone());
            }
        }
        for from in c.env_from.iter().flatten() {
            if let Some(r) = &from.config_map_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &from.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            cms.insert(cm.name.clone());
        }
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.insert(name);
        }
        let projected = v.projected.as_ref().and_then(|p| p.sources.as_ref());
        for source in projected.into_iter().flatten() {
            if let Some(cm) = &source.config_map {
                cms.insert(cm.name.clone());
            }
            if let Some(secret) = &source.secret {
                secrets.insert(secret.name.clone());
            }
        }
    }
    (cms, secrets)
}

impl PodFacts<'_> {
    fn field(&self, path: &str) -> Option<String> {
        let meta = &self.pod.metadata;
        let spec = self.pod.spec.as_ref();
        match path {
            "metadata.name" => meta.name.clone(),
            "metadata.namespace" => meta.namespace.clone(),
            "metadata.uid" => meta.uid.clone(),
            "spec.nodeName" => Some(self.node_name.to_string()),
            "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
            "status.hostIP" => Some(self.host_ip.to_string()),
            "status.podIP" => self.pod_ip.map(str::to_string),
            _ => {
                let (map, key) = path.strip_suffix("']")?.split_once("['")?;
                match map {
                    "metadata.labels" => meta.labels.as_ref()?.get(key).cloned(),
                    "metadata.annotations" => meta.annotations.as_ref()?.get(key).cloned(),
                    _ => None,
                }
            }
        }
    }
}

/// Expands `$(VAR)` references like the kubelet: defined variables are substituted, undefined
/// references stay as written, and `$$` is a literal `$`.
pub(crate) fn expand(input: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match vars.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The value of a `resourceFieldRef` (`limits.cpu`, `requests.memory`, …) in units of the
/// divisor (default 1; CPU rounds up, as in Kubernetes).
fn resource_field(c: &Container, resource: &str, divisor: Option<&str>) -> Option<String> {
    let (which, name) = resource.split_once('.')?;
    let r = c.resources.as_ref()?;
    let list = match which {
        "limits" => r.limits.as_ref(),
        "requests" => r.requests.as_ref(),
        _ => None,
    }?;
    let q = &list.get(name)?.0;
    if name == "cpu" {
        let milli = parse_millicores(q).ok()?;
        let per = divisor.map_or(Ok(1000), parse_millicores).ok()?.max(1);
        Some(((milli + per - 1) / per).to_string())
    } else {
        let bytes = parse_bytes(q).ok()?;
        let per = divisor.map_or(Ok(1), parse_bytes).ok()?.max(1);
        Some(((bytes + per - 1) / per).to_string())
    }
}

/// The runtime config for attempt `attempt` of spec container `c`, whose environment starts
/// with `service_env` (`<SVC>_SERVICE_HOST` and the rest, [`super::service_env`]); `Err`
/// names a missing ConfigMap, Secret, key or volume (the kubelet's
/// `CreateContainerConfigError`).
pub(crate) fn container_config(
    facts: &PodFacts<'_>,
    c: &Container,
    attempt: u32,
    service_env: &[(String, String)],
) -> Result<ContainerConfig, String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut vars = HashMap::new();
    fn set(
        env: &mut Vec<(String, String)>,
        vars: &mut HashMap<String, String>,
        name: &str,
        value: String,
    ) {
        vars.insert(name.to_string(), value.clone());
        match env.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => env.push((name.to_string(), value)),
        }
    }
    // Service variables first: the container's own envFrom and env override them, and its
    // `$(VAR)` references may name them, as in the kubelet.
    for (name, value) in service_env {
        set(&mut env, &mut vars, name, value.clone());
    }
    // envFrom next; `env` entries override them, as in the kubelet.
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        let (secret, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(r), _) => (false, &r.name, r.optional.unwrap_or(false)),
            (None, Some(r)) => (true, &r.name, r.optional.unwrap_or(false)),
            (None, None) => continue,
        };
        match facts.sources.data(secret, name) {
            Some(data) => {
                for (k, v) in data {
                    set(&mut env, &mut vars, &format!("{prefix}{k}"), v.clone());
                }
            }
            None if optional => {}
            None => {
                let kind = if secret { "secret" } else { "configmap" };
                return Err(format!("{kind} \"{name}\" not found"));
            }
        }
    }
    for var in c.env.iter().flatten() {
        let from = var.value_from.as_ref();
        let value = if let Some(value) = &var.value {
            Some(expand(value, &vars))
        } else if let Some(field) = from.and_then(|v| v.field_ref.as_ref()) {
            facts.field(&field.field_path)
        } else if let Some(r) = from.and_then(|v| v.config_map_key_ref.as_ref()) {
            let optional = r.optional.unwrap_or(false);
            match facts.sources.key(false, &r.name, &r.key) {
                Ok(Some(v)) => Some(v.clone()),
                Ok(None) | Err(_) if optional => None,
                Ok(None) => {
                    return Err(format!(
                        "couldn't find key {} in ConfigMap {}",
                        r.key, r.name
                    ));
                }
                Err(e) => return Err(e),
            }
        } else if let Some(r) = from.and_then(|v| v.secret_key_ref.as_ref()) {
            let optional = r.optional.unwrap_or(false);
            match facts.sources.key(true, &r.name, &r.key) {
                Ok(Some(v)) => Some(v.clone()),
                Ok(None) | Err(_) if optional => None,
                Ok(None) => {
                    return Err(format!("couldn't find key {} in Secret {}", r.key, r.name));
                }
                Err(e) => return Err(e),
            }
        } else if let Some(r) = from.and_then(|v| v.resource_field_ref.as_ref()) {
            resource_field(c, &r.resource, r.divisor.as_ref().map(|d| d.0.as_str()))
        } else {
            None
        };
        if let Some(value) = value {
            set(&mut env, &mut vars, &var.name, value);
        }
    }
    let expand_all = |words: &Option<Vec<String>>| -> Vec<String> {
        words.iter().flatten().map(|w| expand(w, &vars)).collect()
    };
    let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    let limit = |name: &str, parse: fn(&str) -> Result<i64, _>| {
        limits
            .and_then(|l| l.get(name))
            .and_then(|q| parse(&q.0).ok())
    };
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let dir = facts
            .volumes
            .get(&m.name)
            .ok_or_else(|| format!("volume {:?} is not defined or not supported", m.name))?;
        let host_path = match m.sub_path.as_deref().filter(|p| !p.is_empty()) {
            // Relative and without `..`, so it stays inside the volume.
            Some(sub) if sub.starts_with('/') || sub.split('/').any(|p| p == "..") => {
                return Err(format!("invalid subPath {sub:?}"));
            }
            Some(sub) => dir.join(sub),
            None => dir.clone(),
        };
        mounts.push(Mount {
            host_path,
            container_path: m.mount_path.clone(),
            read_only: m.read_only.unwrap_or(false),
        });
    }
    // As the kubelet (for /etc/hosts) and containerd (for /etc/resolv.conf): a container's
    // own mount at the path wins.
    let own = mounts.len();
    for m in facts.pod_mounts {
        if !mounts[..own]
            .iter()
            .any(|o| o.container_path == m.container_path)
        {
            mounts.push(m.clone());
        }
    }
    let mut labels = pod_labels(facts.pod, facts.node_name);
    labels.insert(labels::CONTAINER_NAME.to_string(), c.name.clone());
    Ok(ContainerConfig {
        name: c.name.clone(),
        attempt,
        image: c.image.clone().unwrap_or_default(),
        command: expand_all(&c.command),
        args: expand_all(&c.args),
        env,
        working_dir: c.working_dir.clone().filter(|d| !d.is_empty()),
        labels,
        resources: ContainerResources {
            cpu_limit_milli: limit("cpu", parse_millicores),
            memory_limit_bytes: limit("memory", parse_bytes),
        },
        mounts,
        run_as_user: security(facts.pod, c, |s| s.run_as_user, |s| s.run_as_user),
        run_as_group: security(facts.pod, c, |s| s.run_as_group, |s| s.run_as_group),
    })
}

/// A `securityContext` setting: the container's, else the pod's (as the kubelet merges them).
pub(crate) fn security<T>(
    pod: &Pod,
    c: &Container,
    field: impl Fn(&k8s_openapi::api::core::v1::SecurityContext) -> Option<T>,
    pod_field: impl Fn(&k8s_openapi::api::core::v1::PodSecurityContext) -> Option<T>,
) -> Option<T> {
    c.security_context.as_ref().and_then(&field).or_else(|| {
        pod.spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(&pod_field)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_the_kubelet() {
        let vars: HashMap<String, String> = [("A".to_string(), "x".to_string())].into();
        assert_eq!(expand("$(A)-$(B)-$$(A)-$-$", &vars), "x-$(B)-$(A)-$-$");
        assert_eq!(expand("$(A", &vars), "$(A");
    }

    #[test]
    fn env_values_and_field_refs_are_resolved() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"containers": [{
                "name": "c", "image": "busybox",
                "command": ["sh", "-c"], "args": ["echo $(GREETING) $(POD)"],
                "env": [
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "GREETING", "value": "hi-$(POD)"}
                ],
                "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}
            }]}
        }))
        .unwrap();
        let sources = Sources::default();
        let volumes = HashMap::new();
        let facts = PodFacts {
            pod: &pod,
            node_name: "n1",
            host_ip: "10.0.0.1",
            pod_ip: Some("10.88.0.2"),
            sources: &sources,
            volumes: &volumes,
            volume_error: None,
            pod_mounts: &[],
        };
        let spec = pod.spec.as_ref().unwrap();
        let config = container_config(&facts, &spec.containers[0], 2, &[]).unwrap();
        assert_eq!(
            config.env,
            vec![
                ("POD".to_string(), "p".to_string()),
                ("APP".to_string(), "web".to_string()),
                ("GREETING".to_string(), "hi-p".to_string()),
            ]
        );
        assert_eq!(config.args, vec!["echo hi-p p"]);
        assert_eq!(config.attempt, 2);
        assert_eq!(config.resources.cpu_limit_milli, Some(500));
        assert_eq!(config.resources.memory_limit_bytes, Some(64 << 20));
        assert_eq!(config.labels[labels::CONTAINER_NAME], "c");
        assert_eq!(config.labels[labels::POD_UID], "u1");
    }
}
