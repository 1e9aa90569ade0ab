//! What happens to every request before and after its handler: authentication (401),
//! authorization (403), limits (429 with `Retry-After` when too many requests or watches are in
//! flight, 504 when a request runs too long), and the audit log.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::Inner;
use crate::authn::{self, UserInfo};
use crate::authz::{self, Attributes};
use crate::encoding::protobuf::{Wire, fields as protobuf_fields};
use crate::encoding::status::ApiError;
use crate::registry::handlers::strings;
use crate::serving::request::{ApiPath, Query, parse_path};

/// Where a request came from: its address and, over TLS, the verified client certificate.
#[derive(Clone, Debug, Default)]
pub(crate) struct Peer {
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) client_cert: Option<Arc<Vec<u8>>>,
}

/// The authenticated user of a request, for handlers that need it (admission, reviews).
#[derive(Clone, Debug)]
pub(crate) struct RequestUser(pub(crate) UserInfo);

/// Counters behind the limits.
#[derive(Debug)]
pub(crate) struct Limits {
    max_inflight: usize,
    inflight: Arc<Semaphore>,
    watches: Mutex<HashMap<String, usize>>,
    per_user: Mutex<HashMap<String, usize>>,
}

impl Limits {
    pub(crate) fn new(max_inflight: usize) -> Self {
        Self {
            max_inflight,
            inflight: Arc::new(Semaphore::new(max_inflight)),
            watches: Mutex::new(HashMap::new()),
            per_user: Mutex::new(HashMap::new()),
        }
    }

    /// Requests holding an in-flight slot now.
    pub(crate) fn inflight_now(&self) -> usize {
        self.max_inflight
            .saturating_sub(self.inflight.available_permits())
    }

    /// Watches open now, across users.
    pub(crate) fn watches_now(&self) -> usize {
        self.watches
            .lock()
            .map(|w| w.values().sum())
            .unwrap_or_default()
    }
}

/// One of a user's in-flight request slots.
struct UserSlot {
    inner: Arc<Inner>,
    user: String,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.inner.limits.per_user.lock() {
            if let Some(count) = counts.get_mut(&self.user) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(&self.user);
                }
            }
        }
    }
}

/// Holds one of a user's watch slots until the watch ends.
#[derive(Debug)]
pub(crate) struct WatchSlot {
    inner: Arc<Inner>,
    user: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        if let Ok(mut watches) = self.inner.limits.watches.lock() {
            if let Some(count) = watches.get_mut(&self.user) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    watches.remove(&self.user);
                }
            }
        }
    }
}

fn too_many(message: &str) -> ApiError {
    let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", message);
    error.retry_after = Some(1);
    error
}

/// The request's verb and target as RBAC sees them.
pub(crate) fn attributes(inner: &Inner, method: &Method, path: &str, query: &Query) -> Attributes {
    let non_resource = || Attributes {
        verb: method.as_str().to_ascii_lowercase(),
        resource_request: false,
        path: path.to_string(),
        ..Attributes::default()
    };
    if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" {
        return Attributes {
            verb: "create".into(),
            api_group: "authorization.k8s.io".into(),
            resource: "selfsubjectaccessreviews".into(),
            resource_request: true,
            path: path.to_string(),
            ..Attributes::default()
        };
    }
    if let Some((api_group, resource, namespace)) = review_path(path) {
        return Attributes {
            verb: "create".into(),
            api_group: api_group.into(),
            resource: resource.into(),
            namespace: namespace.map(str::to_string),
            resource_request: true,
            path: path.to_string(),
            ..Attributes::default()
        };
    }
    if self_subject_review_version(path).is_some() {
        return Attributes {
            verb: "create".into(),
            api_group: "authentication.k8s.io".into(),
            resource: "selfsubjectreviews".into(),
            resource_request: true,
            path: path.to_string(),
            ..Attributes::default()
        };
    }
    let Ok(ApiPath::Resource(target)) = parse_path(&inner.registry, path) else {
        return non_resource();
    };
    let watch = query.flag("watch").unwrap_or(false);
    let connect = matches!(
        target.subresource.as_deref(),
        Some("exec" | "attach" | "portforward")
    );
    let verb = match (method.as_str(), target.name.is_some()) {
        // A WebSocket exec is a GET; Kubernetes asks for `create` on it all the same.
        _ if connect => "create",
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    };
    Attributes {
        verb: verb.into(),
        api_group: target.info.group.clone(),
        resource: target.info.plural.clone(),
        subresource: target.subresource.clone(),
        // A namespace's own name is its namespace too, as Kubernetes treats it.
        namespace: target.namespace.clone().or_else(|| {
            (target.info.kind == "Namespace")
                .then(|| target.name.clone())
                .flatten()
        }),
        name: target.name.clone(),
        resource_request: true,
        path: path.to_string(),
    }
}

