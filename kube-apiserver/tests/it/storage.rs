//! Storage admission and tables over real HTTP: DefaultStorageClass, the protection
//! finalizers (a claim marked deleted stays until its finalizer goes), and the `kubectl get
//! pv/pvc/sc` columns.

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
    async fn start() -> Self {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let ns = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
        )
        .expect("namespace decodes");
        store.create(ns).await.expect("namespace created");
        let running = ApiServer::new(store)
            .serve("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("server starts");
        Self {
            running,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        accept: &str,
    ) -> (u16, Value) {
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.running.url()))
            .header("content-type", "application/json")
            .header("accept", accept)
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

    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, body, "application/json").await
    }

    async fn table(&self, path: &str) -> Value {
        let (code, table) = self
            .call(
                Method::GET,
                path,
                None,
                "application/json;as=Table;v=v1;g=meta.k8s.io",
            )
            .await;
        assert_eq!(code, 200, "{table}");
        table
    }
}

fn names(table: &Value) -> Vec<String> {
    table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("name").to_string())
        .collect()
}

#[tokio::test]
async fn claims_get_the_default_class_and_protection_and_tables_show_storage() {
    let api = Api::start().await;
    let classes = "/apis/storage.k8s.io/v1/storageclasses";
    let claims = "/api/v1/namespaces/default/persistentvolumeclaims";
    let (code, _) = api
        .json(Method::POST, classes, Some(json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path", "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer"})))
        .await;
    assert_eq!(code, 201);
    let claim = |name: &str, class: Option<&str>| {
        let mut spec = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}});
        if let Some(class) = class {
            spec["storageClassName"] = json!(class);
        }
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": spec})
    };
    let (code, data) = api
        .json(Method::POST, claims, Some(claim("data", None)))
        .await;
    assert_eq!(code, 201, "{data}");
    assert_eq!(
        data["spec"]["storageClassName"], "local-path",
        "the default class"
    );
    assert_eq!(
        data["metadata"]["finalizers"],
        json!(["kubernetes.io/pvc-protection"])
    );
    let (_, none) = api
        .json(Method::POST, claims, Some(claim("classless", Some(""))))
        .await;
    assert_eq!(
        none["spec"]["storageClassName"], "",
        "\"\" asks for no class"
    );

    let (code, pv) = api
        .json(Method::POST, "/api/v1/persistentvolumes", Some(json!({"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "pv1"},
            "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce", "ReadWriteOncePod"],
                "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "manual",
                "hostPath": {"path": "/tmp/pv1"},
                "claimRef": {"namespace": "default", "name": "data"}}})))
        .await;
    assert_eq!(code, 201, "{pv}");
    assert_eq!(
        pv["metadata"]["finalizers"],
        json!(["kubernetes.io/pv-protection"])
    );

    // Deleting a protected claim marks it; removing the finalizer (the controller's part)
    // completes the deletion. An update keeps the finalizers it sends (none added back).
    let (code, marked) = api
        .json(Method::DELETE, &format!("{claims}/data"), None)
        .await;
    assert_eq!(code, 200, "{marked}");
    let (code, still) = api.json(Method::GET, &format!("{claims}/data"), None).await;
    assert_eq!(code, 200);
    assert!(
        still["metadata"]["deletionTimestamp"].is_string(),
        "{still}"
    );
    let mut released = still.clone();
    released["metadata"]["finalizers"] = json!([]);
    let (code, _) = api
        .json(Method::PUT, &format!("{claims}/data"), Some(released))
        .await;
    assert_eq!(code, 200);
    let (code, _) = api.json(Method::GET, &format!("{claims}/data"), None).await;
    assert_eq!(code, 404, "gone once the finalizer is removed");

    let table = api.table("/api/v1/persistentvolumes").await;
    assert_eq!(
        names(&table),
        [
            "Name",
            "Capacity",
            "Access Modes",
            "Reclaim Policy",
            "Status",
            "Claim",
            "StorageClass",
            "VolumeAttributesClass",
            "Reason",
            "Age",
            "VolumeMode"
        ]
    );
    let cells = table["rows"][0]["cells"].as_array().expect("cells");
    assert_eq!(
        cells[..9],
        [
            json!("pv1"),
            json!("2Gi"),
            json!("RWO,RWOP"),
            json!("Retain"),
            json!(""),
            json!("default/data"),
            json!("manual"),
            json!("<unset>"),
            json!("")
        ]
    );
    let table = api.table(claims).await;
    assert_eq!(
        names(&table),
        [
            "Name",
            "Status",
            "Volume",
            "Capacity",
            "Access Modes",
            "StorageClass",
            "VolumeAttributesClass",
            "Age",
            "VolumeMode"
        ]
    );
    let table = api.table(classes).await;
    assert_eq!(
        names(&table),
        [
            "Name",
            "Provisioner",
            "ReclaimPolicy",
            "VolumeBindingMode",
            "AllowVolumeExpansion",
            "Age"
        ]
    );
    let cells = table["rows"][0]["cells"].as_array().expect("cells");
    assert_eq!(
        cells[..5],
        [
            json!("local-path (default)"),
            json!("rancher.io/local-path"),
            json!("Delete"),
            json!("WaitForFirstConsumer"),
            json!(false)
        ]
    );
}
