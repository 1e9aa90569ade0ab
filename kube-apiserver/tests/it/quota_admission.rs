//! The admission plugins that read other objects, over real HTTP: Priority (built-in classes,
//! resolution, refusals), ResourceQuota (object counts, compute, scopes, the exact refusals,
//! charging `status.used` consistently under concurrent creates) and LimitRanger (defaults,
//! min/max), with Kubernetes' status codes and messages.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube_apiserver::{ApiServer, RunningApiServer};
use kube_core::store::Store;
use kube_store::MemStore;
use serde_json::{Value, json};

struct Api {
    running: RunningApiServer,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Api {
    async fn start(namespaces: &[&str]) -> Self {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        for name in namespaces {
            let ns = serde_json::from_value(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            )
            .expect("namespace decodes");
            store.create(ns).await.expect("namespace created");
        }
        let running = ApiServer::new(store)
            .serve("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("server starts");
        Self {
            running,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.running.url()))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .expect("request builds");
        let response = self.client.request(request).await.expect("server answers");
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn create(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Creates a quota and gives it the status its controller would (hard = spec, used 0).
    async fn quota(&self, namespace: &str, name: &str, spec: Value) {
        let path = format!("/api/v1/namespaces/{namespace}/resourcequotas");
        let (code, mut quota) = self
            .create(
                &path,
                json!({"apiVersion": "v1", "kind": "ResourceQuota",
                "metadata": {"name": name}, "spec": spec}),
            )
            .await;
        assert_eq!(code, 201, "{quota}");
        let hard = quota["spec"]["hard"].clone();
        let used: serde_json::Map<String, Value> = hard
            .as_object()
            .expect("hard")
            .keys()
            .map(|k| (k.clone(), json!("0")))
            .collect();
        quota["status"] = json!({"hard": hard, "used": used});
        let (code, body) = self
            .call(Method::PUT, &format!("{path}/{name}/status"), Some(quota))
            .await;
        assert_eq!(code, 200, "{body}");
    }

    async fn used(&self, namespace: &str, name: &str) -> Value {
        let path = format!("/api/v1/namespaces/{namespace}/resourcequotas/{name}");
        self.call(Method::GET, &path, None).await.1["status"]["used"].clone()
    }
}

fn pod(name: &str, resources: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]}})
}

fn forbidden(body: &Value, message: &str) {
    assert_eq!(body["reason"], "Forbidden", "{body}");
    assert_eq!(body["code"], 403, "{body}");
    assert_eq!(body["message"], message, "{body}");
}

const PCS: &str = "/apis/scheduling.k8s.io/v1/priorityclasses";

#[tokio::test]
async fn priority_classes_resolve_into_pods_as_kubernetes_admits_them() {
    let api = Api::start(&["default"]).await;
    let pods = "/api/v1/namespaces/default/pods";
    // The built-in classes exist from the start.
    let (code, node) = api
        .call(Method::GET, &format!("{PCS}/system-node-critical"), None)
        .await;
    assert_eq!(code, 200);
    assert_eq!(node["value"], 2_000_001_000);
    let (_, cluster) = api
        .call(Method::GET, &format!("{PCS}/system-cluster-critical"), None)
        .await;
    assert_eq!(cluster["value"], 2_000_000_000);

    // No class and no default: priority 0.
    let (code, plain) = api.create(pods, pod("plain", json!({}))).await;
    assert_eq!(code, 201, "{plain}");
    assert_eq!(plain["spec"]["priority"], 0);

    let class = |name: &str, value: i64, default: bool| {
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "globalDefault": default})
    };
    let (code, high) = api.create(PCS, class("high", 1000, false)).await;
    assert_eq!(code, 201, "{high}");
    assert_eq!(high["preemptionPolicy"], "PreemptLowerPriority");

    let mut named = pod("named", json!({}));
    named["spec"]["priorityClassName"] = json!("high");
    let (code, named) = api.create(pods, named).await;
    assert_eq!(code, 201, "{named}");
    assert_eq!(named["spec"]["priority"], 1000);
    assert_eq!(named["spec"]["preemptionPolicy"], "PreemptLowerPriority");

    let mut unknown = pod("unknown", json!({}));
    unknown["spec"]["priorityClassName"] = json!("nope");
    let (code, body) = api.create(pods, unknown).await;
    assert_eq!(code, 403);
    forbidden(
        &body,
        "pods \"unknown\" is forbidden: no PriorityClass with name nope was found",
    );

    let mut disagrees = pod("disagrees", json!({}));
    disagrees["spec"]["priorityClassName"] = json!("high");
    disagrees["spec"]["priority"] = json!(5);
    let (_, body) = api.create(pods, disagrees).await;
    forbidden(
        &body,
        "pods \"disagrees\" is forbidden: the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name",
    );

    // A global default applies to pods naming no class, and only one may exist.
    let (code, _) = api.create(PCS, class("fallback", 10, true)).await;
    assert_eq!(code, 201);
    let (_, defaulted) = api.create(pods, pod("defaulted", json!({}))).await;
    assert_eq!(defaulted["spec"]["priority"], 10);
    assert_eq!(defaulted["spec"]["priorityClassName"], "fallback");
    let (code, body) = api.create(PCS, class("second", 20, true)).await;
    assert_eq!(code, 403);
    forbidden(
        &body,
        "priorityclasses.scheduling.k8s.io \"second\" is forbidden: PriorityClass fallback is already marked as default. Only one default can exist",
    );

    // Validation: user values, reserved names, immutable value.
    let (code, body) = api.create(PCS, class("huge", 2_000_000_000, false)).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"].as_str().expect("message").contains(
            "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"
        ),
        "{body}"
    );
    let (code, body) = api.create(PCS, class("system-mine", 5, false)).await;
    assert_eq!(code, 422, "{body}");
    assert!(body["message"].as_str().expect("message").contains("metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class"), "{body}");
    let mut changed = high.clone();
    changed["value"] = json!(2000);
    let (code, body) = api
        .call(Method::PUT, &format!("{PCS}/high"), Some(changed))
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("value: Forbidden: may not be changed in an update."),
        "{body}"
    );
}