/// Runs a request through authentication, authorization, limits and the audit log.
pub(crate) async fn guard(
    inner: &Arc<Inner>,
    mut request: Request<Body>,
    handler: impl AsyncFnOnce(Request<Body>) -> Response,
) -> Response {
    let started = Instant::now();
    let received = SystemTime::now();
    let method = request.method().clone();
    let uri = request.uri().clone();
    let path = uri.path().to_string();
    let query = Query::parse(uri.query());
    let peer = request
        .extensions()
        .get::<Peer>()
        .cloned()
        .unwrap_or_default();
    let attrs = attributes(inner, &method, &path, &query);

    let user = match &inner.security {
        None => Ok(UserInfo::anonymous_admin()),
        Some(security) => {
            let authorization = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            match authn::authenticate(
                security,
                inner.store.as_ref(),
                peer.client_cert.as_deref().map(Vec::as_slice),
                authorization.as_deref(),
            )
            .await
            {
                Ok(Some(user)) => Ok(user),
                Ok(None) => Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "Unauthorized",
                )),
                Err(e) => Err(ApiError::internal(format!("authenticating: {e}"))),
            }
        }
    };
    // Who the request acts as: its own user, or the one it impersonates if it may.
    let (user, impersonator) = match user {
        Ok(requester) if inner.security.is_some() => {
            match authn::impersonated(inner.store.as_ref(), &requester, request.headers()).await {
                Ok(None) => (Ok(requester), None),
                Ok(Some(impersonated)) => (Ok(impersonated), Some(requester)),
                Err(refusal) => (
                    Err(impersonation_error(refusal, &requester)),
                    Some(requester),
                ),
            }
        }
        other => (other, None),
    };
    match user {
        Err(e) => {
            let response = e.into_response();
            inner
                .metrics
                .record(&attrs, response.status().as_u16(), started.elapsed());
            audit(
                inner,
                &attrs,
                Identity {
                    user: impersonator.as_ref(),
                    impersonated: None,
                },
                &peer,
                &method,
                &uri,
                response.status(),
                received,
                started,
            );
            response
        }
        Ok(user) => {
            let decision = if inner.security.is_some() {
                authz::authorize(inner.store.as_ref(), &user, &attrs).await
            } else {
                Ok(true)
            };
            let response = match decision {
                Ok(true) => {
                    limited(
                        inner,
                        request_with_user(&mut request, &user),
                        &user,
                        &attrs,
                        handler,
                    )
                    .await
                }
                Ok(false) => {
                    let mut e = ApiError::new(
                        StatusCode::FORBIDDEN,
                        "Forbidden",
                        attrs.forbidden_message(&user),
                    );
                    e.details = Some(
                        json!({"name": attrs.name, "group": attrs.api_group, "kind": attrs.resource}),
                    );
                    e.into_response()
                }
                Err(e) => ApiError::internal(format!("authorizing: {e}")).into_response(),
            };
            inner
                .metrics
                .record(&attrs, response.status().as_u16(), started.elapsed());
            let identity = match &impersonator {
                Some(requester) => Identity {
                    user: Some(requester),
                    impersonated: Some(&user),
                },
                None => Identity {
                    user: Some(&user),
                    impersonated: None,
                },
            };
            audit(
                inner,
                &attrs,
                identity,
                &peer,
                &method,
                &uri,
                response.status(),
                received,
                started,
            );
            response
        }
    }
}

