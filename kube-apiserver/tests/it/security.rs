//! The secure API server over TLS: 401 without credentials, 403 with Kubernetes' message, RBAC
//! matching, the node authorizer, ServiceAccount tokens, SelfSubjectAccessReview, 429 under a
//! flood while another client is served, 413, and the audit log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube_apiserver::{ApiServer, ApiServerConfig, Pki, RunningApiServer, Security, TokenSigner};
use kube_core::store::{ListOptions, Store};
use kube_core::{GroupKind, ObjectKey};
use kube_store::{MemStore, RemoteAuth, RemoteStore};
use serde_json::{Value, json};

struct Secure {
    running: RunningApiServer,
    store: Arc<dyn Store>,
    pki: Pki,
    audit: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn secure(config: ApiServerConfig) -> Secure {
    secure_over(Arc::new(MemStore::new()), config).await
}

/// A secure server over `store` (which may hold what an earlier server wrote).
async fn secure_over(store: Arc<dyn Store>, config: ApiServerConfig) -> Secure {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path().join("pki")).unwrap();
    let serving = pki
        .serving("apiserver", &["localhost".into(), "127.0.0.1".into()])
        .unwrap();
    let audit = dir.path().join("audit.log");
    let security = Security::new(
        pki.server_config(&serving).unwrap(),
        TokenSigner::load_or_create(&dir.path().join("sa.key")).unwrap(),
    )
    .token("alice-token", "alice", &["devs"])
    .ca_pem(pki.ca_pem())
    .audit_log(&audit);
    for name in ["default", "kube-system"] {
        let ns = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )
        .unwrap();
        match store.create(ns).await {
            Ok(_) => {}
            Err(e) if e.is_already_exists() => {}
            Err(e) => panic!("{e}"),
        }
    }
    let running = ApiServer::secure(
        store.clone(),
        kube_core::kind::Registry::builtin().clone(),
        config,
        security,
    )
    .serve("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap();
    Secure {
        running,
        store,
        pki,
        audit,
        _dir: dir,
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An HTTPS client trusting the cluster CA, with an optional client certificate.
fn client(pki: &Pki, cert: Option<(String, String)>) -> HttpsClient {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let tls = match cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn call(
    client: &HttpsClient,
    url: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, Option<String>) {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{url}{path}"))
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let response = client
        .request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let code = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        code,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        retry,
    )
}

fn admin(pki: &Pki) -> HttpsClient {
    client(
        pki,
        Some(
            pki.client("admin", "kubernetes-admin", &["system:masters"])
                .map(|p| (p.cert_pem, p.key_pem))
                .unwrap(),
        ),
    )
}

const PODS: &str = "/api/v1/namespaces/default/pods";

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";

/// A Role in `namespace` (a ClusterRole with `None`) and the path it is created at.
fn role(namespace: Option<&str>, name: &str, rules: Value) -> (String, Value) {
    let (kind, path) = match namespace {
        Some(ns) => ("Role", format!("{RBAC}/namespaces/{ns}/roles")),
        None => ("ClusterRole", format!("{RBAC}/clusterroles")),
    };
    let object = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
        "metadata": {"name": name}, "rules": rules});
    (path, object)
}

/// A RoleBinding in `namespace` (a ClusterRoleBinding with `None`) of the `role_kind` named
/// `role` to `subjects`, and the path it is created at.
fn binding(
    namespace: Option<&str>,
    name: &str,
    (role_kind, role): (&str, &str),
    subjects: Value,
) -> (String, Value) {
    let (kind, path) = match namespace {
        Some(ns) => (
            "RoleBinding",
            format!("{RBAC}/namespaces/{ns}/rolebindings"),
        ),
        None => ("ClusterRoleBinding", format!("{RBAC}/clusterrolebindings")),
    };
    let object = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": subjects});
    (path, object)
}

/// Creates each object as the admin; each must be created.
async fn create_all(
    admin: &HttpsClient,
    url: &str,
    objects: impl IntoIterator<Item = (String, Value)>,
) {
    for (path, object) in objects {
        let (code, answer, _) = call(admin, url, Method::POST, &path, None, Some(object)).await;
        assert_eq!(code, 201, "{path}: {answer}");
    }
}

