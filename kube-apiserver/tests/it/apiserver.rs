//! The API server, spoken to over real HTTP: status codes and reasons, Kubernetes' object
//! semantics (defaulting, validation, graceful deletion, finalizers), patch types,
//! subresources, watch, discovery and Table output.

use std::sync::Arc;
use std::time::Duration;

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

struct Server {
    running: RunningApiServer,
    store: Arc<dyn Store>,
    client: Client<HttpConnector, Full<Bytes>>,
}

async fn namespace(store: &Arc<dyn Store>, name: &str) {
    let ns = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    .unwrap();
    store.create(ns).await.unwrap();
}

async fn server() -> Server {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    namespace(&store, "default").await;
    let running = ApiServer::new(store.clone())
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    Server {
        running,
        store,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

impl Server {
    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        accept: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.running.url()))
            .header("content-type", content_type)
            .header("accept", accept)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = self.client.request(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.send(method, path, "application/json", "application/json", body)
            .await
    }

    async fn patch(&self, path: &str, content_type: &str, body: Value) -> (u16, Value) {
        self.send(
            Method::PATCH,
            path,
            content_type,
            "application/json",
            body.to_string().into_bytes(),
        )
        .await
    }

    /// The lines of a watch response, read until the server ends it.
    async fn watch_lines(&self, path: &str) -> Vec<Value> {
        let (_, body) = self.call(Method::GET, path, None).await;
        match body {
            Value::String(text) => text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect(),
            single => vec![single],
        }
    }
}

const PODS: &str = "/api/v1/namespaces/default/pods";
const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn pod(name: &str, node: Option<&str>) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    });
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    pod
}

fn config_map(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"tier": "a"}}, "data": {"k": "v"}})
}

#[tokio::test]
async fn errors_are_status_objects_with_kubernetes_codes() {
    let s = server().await;
    let (code, status) = s.call(Method::GET, &format!("{CMS}/missing"), None).await;
    assert_eq!(code, 404);
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "NotFound");
    assert_eq!(status["message"], "configmaps \"missing\" not found");

    assert_eq!(
        s.call(Method::POST, CMS, Some(config_map("a"))).await.0,
        201
    );
    let (code, status) = s.call(Method::POST, CMS, Some(config_map("a"))).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );

    let mut stale = config_map("a");
    stale["metadata"]["resourceVersion"] = json!("1");
    s.call(Method::PUT, &format!("{CMS}/a"), Some(config_map("a")))
        .await;
    let (code, status) = s.call(Method::PUT, &format!("{CMS}/a"), Some(stale)).await;
    assert_eq!((code, status["reason"].as_str()), (409, Some("Conflict")));

    let (code, status) = s
        .call(Method::POST, CMS, Some(config_map("Bad_Name")))
        .await;
    assert_eq!(code, 422);
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["details"]["causes"][0]["field"], "metadata.name");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value")
    );

    let (code, status) = s
        .call(Method::GET, "/apis/example.com/v1/widgets", None)
        .await;
    assert_eq!((code, status["reason"].as_str()), (404, Some("NotFound")));
    assert_eq!(
        s.call(Method::POST, &format!("{CMS}/a"), Some(config_map("a")))
            .await
            .0,
        405
    );
    let (code, status) = s
        .send(
            Method::PATCH,
            &format!("{CMS}/a"),
            "text/plain",
            "application/json",
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );
    let (code, status) = s
        .send(
            Method::POST,
            CMS,
            "application/json",
            "application/json",
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!((code, status["reason"].as_str()), (400, Some("BadRequest")));

    // Over 3 MiB: refused before it is read.
    let mut huge = config_map("huge");
    huge["data"]["k"] = json!("x".repeat(4 * 1024 * 1024));
    // Answered without reading the body; a client still writing may see a reset first.
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{}{CMS}", s.running.url()))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(huge.to_string())))
        .unwrap();
    match s.client.request(request).await {
        Ok(response) => {
            assert_eq!(response.status().as_u16(), 413);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let status: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(status["reason"], "RequestEntityTooLarge");
        }
        Err(e) => assert!(
            format!("{e:?}").contains("BrokenPipe") || format!("{e:?}").contains("reset"),
            "{e:?}"
        ),
    }
    let (code, _) = s.call(Method::GET, &format!("{CMS}/huge"), None).await;
    assert_eq!(code, 404, "nothing of a refused request is stored");
}

#[tokio::test]
async fn watch_from_a_compacted_revision_is_410_expired() {
    let s = server().await;
    for i in 0..5 {
        s.call(Method::POST, CMS, Some(config_map(&format!("c{i}"))))
            .await;
    }
    let revision = s.store.current_revision().await.unwrap();
    s.store.compact(revision).await.unwrap();
    let lines = s
        .watch_lines(&format!(
            "{CMS}?watch=true&resourceVersion=2&timeoutSeconds=2"
        ))
        .await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["type"], "ERROR");
    assert_eq!(lines[0]["object"]["code"], 410);
    assert_eq!(lines[0]["object"]["reason"], "Expired");
}

