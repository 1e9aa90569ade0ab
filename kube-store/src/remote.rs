//! [`RemoteStore`]: a [`Store`] that talks to a Kubernetes API server over HTTP, so the
//! scheduler, controllers, node agents and proxy run unchanged in another process or on
//! another host.
//!
//! Reads and writes map to the REST verbs (updates are compare-and-swap on
//! `resourceVersion`); watches stream `?watch=true` and, when the connection ends (the server's
//! timeout, a restart, a network blip), resume from the last revision they delivered, so a
//! caller sees one unbroken stream until the revision is compacted away (`TooOld`).
//!
//! ```no_run
//! # async fn run() -> Result<(), kube_core::StoreError> {
//! use std::sync::Arc;
//! use kube_core::store::Store;
//! use kube_store::RemoteStore;
//!
//! let store: Arc<dyn Store> = Arc::new(RemoteStore::new("http://127.0.0.1:6443")?);
//! let revision = store.current_revision().await?;
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube_core::kind::{KindInfo, Registry};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::{
    ListOptions, ObjectList, Preconditions, Store, StoreError, WatchEvent, WatchOptions,
    WatchStream,
};
use serde_json::{Value, json};

/// How long one request may take (watches excepted).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a watch request asks the server to keep the stream open before resuming.
const WATCH_TIMEOUT_SECONDS: u64 = 300;

/// An error the server answered with, kept as the source of [`StoreError::Backend`].
#[derive(Debug, thiserror::Error)]
#[error("API server answered {code}: {message}")]
pub struct RemoteError {
    /// HTTP status code.
    pub code: u16,
    /// The `Status` message, or the body.
    pub message: String,
}

/// How a [`RemoteStore`] proves who it is and whom it trusts over HTTPS.
#[derive(Clone, Default)]
pub struct RemoteAuth {
    /// The CA that signed the server's certificate, PEM.
    pub ca_pem: Option<String>,
    /// A client certificate and key, PEM (CN = user, O = groups).
    pub client_cert: Option<(String, String)>,
    /// A bearer token.
    pub token: Option<String>,
}

impl fmt::Debug for RemoteAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteAuth")
            .field("ca", &self.ca_pem.is_some())
            .field("client_cert", &self.client_cert.is_some())
            .field("token", &self.token.is_some())
            .finish()
    }
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// A [`Store`] backed by a Kubernetes API server.
#[derive(Clone)]
pub struct RemoteStore {
    base: Arc<str>,
    client: Client<Connector, Full<Bytes>>,
    registry: Registry,
    authorization: Option<hyper::header::HeaderValue>,
}

impl fmt::Debug for RemoteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteStore")
            .field("server", &self.base)
            .finish_non_exhaustive()
    }
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