fn pod(name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_is_401_and_unauthorized_is_403_in_kubernetes_words() {
    let s = secure(ApiServerConfig::default()).await;
    let url = s.running.url();
    assert!(url.starts_with("https://"));
    let anonymous = client(&s.pki, None);
    let (code, status, _) = call(&anonymous, &url, Method::GET, PODS, None, None).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (401, Some("Unauthorized"))
    );
    let (code, _, _) = call(
        &anonymous,
        &url,
        Method::GET,
        PODS,
        Some("wrong-token"),
        None,
    )
    .await;
    assert_eq!(code, 401);

    let (code, status, _) = call(
        &anonymous,
        &url,
        Method::GET,
        PODS,
        Some("alice-token"),
        None,
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    // Discovery is for every authenticated user.
    let (code, _, _) = call(
        &anonymous,
        &url,
        Method::GET,
        "/api/v1",
        Some("alice-token"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let (code, _, _) = call(&admin(&s.pki), &url, Method::GET, PODS, None, None).await;
    assert_eq!(code, 200, "system:masters may do anything");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let audit = std::fs::read_to_string(&s.audit).unwrap();
    let lines: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().any(|l| l["user"]["username"] == "alice"
        && l["verb"] == "list"
        && l["responseStatus"]["code"] == 403
        && l["objectRef"]["resource"] == "pods"));
    assert!(lines.iter().any(|l| l["responseStatus"]["code"] == 401));
    assert!(lines.iter().all(|l| l["latencyMicros"].is_u64()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_roles_bindings_wildcards_names_and_subresources() {
    let s = secure(ApiServerConfig::default()).await;
    let url = s.running.url();
    let admin = admin(&s.pki);
    let alice = client(&s.pki, None);
    let as_alice = |method: Method, path: &str, body: Option<Value>| {
        let (alice, url, path) = (&alice, url.clone(), path.to_string());
        async move {
            call(alice, &url, method, &path, Some("alice-token"), body)
                .await
                .0
        }
    };
    create_all(
        &admin,
        &url,
        [
            role(
                Some("default"),
                "pod-reader",
                json!([{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]},
                       {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["settings"], "verbs": ["get"]}]),
            ),
            binding(
                Some("default"),
                "devs-read",
                ("Role", "pod-reader"),
                json!([{"kind": "Group", "name": "devs"}]),
            ),
            role(
                None,
                "node-watcher",
                json!([{"apiGroups": ["*"], "resources": ["nodes"], "verbs": ["*"]}]),
            ),
            binding(
                None,
                "alice-nodes",
                ("ClusterRole", "node-watcher"),
                json!([{"kind": "User", "name": "alice"}]),
            ),
        ],
    )
    .await;
    call(&admin, &url, Method::POST, PODS, None, Some(pod("p", "n1"))).await;

    assert_eq!(
        as_alice(Method::GET, PODS, None).await,
        200,
        "list through the group's RoleBinding"
    );
    assert_eq!(as_alice(Method::GET, &format!("{PODS}/p"), None).await, 200);
    assert_eq!(
        as_alice(Method::DELETE, &format!("{PODS}/p"), None).await,
        403,
        "no delete verb"
    );
    assert_eq!(
        as_alice(Method::GET, "/api/v1/namespaces/kube-system/pods", None).await,
        403,
        "a RoleBinding is namespaced"
    );
    assert_eq!(
        as_alice(Method::GET, "/api/v1/pods", None).await,
        403,
        "nor cluster-wide"
    );
    assert_eq!(
        as_alice(
            Method::PUT,
            &format!("{PODS}/p/status"),
            Some(pod("p", "n1"))
        )
        .await,
        403,
        "subresources are separate"
    );
    assert_eq!(
        as_alice(
            Method::GET,
            "/api/v1/namespaces/default/configmaps/settings",
            None
        )
        .await,
        404,
        "allowed by name (absent)"
    );
    assert_eq!(
        as_alice(
            Method::GET,
            "/api/v1/namespaces/default/configmaps/other",
            None
        )
        .await,
        403,
        "other names are not"
    );
    assert_eq!(
        as_alice(Method::GET, "/api/v1/nodes", None).await,
        200,
        "ClusterRoleBinding with wildcards"
    );
    assert_eq!(
        as_alice(Method::DELETE, "/api/v1/nodes/x", None).await,
        404,
        "verbs *: allowed (absent)"
    );

    // SelfSubjectAccessReview, as `kubectl auth can-i` asks it.
    let review = |verb: &str, resource: &str, ns: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"verb": verb, "resource": resource, "namespace": ns}}})
    };
    let ssar = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    let (code, answer, _) = call(
        &alice,
        &url,
        Method::POST,
        ssar,
        Some("alice-token"),
        Some(review("list", "pods", "default")),
    )
    .await;
    assert_eq!(
        (code, answer["status"]["allowed"].as_bool()),
        (201, Some(true))
    );
    let (_, answer, _) = call(
        &alice,
        &url,
        Method::POST,
        ssar,
        Some("alice-token"),
        Some(review("delete", "pods", "default")),
    )
    .await;
    assert_eq!(answer["status"]["allowed"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_may_change_only_itself_and_its_own_pods() {
    let s = secure(ApiServerConfig::default()).await;
    let url = s.running.url();
    let admin = admin(&s.pki);
    let node1 = client(
        &s.pki,
        s.pki
            .client("node-n1", "system:node:n1", &["system:nodes"])
            .map(|p| Some((p.cert_pem, p.key_pem)))
            .unwrap(),
    );
    let node = |name: &str| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
    let (code, _, _) = call(
        &node1,
        &url,
        Method::POST,
        "/api/v1/nodes",
        None,
        Some(node("n1")),
    )
    .await;
    assert_eq!(code, 201, "a node registers itself");
    let (code, status, _) = call(
        &node1,
        &url,
        Method::POST,
        "/api/v1/nodes",
        None,
        Some(node("n2")),
    )
    .await;
    assert_eq!(code, 403, "{status}");
    // Server-side apply creates through the same admission: no other Node by apply either.
    let apply = Request::builder()
        .method(Method::PATCH)
        .uri(format!("{url}/api/v1/nodes/n3?fieldManager=agent"))
        .header("content-type", "application/apply-patch+yaml")
        .body(Full::new(Bytes::from(node("n3").to_string())))
        .unwrap();
    let response = node1.request(apply).await.unwrap();
    assert_eq!(response.status().as_u16(), 403, "apply of another Node");
    let apply_own = Request::builder()
        .method(Method::PATCH)
        .uri(format!("{url}/api/v1/nodes/n1?fieldManager=agent"))
        .header("content-type", "application/apply-patch+yaml")
        .body(Full::new(Bytes::from(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"x": "y"}}})
                .to_string(),
        )))
        .unwrap();
    let response = node1.request(apply_own).await.unwrap();
    assert_eq!(response.status().as_u16(), 200, "apply of its own Node");
    call(
        &admin,
        &url,
        Method::POST,
        "/api/v1/nodes",
        None,
        Some(node("n2")),
    )
    .await;
    let (code, _, _) = call(
        &node1,
        &url,
        Method::PATCH,
        "/api/v1/nodes/n1",
        None,
        Some(json!({"metadata": {"labels": {"a": "b"}}})),
    )
    .await;
    // merge patch needs its content type; a 415 still means it got past authorization.
    assert_ne!(code, 403);
    let (code, _, _) = call(
        &node1,
        &url,
        Method::PUT,
        "/api/v1/nodes/n2",
        None,
        Some(node("n2")),
    )
    .await;
    assert_eq!(code, 403, "another node is off limits");

    call(
        &admin,
        &url,
        Method::POST,
        PODS,
        None,
        Some(pod("mine", "n1")),
    )
    .await;
    call(
        &admin,
        &url,
        Method::POST,
        PODS,
        None,
        Some(pod("theirs", "n2")),
    )
    .await;
    let (_, mine, _) = call(
        &node1,
        &url,
        Method::GET,
        &format!("{PODS}/mine"),
        None,
        None,
    )
    .await;
    let mut status = mine.clone();
    status["status"] = json!({"phase": "Running"});
    let (code, _, _) = call(
        &node1,
        &url,
        Method::PUT,
        &format!("{PODS}/mine/status"),
        None,
        Some(status),
    )
    .await;
    assert_eq!(code, 200);
    let (_, theirs, _) = call(
        &node1,
        &url,
        Method::GET,
        &format!("{PODS}/theirs"),
        None,
        None,
    )
    .await;
    let mut status = theirs.clone();
    status["status"] = json!({"phase": "Failed"});
    let (code, _, _) = call(
        &node1,
        &url,
        Method::PUT,
        &format!("{PODS}/theirs/status"),
        None,
        Some(status),
    )
    .await;
    assert_eq!(code, 403, "another node's pod is off limits");
    let (code, _, _) = call(
        &node1,
        &url,
        Method::DELETE,
        &format!("{PODS}/theirs"),
        None,
        None,
    )
    .await;
    assert_eq!(code, 403);
    let (code, _, _) = call(
        &node1,
        &url,
        Method::POST,
        PODS,
        None,
        Some(pod("new", "n1")),
    )
    .await;
    assert_eq!(code, 403, "nodes do not create pods");

    // Secrets: only those its pods use.
    for name in ["used", "unused"] {
        call(
            &admin,
            &url,
            Method::POST,
            "/api/v1/namespaces/default/secrets",
            None,
            Some(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}})),
        )
        .await;
    }
    let mut uses = pod("uses", "n1");
    uses["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "used"}}]);
    call(&admin, &url, Method::POST, PODS, None, Some(uses)).await;
    let (code, _, _) = call(
        &node1,
        &url,
        Method::GET,
        "/api/v1/namespaces/default/secrets/used",
        None,
        None,
    )
    .await;
    assert_eq!(code, 200);
    let (code, _, _) = call(
        &node1,
        &url,
        Method::GET,
        "/api/v1/namespaces/default/secrets/unused",
        None,
        None,
    )
    .await;
    assert_eq!(code, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_work_until_the_account_goes() {
    let s = secure(ApiServerConfig::default()).await;
    let url = s.running.url();
    let admin = admin(&s.pki);
    call(
        &admin,
        &url,
        Method::POST,
        "/api/v1/namespaces/default/serviceaccounts",
        None,
        Some(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}})),
    )
    .await;
    call(&admin, &url, Method::POST, "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", None,
        Some(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "robot-view"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "default"}]}))).await;
    let (code, answer, _) = call(
        &admin,
        &url,
        Method::POST,
        "/api/v1/namespaces/default/serviceaccounts/robot/token",
        None,
        Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})),
    )
    .await;
    assert_eq!(code, 201, "{answer}");
    let token = answer["status"]["token"].as_str().unwrap().to_string();

    // RemoteStore (our client) with the token.
    let store = RemoteStore::with_auth(
        &url,
        RemoteAuth {
            ca_pem: Some(s.pki.ca_pem().to_string()),
            token: Some(token.clone()),
            ..RemoteAuth::default()
        },
    )
    .unwrap();
    store
        .list(&GroupKind::POD, Some("default"), &ListOptions::default())
        .await
        .unwrap();
    assert!(
        store
            .list(
                &GroupKind::POD,
                Some("kube-system"),
                &ListOptions::default()
            )
            .await
            .is_err()
    );

    call(
        &admin,
        &url,
        Method::DELETE,
        "/api/v1/namespaces/default/serviceaccounts/robot",
        None,
        None,
    )
    .await;
    let anonymous = client(&s.pki, None);
    let (code, _, _) = call(&anonymous, &url, Method::GET, PODS, Some(&token), None).await;
    assert_eq!(code, 401, "a token outlives its account by nothing");
    let _ = store
        .get(&GroupKind::POD, &ObjectKey::namespaced("default", "x"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_gets_429s_while_another_client_is_served_and_big_bodies_get_413() {
    let mut config = ApiServerConfig::default();
    // Handlers run without yielding, so with two worker threads at most two overlap: one slot
    // per user makes the flood overflow its share.
    config.max_inflight = 4;
    config.max_inflight_per_user = 1;
    let s = secure(config).await;
    let url = s.running.url();
    let flood_client = admin(&s.pki);
    // Lists of a few hundred objects keep requests in flight long enough to overlap.
    for i in 0..300 {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i}")},
            "data": {"k": "v".repeat(512)}});
        call(
            &flood_client,
            &url,
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            None,
            Some(cm),
        )
        .await;
    }
    let mut flood = Vec::new();
    for _ in 0..16 {
        let (client, url) = (flood_client.clone(), url.clone());
        flood.push(tokio::spawn(async move {
            let mut codes = Vec::new();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(2) {
                let (code, _, retry) =
                    call(&client, &url, Method::GET, "/api/v1/configmaps", None, None).await;
                if code == 429 {
                    assert_eq!(retry.as_deref(), Some("1"), "429 carries Retry-After");
                }
                codes.push(code);
            }
            codes
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let other = client(&s.pki, None);
    let started = Instant::now();
    let served = loop {
        let (code, _, _) = call(
            &other,
            &url,
            Method::GET,
            "/version",
            Some("alice-token"),
            None,
        )
        .await;
        if code == 200 {
            break started.elapsed();
        }
        assert_eq!(code, 429);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        served < Duration::from_secs(1),
        "another client served within {served:?}"
    );
    let mut codes = Vec::new();
    for f in flood {
        codes.extend(f.await.unwrap());
    }
    assert!(codes.contains(&429), "the flood was limited");
    assert!(codes.contains(&200), "and still served");

    let huge = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "huge"},
        "data": {"k": "x".repeat(4 * 1024 * 1024)}});
    // The server answers 413 without reading the body and closes the connection; a client
    // still writing may see the connection reset before it reads the answer.
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{url}/api/v1/namespaces/default/configmaps"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(huge.to_string())))
        .unwrap();
    match admin(&s.pki).request(request).await {
        Ok(response) => assert_eq!(response.status().as_u16(), 413),
        Err(e) => assert!(
            format!("{e:?}").contains("BrokenPipe") || format!("{e:?}").contains("reset"),
            "{e:?}"
        ),
    }
    let (code, _, _) = call(
        &admin(&s.pki),
        &url,
        Method::GET,
        "/api/v1/namespaces/default/configmaps/huge",
        None,
        None,
    )
    .await;
    assert_eq!(code, 404, "nothing of it was stored");
}