#[tokio::test]
async fn objects_are_defaulted_and_generation_follows_spec() {
    let s = server().await;
    let (code, created) = s.call(Method::POST, PODS, Some(pod("p", None))).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["restartPolicy"], "Always");
    assert_eq!(created["spec"]["terminationGracePeriodSeconds"], 30);
    assert_eq!(
        created["spec"]["containers"][0]["imagePullPolicy"],
        "Always"
    );
    assert_eq!(created["status"]["phase"], "Pending");
    assert!(created["metadata"]["uid"].is_string());

    let deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {
            "metadata": {"labels": {"app": "d"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}},
    });
    let path = "/apis/apps/v1/namespaces/default/deployments";
    let (code, created) = s.call(Method::POST, path, Some(deploy)).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        created["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
        "25%"
    );
    assert_eq!(created["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(created["metadata"]["generation"], 1);
    let (_, labelled) = s
        .patch(
            &format!("{path}/d"),
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"x": "y"}}}),
        )
        .await;
    assert_eq!(
        labelled["metadata"]["generation"], 1,
        "metadata changes keep the generation"
    );
    let (_, scaled) = s
        .patch(
            &format!("{path}/d"),
            "application/merge-patch+json",
            json!({"spec": {"replicas": 3}}),
        )
        .await;
    assert_eq!(scaled["metadata"]["generation"], 2);

    // Pod specs are immutable but for images.
    let (code, status) = s
        .patch(
            &format!("{PODS}/p"),
            "application/merge-patch+json",
            json!({"spec": {"restartPolicy": "Never"}}),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    let (code, _) = s
        .patch(
            &format!("{PODS}/p"),
            "application/strategic-merge-patch+json",
            json!({"spec": {"containers": [{"name": "c", "image": "busybox:1.37"}]}}),
        )
        .await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn strict_field_validation_refuses_unknown_fields() {
    let s = server().await;
    let mut bad = pod("p", None);
    bad["spec"]["containers"][0]["imagePullPolice"] = json!("Always");
    let (code, status) = s
        .call(
            Method::POST,
            &format!("{PODS}?fieldValidation=Strict"),
            Some(bad.clone()),
        )
        .await;
    assert_eq!(code, 422);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"spec.containers[0].imagePullPolice\""),
        "{status}"
    );
    let mut wrong_type = pod("q", None);
    wrong_type["spec"]["containers"] = json!("not a list");
    let (code, status) = s.call(Method::POST, PODS, Some(wrong_type)).await;
    assert_eq!(code, 422);
    assert_eq!(
        status["details"]["causes"][0]["field"], "spec.containers",
        "{status}"
    );
    let mut deep = pod("r", None);
    deep["spec"]["containers"][0]["ports"] = json!([{"containerPort": "eighty"}]);
    let (code, status) = s.call(Method::POST, PODS, Some(deep)).await;
    assert_eq!(code, 422);
    assert_eq!(
        status["details"]["causes"][0]["field"], "spec.containers[0].ports[0].containerPort",
        "{status}"
    );
}