/// A refused impersonation as Kubernetes answers it: 403 in the authorizer's words, 400 for
/// headers that do not make a request.
fn impersonation_error(refusal: authn::ImpersonationRefusal, requester: &UserInfo) -> ApiError {
    match refusal {
        authn::ImpersonationRefusal::BadRequest(message) => ApiError::bad_request(message),
        authn::ImpersonationRefusal::Forbidden(attrs) => {
            let mut e = ApiError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                attrs.forbidden_message(requester),
            );
            e.details =
                Some(json!({"name": attrs.name, "group": attrs.api_group, "kind": attrs.resource}));
            e
        }
        authn::ImpersonationRefusal::Store(e) => {
            ApiError::internal(format!("authorizing an impersonation: {e}"))
        }
    }
}

/// Who made a request, for the audit log: the authenticated user (none if authentication
/// failed) and, when they impersonated someone, that user.
#[derive(Clone, Copy)]
struct Identity<'a> {
    user: Option<&'a UserInfo>,
    impersonated: Option<&'a UserInfo>,
}

fn request_with_user(request: &mut Request<Body>, user: &UserInfo) -> Request<Body> {
    request.extensions_mut().insert(RequestUser(user.clone()));
    std::mem::take(request)
}

async fn limited(
    inner: &Arc<Inner>,
    request: Request<Body>,
    user: &UserInfo,
    attrs: &Attributes,
    handler: impl AsyncFnOnce(Request<Body>) -> Response,
) -> Response {
    if attrs.verb == "watch" {
        let slot = {
            let Ok(mut watches) = inner.limits.watches.lock() else {
                return ApiError::internal("watch counter poisoned").into_response();
            };
            let count = watches.entry(user.name.clone()).or_default();
            if *count >= inner.config.max_watches_per_user {
                return too_many(&format!(
                    "too many watches open for user {} (limit {})",
                    user.name, inner.config.max_watches_per_user
                ))
                .into_response();
            }
            *count += 1;
            WatchSlot {
                inner: inner.clone(),
                user: user.name.clone(),
            }
        };
        // The slot is released when the watch's body is dropped (the stream ended).
        return hold_while_streaming(handler(request).await, slot);
    }
    // A user may hold only its share of the slots, so one client's flood leaves room for
    // the others (a coarse form of Kubernetes' API priority and fairness).
    let user_slot = {
        let Ok(mut counts) = inner.limits.per_user.lock() else {
            return ApiError::internal("request counter poisoned").into_response();
        };
        let count = counts.entry(user.name.clone()).or_default();
        if *count >= inner.config.max_inflight_per_user {
            return too_many("too many requests in flight for this user, please try again later")
                .into_response();
        }
        *count += 1;
        UserSlot {
            inner: inner.clone(),
            user: user.name.clone(),
        }
    };
    let Ok(permit) = inner.limits.inflight.clone().try_acquire_owned() else {
        return too_many("too many requests in flight, please try again later").into_response();
    };
    let timeout = inner.config.request_timeout;
    // Logs follow and stream; they are bounded by the client, not by the request timeout.
    let response = if attrs.subresource.as_deref() == Some("log") {
        handler(request).await
    } else {
        match tokio::time::timeout(timeout, handler(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                format!("the request did not complete within {timeout:?}"),
            )
            .into_response(),
        }
    };
    hold_while_streaming(response, (permit, user_slot))
}