/// A LIST too big to send at once keeps its in-flight slot until its body is sent: a server
/// serving many huge LISTs to slow readers refuses more work (429) instead of taking it all.
#[tokio::test]
async fn a_streamed_list_holds_its_in_flight_slot_until_its_body_is_sent() {
    let mut config = ApiServerConfig::default();
    config.max_inflight = 1;
    let s = secure(config).await;
    let url = s.running.url();
    for i in 0..20_000 {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{i}"), "namespace": "default"},
            "data": {"k": "v".repeat(1024)}});
        s.store
            .create(serde_json::from_value(cm).unwrap())
            .await
            .unwrap();
    }
    let slow = admin(&s.pki);
    let request = Request::builder()
        .uri(format!("{url}/api/v1/configmaps"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = slow.request(request).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // Its 20 MB are not read yet: the server is still sending them.
    let other = admin(&s.pki);
    let one = "/api/v1/namespaces/default/configmaps/cm-0";
    let (code, _, retry) = call(&other, &url, Method::GET, one, None, None).await;
    assert_eq!((code, retry.as_deref()), (429, Some("1")));

    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(body.len() > 20_000 * 1024, "the whole list arrived");
    let started = Instant::now();
    loop {
        let (code, _, _) = call(&other, &url, Method::GET, one, None, None).await;
        if code == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still {code}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The projected volume ServiceAccount admission added to a created pod, if any.
fn token_volume(pod: &Value) -> Option<&Value> {
    pod["spec"]["volumes"].as_array()?.iter().find(|v| {
        v["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("kube-api-access-"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_a_projected_token_volume_unless_automount_is_off() {
    let s = secure(ApiServerConfig::default()).await;
    let url = s.running.url();
    let admin = admin(&s.pki);
    let mount = "/var/run/secrets/kubernetes.io/serviceaccount";
    let (code, created, _) = call(
        &admin,
        &url,
        Method::POST,
        PODS,
        None,
        Some(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"initContainers": [{"name": "init", "image": "busybox"}],
                "containers": [{"name": "app", "image": "busybox"},
                    {"name": "own", "image": "busybox",
                     "volumeMounts": [{"name": "mine", "mountPath": mount}]}],
                "volumes": [{"name": "mine", "emptyDir": {}}]}}),
        ),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let volume = token_volume(&created).expect("a kube-api-access volume");
    let name = volume["name"].as_str().unwrap();
    assert_eq!(name.len(), "kube-api-access-".len() + 5, "{name}");
    assert_eq!(
        volume["projected"]["sources"],
        json!([
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ])
    );
    let expected = json!({"name": name, "readOnly": true, "mountPath": mount});
    for (list, i) in [("initContainers", 0), ("containers", 0)] {
        let mounts = &created["spec"][list][i]["volumeMounts"];
        assert_eq!(mounts, &json!([expected]), "{list}[{i}]");
    }
    assert_eq!(
        created["spec"]["containers"][1]["volumeMounts"],
        json!([{"name": "mine", "mountPath": mount}]),
        "a container mounting the path itself keeps its own"
    );

    // Off on the pod, or on its ServiceAccount.
    let bare = |name: &str, extra: Value| {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        if let (Value::Object(spec), Value::Object(extra)) = (&mut pod["spec"], extra) {
            spec.extend(extra);
        }
        pod
    };
    let (_, created, _) = call(
        &admin,
        &url,
        Method::POST,
        PODS,
        None,
        Some(bare("off", json!({"automountServiceAccountToken": false}))),
    )
    .await;
    assert!(token_volume(&created).is_none(), "{created}");
    assert!(created["spec"]["containers"][0]["volumeMounts"].is_null());
    // A pod may only run as a ServiceAccount that exists (403, as Kubernetes' admission
    // answers), and nothing is stored.
    let (code, status, _) = call(
        &admin,
        &url,
        Method::POST,
        PODS,
        None,
        Some(bare("early", json!({"serviceAccountName": "quiet"}))),
    )
    .await;
    assert_eq!(code, 403, "{status}");
    assert_eq!(status["reason"], "Forbidden");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("serviceaccount \"quiet\" not found"),
        "{status}"
    );
    let (code, _, _) = call(
        &admin,
        &url,
        Method::GET,
        &format!("{PODS}/early"),
        None,
        None,
    )
    .await;
    assert_eq!(code, 404);
    call(
        &admin,
        &url,
        Method::POST,
        "/api/v1/namespaces/default/serviceaccounts",
        None,
        Some(
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "quiet"},
            "automountServiceAccountToken": false, "imagePullSecrets": [{"name": "registry"}]}),
        ),
    )
    .await;
    let (_, created, _) = call(
        &admin,
        &url,
        Method::POST,
        PODS,
        None,
        Some(bare("quiet", json!({"serviceAccountName": "quiet"}))),
    )
    .await;
    assert!(token_volume(&created).is_none(), "{created}");
    let (_, created, _) = call(
        &admin,
        &url,
        Method::POST,
        PODS,
        None,
        Some(bare(
            "loud",
            json!({"serviceAccountName": "quiet", "automountServiceAccountToken": true}),
        )),
    )
    .await;
    assert!(
        token_volume(&created).is_some(),
        "the pod's own setting wins"
    );
    // Pods of the account get its image pull secrets, unless they name their own.
    assert_eq!(
        created["spec"]["imagePullSecrets"],
        json!([{"name": "registry"}])
    );
    let (_, created, _) = call(
        &admin,
        &url,
        Method::POST,
        PODS,
        None,
        Some(bare(
            "own-secrets",
            json!({"serviceAccountName": "quiet", "imagePullSecrets": [{"name": "mine"}]}),
        )),
    )
    .await;
    assert_eq!(
        created["spec"]["imagePullSecrets"],
        json!([{"name": "mine"}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_has_the_root_ca_config_map_and_a_default_account() {
    let s = secure(ApiServerConfig::default()).await;
    let url = s.running.url();
    let admin = admin(&s.pki);
    let root_ca = |ns: &str| format!("/api/v1/namespaces/{ns}/configmaps/kube-root-ca.crt");
    let account = |ns: &str| format!("/api/v1/namespaces/{ns}/serviceaccounts/default");
    // Namespaces that existed at start, and one created through the API.
    call(
        &admin,
        &url,
        Method::POST,
        "/api/v1/namespaces",
        None,
        Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})),
    )
    .await;
    for ns in ["default", "kube-system", "team"] {
        let (code, cm, _) = call(&admin, &url, Method::GET, &root_ca(ns), None, None).await;
        assert_eq!(code, 200, "{ns}: {cm}");
        assert_eq!(cm["data"]["ca.crt"], s.pki.ca_pem(), "{ns}");
        let (code, _, _) = call(&admin, &url, Method::GET, &account(ns), None, None).await;
        assert_eq!(code, 200, "{ns} has a default ServiceAccount");
    }
    // One created behind the server's back, and a deleted ConfigMap, are caught up with.
    let ns = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "direct"}}),
    )
    .unwrap();
    s.store.create(ns).await.unwrap();
    call(&admin, &url, Method::DELETE, &root_ca("team"), None, None).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (direct, _, _) = call(&admin, &url, Method::GET, &root_ca("direct"), None, None).await;
        let (team, cm, _) = call(&admin, &url, Method::GET, &root_ca("team"), None, None).await;
        if direct == 200 && team == 200 {
            assert_eq!(cm["data"]["ca.crt"], s.pki.ca_pem());
            break;
        }
        assert!(Instant::now() < deadline, "not published: {direct} {team}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_gets_tokens_bound_to_its_own_pods_only_and_they_end_with_the_pod() {
    let s = secure(ApiServerConfig::default()).await;
    let url = s.running.url();
    let admin = admin(&s.pki);
    let node = |name: &str| {
        let pair = s
            .pki
            .client(
                &format!("node-{name}"),
                &format!("system:node:{name}"),
                &["system:nodes"],
            )
            .unwrap();
        client(&s.pki, Some((pair.cert_pem, pair.key_pem)))
    };
    let n1 = node("n1");
    let (_, mine, _) = call(
        &admin,
        &url,
        Method::POST,
        PODS,
        None,
        Some(pod("mine", "n1")),
    )
    .await;
    call(
        &admin,
        &url,
        Method::POST,
        PODS,
        None,
        Some(pod("theirs", "n2")),
    )
    .await;
    let token_path = "/api/v1/namespaces/default/serviceaccounts/default/token";
    let request = |pod: Option<(&str, &str)>| {
        let mut spec = json!({"expirationSeconds": 3607});
        if let Some((name, uid)) = pod {
            spec["boundObjectRef"] =
                json!({"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid});
        }
        Some(
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}),
        )
    };
    let uid = mine["metadata"]["uid"].as_str().unwrap();
    let (code, answer, _) = call(
        &n1,
        &url,
        Method::POST,
        token_path,
        None,
        request(Some(("mine", uid))),
    )
    .await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(answer["spec"]["expirationSeconds"], 3607);
    let token = answer["status"]["token"].as_str().unwrap().to_string();
    let (code, answer, _) = call(&n1, &url, Method::POST, token_path, None, request(None)).await;
    assert_eq!(code, 403, "unbound: {answer}");
    let (code, answer, _) = call(
        &n1,
        &url,
        Method::POST,
        token_path,
        None,
        request(Some(("theirs", ""))),
    )
    .await;
    assert_eq!(code, 403, "another node's pod: {answer}");
    let (code, _, _) = call(
        &n1,
        &url,
        Method::POST,
        token_path,
        None,
        request(Some(("mine", "other-uid"))),
    )
    .await;
    assert_eq!(code, 409, "a stale UID");

    // The token is the pod's ServiceAccount's until the pod goes.
    let anonymous = client(&s.pki, None);
    let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "get", "resource": "pods", "namespace": "default"}}});
    let (code, answer, _) = call(
        &anonymous,
        &url,
        Method::POST,
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        Some(&token),
        Some(review.clone()),
    )
    .await;
    assert_eq!(code, 201, "{answer}");
    call(
        &admin,
        &url,
        Method::DELETE,
        &format!("{PODS}/mine?gracePeriodSeconds=0"),
        None,
        None,
    )
    .await;
    let (code, _, _) = call(
        &anonymous,
        &url,
        Method::POST,
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        Some(&token),
        Some(review),
    )
    .await;
    assert_eq!(code, 401, "a bound token ends with its pod");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_get_a_selector_on_their_own_uid_unless_it_is_manual() {
    let s = secure(ApiServerConfig::default()).await;
    let url = s.running.url();
    let admin = admin(&s.pki);
    let jobs = "/apis/batch/v1/namespaces/default/jobs";
    let job = |name: &str, manual: bool| {
        let mut job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"metadata": {"labels": {"app": "batch"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
        if manual {
            job["spec"]["manualSelector"] = json!(true);
            job["spec"]["selector"] = json!({"matchLabels": {"app": "batch"}});
        }
        job
    };
    let (code, created, _) = call(
        &admin,
        &url,
        Method::POST,
        jobs,
        None,
        Some(job("pi", false)),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let uid = created["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        created["spec"]["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
    );
    assert_eq!(
        created["spec"]["template"]["metadata"]["labels"],
        json!({"app": "batch", "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": "pi", "controller-uid": uid, "job-name": "pi"})
    );
    let (_, stored, _) = call(&admin, &url, Method::GET, &format!("{jobs}/pi"), None, None).await;
    assert_eq!(
        stored["metadata"]["uid"], uid,
        "the store keeps the UID the selector names"
    );

    let (code, created, _) = call(
        &admin,
        &url,
        Method::POST,
        jobs,
        None,
        Some(job("manual", true)),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        created["spec"]["selector"],
        json!({"matchLabels": {"app": "batch"}})
    );
    assert_eq!(
        created["spec"]["template"]["metadata"]["labels"],
        json!({"app": "batch"})
    );
}

/// A request with extra headers (impersonation), answered as code and JSON.
async fn call_with_headers(
    client: &HttpsClient,
    url: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{url}{path}"))
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let response = client
        .request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let code = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn impersonation_needs_the_impersonate_verb_for_the_user_and_each_group() {
    let s = secure(ApiServerConfig::default()).await;
    let url = s.running.url();
    let admin = admin(&s.pki);
    let alice = client(&s.pki, None);
    let robot = "system:serviceaccount:default:robot";
    create_all(
        &admin,
        &url,
        [
            // alice may act as the robot account and as bob, nothing else.
            role(
                None,
                "impersonate-some",
                json!([{"apiGroups": [""], "resources": ["serviceaccounts"], "resourceNames": ["robot"], "verbs": ["impersonate"]},
                       {"apiGroups": [""], "resources": ["users"], "resourceNames": ["bob"], "verbs": ["impersonate"]}]),
            ),
            binding(
                None,
                "alice-impersonates",
                ("ClusterRole", "impersonate-some"),
                json!([{"kind": "User", "name": "alice"}]),
            ),
            // The robot account may read pods in default.
            role(
                Some("default"),
                "pod-reader",
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]),
            ),
            binding(
                Some("default"),
                "robot-reads",
                ("Role", "pod-reader"),
                json!([{"kind": "ServiceAccount", "name": "robot", "namespace": "default"}]),
            ),
        ],
    )
    .await;
    let (code, _, _) = call(
        &admin,
        &url,
        Method::POST,
        PODS,
        None,
        Some(pod("web", "n1")),
    )
    .await;
    assert_eq!(code, 201);
    let as_robot = [("Impersonate-User", robot)];
    let web = format!("{PODS}/web");

    // system:masters may impersonate anyone; the request then has the robot's rights only.
    let (code, _) = call_with_headers(&admin, &url, Method::GET, PODS, None, &as_robot, None).await;
    assert_eq!(code, 200);
    let (code, answer) =
        call_with_headers(&admin, &url, Method::DELETE, &web, None, &as_robot, None).await;
    assert_eq!(code, 403);
    assert_eq!(
        answer["message"],
        format!(
            "pods \"web\" is forbidden: User \"{robot}\" cannot delete resource \"pods\" in API group \"\" in the namespace \"default\""
        )
    );

    // alice may act as the robot (impersonate on serviceaccounts/robot in its namespace)...
    let token = Some("alice-token");
    let (code, _) =
        call_with_headers(&alice, &url, Method::GET, PODS, token, &as_robot, None).await;
    assert_eq!(code, 200);
    // ... and as bob, but not as carol, and not with a group she may not impersonate.
    let (code, answer) = call_with_headers(
        &alice,
        &url,
        Method::GET,
        PODS,
        token,
        &[("Impersonate-User", "carol")],
        None,
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(
        answer["message"],
        "users \"carol\" is forbidden: User \"alice\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
    );
    let (code, answer) = call_with_headers(
        &alice,
        &url,
        Method::GET,
        PODS,
        token,
        &[
            ("Impersonate-User", "bob"),
            ("Impersonate-Group", "system:masters"),
        ],
        None,
    )
    .await;
    assert_eq!(code, 403, "{answer}");
    assert_eq!(
        answer["message"],
        "groups \"system:masters\" is forbidden: User \"alice\" cannot impersonate resource \"groups\" in API group \"\" at the cluster scope"
    );
    // As bob (no groups but system:authenticated), alice cannot read pods.
    let (code, answer) = call_with_headers(
        &alice,
        &url,
        Method::GET,
        PODS,
        token,
        &[("Impersonate-User", "bob")],
        None,
    )
    .await;
    assert_eq!(code, 403);
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("User \"bob\" cannot list")
    );
    // A group without a user is not a request.
    let (code, _) = call_with_headers(
        &admin,
        &url,
        Method::GET,
        PODS,
        None,
        &[("Impersonate-Group", "devs")],
        None,
    )
    .await;
    assert_eq!(code, 400);

    // `kubectl auth can-i --as`: the review answers for the impersonated user.
    let review = |verb: &str| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"verb": verb, "resource": "pods", "namespace": "default"}}})
    };
    let ssar = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    let (code, answer) = call_with_headers(
        &admin,
        &url,
        Method::POST,
        ssar,
        None,
        &as_robot,
        Some(review("list")),
    )
    .await;
    assert_eq!(
        (code, answer["status"]["allowed"].as_bool()),
        (201, Some(true))
    );
    let (_, answer) = call_with_headers(
        &admin,
        &url,
        Method::POST,
        ssar,
        None,
        &as_robot,
        Some(review("delete")),
    )
    .await;
    assert_eq!(answer["status"]["allowed"], false);

    // `kubectl auth whoami`: who the server takes the asker to be.
    let whoami = "/apis/authentication.k8s.io/v1/selfsubjectreviews";
    let review =
        Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}));
    let (code, answer) = call_with_headers(
        &alice,
        &url,
        Method::POST,
        whoami,
        token,
        &[],
        review.clone(),
    )
    .await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(answer["status"]["userInfo"]["username"], "alice");
    assert_eq!(
        answer["status"]["userInfo"]["groups"],
        json!(["devs", "system:authenticated"])
    );
    let (code, answer) =
        call_with_headers(&admin, &url, Method::POST, whoami, None, &as_robot, review).await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(answer["status"]["userInfo"]["username"], robot);
    assert_eq!(
        answer["status"]["userInfo"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ])
    );

    // The audit log names both: who asked, and whom they acted as.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let audit = std::fs::read_to_string(&s.audit).unwrap();
    assert!(
        audit
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .any(|l| l["user"]["username"] == "alice"
                && l["impersonatedUser"]["username"] == robot
                && l["impersonatedUser"]["groups"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("system:serviceaccounts:default")))
    );
}