#[tokio::test]
async fn bound_pods_are_deleted_gracefully_and_unbound_ones_at_once() {
    let s = server().await;
    s.call(Method::POST, PODS, Some(pod("running", Some("n1"))))
        .await;
    s.call(Method::POST, PODS, Some(pod("pending", None))).await;

    let (code, marked) = s
        .call(Method::DELETE, &format!("{PODS}/running"), None)
        .await;
    assert_eq!(code, 200);
    assert!(
        marked["metadata"]["deletionTimestamp"].is_string(),
        "{marked}"
    );
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
    assert_eq!(
        s.call(Method::GET, &format!("{PODS}/running"), None)
            .await
            .0,
        200,
        "the node agent finishes it"
    );

    // A shorter grace period shortens it; 0 (what the node agent sends) removes it.
    let (_, shorter) = s
        .call(
            Method::DELETE,
            &format!("{PODS}/running"),
            Some(json!({"gracePeriodSeconds": 5})),
        )
        .await;
    assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 5);
    let (code, _) = s
        .call(
            Method::DELETE,
            &format!("{PODS}/running?gracePeriodSeconds=0"),
            None,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        s.call(Method::GET, &format!("{PODS}/running"), None)
            .await
            .0,
        404
    );

    assert_eq!(
        s.call(Method::DELETE, &format!("{PODS}/pending"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        s.call(Method::GET, &format!("{PODS}/pending"), None)
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn finalizers_hold_an_object_until_the_last_is_removed() {
    let s = server().await;
    let mut cm = config_map("held");
    cm["metadata"]["finalizers"] = json!(["example.com/cleanup"]);
    s.call(Method::POST, CMS, Some(cm)).await;
    let (code, marked) = s.call(Method::DELETE, &format!("{CMS}/held"), None).await;
    assert_eq!(code, 200);
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    let (code, _) = s.call(Method::GET, &format!("{CMS}/held"), None).await;
    assert_eq!(code, 200);
    let (code, _) = s
        .patch(
            &format!("{CMS}/held"),
            "application/merge-patch+json",
            json!({"metadata": {"finalizers": null}}),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        s.call(Method::GET, &format!("{CMS}/held"), None).await.0,
        404
    );

    // Foreground propagation marks the owner with its finalizer for the garbage collector.
    s.call(Method::POST, CMS, Some(config_map("owner"))).await;
    let (_, marked) = s
        .call(
            Method::DELETE,
            &format!("{CMS}/owner"),
            Some(json!({"propagationPolicy": "Foreground"})),
        )
        .await;
    assert_eq!(
        marked["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );

    // Preconditions.
    s.call(Method::POST, CMS, Some(config_map("pre"))).await;
    let (code, status) = s
        .call(
            Method::DELETE,
            &format!("{CMS}/pre"),
            Some(json!({"preconditions": {"uid": "not-it"}})),
        )
        .await;
    assert_eq!((code, status["reason"].as_str()), (409, Some("Conflict")));
    let (code, _) = s
        .call(
            Method::DELETE,
            &format!("{CMS}/pre"),
            Some(json!({"propagationPolicy": "Sideways"})),
        )
        .await;
    assert_eq!(code, 422);
}

#[tokio::test]
async fn patch_types_and_server_side_apply() {
    let s = server().await;
    let mut two = pod("p", None);
    two["spec"]["containers"] =
        json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]);
    s.call(Method::POST, PODS, Some(two)).await;
    let (code, patched) = s
        .patch(
            &format!("{PODS}/p"),
            "application/strategic-merge-patch+json",
            json!({"metadata": {"labels": {"v": "2"}}, "spec": {"containers": [{"name": "b", "image": "b:2"}]}}),
        )
        .await;
    assert_eq!(code, 200, "{patched}");
    let images: Vec<&str> = patched["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["image"].as_str().unwrap())
        .collect();
    assert_eq!(images, ["a:1", "b:2"], "containers merge by name");
    assert_eq!(
        patched["metadata"]["labels"],
        json!({"app": "web", "v": "2"})
    );

    let (code, patched) = s
        .patch(
            &format!("{PODS}/p"),
            "application/json-patch+json",
            json!([{"op": "remove", "path": "/metadata/labels/v"}]),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(patched["metadata"]["labels"], json!({"app": "web"}));

    // Server-side apply: create when missing, then update; the manager is recorded.
    let applied =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  a: \"1\"\n";
    let path = format!("{CMS}/applied?fieldManager=tester");
    let (code, created) = s
        .send(
            Method::PATCH,
            &path,
            "application/apply-patch+yaml",
            "application/json",
            applied.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["metadata"]["managedFields"][0]["manager"], "tester");
    assert_eq!(
        created["metadata"]["managedFields"][0]["operation"],
        "Apply"
    );
    let (code, updated) = s
        .send(
            Method::PATCH,
            &path,
            "application/apply-patch+yaml",
            "application/json",
            applied.replace("\"1\"", "\"2\"").as_bytes().to_vec(),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(updated["data"]["a"], "2");
    let (code, _) = s
        .send(
            Method::PATCH,
            &format!("{CMS}/applied"),
            "application/apply-patch+yaml",
            "application/json",
            applied.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(code, 400, "apply needs a field manager");
}

#[tokio::test]
async fn status_scale_binding_and_eviction_subresources() {
    let s = server().await;
    s.call(Method::POST, PODS, Some(pod("p", None))).await;
    let (code, _) = s
        .call(Method::POST, &format!("{PODS}/p/binding"), Some(json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}})))
        .await;
    assert_eq!(code, 201);
    let (_, bound) = s.call(Method::GET, &format!("{PODS}/p"), None).await;
    assert_eq!(bound["spec"]["nodeName"], "n1");
    let (code, status) = s
        .call(
            Method::POST,
            &format!("{PODS}/p/binding"),
            Some(json!({"target": {"kind": "Node", "name": "n2"}})),
        )
        .await;
    assert_eq!(code, 409, "{status}");

    // A status write changes only the status.
    let mut status_write = bound.clone();
    status_write["status"] = json!({"phase": "Running"});
    status_write["metadata"]["labels"] = json!({"changed": "yes"});
    let (code, written) = s
        .call(Method::PUT, &format!("{PODS}/p/status"), Some(status_write))
        .await;
    assert_eq!(code, 200);
    assert_eq!(written["status"]["phase"], "Running");
    assert_eq!(written["metadata"]["labels"], json!({"app": "web"}));

    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "rs"}}, "template": {
            "metadata": {"labels": {"app": "rs"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}},
    });
    let rs_path = "/apis/apps/v1/namespaces/default/replicasets/rs";
    s.call(
        Method::POST,
        "/apis/apps/v1/namespaces/default/replicasets",
        Some(rs),
    )
    .await;
    let (code, scale) = s.call(Method::GET, &format!("{rs_path}/scale"), None).await;
    assert_eq!(code, 200);
    assert_eq!(
        (scale["kind"].as_str(), scale["spec"]["replicas"].as_i64()),
        (Some("Scale"), Some(1))
    );
    assert_eq!(scale["status"]["selector"], "app=rs");
    let (code, _) = s
        .patch(
            &format!("{rs_path}/scale"),
            "application/merge-patch+json",
            json!({"spec": {"replicas": 4}}),
        )
        .await;
    assert_eq!(code, 200);
    let (_, rs) = s.call(Method::GET, rs_path, None).await;
    assert_eq!(rs["spec"]["replicas"], 4);

    // Eviction respects a PodDisruptionBudget with no disruptions allowed.
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "b"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
        "status": {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}});
    let (code, _) = s
        .call(
            Method::POST,
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
            Some(pdb),
        )
        .await;
    assert_eq!(code, 201);
    let (code, status) = s
        .call(
            Method::POST,
            &format!("{PODS}/p/eviction"),
            Some(json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"}})),
        )
        .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (429, Some("TooManyRequests")),
        "{status}"
    );
}