impl RemoteStore {
    /// A store for the server at `url` (`http://host:port`, or `https://` trusting the
    /// platform's roots; see [`RemoteStore::with_auth`]), serving the builtin kinds.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        Self::with_registry(url, Registry::builtin().clone())
    }

    /// A store for the server at `url`, resolving kinds to REST paths with `registry`.
    pub fn with_registry(url: &str, registry: Registry) -> Result<Self, StoreError> {
        Self::connect(url, registry, RemoteAuth::default())
    }

    /// A store for the server at `url` (`https://` or `http://`) with credentials.
    pub fn with_auth(url: &str, auth: RemoteAuth) -> Result<Self, StoreError> {
        Self::connect(url, Registry::builtin().clone(), auth)
    }

    fn connect(url: &str, registry: Registry, auth: RemoteAuth) -> Result<Self, StoreError> {
        let base = url.trim_end_matches('/');
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(StoreError::Invalid(format!(
                "API server URL must be http(s)://host:port, got {url:?}"
            )));
        }
        let invalid =
            |what: &str, e: &dyn fmt::Display| StoreError::Invalid(format!("{what}: {e}"));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = &auth.ca_pem {
            use rustls::pki_types::pem::PemObject;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
                let cert = cert.map_err(|e| invalid("CA certificate", &e))?;
                roots.add(cert).map_err(|e| invalid("CA certificate", &e))?;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("TLS", &e))?
            .with_root_certificates(roots);
        let tls = match &auth.client_cert {
            Some((cert, key)) => {
                use rustls::pki_types::pem::PemObject;
                let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| invalid("client certificate", &e))?;
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes())
                    .map_err(|e| invalid("client key", &e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| invalid("client certificate", &e))?
            }
            None => builder.with_no_client_auth(),
        };
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let authorization = match &auth.token {
            Some(token) => Some(
                format!("Bearer {token}")
                    .parse()
                    .map_err(|e| invalid("token", &e))?,
            ),
            None => None,
        };
        Ok(Self {
            base: Arc::from(base),
            client,
            registry,
            authorization,
        })
    }

    /// Binds a pod to a node through the `pods/binding` subresource, as kube-scheduler does
    /// (a plain update cannot set `spec.nodeName`). With `uid`, only the pod with that UID is
    /// bound. A pod that is already bound, being deleted or replaced is
    /// [`StoreError::Conflict`]; a missing one [`StoreError::NotFound`].
    pub async fn bind(
        &self,
        pod: &ObjectKey,
        uid: Option<&str>,
        node: &str,
    ) -> Result<(), StoreError> {
        let info = self.info(&GroupKind::POD)?;
        let url = format!("{}/binding", self.item_url(info, pod));
        let mut metadata = json!({"name": pod.name, "namespace": pod.namespace});
        if let Some(uid) = uid {
            metadata["uid"] = json!(uid);
        }
        let body = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": metadata,
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        self.call(
            Method::POST,
            &url,
            Some(body.to_string().into_bytes()),
            &GroupKind::POD,
            Some(pod),
        )
        .await
        .map(drop)
    }

    /// Who `token` stands for, by a TokenReview (`authentication.k8s.io/v1`): the user name
    /// and groups, or `None` when the server does not authenticate it (for `audiences`; empty:
    /// the server's own). What a server that delegates authentication to the API server asks
    /// (a kubelet's webhook authentication).
    pub async fn review_token(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<Option<(String, Vec<String>)>, StoreError> {
        let kind = GroupKind::new("authentication.k8s.io", "TokenReview");
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": audiences},
        });
        let answer = self
            .call(
                Method::POST,
                &format!("{}/apis/authentication.k8s.io/v1/tokenreviews", self.base),
                Some(body.to_string().into_bytes()),
                &kind,
                None,
            )
            .await?;
        let status = &answer["status"];
        if status["authenticated"] != true {
            return Ok(None);
        }
        let name = status["user"]["username"].as_str().unwrap_or_default();
        if name.is_empty() {
            return Ok(None);
        }
        let groups = status["user"]["groups"]
            .as_array()
            .map(|g| {
                g.iter()
                    .filter_map(|g| g.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some((name.to_string(), groups)))
    }

    /// Whether `user` in `groups` may do what `resource_attributes` says (pairs of `verb`,
    /// `group`, `resource`, `subresource`, `name`, `namespace`, as in a SubjectAccessReview),
    /// asked of the API server's authorizer (a kubelet's webhook authorization).
    pub async fn review_access(
        &self,
        user: &str,
        groups: &[String],
        resource_attributes: &[(&str, &str)],
    ) -> Result<bool, StoreError> {
        let resource_attributes: serde_json::Map<String, Value> = resource_attributes
            .iter()
            .map(|(k, v)| ((*k).to_string(), Value::from(*v)))
            .collect();
        let kind = GroupKind::new("authorization.k8s.io", "SubjectAccessReview");
        let body = json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": groups, "resourceAttributes": resource_attributes},
        });
        let answer = self
            .call(
                Method::POST,
                &format!(
                    "{}/apis/authorization.k8s.io/v1/subjectaccessreviews",
                    self.base
                ),
                Some(body.to_string().into_bytes()),
                &kind,
                None,
            )
            .await?;
        Ok(answer["status"]["allowed"] == true)
    }

    /// Asks for a ServiceAccount token through the `serviceaccounts/token` subresource
    /// (TokenRequest), as the kubelet does for projected token volumes: for `account`, with
    /// `audiences` (empty: the API server's) and the lifetime asked for, bound to the pod
    /// (name, UID) when given so it stops working with the pod. Returns the token and when it
    /// expires (the server may shorten or lengthen the lifetime asked for).
    pub async fn request_token(
        &self,
        account: &ObjectKey,
        audiences: &[String],
        expiration_seconds: u64,
        bound_pod: Option<(&str, &str)>,
    ) -> Result<(String, std::time::SystemTime), StoreError> {
        let kind = GroupKind::new("", "ServiceAccount");
        let info = self.info(&kind)?;
        let url = format!("{}/token", self.item_url(info, account));
        let mut spec = json!({"audiences": audiences, "expirationSeconds": expiration_seconds});
        if let Some((name, uid)) = bound_pod {
            spec["boundObjectRef"] =
                json!({"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid});
        }
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {"name": account.name, "namespace": account.namespace},
            "spec": spec,
        });
        let asked = std::time::SystemTime::now();
        let answer = self
            .call(
                Method::POST,
                &url,
                Some(body.to_string().into_bytes()),
                &kind,
                Some(account),
            )
            .await?;
        let token = answer["status"]["token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| StoreError::Invalid("a TokenRequest answer without a token".into()))?;
        let seconds = answer["spec"]["expirationSeconds"]
            .as_u64()
            .unwrap_or(expiration_seconds);
        Ok((token.to_string(), asked + Duration::from_secs(seconds)))
    }

    fn info(&self, kind: &GroupKind) -> Result<&Arc<KindInfo>, StoreError> {
        self.registry
            .get(kind)
            .ok_or_else(|| StoreError::Invalid(format!("unknown kind {kind}")))
    }

    fn item_url(&self, info: &KindInfo, key: &ObjectKey) -> String {
        format!(
            "{}{}",
            self.base,
            info.item_path(key.namespace.as_deref(), &encode(&key.name))
        )
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
        content_type: &str,
    ) -> Result<hyper::Response<Incoming>, StoreError> {
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .header(hyper::header::ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, content_type);
        }
        if let Some(authorization) = &self.authorization {
            request = request.header(hyper::header::AUTHORIZATION, authorization.clone());
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(backend)?;
        self.client.request(request).await.map_err(backend)
    }

    /// Sends a request and reads the whole JSON answer; errors become [`StoreError`]s.
    async fn call(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
        kind: &GroupKind,
        key: Option<&ObjectKey>,
    ) -> Result<Value, StoreError> {
        let exchange = async {
            let response = self.send(method, url, body, "application/json").await?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(backend)?
                .to_bytes();
            Ok::<_, StoreError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                backend(RemoteError {
                    code: 504,
                    message: format!("no answer within {REQUEST_TIMEOUT:?}"),
                })
            })??;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or_else(
            |_| json!({"message": String::from_utf8_lossy(&bytes).trim().to_string()}),
        );
        if status.is_success() {
            return Ok(value);
        }
        Err(status_error(status, &value, kind, key))
    }

    fn query(options: &ListOptions) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(selector) = &options.label_selector {
            query.push(("labelSelector", selector.to_string()));
        }
        if let Some(selector) = &options.field_selector {
            query.push(("fieldSelector", selector.to_string()));
        }
        if let Some(limit) = options.limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(token) = &options.continue_token {
            query.push(("continue", token.clone()));
        }
        query
    }
}

