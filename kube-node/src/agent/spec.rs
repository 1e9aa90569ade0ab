//! Translates a pod and its spec containers into runtime sandbox and container configs.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube_core::quantity::{parse_bytes, parse_millicores};
use kube_core::runtime::{
    ContainerConfig, ContainerResources, PodSandboxConfig, PodSandboxMetadata,
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
    let hostname = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .unwrap_or_else(|| name.clone());
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
    }
}

/// Facts a container's environment can refer to with `valueFrom.fieldRef`.
#[derive(Debug)]
pub(crate) struct PodFacts<'a> {
    pub(crate) pod: &'a Pod,
    pub(crate) node_name: &'a str,
    pub(crate) host_ip: &'a str,
    pub(crate) pod_ip: Option<&'a str>,
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

/// The runtime config for attempt `attempt` of spec container `c`.
pub(crate) fn container_config(
    facts: &PodFacts<'_>,
    c: &Container,
    attempt: u32,
) -> ContainerConfig {
    let mut env = Vec::new();
    let mut vars = HashMap::new();
    for var in c.env.iter().flatten() {
        let value = if let Some(value) = &var.value {
            Some(expand(value, &vars))
        } else if let Some(field) = var.value_from.as_ref().and_then(|v| v.field_ref.as_ref()) {
            facts.field(&field.field_path)
        } else {
            // ConfigMap, Secret and resource references need objects this agent does not read.
            tracing::debug!(container = %c.name, env = %var.name, "unsupported env source; skipped");
            None
        };
        if let Some(value) = value {
            vars.insert(var.name.clone(), value.clone());
            env.push((var.name.clone(), value));
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
    let mut labels = pod_labels(facts.pod, facts.node_name);
    labels.insert(labels::CONTAINER_NAME.to_string(), c.name.clone());
    ContainerConfig {
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
    }
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
        let facts = PodFacts {
            pod: &pod,
            node_name: "n1",
            host_ip: "10.0.0.1",
            pod_ip: Some("10.88.0.2"),
        };
        let spec = pod.spec.as_ref().unwrap();
        let config = container_config(&facts, &spec.containers[0], 2);
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