#[tokio::test]
async fn watch_streams_current_state_then_changes_and_honours_timeouts() {
    let s = server().await;
    s.call(Method::POST, CMS, Some(config_map("a"))).await;
    let (_, list) = s.call(Method::GET, CMS, None).await;
    let revision = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let watcher = tokio::spawn(watch_events(
        s.running.url(),
        format!("{CMS}?watch=true&timeoutSeconds=2&allowWatchBookmarks=true"),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.call(Method::POST, CMS, Some(config_map("b"))).await;
    s.call(Method::DELETE, &format!("{CMS}/a"), None).await;
    let started = std::time::Instant::now();
    let events = tokio::time::timeout(Duration::from_secs(10), watcher)
        .await
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "timeoutSeconds ends the watch"
    );
    assert_eq!(
        events,
        [
            ("ADDED".into(), "a".into()),
            ("ADDED".into(), "b".into()),
            ("DELETED".into(), "a".into())
        ]
    );

    // From the list's revision only later changes come; a field selector watches one object.
    let lines = s
        .watch_lines(&format!("{CMS}?watch=1&resourceVersion={revision}&fieldSelector=metadata.name%3Db&timeoutSeconds=1"))
        .await;
    let names: Vec<&str> = lines
        .iter()
        .map(|e| e["object"]["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b"]);
}

/// The (type, name) of every event of a watch but its bookmarks, read until it ends.
async fn watch_events(url: String, path: String) -> Vec<(String, String)> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .get(format!("{url}{path}").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] != "BOOKMARK")
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn plain_watches_of_one_scope_each_get_every_change_from_their_own_revision() {
    let s = server().await;
    s.call(Method::POST, CMS, Some(config_map("a"))).await;
    let (_, first) = s.call(Method::POST, CMS, Some(config_map("b"))).await;
    let after_b = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let url = s.running.url();
    let watch = |query: String| tokio::spawn(watch_events(url.clone(), format!("{CMS}?{query}")));

    // Watches of the same scope (these share one store watch and log), one with a selector
    // (its own), and one without a revision (the current state first).
    let from_b = watch(format!(
        "watch=1&resourceVersion={after_b}&timeoutSeconds=2"
    ));
    let also_from_b = watch(format!(
        "watch=1&resourceVersion={after_b}&timeoutSeconds=2"
    ));
    let selected = watch(format!(
        "watch=1&resourceVersion={after_b}&labelSelector=tier%3Da&timeoutSeconds=2"
    ));
    let current = watch("watch=1&timeoutSeconds=2".to_string());
    tokio::time::sleep(Duration::from_millis(300)).await;
    for name in ["c", "d"] {
        s.call(Method::POST, CMS, Some(config_map(name))).await;
    }
    s.call(Method::DELETE, &format!("{CMS}/a"), None).await;
    // A watch from an older revision than the shared log holds gets every change too.
    let from_start = watch("watch=1&resourceVersion=1&timeoutSeconds=1".to_string());
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.call(Method::POST, CMS, Some(config_map("e"))).await;

    let changes = |names: &[(&str, &str)]| -> Vec<(String, String)> {
        names
            .iter()
            .map(|(t, n)| (t.to_string(), n.to_string()))
            .collect()
    };
    let after = changes(&[
        ("ADDED", "c"),
        ("ADDED", "d"),
        ("DELETED", "a"),
        ("ADDED", "e"),
    ]);
    assert_eq!(from_b.await.unwrap(), after);
    assert_eq!(also_from_b.await.unwrap(), after);
    assert_eq!(selected.await.unwrap(), after);
    assert_eq!(
        current.await.unwrap(),
        changes(&[
            ("ADDED", "a"),
            ("ADDED", "b"),
            ("ADDED", "c"),
            ("ADDED", "d"),
            ("DELETED", "a"),
            ("ADDED", "e")
        ])
    );
    assert_eq!(
        from_start.await.unwrap(),
        changes(&[
            ("ADDED", "a"),
            ("ADDED", "b"),
            ("ADDED", "c"),
            ("ADDED", "d"),
            ("DELETED", "a"),
            ("ADDED", "e")
        ])
    );
}

#[tokio::test]
async fn lists_page_and_filter_and_deletecollection_deletes_the_selection() {
    let s = server().await;
    for i in 0..5 {
        let mut cm = config_map(&format!("c{i}"));
        cm["metadata"]["labels"]["tier"] = json!(if i % 2 == 0 { "even" } else { "odd" });
        s.call(Method::POST, CMS, Some(cm)).await;
    }
    let (_, page) = s.call(Method::GET, &format!("{CMS}?limit=2"), None).await;
    assert_eq!(page["kind"], "ConfigMapList");
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let token = page["metadata"]["continue"].as_str().unwrap();
    let (_, rest) = s
        .call(
            Method::GET,
            &format!("{CMS}?limit=10&continue={token}"),
            None,
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 3);
    let (_, even) = s
        .call(
            Method::GET,
            &format!("{CMS}?labelSelector=tier%3Deven"),
            None,
        )
        .await;
    assert_eq!(even["items"].as_array().unwrap().len(), 3);
    let (code, _) = s
        .call(
            Method::GET,
            &format!("{CMS}?labelSelector=tier%3D%3D%3D"),
            None,
        )
        .await;
    assert_eq!(code, 400);

    let (code, _) = s
        .call(
            Method::DELETE,
            &format!("{CMS}?labelSelector=tier%3Deven"),
            None,
        )
        .await;
    assert_eq!(code, 200);
    let (_, left) = s.call(Method::GET, CMS, None).await;
    assert_eq!(left["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_long_list_arrives_whole_and_in_order() {
    // Long lists are streamed in chunks; the client must still get one valid document.
    let s = server().await;
    let count = 3000;
    for i in 0..count {
        let cm: kube_core::DynamicObject =
            serde_json::from_value(config_map(&format!("c{i:05}"))).unwrap();
        let mut cm = cm;
        cm.metadata.namespace = Some("default".into());
        // A value large enough that the list spans several chunks.
        cm.data["data"]["k"] = json!("v".repeat(400));
        s.store.create(cm).await.unwrap();
    }
    let (code, list) = s.call(Method::GET, CMS, None).await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "ConfigMapList");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), count);
    let names: Vec<&str> = items
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    assert_eq!(items[count - 1]["data"]["k"].as_str().unwrap().len(), 400);
    assert!(list["metadata"]["resourceVersion"].as_str().is_some());
}