fn encode(segment: &str) -> String {
    form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

fn with_query(url: String, query: &[(&str, String)]) -> String {
    if query.is_empty() {
        return url;
    }
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (k, v) in query {
        serializer.append_pair(k, v);
    }
    format!("{url}?{}", serializer.finish())
}

/// Maps a `Status` answer back to the store's error.
fn status_error(
    status: StatusCode,
    value: &Value,
    kind: &GroupKind,
    key: Option<&ObjectKey>,
) -> StoreError {
    let message = value
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let reason = value
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let key = key.cloned().unwrap_or_else(|| ObjectKey::cluster(""));
    match (status.as_u16(), reason) {
        (404, _) if !key.name.is_empty() => StoreError::NotFound {
            kind: kind.clone(),
            key,
        },
        (409, "AlreadyExists") => StoreError::AlreadyExists {
            kind: kind.clone(),
            key,
        },
        (409, _) => StoreError::Conflict {
            kind: kind.clone(),
            key,
            message,
        },
        (410, _) => too_old(&message),
        (400 | 422, _) => StoreError::Invalid(message),
        (code, _) => backend(RemoteError { code, message }),
    }
}

/// `too old resource version: 5 (9)` → TooOld { requested: 5, oldest: 9 }.
fn too_old(message: &str) -> StoreError {
    let numbers: Vec<u64> = message
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    StoreError::TooOld {
        requested: numbers.first().copied().unwrap_or(0),
        oldest: numbers.get(1).copied().unwrap_or(0),
    }
}

fn decode_object(value: Value) -> Result<DynamicObject, StoreError> {
    serde_json::from_value(value)
        .map_err(|e| StoreError::Invalid(format!("server answered an undecodable object: {e}")))
}

fn revision_of(value: &Value) -> u64 {
    value
        .get("metadata")
        .and_then(|m| m.get("resourceVersion"))
        .and_then(Value::as_str)
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

#[async_trait::async_trait]
impl Store for RemoteStore {
    async fn get(&self, kind: &GroupKind, key: &ObjectKey) -> Result<DynamicObject, StoreError> {
        let info = self.info(kind)?;
        let value = self
            .call(
                Method::GET,
                &self.item_url(info, key),
                None,
                kind,
                Some(key),
            )
            .await?;
        decode_object(value)
    }

    async fn list(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ObjectList, StoreError> {
        let info = self.info(kind)?;
        let url = with_query(
            format!("{}{}", self.base, info.collection_path(namespace)),
            &Self::query(options),
        );
        let mut value = self.call(Method::GET, &url, None, kind, None).await?;
        let resource_version = revision_of(&value);
        let continue_token = value
            .get("metadata")
            .and_then(|m| m.get("continue"))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        let items = match value.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        let api_version = info.api_version();
        let items = items
            .into_iter()
            .map(|mut item| {
                // List items may omit their type.
                if let Value::Object(map) = &mut item {
                    map.entry("apiVersion")
                        .or_insert_with(|| json!(api_version));
                    map.entry("kind").or_insert_with(|| json!(info.kind));
                }
                decode_object(item)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ObjectList {
            items,
            resource_version,
            continue_token,
        })
    }

    async fn create(&self, object: DynamicObject) -> Result<DynamicObject, StoreError> {
        let kind = object.group_kind();
        let info = self.info(&kind)?;
        if object.metadata.resource_version.is_some() {
            return Err(StoreError::Invalid(
                "a new object must not carry a resourceVersion".into(),
            ));
        }
        let key = object.key();
        let url = format!(
            "{}{}",
            self.base,
            info.collection_path(key.namespace.as_deref())
        );
        let body = serde_json::to_vec(&object).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let value = self
            .call(Method::POST, &url, Some(body), &kind, Some(&key))
            .await?;
        decode_object(value)
    }

    async fn update(&self, object: DynamicObject) -> Result<DynamicObject, StoreError> {
        let kind = object.group_kind();
        let info = self.info(&kind)?;
        let key = object.key();
        let body = serde_json::to_vec(&object).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let value = self
            .call(
                Method::PUT,
                &self.item_url(info, &key),
                Some(body),
                &kind,
                Some(&key),
            )
            .await?;
        decode_object(value)
    }

    async fn delete(
        &self,
        kind: &GroupKind,
        key: &ObjectKey,
        preconditions: &Preconditions,
    ) -> Result<DynamicObject, StoreError> {
        let info = self.info(kind)?;
        let url = self.item_url(info, key);
        // The API server answers most deletes with a Status: keep the object as last read.
        let before = self.get(kind, key).await?;
        let mut pre = serde_json::Map::new();
        let uid = preconditions.uid.clone().or(before.metadata.uid.clone());
        if let Some(uid) = uid {
            pre.insert("uid".into(), json!(uid));
        }
        if let Some(rv) = &preconditions.resource_version {
            pre.insert("resourceVersion".into(), json!(rv));
        }
        let options = json!({
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "gracePeriodSeconds": 0,
            "propagationPolicy": "Background",
            "preconditions": pre,
        });
        let body = serde_json::to_vec(&options).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let value = self
            .call(Method::DELETE, &url, Some(body), kind, Some(key))
            .await?;
        if value.get("kind").and_then(Value::as_str) == Some("Status") {
            let mut last = before;
            let revision = revision_of(&value);
            if revision > 0 {
                last.metadata.resource_version = Some(revision.to_string());
            }
            return Ok(last);
        }
        decode_object(value)
    }

    async fn watch(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &WatchOptions,
    ) -> Result<WatchStream, StoreError> {
        let info = self.info(kind)?.clone();
        let from = match options.resource_version {
            Some(revision) => revision,
            None => self.current_revision().await?,
        };
        let mut query = Self::query(&options.filter);
        query.retain(|(k, _)| *k != "limit" && *k != "continue");
        if options.bookmarks {
            query.push(("allowWatchBookmarks", "true".into()));
        }
        let watcher = Watcher {
            store: self.clone(),
            kind: kind.clone(),
            url: format!("{}{}", self.base, info.collection_path(namespace)),
            query,
            revision: from,
            body: None,
            buffer: BytesMut::new(),
            pending: VecDeque::new(),
            done: false,
            failures: 0,
        };
        // Open the first connection now so a refused watch fails the call, not the stream.
        let mut watcher = watcher;
        watcher.connect().await?;
        Ok(futures::stream::unfold(watcher, |mut w| async move {
            w.next_event().await.map(|event| (event, w))
        })
        .boxed())
    }

    async fn current_revision(&self) -> Result<u64, StoreError> {
        let url = format!("{}/api/v1/namespaces?limit=1", self.base);
        let value = self
            .call(
                Method::GET,
                &url,
                None,
                &GroupKind::new("", "Namespace"),
                None,
            )
            .await?;
        Ok(revision_of(&value))
    }
}

/// One resumable watch.
struct Watcher {
    store: RemoteStore,
    kind: GroupKind,
    url: String,
    query: Vec<(&'static str, String)>,
    /// The last revision delivered: a resumed watch starts after it.
    revision: u64,
    body: Option<Incoming>,
    buffer: BytesMut,
    pending: VecDeque<Result<WatchEvent, StoreError>>,
    done: bool,
    failures: u32,
}

impl Watcher {
    async fn connect(&mut self) -> Result<(), StoreError> {
        let mut query = self.query.clone();
        query.push(("watch", "true".into()));
        query.push(("resourceVersion", self.revision.to_string()));
        query.push(("timeoutSeconds", WATCH_TIMEOUT_SECONDS.to_string()));
        let url = with_query(self.url.clone(), &query);
        let response = self
            .store
            .send(Method::GET, &url, None, "application/json")
            .await?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(backend)?
                .to_bytes();
            let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(status_error(status, &value, &self.kind, None));
        }
        self.body = Some(response.into_body());
        self.buffer.clear();
        Ok(())
    }

    fn parse_line(&mut self, line: &[u8]) {
        let Ok(value) = serde_json::from_slice::<Value>(line) else {
            self.pending.push_back(Err(StoreError::Invalid(format!(
                "undecodable watch event: {}",
                String::from_utf8_lossy(line)
            ))));
            return;
        };
        let event_type = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let object = value.get("object").cloned().unwrap_or(Value::Null);
        let event = match event_type {
            "ERROR" => {
                let code = object.get("code").and_then(Value::as_u64).unwrap_or(500);
                let message = object
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.done = true;
                Err(if code == 410 {
                    too_old(message)
                } else {
                    backend(RemoteError {
                        code: u16::try_from(code).unwrap_or(500),
                        message: message.to_string(),
                    })
                })
            }
            "BOOKMARK" => {
                let revision = revision_of(&object);
                self.revision = self.revision.max(revision);
                Ok(WatchEvent::Bookmark {
                    resource_version: revision,
                })
            }
            "ADDED" | "MODIFIED" | "DELETED" => match decode_object(object) {
                Ok(o) => {
                    self.revision = self.revision.max(o.revision().unwrap_or(0));
                    let o = Arc::new(o);
                    Ok(match event_type {
                        "ADDED" => WatchEvent::Added(o),
                        "MODIFIED" => WatchEvent::Modified(o),
                        _ => WatchEvent::Deleted(o),
                    })
                }
                Err(e) => Err(e),
            },
            other => Err(StoreError::Invalid(format!(
                "unknown watch event type {other:?}"
            ))),
        };
        self.pending.push_back(event);
    }

    async fn next_event(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.failures = 0;
                return Some(event);
            }
            if self.done {
                return None;
            }
            if let Some(pos) = self.buffer.iter().position(|b| *b == b'\n') {
                let line = self.buffer.split_to(pos + 1);
                let line = &line[..pos];
                if !line.iter().all(u8::is_ascii_whitespace) {
                    self.parse_line(line);
                }
                continue;
            }
            let frame = match self.body.as_mut() {
                Some(body) => body.frame().await,
                None => None,
            };
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                // The stream ended (server timeout, restart, network): resume after the last
                // delivered revision.
                Some(Err(_)) | None => {
                    self.body = None;
                    if self.failures > 0 {
                        let pause = Duration::from_millis(100 * u64::from(self.failures.min(20)));
                        tokio::time::sleep(pause).await;
                    }
                    self.failures += 1;
                    match self.connect().await {
                        Ok(()) => {}
                        Err(e @ StoreError::TooOld { .. }) => {
                            self.done = true;
                            return Some(Err(e));
                        }
                        Err(e) if self.failures > 50 => {
                            self.done = true;
                            return Some(Err(e));
                        }
                        Err(_) => {}
                    }
                }
            }
        }
    }
}