/// A body of known size is sent from memory: the request is done when the handler returns.
/// A streamed one (a watch, a big LIST, logs) is still being produced as it is sent, so the
/// request keeps its slots until the body ends or the client goes.
fn hold_while_streaming<T: Send + Sync + 'static>(response: Response, slots: T) -> Response {
    use axum::body::HttpBody as _;
    if response.body().size_hint().exact().is_some() {
        return response;
    }
    let (parts, body) = response.into_parts();
    let stream = futures::StreamExt::map(body.into_data_stream(), move |chunk| {
        let _held = &slots;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

#[allow(clippy::too_many_arguments)]
fn audit(
    inner: &Inner,
    attrs: &Attributes,
    identity: Identity<'_>,
    peer: &Peer,
    method: &Method,
    uri: &axum::http::Uri,
    code: StatusCode,
    received: SystemTime,
    started: Instant,
) {
    let Some(sender) = &inner.audit else {
        return;
    };
    let time = |t: SystemTime| kube_core::object::to_time(t).0.to_string();
    let mut event = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": uuid::Uuid::new_v4().to_string(),
        "stage": "ResponseComplete",
        "requestURI": uri.to_string(),
        "verb": if attrs.verb.is_empty() { method.as_str().to_ascii_lowercase() } else { attrs.verb.clone() },
        "user": match identity.user {
            Some(u) => json!({"username": u.name, "groups": u.groups}),
            None => json!({"username": "system:anonymous", "groups": ["system:unauthenticated"]}),
        },
        "sourceIPs": peer.addr.map(|a| vec![a.ip().to_string()]).unwrap_or_default(),
        "responseStatus": {"metadata": {}, "code": code.as_u16()},
        "requestReceivedTimestamp": time(received),
        "stageTimestamp": time(SystemTime::now()),
        "latencyMicros": started.elapsed().as_micros() as u64,
    });
    if let Some(u) = identity.impersonated {
        event["impersonatedUser"] = json!({"username": u.name, "groups": u.groups});
    }
    if attrs.resource_request {
        event["objectRef"] = json!({
            "resource": attrs.resource,
            "namespace": attrs.namespace,
            "name": attrs.name,
            "apiGroup": attrs.api_group,
            "subresource": attrs.subresource,
        });
    }
    // Never block a request on the log: a full queue drops the line and counts it.
    let _ = sender.try_send(event.to_string());
}

/// Starts the audit writer: JSON lines appended to `path`.
pub(crate) fn audit_writer(path: std::path::PathBuf) -> tokio::sync::mpsc::Sender<String> {
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<String>(65_536);
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await;
        let mut file = match file {
            Ok(f) => tokio::io::BufWriter::new(f),
            Err(error) => {
                tracing::error!(%error, path = %path.display(), "cannot open the audit log");
                return;
            }
        };
        while let Some(line) = receiver.recv().await {
            let mut batch = line;
            batch.push('\n');
            while let Ok(more) = receiver.try_recv() {
                batch.push_str(&more);
                batch.push('\n');
            }
            if file.write_all(batch.as_bytes()).await.is_err() || file.flush().await.is_err() {
                tracing::error!(path = %path.display(), "writing the audit log failed");
            }
        }
    });
    sender
}

/// The version of `POST /apis/authentication.k8s.io/VERSION/selfsubjectreviews` (`kubectl auth
/// whoami`; v1 since Kubernetes 1.28, the beta and alpha for older kubectl).
pub(crate) fn self_subject_review_version(path: &str) -> Option<&str> {
    let version = path
        .strip_prefix("/apis/authentication.k8s.io/")?
        .strip_suffix("/selfsubjectreviews")?;
    matches!(version, "v1" | "v1beta1" | "v1alpha1").then_some(version)
}

/// The answer to a SelfSubjectReview: who the server takes the asker to be (after
/// impersonation).
pub(crate) fn self_subject_review(version: &str, user: &UserInfo) -> serde_json::Value {
    json!({
        "kind": "SelfSubjectReview",
        "apiVersion": format!("authentication.k8s.io/{version}"),
        "metadata": {"creationTimestamp": null},
        "status": {"userInfo": {"username": user.name, "groups": user.groups}},
    })
}

/// The reviews that ask about someone else: `tokenreviews` (who is this token?),
/// `subjectaccessreviews` and `namespaces/NS/localsubjectaccessreviews` (may this user do
/// this?). Their API group, resource and namespace.
pub(crate) fn review_path(path: &str) -> Option<(&'static str, &'static str, Option<&str>)> {
    match path {
        "/apis/authentication.k8s.io/v1/tokenreviews" => {
            Some(("authentication.k8s.io", "tokenreviews", None))
        }
        "/apis/authorization.k8s.io/v1/subjectaccessreviews" => {
            Some(("authorization.k8s.io", "subjectaccessreviews", None))
        }
        _ => {
            let namespace = path
                .strip_prefix("/apis/authorization.k8s.io/v1/namespaces/")?
                .strip_suffix("/localsubjectaccessreviews")?;
            (!namespace.is_empty() && !namespace.contains('/')).then_some((
                "authorization.k8s.io",
                "localsubjectaccessreviews",
                Some(namespace),
            ))
        }
    }
}