#[tokio::test]
async fn discovery_and_tables_for_kubectl() {
    let s = server().await;
    let (code, version) = s.call(Method::GET, "/version", None).await;
    assert_eq!((code, version["major"].as_str()), (200, Some("1")));
    let (_, core) = s.call(Method::GET, "/api", None).await;
    assert_eq!(core["versions"], json!(["v1"]));
    let (_, groups) = s.call(Method::GET, "/apis", None).await;
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "apps")
    );
    let (_, resources) = s.call(Method::GET, "/apis/apps/v1", None).await;
    let deploy = resources["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "deployments")
        .unwrap();
    assert_eq!(deploy["shortNames"], json!(["deploy"]));
    assert_eq!(deploy["categories"], json!(["all"]));
    assert_eq!(s.call(Method::GET, "/healthz", None).await.0, 200);
    let (code, openapi) = s.call(Method::GET, "/openapi/v3", None).await;
    assert_eq!(code, 200);
    assert!(openapi["paths"]["apis/apps/v1"]["serverRelativeURL"].is_string());

    s.call(Method::POST, PODS, Some(pod("p", Some("n1")))).await;
    let (code, table) = s
        .send(
            Method::GET,
            PODS,
            "application/json",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
            Vec::new(),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(table["kind"], "Table");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        &columns[..5],
        ["Name", "Ready", "Status", "Restarts", "Age"]
    );
    assert_eq!(table["rows"][0]["cells"][0], "p");
    assert_eq!(table["rows"][0]["cells"][6], "n1");
}

#[tokio::test]
async fn objects_are_created_only_in_namespaces_that_exist_and_are_not_terminating() {
    let s = server().await;
    let (code, status) = s
        .call(
            Method::POST,
            "/api/v1/namespaces/nowhere/configmaps",
            Some(config_map("a")),
        )
        .await;
    assert_eq!(code, 404);
    assert_eq!(status["message"], "namespaces \"nowhere\" not found");
    namespace(&s.store, "leaving").await;
    let (code, _) = s
        .call(
            Method::DELETE,
            "/api/v1/namespaces/leaving",
            Some(json!({"propagationPolicy": "Foreground"})),
        )
        .await;
    assert_eq!(code, 200);
    let (code, status) = s
        .call(
            Method::POST,
            "/api/v1/namespaces/leaving/configmaps",
            Some(config_map("a")),
        )
        .await;
    assert_eq!(code, 403, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("because it is being terminated")
    );
    let (_, created) = s.call(Method::POST, PODS, Some(pod("sa", None))).await;
    assert_eq!(
        created["spec"]["serviceAccountName"], "default",
        "ServiceAccount defaulting"
    );
}

