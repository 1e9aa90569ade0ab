//! Service environment variables, as the kubelet sets them: what the node agent hands the
//! runtime in each container's config (over a FakeRuntime that records the configs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube_core::runtime::{
    ContainerConfig, ContainerFilter, ContainerStatus, LogOptions, PodSandboxConfig,
    PodSandboxStatus, Runtime, RuntimeError,
};
use kube_core::typed::Api;
use kube_node::FakeRuntime;
use serde_json::json;

use crate::common::{Cluster, NODE, agent, eventually};

/// A [`FakeRuntime`] that keeps every container config it is asked to create.
#[derive(Debug, Clone, Default)]
struct Recording {
    inner: FakeRuntime,
    created: Arc<std::sync::Mutex<Vec<(String, ContainerConfig)>>>,
}

impl Recording {
    /// The env of the last container `container` of pod `pod` created.
    fn env(&self, pod: &str, container: &str) -> Option<Vec<(String, String)>> {
        let created = self.created.lock().expect("lock");
        created
            .iter()
            .rev()
            .find(|(p, c)| p == pod && c.name == container)
            .map(|(_, c)| c.env.clone())
    }
}

#[async_trait::async_trait]
impl Runtime for Recording {
    fn version(&self) -> String {
        self.inner.version()
    }
    async fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String, RuntimeError> {
        self.inner.run_pod_sandbox(config).await
    }
    async fn stop_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        self.inner.stop_pod_sandbox(id).await
    }
    async fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        self.inner.remove_pod_sandbox(id).await
    }
    async fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus, RuntimeError> {
        self.inner.pod_sandbox_status(id).await
    }
    async fn list_pod_sandboxes(&self) -> Result<Vec<PodSandboxStatus>, RuntimeError> {
        self.inner.list_pod_sandboxes().await
    }
    async fn create_container(
        &self,
        sandbox_id: &str,
        config: &ContainerConfig,
    ) -> Result<String, RuntimeError> {
        let pod = config
            .labels
            .get(kube_node::labels::POD_NAME)
            .cloned()
            .unwrap_or_default();
        self.created
            .lock()
            .expect("lock")
            .push((pod, config.clone()));
        self.inner.create_container(sandbox_id, config).await
    }
    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.inner.start_container(id).await
    }
    async fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
        self.inner.stop_container(id, timeout).await
    }
    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        self.inner.remove_container(id).await
    }
    async fn container_status(&self, id: &str) -> Result<ContainerStatus, RuntimeError> {
        self.inner.container_status(id).await
    }
    async fn list_containers(
        &self,
        filter: &ContainerFilter,
    ) -> Result<Vec<ContainerStatus>, RuntimeError> {
        self.inner.list_containers(filter).await
    }
    async fn container_logs(
        &self,
        id: &str,
        options: &LogOptions,
    ) -> Result<bytes::Bytes, RuntimeError> {
        self.inner.container_logs(id, options).await
    }
}

fn service(namespace: &str, name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": namespace}, "spec": spec}),
    )
    .expect("service")
}

fn pod(name: &str, links: Option<bool>, env: serde_json::Value) -> Pod {
    let mut spec = json!({
        "nodeName": NODE,
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "app", "image": "busybox", "env": env}]
    });
    if let Some(links) = links {
        spec["enableServiceLinks"] = json!(links);
    }
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "apps"}, "spec": spec}))
        .expect("pod")
}

#[tokio::test]
async fn containers_get_service_variables_unless_links_are_off_and_their_env_wins() {
    let runtime = Recording::default();
    let cluster = Cluster::start(agent(Arc::new(runtime.clone())).build().expect("agent"));
    let store = cluster.store.clone();
    let in_ns = |ns: &str| -> Api<Service> { Api::namespaced(store.clone(), ns) };
    for (ns, name, spec) in [
        (
            "default",
            "kubernetes",
            json!({"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "targetPort": 6443}]}),
        ),
        // In `default` but not the API server: only pods of `default` see it.
        (
            "default",
            "db",
            json!({"clusterIP": "10.96.0.5", "ports": [{"port": 5432}]}),
        ),
        (
            "apps",
            "my-web",
            json!({"clusterIP": "10.96.0.20", "ports": [
                {"name": "http", "port": 80},
                {"name": "metrics", "port": 9090, "protocol": "TCP"}
            ]}),
        ),
        (
            "apps",
            "headless",
            json!({"clusterIP": "None", "ports": [{"port": 80}]}),
        ),
        (
            "other",
            "elsewhere",
            json!({"clusterIP": "10.96.0.30", "ports": [{"port": 80}]}),
        ),
    ] {
        in_ns(ns)
            .create(&service(ns, name, spec))
            .await
            .expect("service");
    }
    let pods: Api<Pod> = Api::namespaced(store.clone(), "apps");
    pods.create(&pod(
        "linked",
        None,
        json!([
            {"name": "MY_WEB_SERVICE_HOST", "value": "override"},
            {"name": "URL", "value": "http://$(MY_WEB_PORT_80_TCP_ADDR):$(MY_WEB_SERVICE_PORT)"}
        ]),
    ))
    .await
    .expect("pod");
    pods.create(&pod("unlinked", Some(false), json!([])))
        .await
        .expect("pod");

    let linked = eventually(
        Duration::from_secs(5),
        "linked container created",
        || async { runtime.env("linked", "app") },
    )
    .await;
    let env: BTreeMap<String, String> = linked.iter().cloned().collect();
    assert_eq!(env.len(), linked.len(), "no duplicates: {linked:?}");
    let want = [
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
        ("KUBERNETES_SERVICE_PORT", "443"),
        ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
        ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
        ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
        ("KUBERNETES_PORT_443_TCP_PORT", "443"),
        ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
        // The container's own value wins.
        ("MY_WEB_SERVICE_HOST", "override"),
        ("MY_WEB_SERVICE_PORT", "80"),
        ("MY_WEB_SERVICE_PORT_HTTP", "80"),
        ("MY_WEB_SERVICE_PORT_METRICS", "9090"),
        ("MY_WEB_PORT", "tcp://10.96.0.20:80"),
        ("MY_WEB_PORT_80_TCP_ADDR", "10.96.0.20"),
        ("MY_WEB_PORT_9090_TCP", "tcp://10.96.0.20:9090"),
        // Its `$(VAR)` references see the service variables.
        ("URL", "http://10.96.0.20:80"),
    ];
    for (k, v) in want {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k} in {env:?}");
    }
    for absent in [
        "DB_SERVICE_HOST",
        "HEADLESS_SERVICE_HOST",
        "ELSEWHERE_SERVICE_HOST",
    ] {
        assert!(!env.contains_key(absent), "{absent} in {env:?}");
    }
    // Service variables come before the container's own.
    let position = |name: &str| linked.iter().position(|(k, _)| k == name);
    assert!(position("KUBERNETES_SERVICE_HOST") < position("URL"));

    let unlinked = eventually(
        Duration::from_secs(5),
        "unlinked container created",
        || async { runtime.env("unlinked", "app") },
    )
    .await;
    let names: Vec<&str> = unlinked.iter().map(|(k, _)| k.as_str()).collect();
    assert!(!names.is_empty());
    assert!(
        names.iter().all(|k| k.starts_with("KUBERNETES_")),
        "only the API server's variables without service links: {names:?}"
    );
    cluster.shutdown().await;
}