/// The answer to a review: the review as sent, with its type and a `status`.
fn review_answer(
    mut review: serde_json::Value,
    api_version: &str,
    kind: &str,
    status: serde_json::Value,
) -> Response {
    if !review.is_object() {
        review = json!({});
    }
    review["apiVersion"] = json!(api_version);
    review["kind"] = json!(kind);
    review["status"] = status;
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        review.to_string(),
    )
        .into_response()
}

/// `POST tokenreviews`: who a bearer token stands for, for the audiences the review names.
pub(crate) async fn token_review(
    inner: &Arc<Inner>,
    review: serde_json::Value,
) -> Result<Response, ApiError> {
    let spec = &review["spec"];
    let token = spec["token"]
        .as_str()
        .unwrap_or_default()
        .trim()
        .to_string();
    if token.is_empty() {
        return Err(ApiError::bad_request("a TokenReview needs spec.token"));
    }
    let audiences = strings(&spec["audiences"]);
    let status = match &inner.security {
        None => {
            json!({"authenticated": false, "error": "this server does not authenticate requests"})
        }
        Some(security) => {
            match authn::review_token(security, inner.store.as_ref(), &token, &audiences)
                .await
                .map_err(|e| ApiError::internal(format!("reviewing a token: {e}")))?
            {
                authn::TokenReviewed::Authenticated(user, good_for) => json!({
                    "authenticated": true,
                    "user": {"username": user.name, "groups": user.groups},
                    "audiences": good_for,
                }),
                authn::TokenReviewed::Refused(why) => {
                    json!({"authenticated": false, "error": why})
                }
            }
        }
    };
    // The token is not sent back.
    let mut review = review;
    if let Some(spec) = review.get_mut("spec").and_then(|s| s.as_object_mut()) {
        spec.remove("token");
    }
    Ok(review_answer(
        review,
        "authentication.k8s.io/v1",
        "TokenReview",
        status,
    ))
}

/// `POST subjectaccessreviews` (cluster-wide) or `localsubjectaccessreviews` in `namespace`:
/// may the user and groups the review names do this? They are taken exactly as given.
pub(crate) async fn subject_access_review(
    inner: &Arc<Inner>,
    review: serde_json::Value,
    namespace: Option<&str>,
) -> Result<Response, ApiError> {
    let kind = if namespace.is_some() {
        "LocalSubjectAccessReview"
    } else {
        "SubjectAccessReview"
    };
    let spec = &review["spec"];
    let mut attrs = review_attributes(spec, kind)?;
    if let Some(namespace) = namespace {
        if !attrs.resource_request {
            return Err(ApiError::bad_request(
                "a LocalSubjectAccessReview is about resources in its namespace, not nonResourceAttributes",
            ));
        }
        match attrs.namespace.as_deref() {
            None => attrs.namespace = Some(namespace.to_string()),
            Some(asked) if asked == namespace => {}
            Some(asked) => {
                return Err(ApiError::bad_request(format!(
                    "spec.resourceAttributes.namespace \"{asked}\" must match the review's namespace \"{namespace}\""
                )));
            }
        }
    }
    let name = spec["user"].as_str().unwrap_or_default().to_string();
    let groups = strings(&spec["groups"]);
    if name.is_empty() && groups.is_empty() {
        return Err(ApiError::bad_request(format!(
            "a {kind} needs spec.user or spec.groups"
        )));
    }
    let subject = UserInfo { name, groups };
    let allowed = if inner.security.is_some() {
        authz::authorize(inner.store.as_ref(), &subject, &attrs)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
    } else {
        true
    };
    Ok(review_answer(
        review,
        "authorization.k8s.io/v1",
        kind,
        json!({"allowed": allowed, "reason": if allowed { "allowed by the authorizer" } else { "" }}),
    ))
}