#[tokio::test]
async fn replication_controllers_are_defaulted_validated_and_scaled() {
    let s = server().await;
    let rcs = "/api/v1/namespaces/default/replicationcontrollers";
    // No selector and no labels: both become the template's labels.
    let rc = json!({
        "apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "web"},
        "spec": {"template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    });
    let (code, created) = s.call(Method::POST, rcs, Some(rc)).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["selector"], json!({"app": "web"}));
    assert_eq!(created["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(created["spec"]["replicas"], 1);
    assert_eq!(
        created["spec"]["template"]["spec"]["restartPolicy"],
        "Always"
    );

    let (code, scale) = s.call(Method::GET, &format!("{rcs}/web/scale"), None).await;
    assert_eq!(code, 200, "{scale}");
    assert_eq!(scale["status"]["selector"], "app=web");
    let mut scale = scale;
    scale["spec"]["replicas"] = json!(3);
    let (code, _) = s
        .call(Method::PUT, &format!("{rcs}/web/scale"), Some(scale))
        .await;
    assert_eq!(code, 200);
    let (_, rc) = s.call(Method::GET, &format!("{rcs}/web"), None).await;
    assert_eq!(rc["spec"]["replicas"], 3);

    // A selector the template does not match, and a restart policy other than Always.
    let bad = json!({
        "apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "bad"},
        "spec": {"selector": {"app": "other"}, "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}},
    });
    let (code, status) = s.call(Method::POST, rcs, Some(bad)).await;
    assert_eq!(code, 422, "{status}");
    let fields: Vec<_> = status["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap().to_string())
        .collect();
    assert!(
        fields.contains(&"spec.template.metadata.labels".to_string()),
        "{status}"
    );
    assert!(
        fields.contains(&"spec.template.spec.restartPolicy".to_string()),
        "{status}"
    );

    // Discovery lists the status and scale subresources and the short name.
    let (_, core) = s.call(Method::GET, "/api/v1", None).await;
    let names: Vec<_> = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    for name in [
        "replicationcontrollers",
        "replicationcontrollers/scale",
        "replicationcontrollers/status",
        "podtemplates",
    ] {
        assert!(names.contains(&name.to_string()), "{name}: {names:?}");
    }
}

#[tokio::test]
async fn pod_templates_are_served() {
    let s = server().await;
    let path = "/api/v1/namespaces/default/podtemplates";
    let template = json!({
        "apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
        "template": {"metadata": {"labels": {"app": "t"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
    });
    let (code, created) = s.call(Method::POST, path, Some(template)).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["template"]["spec"]["dnsPolicy"], "ClusterFirst");
    let (code, list) = s.call(Method::GET, path, None).await;
    assert_eq!(
        (code, list["items"].as_array().map(Vec::len)),
        (200, Some(1))
    );
    let (code, _) = s.call(Method::DELETE, &format!("{path}/t"), None).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn cron_jobs_are_defaulted_and_their_schedules_validated_as_kubernetes_does() {
    let s = server().await;
    let path = "/apis/batch/v1/namespaces/default/cronjobs";
    let cron_job = |name: &str, schedule: &str| {
        json!({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name},
            "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure",
                "containers": [{"name": "c", "image": "busybox"}]}}}}},
        })
    };
    let (code, created) = s
        .call(Method::POST, path, Some(cron_job("tick", "*/1 * * * *")))
        .await;
    assert_eq!(code, 201, "{created}");
    let spec = &created["spec"];
    assert_eq!(spec["concurrencyPolicy"], "Allow");
    assert_eq!(spec["suspend"], false);
    assert_eq!(spec["successfulJobsHistoryLimit"], 3);
    assert_eq!(spec["failedJobsHistoryLimit"], 1);
    for schedule in ["@hourly", "0 0 ? * SUN", "5-10/2 * 1,15 JAN-MAR *"] {
        let name = format!("ok-{}", schedule.len());
        let (code, body) = s
            .call(Method::POST, path, Some(cron_job(&name, schedule)))
            .await;
        assert_eq!(code, 201, "{schedule}: {body}");
        s.call(Method::DELETE, &format!("{path}/{name}"), None)
            .await;
    }
    for (schedule, why) in [
        ("0 0 * * 7", "end of range (7) above maximum (6)"),
        ("* * * *", "expected exactly 5 fields"),
        ("0 0 L * *", "failed to parse int from L"),
        ("TZ=UTC 0 0 * * *", "use timeZone field instead"),
    ] {
        let (code, status) = s
            .call(Method::POST, path, Some(cron_job("bad", schedule)))
            .await;
        assert_eq!(code, 422, "{schedule}: {status}");
        let cause = &status["details"]["causes"][0];
        assert_eq!(cause["field"], "spec.schedule", "{status}");
        assert!(cause["message"].as_str().unwrap().contains(why), "{status}");
    }
    let mut zoned = cron_job("zoned", "0 9 * * *");
    zoned["spec"]["timeZone"] = json!("Mars/Olympus");
    let (code, status) = s.call(Method::POST, path, Some(zoned.clone())).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["details"]["causes"][0]["field"], "spec.timeZone");
    zoned["spec"]["timeZone"] = json!("Europe/Berlin");
    let (code, status) = s.call(Method::POST, path, Some(zoned)).await;
    assert_eq!(code, 201, "{status}");

    let mut policy = cron_job("policy", "@daily");
    policy["spec"]["concurrencyPolicy"] = json!("Sometimes");
    let (code, status) = s.call(Method::POST, path, Some(policy)).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["details"]["causes"][0]["reason"],
        "FieldValueNotSupported"
    );
}

#[tokio::test]
async fn job_features_are_defaulted_and_validated() {
    let s = server().await;
    let path = "/apis/batch/v1/namespaces/default/jobs";
    let job = |name: &str, spec: Value| {
        let mut job = json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}},
        });
        for (k, v) in spec.as_object().unwrap() {
            job["spec"][k] = v.clone();
        }
        job
    };
    // Parallelism alone leaves completions unset (a work queue).
    let (code, created) = s
        .call(
            Method::POST,
            path,
            Some(job("queue", json!({"parallelism": 3}))),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    assert!(created["spec"].get("completions").is_none(), "{created}");
    assert_eq!(
        created["spec"]["podReplacementPolicy"],
        "TerminatingOrFailed"
    );
    let (code, created) = s
        .call(
            Method::POST,
            path,
            Some(job(
                "indexed",
                json!({"completionMode": "Indexed", "completions": 3, "backoffLimitPerIndex": 1}),
            )),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["spec"]["backoffLimit"], i64::from(i32::MAX));
    for (name, spec, field) in [
        (
            "no-completions",
            json!({"completionMode": "Indexed", "parallelism": 2}),
            "spec.completions",
        ),
        (
            "per-index",
            json!({"backoffLimitPerIndex": 1}),
            "spec.backoffLimitPerIndex",
        ),
        (
            "bad-action",
            json!({"podFailurePolicy": {"rules": [{"action": "Retry", "onExitCodes": {"operator": "In", "values": [1]}}]}}),
            "spec.podFailurePolicy.rules[0].action",
        ),
    ] {
        let (code, status) = s.call(Method::POST, path, Some(job(name, spec))).await;
        assert_eq!(code, 422, "{name}: {status}");
        let fields: Vec<_> = status["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap().to_string())
            .collect();
        assert!(fields.contains(&field.to_string()), "{name}: {status}");
    }
}

#[tokio::test]
async fn query_booleans_take_go_parse_bool_forms() {
    let s = server().await;
    assert_eq!(
        s.call(Method::POST, CMS, Some(config_map("a"))).await.0,
        201
    );
    for no in ["0", "f", "F", "false", "FALSE", "False"] {
        let (code, list) = s
            .call(Method::GET, &format!("{CMS}?watch={no}"), None)
            .await;
        assert_eq!((code, list["kind"].as_str()), (200, Some("ConfigMapList")));
    }
    for yes in ["1", "t", "T", "true", "TRUE", "True"] {
        let (code, body) = s
            .call(
                Method::GET,
                &format!("{CMS}?watch={yes}&timeoutSeconds=1"),
                None,
            )
            .await;
        assert_eq!(code, 200, "{yes}: {body}");
        let first = body.as_str().map_or(body.to_string(), str::to_string);
        assert!(
            first.contains("\"ADDED\""),
            "{yes}: a watch, not a list: {body}"
        );
    }
    for bad in ["yes", "tRUE", "2"] {
        let (code, status) = s
            .call(Method::GET, &format!("{CMS}?watch={bad}"), None)
            .await;
        assert_eq!(code, 400, "{bad}: {status}");
        assert_eq!(status["reason"], "BadRequest");
        assert!(
            status["message"].as_str().unwrap().contains(&format!(
                "strconv.ParseBool: parsing \"{bad}\": invalid syntax"
            )),
            "{status}"
        );
    }
}

#[tokio::test]
async fn immortal_namespaces_may_not_be_deleted() {
    let s = server().await;
    for name in ["kube-system", "kube-public", "kube-node-lease", "scratch"] {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        assert_eq!(
            s.call(Method::POST, "/api/v1/namespaces", Some(ns)).await.0,
            201
        );
    }
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let path = format!("/api/v1/namespaces/{name}");
        let (code, status) = s.call(Method::DELETE, &path, None).await;
        assert_eq!(code, 403, "{status}");
        assert_eq!(status["reason"], "Forbidden");
        assert_eq!(
            status["message"],
            format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted")
        );
        assert_eq!(status["details"]["name"], name);
        let (code, dry) = s
            .call(Method::DELETE, &format!("{path}?dryRun=All"), None)
            .await;
        assert_eq!(code, 403, "{dry}");
        let (code, ns) = s.call(Method::GET, &path, None).await;
        assert_eq!(code, 200);
        assert!(ns["metadata"].get("deletionTimestamp").is_none(), "{ns}");
    }
    let (code, _) = s
        .call(Method::DELETE, "/api/v1/namespaces/scratch", None)
        .await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn unknown_field_selectors_are_refused_per_kind() {
    let s = server().await;
    assert_eq!(
        s.call(Method::POST, CMS, Some(config_map("a"))).await.0,
        201
    );
    let (code, list) = s
        .call(
            Method::GET,
            &format!("{CMS}?fieldSelector=metadata.name%3Da"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    for path in [
        format!("{CMS}?fieldSelector=spec.nope%3Dx"),
        format!("{CMS}?fieldSelector=spec.nope%3Dx&watch=true"),
    ] {
        let (code, status) = s.call(Method::GET, &path, None).await;
        assert_eq!(code, 400, "{path}: {status}");
        assert_eq!(status["reason"], "BadRequest");
        assert_eq!(
            status["message"],
            "\"spec.nope\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
    }
    let pods = "/api/v1/namespaces/default/pods";
    assert_eq!(
        s.call(Method::POST, pods, Some(pod("p", Some("n1"))))
            .await
            .0,
        201
    );
    for selector in [
        "spec.nodeName%3Dn1",
        "spec.host%3Dn1",
        "status.phase!%3DFailed,spec.nodeName%3Dn1",
    ] {
        let (code, list) = s
            .call(
                Method::GET,
                &format!("{pods}?fieldSelector={selector}"),
                None,
            )
            .await;
        assert_eq!(code, 200, "{selector}: {list}");
        assert_eq!(list["items"].as_array().unwrap().len(), 1, "{selector}");
    }
    let (code, status) = s
        .call(
            Method::GET,
            &format!("{pods}?fieldSelector=spec.nope%3Dx"),
            None,
        )
        .await;
    assert_eq!(code, 400, "{status}");
    assert_eq!(status["message"], "field label not supported: spec.nope");
    let (code, _) = s
        .call(
            Method::GET,
            "/api/v1/namespaces/default/secrets?fieldSelector=type%3DOpaque",
            None,
        )
        .await;
    assert_eq!(code, 200);
}

/// A length-delimited protobuf field (lengths under 128 bytes).
fn proto_bytes(number: u8, bytes: &[u8]) -> Vec<u8> {
    let length = u8::try_from(bytes.len()).expect("a short field");
    assert!(length < 128, "a one-byte length");
    let mut out = vec![(number << 3) | 2, length];
    out.extend_from_slice(bytes);
    out
}

#[tokio::test]
async fn empty_strings_in_repeated_protobuf_fields_are_kept() {
    let s = server().await;
    // rbac/v1 Role r: rules = [{verbs: [get, list], apiGroups: [""], resources: [pods]}],
    // as `kubectl create role r --verb=get,list --resource=pods` sends it.
    let rule = [
        proto_bytes(1, b"get"),
        proto_bytes(1, b"list"),
        proto_bytes(2, b""),
        proto_bytes(3, b"pods"),
    ]
    .concat();
    let role = [proto_bytes(1, &proto_bytes(1, b"r")), proto_bytes(2, &rule)].concat();
    let type_meta = [
        proto_bytes(1, b"rbac.authorization.k8s.io/v1"),
        proto_bytes(2, b"Role"),
    ]
    .concat();
    let body = [
        b"k8s\0".to_vec(),
        proto_bytes(1, &type_meta),
        proto_bytes(2, &role),
    ]
    .concat();
    let path = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles";
    let (code, created) = s
        .send(
            Method::POST,
            path,
            "application/vnd.kubernetes.protobuf",
            "application/json",
            body,
        )
        .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        created["rules"],
        json!([{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}])
    );
    let (_, stored) = s.call(Method::GET, &format!("{path}/r"), None).await;
    assert_eq!(stored["rules"][0]["apiGroups"], json!([""]));
}

#[tokio::test]
async fn secret_string_data_field_refs_and_service_status_as_kubernetes_writes_them() {
    let s = server().await;
    let secrets = "/api/v1/namespaces/default/secrets";
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "data": {"a": "b2xk", "kept": "a2VwdA=="},
        "stringData": {"a": "new", "b": "two"},
    });
    let (code, created) = s.call(Method::POST, secrets, Some(secret)).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        created["data"],
        json!({"a": "bmV3", "b": "dHdv", "kept": "a2VwdA=="})
    );
    assert!(created.get("stringData").is_none(), "{created}");
    let mut update = created.clone();
    update["stringData"] = json!({"kept": "changed"});
    let (code, updated) = s
        .call(Method::PUT, &format!("{secrets}/s"), Some(update))
        .await;
    assert_eq!(code, 200, "{updated}");
    assert_eq!(updated["data"]["kept"], "Y2hhbmdlZA==");
    assert!(updated.get("stringData").is_none(), "{updated}");
    let (code, patched) = s
        .patch(
            &format!("{secrets}/s"),
            "application/merge-patch+json",
            json!({"stringData": {"b": "2"}}),
        )
        .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["data"]["b"], "Mg==");
    assert!(patched.get("stringData").is_none(), "{patched}");

    let mut p = pod("env", None);
    p["spec"]["containers"][0]["env"] = json!([
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "PLAIN", "value": "x"},
    ]);
    p["spec"]["volumes"] = json!([
        {"name": "info", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        {"name": "all", "projected": {"sources": [{"downwardAPI": {"items": [
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}}]}},
    ]);
    let (code, created) = s
        .call(Method::POST, "/api/v1/namespaces/default/pods", Some(p))
        .await;
    assert_eq!(code, 201, "{created}");
    let spec = &created["spec"];
    assert_eq!(
        spec["containers"][0]["env"][0]["valueFrom"]["fieldRef"],
        json!({"apiVersion": "v1", "fieldPath": "spec.nodeName"})
    );
    assert_eq!(
        spec["containers"][0]["env"][1],
        json!({"name": "PLAIN", "value": "x"})
    );
    assert_eq!(
        spec["volumes"][0]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"],
        "v1"
    );
    assert_eq!(
        spec["volumes"][1]["projected"]["sources"][0]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"],
        "v1"
    );

    let service = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
    });
    let (code, created) = s
        .call(
            Method::POST,
            "/api/v1/namespaces/default/services",
            Some(service),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["status"], json!({"loadBalancer": {}}));
}