#[tokio::test]
async fn bootstrap_roles_written_by_an_older_server_gain_new_rules_unless_opted_out() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let rbac = "rbac.authorization.k8s.io/v1";
    let old_rule = json!({"apiGroups": ["authorization.k8s.io"],
        "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]});
    let extra_rule = json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]});
    for object in [
        // As an older server left it, plus a rule an admin added.
        json!({"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "system:basic-user"},
            "rules": [old_rule, extra_rule]}),
        // An admin pinned this one.
        json!({"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": "view",
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "false"}},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
    ] {
        store
            .create(serde_json::from_value(object).unwrap())
            .await
            .unwrap();
    }
    let s = secure_over(store.clone(), ApiServerConfig::default()).await;
    let role = |name: &str| {
        let store = store.clone();
        let name = name.to_string();
        async move {
            store
                .get(
                    &GroupKind::new("rbac.authorization.k8s.io", "ClusterRole"),
                    &ObjectKey::cluster(name),
                )
                .await
                .unwrap()
                .data["rules"]
                .clone()
        }
    };
    let basic = role("system:basic-user").await;
    let rules = basic.as_array().unwrap();
    assert_eq!(rules.len(), 3, "{basic}");
    assert!(rules.contains(&extra_rule), "nothing is removed: {basic}");
    assert!(
        rules
            .iter()
            .any(|r| r["resources"] == json!(["selfsubjectreviews"]))
    );
    assert_eq!(
        role("view").await,
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
    );
    // And the added rule works: alice may ask who she is.
    let (code, answer) = call_with_headers(
        &client(&s.pki, None),
        &s.running.url(),
        Method::POST,
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        Some("alice-token"),
        &[],
        Some(json!({})),
    )
    .await;
    assert_eq!(code, 201, "{answer}");
}