/// What an access review asks about: `resourceAttributes` or `nonResourceAttributes`.
fn review_attributes(spec: &serde_json::Value, kind: &str) -> Result<Attributes, ApiError> {
    if let Some(r) = spec.get("resourceAttributes") {
        let text = |k: &str| {
            r.get(k)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Ok(Attributes {
            verb: text("verb").unwrap_or_default(),
            api_group: text("group").unwrap_or_default(),
            resource: text("resource").unwrap_or_default(),
            subresource: text("subresource"),
            name: text("name"),
            namespace: text("namespace"),
            resource_request: true,
            path: String::new(),
        })
    } else if let Some(n) = spec.get("nonResourceAttributes") {
        Ok(Attributes {
            verb: n["verb"].as_str().unwrap_or_default().to_string(),
            path: n["path"].as_str().unwrap_or_default().to_string(),
            resource_request: false,
            ..Attributes::default()
        })
    } else {
        Err(ApiError::bad_request(format!(
            "a {kind} needs resourceAttributes or nonResourceAttributes"
        )))
    }
}

/// The response to `POST selfsubjectaccessreviews`: may the asking user do this?
pub(crate) async fn self_subject_access_review(
    inner: &Arc<Inner>,
    user: &UserInfo,
    review: serde_json::Value,
) -> Result<Response, ApiError> {
    let attrs = review_attributes(&review["spec"], "SelfSubjectAccessReview")?;
    let allowed = if inner.security.is_some() {
        authz::authorize(inner.store.as_ref(), user, &attrs)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
    } else {
        true
    };
    let mut answer = review.clone();
    answer["apiVersion"] = json!("authorization.k8s.io/v1");
    answer["kind"] = json!("SelfSubjectAccessReview");
    answer["status"] = json!({"allowed": allowed, "reason": if allowed { "allowed by the authorizer" } else { "" }});
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
        .into_response())
}

fn proto_message(bytes: &[u8], field: u32) -> Option<&[u8]> {
    protobuf_fields(bytes)?
        .into_iter()
        .find_map(|(n, v)| match v {
            Wire::Bytes(b) if n == field => Some(b),
            _ => None,
        })
}

fn proto_string(bytes: &[u8], field: u32) -> Option<String> {
    proto_message(bytes, field).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// A `SelfSubjectAccessReview` sent as Kubernetes protobuf (`k8s\0` + `runtime.Unknown`), as
/// kubectl's typed clients send it, decoded to its JSON form.
pub(crate) fn decode_protobuf_review(body: &[u8]) -> Option<serde_json::Value> {
    let unknown = body.strip_prefix(b"k8s\0")?;
    let review = proto_message(unknown, 2)?;
    let spec = proto_message(review, 2).unwrap_or_default();
    let mut out = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {}});
    if let Some(r) = proto_message(spec, 1) {
        let names = [
            "namespace",
            "verb",
            "group",
            "version",
            "resource",
            "subresource",
            "name",
        ];
        let mut attributes = serde_json::Map::new();
        for (i, name) in names.iter().enumerate() {
            if let Some(value) = proto_string(r, i as u32 + 1) {
                attributes.insert((*name).into(), json!(value));
            }
        }
        out["spec"]["resourceAttributes"] = serde_json::Value::Object(attributes);
    } else if let Some(n) = proto_message(spec, 2) {
        out["spec"]["nonResourceAttributes"] = json!({
            "path": proto_string(n, 1).unwrap_or_default(),
            "verb": proto_string(n, 2).unwrap_or_default(),
        });
    }
    Some(out)
}

/// The `spec.expirationSeconds` of a protobuf `TokenRequest`, if any.
pub(crate) fn protobuf_token_request(body: &[u8]) -> serde_json::Value {
    let expiration = body
        .strip_prefix(b"k8s\0")
        .and_then(|unknown| proto_message(unknown, 2))
        .and_then(|request| proto_message(request, 2))
        .and_then(protobuf_fields)
        .and_then(|fields| {
            fields.into_iter().find_map(|(n, v)| match v {
                Wire::Varint(seconds) if n == 4 => Some(seconds),
                _ => None,
            })
        });
    match expiration {
        Some(seconds) => json!({"spec": {"expirationSeconds": seconds}}),
        None => json!({"spec": {}}),
    }
}