#[tokio::test]
async fn authorization_group_is_discoverable() {
    let s = server().await;
    let (code, groups) = s.call(Method::GET, "/apis", None).await;
    assert_eq!(code, 200);
    let group = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "authorization.k8s.io")
        .cloned()
        .unwrap_or_else(|| panic!("authorization.k8s.io missing: {groups}"));
    assert_eq!(
        group["preferredVersion"],
        json!({"groupVersion": "authorization.k8s.io/v1", "version": "v1"})
    );
    let (code, group) = s
        .call(Method::GET, "/apis/authorization.k8s.io", None)
        .await;
    assert_eq!((code, group["kind"].as_str()), (200, Some("APIGroup")));
    let (code, list) = s
        .call(Method::GET, "/apis/authorization.k8s.io/v1", None)
        .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["groupVersion"], "authorization.k8s.io/v1");
    let resources: Vec<(String, bool, Value)> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["namespaced"].as_bool().unwrap(),
                r["verbs"].clone(),
            )
        })
        .collect();
    assert_eq!(
        resources,
        [
            (
                "localsubjectaccessreviews".to_string(),
                true,
                json!(["create"])
            ),
            (
                "selfsubjectaccessreviews".to_string(),
                false,
                json!(["create"])
            ),
            ("subjectaccessreviews".to_string(), false, json!(["create"])),
        ]
    );
    assert_eq!(
        s.call(Method::GET, "/apis/authorization.k8s.io/v2", None)
            .await
            .0,
        404
    );
}
