//! Service environment variables, as the kubelet sets them (`getServiceEnvVarMap` and
//! `envvars.FromServices`): `<SVC>_SERVICE_HOST`, `<SVC>_SERVICE_PORT[_<NAME>]` and Docker
//! link variables for every Service of the pod's namespace with a ClusterIP (when
//! `enableServiceLinks` is not false), and for the `kubernetes` Service of `default` always,
//! so a pod finds the API server.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube_core::object::GroupKind;
use kube_core::store::{ListOptions, Store, StoreError};

/// The Services whose variables every pod gets, in namespace `default`, whatever its
/// `enableServiceLinks` (the kubelet's "master services").
const MASTER_SERVICES: [&str; 1] = ["kubernetes"];

/// A variable name from a Service or port name: upper case, `-` as `_`.
fn var_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

/// Whether the Service has a virtual IP (not headless, not ExternalName).
fn cluster_ip(service: &Service) -> Option<&str> {
    service
        .spec
        .as_ref()?
        .cluster_ip
        .as_deref()
        .filter(|ip| !ip.is_empty() && *ip != "None")
}

/// `host:port`, bracketing an IPv6 host (Go's `net.JoinHostPort`).
fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The variables of `services` (each with a ClusterIP), in their order.
pub(crate) fn from_services(services: &[Service]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for service in services {
        let Some(ip) = cluster_ip(service) else {
            continue;
        };
        let prefix = var_name(service.metadata.name.as_deref().unwrap_or_default());
        let ports = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_deref())
            .unwrap_or_default();
        out.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        // Validation requires a port; without one the kubelet would have nothing to say.
        let Some(first) = ports.first() else {
            continue;
        };
        let port_var = format!("{prefix}_SERVICE_PORT");
        out.push((port_var.clone(), first.port.to_string()));
        for port in ports {
            if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{port_var}_{}", var_name(name)),
                    port.port.to_string(),
                ));
            }
        }
        // Docker links; the first port is also the plain `<SVC>_PORT`.
        for (i, port) in ports.iter().enumerate() {
            let protocol = port
                .protocol
                .as_deref()
                .filter(|p| !p.is_empty())
                .unwrap_or("TCP");
            let (lower, upper) = (protocol.to_lowercase(), protocol.to_uppercase());
            let url = format!("{lower}://{}", join_host_port(ip, port.port));
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let link = format!("{prefix}_PORT_{}_{upper}", port.port);
            out.push((format!("{link}_PROTO"), lower));
            out.push((format!("{link}_PORT"), port.port.to_string()));
            out.push((format!("{link}_ADDR"), ip.to_string()));
            out.push((link, url));
        }
    }
    out
}

/// The Services whose variables a pod in `namespace` gets, by name: the master services of
/// `default`, then (with `links`) every Service of `namespace`, which wins over a master
/// service of the same name, as in the kubelet.
fn select(namespace: &str, links: bool, defaults: Vec<Service>, own: Vec<Service>) -> Vec<Service> {
    let mut chosen: BTreeMap<String, Service> = BTreeMap::new();
    for service in defaults {
        let name = service.metadata.name.clone().unwrap_or_default();
        if MASTER_SERVICES.contains(&name.as_str()) && cluster_ip(&service).is_some() {
            chosen.insert(name, service);
        }
    }
    if links {
        for service in own {
            if service.metadata.namespace.as_deref() == Some(namespace)
                && cluster_ip(&service).is_some()
            {
                chosen.insert(service.metadata.name.clone().unwrap_or_default(), service);
            }
        }
    }
    chosen.into_values().collect()
}

async fn services_in(store: &dyn Store, namespace: &str) -> Result<Vec<Service>, StoreError> {
    let list = store
        .list(
            &GroupKind::SERVICE,
            Some(namespace),
            &ListOptions::default(),
        )
        .await?;
    // A Service that does not decode has no variables to give.
    Ok(list
        .items
        .iter()
        .filter_map(|o| o.to_typed::<Service>().ok())
        .collect())
}