#[tokio::test]
async fn resource_quotas_refuse_with_kubernetes_messages_and_charge_used() {
    let api = Api::start(&["counts", "compute", "scoped", "fresh"]).await;

    // Object counts: pods and count/configmaps.
    api.quota(
        "counts",
        "q",
        json!({"hard": {"pods": "2", "count/configmaps": "1"}}),
    )
    .await;
    for name in ["a", "b"] {
        let (code, body) = api
            .create("/api/v1/namespaces/counts/pods", pod(name, json!({})))
            .await;
        assert_eq!(code, 201, "{body}");
    }
    let (code, body) = api
        .create("/api/v1/namespaces/counts/pods", pod("c", json!({})))
        .await;
    assert_eq!(code, 403);
    forbidden(
        &body,
        "pods \"c\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2",
    );
    assert_eq!(
        api.used("counts", "q").await,
        json!({"pods": "2", "count/configmaps": "0"})
    );
    let cm =
        |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    let (code, _) = api
        .create("/api/v1/namespaces/counts/configmaps", cm("one"))
        .await;
    assert_eq!(code, 201);
    let (_, body) = api
        .create("/api/v1/namespaces/counts/configmaps", cm("two"))
        .await;
    forbidden(
        &body,
        "configmaps \"two\" is forbidden: exceeded quota: q, requested: count/configmaps=1, used: count/configmaps=1, limited: count/configmaps=1",
    );

    // Compute: every container must state what is limited; sums are checked.
    api.quota(
        "compute",
        "compute",
        json!({"hard": {"requests.cpu": "1", "limits.cpu": "2", "requests.memory": "1Gi"}}),
    )
    .await;
    let pods = "/api/v1/namespaces/compute/pods";
    let (_, body) = api.create(pods, pod("bare", json!({}))).await;
    forbidden(
        &body,
        "pods \"bare\" is forbidden: failed quota: compute: must specify limits.cpu for: c; requests.cpu for: c; requests.memory for: c",
    );
    let sized = json!({"requests": {"cpu": "600m", "memory": "512Mi"}, "limits": {"cpu": "1"}});
    let (code, body) = api.create(pods, pod("first", sized.clone())).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        api.used("compute", "compute").await,
        json!({"requests.cpu": "600m", "limits.cpu": "1", "requests.memory": "512Mi"})
    );
    let (_, body) = api.create(pods, pod("second", sized)).await;
    forbidden(
        &body,
        "pods \"second\" is forbidden: exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1",
    );

    // Scopes: a BestEffort quota counts only pods that request nothing.
    api.quota(
        "scoped",
        "best-effort",
        json!({"hard": {"pods": "1"}, "scopes": ["BestEffort"]}),
    )
    .await;
    let pods = "/api/v1/namespaces/scoped/pods";
    let (code, _) = api.create(pods, pod("free", json!({}))).await;
    assert_eq!(code, 201);
    let (_, body) = api.create(pods, pod("free2", json!({}))).await;
    forbidden(
        &body,
        "pods \"free2\" is forbidden: exceeded quota: best-effort, requested: pods=1, used: pods=1, limited: pods=1",
    );
    let (code, body) = api
        .create(pods, pod("sized", json!({"requests": {"cpu": "100m"}})))
        .await;
    assert_eq!(code, 201, "{body}");

    // A quota its controller has not counted yet refuses what it limits.
    let (code, _) = api
        .create(
            "/api/v1/namespaces/fresh/resourcequotas",
            json!({"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "new"}, "spec": {"hard": {"pods": "5"}}}),
        )
        .await;
    assert_eq!(code, 201);
    let (code, _) = api.call(Method::PUT, "/api/v1/namespaces/fresh/resourcequotas/new/status", Some(json!({
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "new", "namespace": "fresh"},
        "spec": {"hard": {"pods": "5"}}, "status": {"hard": {"pods": "5"}}}))).await;
    assert_eq!(code, 200);
    let (_, body) = api
        .create("/api/v1/namespaces/fresh/pods", pod("early", json!({})))
        .await;
    forbidden(
        &body,
        "pods \"early\" is forbidden: status unknown for quota: new, resources: pods",
    );
}