#[tokio::test]
async fn token_and_subject_access_reviews_answer_for_others_to_auth_delegators_only() {
    let s = secure(ApiServerConfig::default()).await;
    let url = s.running.url();
    let admin = admin(&s.pki);
    let alice = client(&s.pki, None);
    let token = Some("alice-token");
    let tokenreviews = "/apis/authentication.k8s.io/v1/tokenreviews";
    let sar = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
    let review = |t: &str, audiences: Value| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": t, "audiences": audiences}})
    };

    // Reviews are for delegated authentication and authorization (system:auth-delegator).
    let (code, _) = call_with_headers(
        &alice,
        &url,
        Method::POST,
        tokenreviews,
        token,
        &[],
        Some(review("alice-token", json!([]))),
    )
    .await;
    assert_eq!(code, 403);
    create_all(
        &admin,
        &url,
        [
            binding(
                None,
                "alice-delegates",
                ("ClusterRole", "system:auth-delegator"),
                json!([{"kind": "User", "name": "alice"}]),
            ),
            role(
                Some("default"),
                "pod-lister",
                json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]),
            ),
            binding(
                Some("default"),
                "devs-list",
                ("Role", "pod-lister"),
                json!([{"kind": "Group", "name": "devs"}]),
            ),
            (
                "/api/v1/namespaces/default/serviceaccounts".to_string(),
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}}),
            ),
        ],
    )
    .await;

    // A static token: good for any audience. The token is not sent back.
    let (code, answer) = call_with_headers(
        &alice,
        &url,
        Method::POST,
        tokenreviews,
        token,
        &[],
        Some(review("alice-token", json!(["vault"]))),
    )
    .await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(answer["status"]["authenticated"], true);
    assert_eq!(answer["status"]["user"]["username"], "alice");
    assert_eq!(
        answer["status"]["user"]["groups"],
        json!(["devs", "system:authenticated"])
    );
    assert_eq!(answer["status"]["audiences"], json!(["vault"]));
    assert!(answer["spec"].get("token").is_none(), "{answer}");
    let (_, answer) = call_with_headers(
        &alice,
        &url,
        Method::POST,
        tokenreviews,
        token,
        &[],
        Some(review("not-a-token", json!([]))),
    )
    .await;
    assert_eq!(answer["status"]["authenticated"], false);
    assert_eq!(answer["status"]["error"], "invalid bearer token");

    // A ServiceAccount token: only for the audiences it was issued for.
    let (code, answer, _) = call(
        &admin,
        &url,
        Method::POST,
        "/api/v1/namespaces/default/serviceaccounts/robot/token",
        None,
        Some(
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": ["vault"]}}),
        ),
    )
    .await;
    assert_eq!(code, 201, "{answer}");
    let robot_token = answer["status"]["token"].as_str().unwrap().to_string();
    let (_, answer) = call_with_headers(
        &alice,
        &url,
        Method::POST,
        tokenreviews,
        token,
        &[],
        Some(review(&robot_token, json!(["vault", "other"]))),
    )
    .await;
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    assert_eq!(
        answer["status"]["user"]["username"],
        "system:serviceaccount:default:robot"
    );
    assert_eq!(answer["status"]["audiences"], json!(["vault"]));
    let (_, answer) = call_with_headers(
        &alice,
        &url,
        Method::POST,
        tokenreviews,
        token,
        &[],
        Some(review(&robot_token, json!(["other"]))),
    )
    .await;
    assert_eq!(answer["status"]["authenticated"], false, "{answer}");
    assert!(
        answer["status"]["error"]
            .as_str()
            .unwrap()
            .contains("invalid for the target audiences")
    );

    // SubjectAccessReview: the user and groups exactly as named.
    let access = |verb: &str, groups: Value, namespace: Option<&str>| {
        let mut attributes = json!({"verb": verb, "resource": "pods"});
        if let Some(ns) = namespace {
            attributes["namespace"] = json!(ns);
        }
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": "carol", "groups": groups, "resourceAttributes": attributes}})
    };
    let (code, answer) = call_with_headers(
        &alice,
        &url,
        Method::POST,
        sar,
        token,
        &[],
        Some(access("list", json!(["devs"]), Some("default"))),
    )
    .await;
    assert_eq!(
        (code, answer["status"]["allowed"].as_bool()),
        (201, Some(true)),
        "{answer}"
    );
    for refused in [
        access("delete", json!(["devs"]), Some("default")),
        access("list", json!([]), Some("default")),
        access("list", json!(["devs"]), Some("kube-system")),
    ] {
        let (_, answer) =
            call_with_headers(&alice, &url, Method::POST, sar, token, &[], Some(refused)).await;
        assert_eq!(answer["status"]["allowed"], false, "{answer}");
    }
    let (code, _) = call_with_headers(
        &alice,
        &url,
        Method::POST,
        sar,
        token,
        &[],
        Some(json!({"spec": {"resourceAttributes": {"verb": "list", "resource": "pods"}}})),
    )
    .await;
    assert_eq!(code, 400, "a review names a user or groups");

    // LocalSubjectAccessReview: within its namespace (admin may; alice's role is cluster-wide
    // SubjectAccessReviews only).
    let local = "/apis/authorization.k8s.io/v1/namespaces/default/localsubjectaccessreviews";
    let (code, answer) = call_with_headers(
        &admin,
        &url,
        Method::POST,
        local,
        None,
        &[],
        Some(access("list", json!(["devs"]), None)),
    )
    .await;
    assert_eq!(
        (
            code,
            answer["kind"].as_str(),
            answer["status"]["allowed"].as_bool()
        ),
        (201, Some("LocalSubjectAccessReview"), Some(true)),
        "{answer}"
    );
    let (code, _) = call_with_headers(
        &admin,
        &url,
        Method::POST,
        local,
        None,
        &[],
        Some(access("list", json!(["devs"]), Some("kube-system"))),
    )
    .await;
    assert_eq!(code, 400);
    let (code, _) = call_with_headers(
        &alice,
        &url,
        Method::POST,
        local,
        token,
        &[],
        Some(access("list", json!(["devs"]), None)),
    )
    .await;
    assert_eq!(code, 403);
}