/// The service variables of `pod`, read from `store`.
pub(crate) async fn load(
    store: &dyn Store,
    pod: &Pod,
) -> Result<Vec<(String, String)>, StoreError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let defaults = services_in(store, "default").await?;
    let own = if links && namespace != "default" {
        services_in(store, namespace).await?
    } else if links {
        defaults.clone()
    } else {
        Vec::new()
    };
    Ok(from_services(&select(namespace, links, defaults, own)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(namespace: &str, name: &str, spec: serde_json::Value) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec
        }))
        .expect("service")
    }

    #[test]
    fn variables_as_the_kubelet_names_them() {
        let web = service(
            "ns",
            "my-web",
            serde_json::json!({"clusterIP": "10.96.0.20", "ports": [
                {"name": "http", "port": 80},
                {"name": "dns-udp", "port": 53, "protocol": "UDP"}
            ]}),
        );
        let env: BTreeMap<String, String> = from_services(&[web]).into_iter().collect();
        let want: BTreeMap<String, String> = [
            ("MY_WEB_SERVICE_HOST", "10.96.0.20"),
            ("MY_WEB_SERVICE_PORT", "80"),
            ("MY_WEB_SERVICE_PORT_HTTP", "80"),
            ("MY_WEB_SERVICE_PORT_DNS_UDP", "53"),
            ("MY_WEB_PORT", "tcp://10.96.0.20:80"),
            ("MY_WEB_PORT_80_TCP", "tcp://10.96.0.20:80"),
            ("MY_WEB_PORT_80_TCP_PROTO", "tcp"),
            ("MY_WEB_PORT_80_TCP_PORT", "80"),
            ("MY_WEB_PORT_80_TCP_ADDR", "10.96.0.20"),
            ("MY_WEB_PORT_53_UDP", "udp://10.96.0.20:53"),
            ("MY_WEB_PORT_53_UDP_PROTO", "udp"),
            ("MY_WEB_PORT_53_UDP_PORT", "53"),
            ("MY_WEB_PORT_53_UDP_ADDR", "10.96.0.20"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, want);
    }

    #[test]
    fn headless_and_ipv6_services() {
        let headless = service(
            "ns",
            "h",
            serde_json::json!({"clusterIP": "None", "ports": [{"port": 80}]}),
        );
        let v6 = service(
            "ns",
            "six",
            serde_json::json!({"clusterIP": "fd00::10", "ports": [{"port": 443}]}),
        );
        let env: BTreeMap<String, String> = from_services(&[headless, v6]).into_iter().collect();
        assert!(!env.keys().any(|k| k.starts_with("H_")), "{env:?}");
        assert_eq!(env["SIX_PORT"], "tcp://[fd00::10]:443");
    }

    #[test]
    fn the_kubernetes_service_is_always_there_and_own_services_only_with_links() {
        let kubernetes = || {
            service(
                "default",
                "kubernetes",
                serde_json::json!({"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]}),
            )
        };
        let other_default = service(
            "default",
            "db",
            serde_json::json!({"clusterIP": "10.96.0.5", "ports": [{"port": 5432}]}),
        );
        let own = service(
            "ns",
            "web",
            serde_json::json!({"clusterIP": "10.96.0.9", "ports": [{"port": 80}]}),
        );
        let names = |services: Vec<Service>| -> Vec<String> {
            services
                .iter()
                .filter_map(|s| s.metadata.name.clone())
                .collect()
        };
        let with_links = select(
            "ns",
            true,
            vec![kubernetes(), other_default.clone()],
            vec![own.clone()],
        );
        assert_eq!(names(with_links), vec!["kubernetes", "web"]);
        let without = select("ns", false, vec![kubernetes(), other_default], vec![own]);
        assert_eq!(names(without), vec!["kubernetes"]);
    }
}