#[tokio::test]
async fn concurrent_creates_never_exceed_a_quota() {
    let api = Arc::new(Api::start(&["race"]).await);
    api.quota("race", "q", json!({"hard": {"pods": "5"}})).await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let api = api.clone();
        tasks.spawn(async move {
            api.create(
                "/api/v1/namespaces/race/pods",
                pod(&format!("p{i}"), json!({})),
            )
            .await
        });
    }
    let (mut created, mut refused) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        let (code, body) = result.expect("task");
        match code {
            201 => created += 1,
            403 => {
                assert!(
                    body["message"].as_str().expect("message").contains(
                        "exceeded quota: q, requested: pods=1, used: pods=5, limited: pods=5"
                    ),
                    "{body}"
                );
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((created, refused), (5, 19));
    assert_eq!(api.used("race", "q").await, json!({"pods": "5"}));
    let (_, list) = api
        .call(Method::GET, "/api/v1/namespaces/race/pods", None)
        .await;
    assert_eq!(list["items"].as_array().expect("items").len(), 5);
}

#[tokio::test]
async fn limit_ranges_default_and_bound_containers_and_pods() {
    let api = Api::start(&["limited"]).await;
    let (code, range) = api
        .create(
            "/api/v1/namespaces/limited/limitranges",
            json!({"apiVersion": "v1", "kind": "LimitRange",
            "metadata": {"name": "bounds"}, "spec": {"limits": [
                {"type": "Container", "max": {"cpu": "1"}, "min": {"cpu": "100m"},
                 "defaultRequest": {"cpu": "250m"}, "maxLimitRequestRatio": {"cpu": "4"}},
                {"type": "Pod", "max": {"memory": "1Gi"}}]}}),
        )
        .await;
    assert_eq!(code, 201, "{range}");
    // Defaulting: the Container item's default limit comes from max.
    assert_eq!(range["spec"]["limits"][0]["default"], json!({"cpu": "1"}));
    let pods = "/api/v1/namespaces/limited/pods";
    let (code, body) = api
        .create(
            pods,
            pod("defaults", json!({"limits": {"memory": "256Mi"}})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    let resources = &body["spec"]["containers"][0]["resources"];
    assert_eq!(resources["limits"], json!({"cpu": "1", "memory": "256Mi"}));
    assert_eq!(
        resources["requests"],
        json!({"cpu": "250m", "memory": "256Mi"})
    );
    assert_eq!(
        body["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu request for container c; cpu limit for container c"
    );
    let (_, body) = api
        .create(
            pods,
            pod("big", json!({"limits": {"cpu": "2", "memory": "1Gi"}})),
        )
        .await;
    forbidden(
        &body,
        "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2",
    );
    let (_, body) = api
        .create(
            pods,
            pod(
                "tiny",
                json!({"requests": {"cpu": "50m"}, "limits": {"memory": "2Gi"}}),
            ),
        )
        .await;
    forbidden(
        &body,
        "pods \"tiny\" is forbidden: [minimum cpu usage per Container is 100m, but request is 50m, cpu max limit to request ratio per Container is 4, but provided ratio is 20.000000, maximum memory usage per Pod is 1Gi, but limit is 2Gi]",
    );
}

#[tokio::test]
async fn tables_print_the_new_kinds_columns() {
    let api = Api::start(&["default"]).await;
    let request = Request::builder()
        .uri(format!("{}{PCS}", api.running.url()))
        .header("accept", "application/json;as=Table;g=meta.k8s.io;v=v1")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = api.client.request(request).await.expect("answer");
    let table: Value = serde_json::from_slice(
        &response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes(),
    )
    .expect("json");
    let names: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        ["Name", "Value", "Global-Default", "Age", "PreemptionPolicy"]
    );
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], "system-cluster-critical");
    assert_eq!(cells[1], 2_000_000_000);
    assert_eq!(cells[2], false);
    assert_eq!(cells[4], "PreemptLowerPriority");
}