#[tokio::test]
async fn metrics_count_and_time_requests_for_monitoring_users() {
    let s = secure(ApiServerConfig::default()).await;
    let url = s.running.url();
    let admin = admin(&s.pki);
    let (code, _, _) = call(
        &admin,
        &url,
        Method::POST,
        PODS,
        None,
        Some(pod("web", "n1")),
    )
    .await;
    assert_eq!(code, 201);
    let (code, _, _) = call(
        &admin,
        &url,
        Method::GET,
        &format!("{PODS}/web"),
        None,
        None,
    )
    .await;
    assert_eq!(code, 200);
    let (code, _, _) = call(
        &admin,
        &url,
        Method::GET,
        &format!("{PODS}/gone"),
        None,
        None,
    )
    .await;
    assert_eq!(code, 404);

    let text = |client: HttpsClient, token: Option<&'static str>| {
        let url = url.clone();
        async move {
            let mut request = Request::builder().uri(format!("{url}/metrics"));
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let response = client
                .request(request.body(Full::new(Bytes::new())).unwrap())
                .await
                .unwrap();
            let code = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (code, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    // Prometheus' identity: a client certificate in the system:monitoring group.
    let prometheus = client(
        &s.pki,
        Some(
            s.pki
                .client("prometheus", "prometheus", &["system:monitoring"])
                .map(|p| (p.cert_pem, p.key_pem))
                .unwrap(),
        ),
    );
    let (code, metrics) = text(prometheus, None).await;
    assert_eq!(code, 200, "{metrics}");
    let pods = "group=\"\",resource=\"pods\",subresource=\"\"";
    for line in [
        format!("apiserver_request_total{{code=\"201\",{pods},verb=\"CREATE\"}} 1"),
        format!("apiserver_request_total{{code=\"200\",{pods},verb=\"GET\"}} 1"),
        format!("apiserver_request_total{{code=\"404\",{pods},verb=\"GET\"}} 1"),
        format!("apiserver_request_duration_seconds_count{{{pods},verb=\"GET\"}} 2"),
        format!(
            "apiserver_request_duration_seconds_bucket{{{pods},verb=\"CREATE\",le=\"+Inf\"}} 1"
        ),
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    assert!(metrics.contains("apiserver_current_inflight_requests "));
    // Others may not read them.
    let (code, _) = text(client(&s.pki, None), Some("alice-token")).await;
    assert_eq!(code, 403);
}
