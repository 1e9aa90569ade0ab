//! The verbs: routing a request to get, list, watch, create, update, patch, delete and the
//! subresources, with Kubernetes' object semantics on top of the store.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use kube_core::kind::KindInfo;
use kube_core::object::{DynamicObject, GroupKind, ObjectKey, now};
use kube_core::store::{ListOptions, Preconditions, StoreError};
use serde_json::{Value, json};

use crate::Inner;
use crate::admission;
use crate::admission::defaults;
use crate::admission::serviceaccounts;
use crate::admission::validation;
use crate::authn::{self, UserInfo};
use crate::authz;
use crate::discovery;
use crate::discovery::openapi;
use crate::encoding::status::{ApiError, ApiResult, success};
use crate::encoding::table::{IncludeObject, table, wants_table};
use crate::registry::field_selectors;
use crate::registry::patch::{PatchType, apply_patch};
use crate::serving::access::{self, RequestUser};
use crate::serving::request::{ApiPath, Query, Target, not_found_path, parse_path};
use crate::streaming::exec;
use crate::streaming::logs;
use crate::streaming::watch;
use axum::extract::FromRequestParts as _;

/// How many times a patch is re-applied when the object changed underneath it.
const PATCH_RETRIES: usize = 8;

pub(crate) async fn handle(inner: &Arc<Inner>, request: Request<Body>) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = match route(inner, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    tracing::debug!(%method, %path, code = response.status().as_u16(), elapsed = ?started.elapsed(), "request");
    response
}

async fn route(inner: &Arc<Inner>, request: Request<Body>) -> ApiResult<Response> {
    let path = request.uri().path().to_string();
    let query = Query::parse(request.uri().query());
    let method = request.method().clone();
    match path.as_str() {
        "/version" | "/version/" => {
            return Ok(json_response(StatusCode::OK, &discovery::version()));
        }
        "/healthz" | "/livez" | "/readyz" => return health(inner).await,
        "/metrics" => {
            let text = inner
                .metrics
                .render(inner.limits.inflight_now(), inner.limits.watches_now());
            return Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                text,
            )
                .into_response());
        }
        "/openapi/v2" => return openapi::v2(&inner.registry, request.headers()),
        "/openapi/v3" => {
            return Ok(json_response(
                StatusCode::OK,
                &openapi::v3_root(&inner.registry),
            ));
        }
        "/" => {
            return Ok(json_response(
                StatusCode::OK,
                &json!({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/metrics", "/openapi/v2", "/openapi/v3", "/readyz", "/version"]}),
            ));
        }
        _ => {}
    }
    let user = request
        .extensions()
        .get::<RequestUser>()
        .map(|u| u.0.clone())
        .unwrap_or_else(UserInfo::anonymous_admin);
    if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" {
        if method != Method::POST {
            return Err(ApiError::method_not_allowed("only POST is served here"));
        }
        let (parts, body) = request.into_parts();
        let raw = read_limited(inner, &parts.headers, body).await?;
        let content_type = header_str(&parts.headers, header::CONTENT_TYPE);
        let review = if content_type.starts_with("application/vnd.kubernetes.protobuf") {
            access::decode_protobuf_review(&raw).ok_or_else(|| {
                ApiError::bad_request("undecodable protobuf SelfSubjectAccessReview")
            })?
        } else {
            decode(&content_type, &raw)?
        };
        return access::self_subject_access_review(inner, &user, review).await;
    }
    if let Some((_, resource, namespace)) = access::review_path(&path) {
        if method != Method::POST {
            return Err(ApiError::method_not_allowed("only POST is served here"));
        }
        let (parts, body) = request.into_parts();
        let raw = read_limited(inner, &parts.headers, body).await?;
        let review = decode(&header_str(&parts.headers, header::CONTENT_TYPE), &raw)?;
        return match resource {
            "tokenreviews" => access::token_review(inner, review).await,
            _ => access::subject_access_review(inner, review, namespace).await,
        };
    }
    if let Some(version) = access::self_subject_review_version(&path) {
        if method != Method::POST {
            return Err(ApiError::method_not_allowed("only POST is served here"));
        }
        // The body (an empty SelfSubjectReview, often protobuf) says nothing the answer needs.
        return Ok(json_response(
            StatusCode::CREATED,
            &access::self_subject_review(version, &user),
        ));
    }
    if let Some(gv) = path.strip_prefix("/openapi/v3/") {
        return openapi::v3_group_version(&inner.registry, gv)
            .map(|doc| json_response(StatusCode::OK, &doc))
            .ok_or_else(|| not_found_path(&path));
    }
    if path.starts_with("/healthz/") || path.starts_with("/livez/") || path.starts_with("/readyz/")
    {
        return health(inner).await;
    }
    let parsed = parse_path(&inner.registry, &path)?;
    let target = match parsed {
        ApiPath::Root { legacy: true } => {
            return Ok(json_response(StatusCode::OK, &discovery::core_versions()));
        }
        ApiPath::Root { legacy: false } => {
            return Ok(json_response(
                StatusCode::OK,
                &discovery::group_list(&inner.registry),
            ));
        }
        ApiPath::Group(group) => {
            return discovery::group(&inner.registry, &group)
                .map(|g| json_response(StatusCode::OK, &g))
                .ok_or_else(|| not_found_path(&path));
        }
        ApiPath::GroupVersion { group, version } => {
            return Ok(json_response(
                StatusCode::OK,
                &discovery::resource_list(&inner.registry, &group, &version),
            ));
        }
        ApiPath::Resource(target) => target,
    };
    let (mut parts, body) = request.into_parts();
    // `pods/exec` answers over a WebSocket: take the upgrade before the parts are spent.
    let upgrade = if target.subresource.as_deref() == Some("exec") {
        axum::extract::ws::WebSocketUpgrade::from_request_parts(&mut parts, &())
            .await
            .ok()
    } else {
        None
    };
    let raw_query = parts.uri.query().map(str::to_string);
    let headers = parts.headers;
    let ctx = Ctx {
        inner,
        target,
        query,
        headers,
        user,
    };
    match (
        method,
        ctx.target.name.is_some(),
        ctx.target.subresource.as_deref(),
    ) {
        (Method::GET, false, None) => {
            if ctx.query.flag("watch")? {
                watch::serve(&ctx).await
            } else {
                list(&ctx).await
            }
        }
        (Method::GET, true, None | Some("status")) => get(&ctx).await,
        (Method::GET, true, Some("scale")) => get_scale(&ctx).await,
        (Method::GET, true, Some("log")) => logs::serve(&ctx).await,
        (Method::GET | Method::POST, true, Some("exec")) if ctx.info().kind == "Pod" => {
            exec::serve(&ctx, upgrade, raw_query.as_deref()).await
        }
        (Method::POST, false, None) => create(&ctx, read_body(&ctx, body).await?).await,
        (Method::POST, true, Some("binding")) => bind(&ctx, read_body(&ctx, body).await?).await,
        (Method::POST, true, Some("eviction")) => evict(&ctx, read_body(&ctx, body).await?).await,
        (Method::POST, true, Some("token")) if ctx.info().kind == "ServiceAccount" => {
            let content_type = header_str(&ctx.headers, header::CONTENT_TYPE);
            let raw = read_raw(&ctx, body).await?;
            let request = if content_type.starts_with("application/vnd.kubernetes.protobuf") {
                access::protobuf_token_request(&raw)
            } else if raw.is_empty() {
                json!({"spec": {}})
            } else {
                decode(&content_type, &raw)?
            };
            token_request(&ctx, request).await
        }
        (Method::PUT, true, None | Some("status")) => {
            let body = read_body(&ctx, body).await?;
            replace(&ctx, body).await
        }
        (Method::PUT, true, Some("scale")) => {
            let body = read_body(&ctx, body).await?;
            put_scale(&ctx, body).await
        }
        (Method::PATCH, true, None | Some("status" | "scale")) => {
            let content_type = header_str(&ctx.headers, header::CONTENT_TYPE);
            let kind = PatchType::from_content_type(&content_type)?;
            let raw = read_raw(&ctx, body).await?;
            patch(&ctx, kind, &raw).await
        }
        (Method::DELETE, true, None) => {
            let raw = read_raw(&ctx, body).await?;
            delete(&ctx, &raw).await
        }
        (Method::DELETE, false, None) => {
            let raw = read_raw(&ctx, body).await?;
            delete_collection(&ctx, &raw).await
        }
        (method, _, sub) => {
            if let Some(sub) = sub {
                if !discovery::subresources(&ctx.target.info)
                    .iter()
                    .any(|(name, _, _)| *name == sub)
                {
                    return Err(not_found_path(&path));
                }
            }
            Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method} {path})"
            )))
        }
    }
}

/// One resource request.
pub(crate) struct Ctx<'a> {
    pub(crate) inner: &'a Arc<Inner>,
    pub(crate) target: Target,
    pub(crate) query: Query,
    pub(crate) headers: HeaderMap,
    /// Who asks (an administrator when the server is not secure).
    pub(crate) user: UserInfo,
}

impl Ctx<'_> {
    pub(crate) fn info(&self) -> &KindInfo {
        &self.target.info
    }

    pub(crate) fn kind(&self) -> GroupKind {
        self.target.info.group_kind()
    }

    pub(crate) fn key(&self) -> ObjectKey {
        let name = self.target.name.clone().unwrap_or_default();
        match (&self.target.namespace, self.info().namespaced) {
            (Some(ns), true) => ObjectKey::namespaced(ns.clone(), name),
            _ => ObjectKey::cluster(name),
        }
    }

    /// The stored object the request names.
    pub(crate) async fn current(&self) -> ApiResult<DynamicObject> {
        self.inner
            .store
            .get(&self.kind(), &self.key())
            .await
            .map_err(|e| self.store_error(e))
    }

    pub(crate) fn store_error(&self, error: StoreError) -> ApiError {
        ApiError::from_store(error, &self.info().plural, &self.info().group)
    }

    fn strict(&self) -> bool {
        self.query.get("fieldValidation") == Some("Strict")
    }

    fn dry_run(&self) -> bool {
        self.query.get("dryRun") == Some("All")
    }

    pub(crate) fn wants_table(&self) -> bool {
        wants_table(&header_str(&self.headers, header::ACCEPT))
    }
}

pub(crate) fn header_str(headers: &HeaderMap, name: header::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The strings of a JSON array (`spec.audiences`, `spec.groups`); anything else is none.
pub(crate) fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn json_response(code: StatusCode, value: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// A response with an object the store shares: its JSON comes from the server's cache of
/// encoded objects (the same bytes the watchers of its change are sent).
fn shared_response(
    ctx: &Ctx<'_>,
    code: StatusCode,
    object: &Arc<DynamicObject>,
) -> ApiResult<Response> {
    let body = ctx
        .inner
        .encoded
        .object(object)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((code, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

fn object_response(code: StatusCode, object: &DynamicObject) -> ApiResult<Response> {
    // Straight from the object to bytes, without an intermediate JSON tree.
    let body = serde_json::to_vec(object).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((code, [(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn health(inner: &Arc<Inner>) -> ApiResult<Response> {
    match inner.store.current_revision().await {
        Ok(_) => Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ok").into_response()),
        Err(e) => Err(ApiError::internal(format!("store unavailable: {e}"))),
    }
}

/// Reads the body up to the size limit; a larger body is refused with 413 without reading it.
async fn read_raw(ctx: &Ctx<'_>, body: Body) -> ApiResult<bytes::Bytes> {
    read_limited(ctx.inner, &ctx.headers, body).await
}

async fn read_limited(inner: &Inner, headers: &HeaderMap, body: Body) -> ApiResult<bytes::Bytes> {
    let limit = inner.config.max_body_bytes;
    let declared = header_str(headers, header::CONTENT_LENGTH)
        .parse::<usize>()
        .ok();
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::too_large(limit))
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body: {e}"
        ))),
    }
}

/// Decodes a JSON or YAML body.
fn decode(content_type: &str, raw: &[u8]) -> ApiResult<Value> {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    match media {
        "" | "application/json" | "*/*" => serde_json::from_slice(raw).map_err(|e| {
            ApiError::bad_request(format!("the body of the request is not valid JSON: {e}"))
        }),
        "application/yaml" | "application/apply-patch+yaml" => {
            serde_yaml::from_slice(raw).map_err(|e| {
                ApiError::bad_request(format!("the body of the request is not valid YAML: {e}"))
            })
        }
        "application/vnd.kubernetes.protobuf" => {
            crate::encoding::protobuf::decode(raw).map_err(|refusal| match refusal {
                crate::encoding::protobuf::Refusal::Unsupported(why) => ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    why,
                ),
                crate::encoding::protobuf::Refusal::Invalid(why) => ApiError::bad_request(why),
            })
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

async fn read_body(ctx: &Ctx<'_>, body: Body) -> ApiResult<Value> {
    let raw = read_raw(ctx, body).await?;
    decode(&header_str(&ctx.headers, header::CONTENT_TYPE), &raw)
}

fn to_object(value: Value) -> ApiResult<DynamicObject> {
    if !value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("the object does not decode: {e}")))
}

/// Checks the body's apiVersion, kind, namespace and name against the URL, filling what is
/// missing.
fn check_identity(ctx: &Ctx<'_>, object: &mut DynamicObject) -> ApiResult<()> {
    let info = ctx.info();
    if object.api_version.is_empty() {
        object.api_version = info.api_version();
    }
    if object.kind.is_empty() {
        object.kind = info.kind.clone();
    }
    if object.api_version != info.api_version() || object.kind != info.kind {
        return Err(ApiError::bad_request(format!(
            "the object's apiVersion and kind ({} {}) do not match the request's ({} {})",
            object.api_version,
            object.kind,
            info.api_version(),
            info.kind
        )));
    }
    if info.namespaced {
        match (&object.metadata.namespace, &ctx.target.namespace) {
            (Some(ns), Some(url)) if ns != url && !ns.is_empty() => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            (_, Some(url)) => object.metadata.namespace = Some(url.clone()),
            (_, None) => {
                return Err(ApiError::bad_request(
                    "a namespaced object must be written inside its namespace",
                ));
            }
        }
    } else {
        object.metadata.namespace = None;
    }
    if let Some(url_name) = &ctx.target.name {
        match &object.metadata.name {
            Some(name) if name != url_name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({name}) does not match the name on the URL ({url_name})"
                )));
            }
            _ => object.metadata.name = Some(url_name.clone()),
        }
    }
    Ok(())
}

/// The stored object with today's defaults, so immutability checks compare like with like
/// (objects written straight to the store by in-process components were never defaulted).
fn defaulted(old: &DynamicObject) -> DynamicObject {
    let mut old = old.clone();
    defaults::apply(&mut old);
    old
}

fn validate(ctx: &Ctx<'_>, object: &DynamicObject, old: Option<&DynamicObject>) -> ApiResult<()> {
    let causes = validation::validate(ctx.info(), object, old, ctx.strict());
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            &ctx.info().kind,
            &ctx.info().group,
            object.metadata.name.as_deref().unwrap_or_default(),
            causes,
        ))
    }
}

async fn get(ctx: &Ctx<'_>) -> ApiResult<Response> {
    // Read-only: the store's shared object, serialized without a copy.
    let object = ctx
        .inner
        .store
        .get_shared(&ctx.kind(), &ctx.key())
        .await
        .map_err(|e| ctx.store_error(e))?;
    if ctx.wants_table() {
        let include = IncludeObject::parse(ctx.query.get("includeObject"));
        return Ok(json_response(
            StatusCode::OK,
            &table(
                &ctx.info().kind,
                std::slice::from_ref(&object),
                object.metadata.resource_version.clone(),
                None,
                include,
                true,
            ),
        ));
    }
    shared_response(ctx, StatusCode::OK, &object)
}

pub(crate) fn list_options(ctx: &Ctx<'_>) -> ApiResult<ListOptions> {
    let mut options = ListOptions::default();
    if let Some(selector) = ctx.query.label_selector()? {
        options = options.labels(selector);
    }
    if let Some(selector) = ctx.query.field_selector()? {
        options = options.fields(field_selectors::check(ctx.info(), selector)?);
    }
    if let Some(limit) = ctx.query.number::<usize>("limit")? {
        if limit > 0 {
            options = options.limit(limit);
        }
    }
    if let Some(token) = ctx.query.get("continue") {
        options = options.continue_from(token);
    }
    Ok(options)
}

async fn list(ctx: &Ctx<'_>) -> ApiResult<Response> {
    let options = list_options(ctx)?;
    let list = ctx
        .inner
        .store
        .list_shared(&ctx.kind(), ctx.target.namespace.as_deref(), &options)
        .await
        .map_err(|e| ctx.store_error(e))?;
    let rv = list.resource_version.to_string();
    if ctx.wants_table() {
        let include = IncludeObject::parse(ctx.query.get("includeObject"));
        return Ok(json_response(
            StatusCode::OK,
            &table(
                &ctx.info().kind,
                &list.items,
                Some(rv),
                list.continue_token,
                include,
                true,
            ),
        ));
    }
    let mut metadata = json!({"resourceVersion": rv});
    if let Some(token) = list.continue_token {
        metadata["continue"] = json!(token);
    }
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"{\"kind\":");
    serde_json::to_writer(&mut head, &format!("{}List", ctx.info().kind)).map_err(internal)?;
    head.extend_from_slice(b",\"apiVersion\":");
    serde_json::to_writer(&mut head, &ctx.info().api_version()).map_err(internal)?;
    head.extend_from_slice(b",\"metadata\":");
    serde_json::to_writer(&mut head, &metadata).map_err(internal)?;
    head.extend_from_slice(b",\"items\":[");
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        list_body(head, list.items)?,
    )
        .into_response())
}

/// Lists up to this many items are serialized in one piece; longer ones are streamed in
/// pieces of this many items.
const LIST_PIECE_ITEMS: usize = 128;
/// How many pieces of a long list are serialized ahead of the network, in parallel.
const LIST_PIECES_AHEAD: usize = 4;

/// Appends items `range` of `items` to `out`, comma-separated (a comma before each but the
/// list's first).
fn write_items(
    out: &mut Vec<u8>,
    items: &[Arc<DynamicObject>],
    range: std::ops::Range<usize>,
) -> Result<(), serde_json::Error> {
    for i in range {
        if i > 0 {
            out.push(b',');
        }
        if let Some(item) = items.get(i) {
            serde_json::to_writer(&mut *out, &**item)?;
        }
    }
    Ok(())
}

/// The body of a list: `head`, the items separated by commas, then `]}`. A long list is
/// streamed: pieces of it are serialized on blocking threads, several at once and ahead of the
/// network but in order, so the first bytes leave at once, serialization uses every core and
/// overlaps with sending, and memory holds a few pieces rather than the whole body.
fn list_body(mut head: Vec<u8>, items: Vec<Arc<DynamicObject>>) -> ApiResult<Body> {
    use futures::StreamExt;

    if items.len() <= LIST_PIECE_ITEMS {
        write_items(&mut head, &items, 0..items.len()).map_err(internal)?;
        head.extend_from_slice(b"]}");
        return Ok(Body::from(head));
    }
    let items = Arc::new(items);
    let pieces = items.len().div_ceil(LIST_PIECE_ITEMS);
    let body = futures::stream::iter(0..pieces)
        .map(move |piece| {
            let items = items.clone();
            tokio::task::spawn_blocking(move || {
                let start = piece * LIST_PIECE_ITEMS;
                let range = start..(start + LIST_PIECE_ITEMS).min(items.len());
                let mut out = Vec::with_capacity(range.len() * 2048);
                write_items(&mut out, &items, range).map(|()| bytes::Bytes::from(out))
            })
        })
        .buffered(LIST_PIECES_AHEAD)
        .map(|piece| match piece {
            Ok(Ok(bytes)) => Ok(bytes),
            // Ends the response early: the client sees a truncated body, not a wrong one.
            Ok(Err(e)) => Err(std::io::Error::other(e)),
            Err(e) => Err(std::io::Error::other(e)),
        });
    let head = futures::stream::once(std::future::ready(Ok(bytes::Bytes::from(head))));
    let tail = futures::stream::once(std::future::ready(Ok(bytes::Bytes::from_static(b"]}"))));
    Ok(Body::from_stream(head.chain(body).chain(tail)))
}

fn internal(e: serde_json::Error) -> ApiError {
    ApiError::internal(e.to_string())
}

/// Prepares a new object as the API server does before storing it.
fn prepare_new(ctx: &Ctx<'_>, mut object: DynamicObject) -> ApiResult<DynamicObject> {
    check_identity(ctx, &mut object)?;
    object.metadata.resource_version = None;
    object.metadata.uid = None;
    object.metadata.creation_timestamp = None;
    object.metadata.deletion_timestamp = None;
    object.metadata.deletion_grace_period_seconds = None;
    defaults::apply(&mut object);
    defaults::service_account(&mut object);
    defaults::job_selector(&mut object);
    validate(ctx, &object, None)?;
    Ok(object)
}

async fn create(ctx: &Ctx<'_>, body: Value) -> ApiResult<Response> {
    if ctx.target.name.is_some() {
        return Err(ApiError::method_not_allowed("POST is for collections"));
    }
    let object = prepare_new(ctx, to_object(body)?)?;
    admit_and_create(ctx, object).await
}

/// The admission chain for a new object, then the write: NodeRestriction, namespace
/// lifecycle, and `dryRun`. Every create path (POST and server-side apply) goes through it.
async fn admit_and_create(ctx: &Ctx<'_>, mut object: DynamicObject) -> ApiResult<Response> {
    if let Err(message) = authz::admit_node_create(&ctx.user, &object) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message));
    }
    admit_namespace(ctx, &object).await?;
    crate::admission::default_storage_class::admit_claim(ctx.inner.store.as_ref(), &mut object)
        .await
        .map_err(|e| ApiError::from_store(e, "storageclasses", ""))?;
    if let Some(security) = &ctx.inner.security {
        // Only a server that issues tokens projects them.
        let with_ca = security.ca_pem.is_some();
        serviceaccounts::admit_pod(ctx.inner.store.as_ref(), &mut object, with_ca)
            .await
            .map_err(|refused| match refused {
                serviceaccounts::Refused::NoAccount(why) => {
                    let name = object.metadata.name.as_deref().unwrap_or_default();
                    ApiError::new(
                        StatusCode::FORBIDDEN,
                        "Forbidden",
                        format!("pods \"{name}\" is forbidden: {why}"),
                    )
                }
                serviceaccounts::Refused::Store(e) => {
                    ApiError::from_store(e, "serviceaccounts", "")
                }
            })?;
    }
    let (store, info) = (ctx.inner.store.as_ref(), ctx.info());
    admission::chain::admit_create(store, info, &mut object, ctx.dry_run())
        .await
        .map_err(|r| {
            r.into_api_error(
                &info.plural,
                &info.group,
                &admission::chain::shown_name(&object),
            )
        })?;
    if ctx.dry_run() {
        return object_response(StatusCode::CREATED, &object);
    }
    let created = ctx
        .inner
        .store
        .create_shared(object)
        .await
        .map_err(|e| ctx.store_error(e))?;
    if let (Some(security), "Namespace") = (&ctx.inner.security, created.kind.as_str()) {
        // At once, so pods created right after the namespace find what they mount; the
        // publisher's watch would get there a moment later.
        if let Err(error) = serviceaccounts::publish(
            ctx.inner.store.as_ref(),
            &created,
            security.ca_pem.as_deref(),
        )
        .await
        {
            tracing::warn!(%error, "publishing kube-root-ca.crt and the default ServiceAccount");
        }
    }
    shared_response(ctx, StatusCode::CREATED, &created)
}

/// The admission plugins of an update of the main resource (a `status` write is the
/// controllers' and is not admitted again).
async fn admit_update(
    ctx: &Ctx<'_>,
    object: &mut DynamicObject,
    old: &DynamicObject,
) -> ApiResult<()> {
    if ctx.target.subresource.is_some() {
        return Ok(());
    }
    let (store, info) = (ctx.inner.store.as_ref(), ctx.info());
    admission::chain::admit_update(store, info, object, old, ctx.dry_run())
        .await
        .map_err(|r| {
            r.into_api_error(
                &info.plural,
                &info.group,
                &admission::chain::shown_name(object),
            )
        })
}

/// Merges what a write may change into the stored object: a status write changes only
/// `status`; a main write keeps the stored status when it sends none, and never sets the
/// deletion fields itself.
fn merge_write(ctx: &Ctx<'_>, old: &DynamicObject, mut new: DynamicObject) -> DynamicObject {
    if ctx.target.subresource.as_deref() == Some("status") {
        let mut merged = old.clone();
        match new.data.remove("status") {
            Some(status) => {
                merged.data.insert("status".into(), status);
            }
            None => {
                merged.data.remove("status");
            }
        }
        merged.metadata.resource_version = new.metadata.resource_version;
        return merged;
    }
    if !new.data.contains_key("status") {
        if let Some(status) = old.data.get("status") {
            new.data.insert("status".into(), status.clone());
        }
    }
    new.metadata.deletion_timestamp = old.metadata.deletion_timestamp.clone();
    new.metadata.deletion_grace_period_seconds = old.metadata.deletion_grace_period_seconds;
    new
}

/// Stores an updated object; an object being deleted whose last finalizer is gone goes away.
async fn store_update(
    ctx: &Ctx<'_>,
    object: DynamicObject,
) -> Result<Arc<DynamicObject>, ApiError> {
    let updated = ctx
        .inner
        .store
        .update_shared(object)
        .await
        .map_err(|e| ctx.store_error(e))?;
    let finalized = updated.metadata.deletion_timestamp.is_some()
        && updated
            .metadata
            .finalizers
            .as_ref()
            .is_none_or(Vec::is_empty)
        && updated.metadata.deletion_grace_period_seconds.unwrap_or(0) == 0;
    if finalized {
        let key = updated.key();
        let uid = updated.metadata.uid.clone().unwrap_or_default();
        match ctx
            .inner
            .store
            .delete(&ctx.kind(), &key, &Preconditions::uid(uid))
            .await
        {
            Ok(gone) => return Ok(Arc::new(gone)),
            Err(e) if e.is_not_found() => return Ok(updated),
            Err(e) => return Err(ctx.store_error(e)),
        }
    }
    Ok(updated)
}

async fn replace(ctx: &Ctx<'_>, body: Value) -> ApiResult<Response> {
    let mut object = to_object(body)?;
    check_identity(ctx, &mut object)?;
    let old = ctx.current().await?;
    let mut object = merge_write(ctx, &old, object);
    defaults::apply(&mut object);
    validate(ctx, &object, Some(&defaulted(&old)))?;
    admit_update(ctx, &mut object, &old).await?;
    if ctx.dry_run() {
        return object_response(StatusCode::OK, &object);
    }
    let updated = store_update(ctx, object).await?;
    shared_response(ctx, StatusCode::OK, &updated)
}

async fn patch(ctx: &Ctx<'_>, kind: PatchType, raw: &[u8]) -> ApiResult<Response> {
    let patch_value = if kind == PatchType::Apply {
        decode("application/yaml", raw)?
    } else {
        decode("application/json", raw)?
    };
    let pinned_version = patch_value
        .get("metadata")
        .and_then(|m| m.get("resourceVersion"))
        .is_some();
    for _ in 0..PATCH_RETRIES {
        let old = match ctx.inner.store.get(&ctx.kind(), &ctx.key()).await {
            Ok(old) => old,
            Err(e)
                if e.is_not_found()
                    && kind == PatchType::Apply
                    && ctx.target.subresource.is_none() =>
            {
                return apply_create(ctx, patch_value).await;
            }
            Err(e) => return Err(ctx.store_error(e)),
        };
        let result = if ctx.target.subresource.as_deref() == Some("scale") {
            patch_scale(ctx, &old, kind, &patch_value).await
        } else {
            patch_object(ctx, &old, kind, &patch_value).await
        };
        match result {
            Err(e)
                if e.code == StatusCode::CONFLICT && e.reason == "Conflict" && !pinned_version =>
            {
                continue;
            }
            other => return other,
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "Conflict",
        "the object kept changing while the patch was applied; try again",
    ))
}

async fn patch_object(
    ctx: &Ctx<'_>,
    old: &DynamicObject,
    kind: PatchType,
    patch_value: &Value,
) -> ApiResult<Response> {
    let mut value = serde_json::to_value(old).map_err(internal)?;
    if kind == PatchType::Apply {
        check_apply_identity(ctx, patch_value)?;
    }
    apply_patch(kind, &mut value, patch_value)?;
    let mut object = to_object(value)?;
    if kind == PatchType::Apply {
        record_apply(ctx, &mut object, patch_value)?;
    }
    check_identity(ctx, &mut object)?;
    // The patch applies to what was read: a concurrent write makes the update conflict, and
    // the patch is retried on the new state.
    if object.metadata.resource_version.is_none() {
        object.metadata.resource_version = old.metadata.resource_version.clone();
    }
    let mut object = merge_write(ctx, old, object);
    defaults::apply(&mut object);
    validate(ctx, &object, Some(&defaulted(old)))?;
    admit_update(ctx, &mut object, old).await?;
    if ctx.dry_run() {
        return object_response(StatusCode::OK, &object);
    }
    let updated = store_update(ctx, object).await?;
    shared_response(ctx, StatusCode::OK, &updated)
}

fn field_manager(ctx: &Ctx<'_>) -> ApiResult<String> {
    ctx.query
        .get("fieldManager")
        .map(str::to_string)
        .ok_or_else(|| {
            ApiError::bad_request(
                "PATCH with application/apply-patch+yaml requires the fieldManager parameter",
            )
        })
}

fn check_apply_identity(ctx: &Ctx<'_>, applied: &Value) -> ApiResult<()> {
    let info = ctx.info();
    let api_version = applied.get("apiVersion").and_then(Value::as_str);
    let kind = applied.get("kind").and_then(Value::as_str);
    if api_version != Some(info.api_version().as_str()) || kind != Some(info.kind.as_str()) {
        return Err(ApiError::bad_request(format!(
            "an applied configuration must name apiVersion {} and kind {}",
            info.api_version(),
            info.kind
        )));
    }
    Ok(())
}

/// Records the manager of a server-side apply in `managedFields` with the fields it set.
fn record_apply(ctx: &Ctx<'_>, object: &mut DynamicObject, applied: &Value) -> ApiResult<()> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    let manager = field_manager(ctx)?;
    let mut fields = applied.clone();
    if let Some(map) = fields.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
        if let Some(Value::Object(meta)) = map.get_mut("metadata") {
            meta.remove("name");
            meta.remove("namespace");
        }
    }
    let entry = ManagedFieldsEntry {
        api_version: Some(ctx.info().api_version()),
        fields_type: Some("FieldsV1".into()),
        fields_v1: Some(FieldsV1(fields_v1(&fields))),
        manager: Some(manager.clone()),
        operation: Some("Apply".into()),
        subresource: ctx.target.subresource.clone(),
        time: Some(now()),
    };
    let managed = object.metadata.managed_fields.get_or_insert_with(Vec::new);
    managed.retain(|m| {
        !(m.manager.as_deref() == Some(manager.as_str()) && m.operation.as_deref() == Some("Apply"))
    });
    managed.push(entry);
    Ok(())
}

/// The FieldsV1 set of the fields in an applied configuration (`f:<field>` for fields,
/// `k:{<key>}` for keyed list items).
fn fields_v1(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (key, child) in map {
                let entry = match child {
                    Value::Array(items)
                        if items.iter().all(|i| i.get("name").is_some()) && !items.is_empty() =>
                    {
                        let mut keyed = serde_json::Map::new();
                        for item in items {
                            let id = json!({"name": item["name"]}).to_string();
                            let mut set = fields_v1(item);
                            if let Value::Object(set) = &mut set {
                                set.insert(".".into(), json!({}));
                            }
                            keyed.insert(format!("k:{id}"), set);
                        }
                        Value::Object(keyed)
                    }
                    Value::Object(_) => fields_v1(child),
                    _ => json!({}),
                };
                out.insert(format!("f:{key}"), entry);
            }
            Value::Object(out)
        }
        _ => json!({}),
    }
}

async fn apply_create(ctx: &Ctx<'_>, applied: Value) -> ApiResult<Response> {
    check_apply_identity(ctx, &applied)?;
    let mut object = to_object(applied.clone())?;
    record_apply(ctx, &mut object, &applied)?;
    let object = prepare_new(ctx, object)?;
    admit_and_create(ctx, object).await
}

/// `DeleteOptions` from the body, or from query parameters.
#[derive(Debug, Default)]
struct DeleteOptions {
    grace_period: Option<i64>,
    propagation: Option<String>,
    preconditions: Preconditions,
}

fn delete_options(ctx: &Ctx<'_>, raw: &[u8]) -> ApiResult<DeleteOptions> {
    let mut options = DeleteOptions::default();
    if !raw.iter().all(u8::is_ascii_whitespace) {
        let body: Value = serde_json::from_slice(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
        options.grace_period = body.get("gracePeriodSeconds").and_then(Value::as_i64);
        options.propagation = body
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string);
        if body.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            options.propagation = Some("Orphan".into());
        }
        if let Some(pre) = body.get("preconditions") {
            options.preconditions.uid = pre.get("uid").and_then(Value::as_str).map(str::to_string);
            options.preconditions.resource_version = pre
                .get("resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
    }
    if let Some(grace) = ctx.query.number::<i64>("gracePeriodSeconds")? {
        options.grace_period = Some(grace);
    }
    if let Some(policy) = ctx.query.get("propagationPolicy") {
        options.propagation = Some(policy.to_string());
    }
    if let Some(policy) = &options.propagation {
        if !matches!(policy.as_str(), "Foreground" | "Background" | "Orphan") {
            return Err(ApiError::invalid(
                "DeleteOptions",
                "",
                "",
                vec![crate::encoding::status::Cause {
                    reason: "FieldValueNotSupported",
                    field: "propagationPolicy".into(),
                    message: format!(
                        "Unsupported value: \"{policy}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
                    ),
                }],
            ));
        }
    }
    if options.grace_period.is_some_and(|g| g < 0) {
        options.grace_period = Some(0);
    }
    Ok(options)
}

enum Deleted {
    /// Gone from the store.
    Gone(DynamicObject),
    /// Marked for deletion (finalizers or a grace period); still readable.
    Marked(DynamicObject),
}

/// Kubernetes' delete: finalizers and foreground/orphan propagation only mark the object;
/// a pod running on a node gets a grace period for its node agent to stop it; the rest goes.
async fn delete_one(ctx: &Ctx<'_>, key: &ObjectKey, options: &DeleteOptions) -> ApiResult<Deleted> {
    let store = &ctx.inner.store;
    let kind = ctx.kind();
    for _ in 0..PATCH_RETRIES {
        let current = store
            .get(&kind, key)
            .await
            .map_err(|e| ctx.store_error(e))?;
        let pre = &options.preconditions;
        if pre
            .uid
            .as_ref()
            .is_some_and(|uid| Some(uid) != current.metadata.uid.as_ref())
        {
            return Err(ctx.store_error(StoreError::Conflict {
                kind: kind.clone(),
                key: key.clone(),
                message: format!(
                    "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                    pre.uid.as_deref().unwrap_or_default(),
                    current.metadata.uid.as_deref().unwrap_or_default()
                ),
            }));
        }
        if pre
            .resource_version
            .as_ref()
            .is_some_and(|rv| Some(rv) != current.metadata.resource_version.as_ref())
        {
            return Err(ctx.store_error(StoreError::Conflict {
                kind: kind.clone(),
                key: key.clone(),
                message: "Precondition failed: resourceVersion does not match".into(),
            }));
        }
        let mut marked = current.clone();
        let finalizers = marked.metadata.finalizers.get_or_insert_with(Vec::new);
        match options.propagation.as_deref() {
            Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                finalizers.push("foregroundDeletion".into());
            }
            Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
                finalizers.push("orphan".into());
            }
            _ => {}
        }
        let has_finalizers = !finalizers.is_empty();
        let grace = pod_grace_period(&current, options);
        if !has_finalizers && grace == 0 {
            let uid = current.metadata.uid.clone().unwrap_or_default();
            let rv = current.metadata.resource_version.clone();
            let mut preconditions = Preconditions::uid(uid);
            preconditions.resource_version = rv;
            match store.delete(&kind, key, &preconditions).await {
                Ok(gone) => return Ok(Deleted::Gone(gone)),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(ctx.store_error(e)),
            }
        }
        // Mark: deletionTimestamp (now + grace) and the grace period; a shorter grace period
        // than one already set shortens it, a longer one does not lengthen it.
        let already = current.metadata.deletion_grace_period_seconds;
        if current.metadata.deletion_timestamp.is_some() && already.is_some_and(|a| a <= grace) {
            if marked.metadata.finalizers == current.metadata.finalizers {
                return Ok(Deleted::Marked(current));
            }
        } else {
            let at = std::time::SystemTime::now()
                + std::time::Duration::from_secs(u64::try_from(grace).unwrap_or(0));
            marked.metadata.deletion_timestamp = Some(kube_core::object::to_time(at));
            marked.metadata.deletion_grace_period_seconds = Some(grace);
        }
        match store.update(marked).await {
            Ok(updated) => return Ok(Deleted::Marked(updated)),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(ctx.store_error(e)),
        }
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "Conflict",
        "the object kept changing during deletion; try again",
    ))
}

/// The grace period a pod gets: what the request asks, else its spec's
/// `terminationGracePeriodSeconds`; 0 for pods no node runs or that have finished.
fn pod_grace_period(object: &DynamicObject, options: &DeleteOptions) -> i64 {
    if object.kind != "Pod" || !object.api_version.eq("v1") {
        return 0;
    }
    let node = object
        .field("spec.nodeName")
        .and_then(|n| n.as_str().map(str::to_string));
    let phase = object
        .field("status.phase")
        .and_then(|p| p.as_str().map(str::to_string));
    if node.is_none_or(|n| n.is_empty()) || matches!(phase.as_deref(), Some("Succeeded" | "Failed"))
    {
        return 0;
    }
    options.grace_period.unwrap_or_else(|| {
        object
            .field("spec.terminationGracePeriodSeconds")
            .and_then(|g| g.as_i64())
            .unwrap_or(30)
    })
}

/// Namespaces Kubernetes' namespace lifecycle admission never lets be deleted.
const IMMORTAL_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Kubernetes' namespace lifecycle admission: 403 for deleting an immortal namespace.
fn refuse_immortal_namespace(ctx: &Ctx<'_>, name: &str) -> ApiResult<()> {
    let info = ctx.info();
    if info.group.is_empty() && info.kind == "Namespace" && IMMORTAL_NAMESPACES.contains(&name) {
        let mut error = ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{} \"{name}\" is forbidden: this namespace may not be deleted",
                info.plural
            ),
        );
        error.details = Some(json!({"name": name, "kind": info.plural}));
        return Err(error);
    }
    Ok(())
}

async fn delete(ctx: &Ctx<'_>, raw: &[u8]) -> ApiResult<Response> {
    let options = delete_options(ctx, raw)?;
    refuse_immortal_namespace(ctx, &ctx.key().name)?;
    if ctx.dry_run() {
        let current = ctx
            .inner
            .store
            .get(&ctx.kind(), &ctx.key())
            .await
            .map_err(|e| ctx.store_error(e))?;
        return object_response(StatusCode::OK, &current);
    }
    match delete_one(ctx, &ctx.key(), &options).await? {
        Deleted::Marked(object) => object_response(StatusCode::OK, &object),
        Deleted::Gone(object) if ctx.info().kind == "Pod" => {
            object_response(StatusCode::OK, &object)
        }
        Deleted::Gone(object) => {
            let mut status = success(json!({
                "name": object.metadata.name,
                "group": ctx.info().group,
                "kind": ctx.info().plural,
                "uid": object.metadata.uid,
            }));
            // The deletion's revision, so clients can order it against watch events.
            status["metadata"]["resourceVersion"] = json!(object.metadata.resource_version);
            Ok(json_response(StatusCode::OK, &status))
        }
    }
}

async fn delete_collection(ctx: &Ctx<'_>, raw: &[u8]) -> ApiResult<Response> {
    let options = delete_options(ctx, raw)?;
    let filter = list_options(ctx)?;
    let list = ctx
        .inner
        .store
        .list(&ctx.kind(), ctx.target.namespace.as_deref(), &filter)
        .await
        .map_err(|e| ctx.store_error(e))?;
    let mut deleted = Vec::new();
    for item in &list.items {
        refuse_immortal_namespace(ctx, &item.key().name)?;
        match delete_one(ctx, &item.key(), &options).await {
            Ok(Deleted::Gone(o) | Deleted::Marked(o)) => deleted.push(o),
            Err(e) if e.code == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    let body = json!({
        "kind": format!("{}List", ctx.info().kind),
        "apiVersion": ctx.info().api_version(),
        "metadata": {},
        "items": deleted,
    });
    Ok(json_response(StatusCode::OK, &body))
}

fn scale_of(ctx: &Ctx<'_>, object: &DynamicObject) -> Value {
    let selector = if object.kind == "ReplicationController" {
        // A ReplicationController's selector is a label map.
        object
            .field("spec.selector")
            .and_then(|s| {
                serde_json::from_value::<std::collections::BTreeMap<String, String>>(s).ok()
            })
            .map(|labels| kube_core::selector::Selector::from_labels(&labels).to_string())
            .unwrap_or_default()
    } else {
        object
            .field("spec.selector")
            .and_then(|s| serde_json::from_value(s).ok())
            .and_then(|s| kube_core::selector::Selector::from_label_selector(&s).ok())
            .map(|s| s.to_string())
            .unwrap_or_default()
    };
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": object.metadata.name,
            "namespace": object.metadata.namespace,
            "uid": object.metadata.uid,
            "resourceVersion": object.metadata.resource_version,
            "creationTimestamp": object.metadata.creation_timestamp,
        },
        "spec": {"replicas": object.field("spec.replicas").and_then(|r| r.as_i64()).unwrap_or(0)},
        "status": {
            "replicas": object.field("status.replicas").and_then(|r| r.as_i64()).unwrap_or(0),
            "selector": selector,
        },
        "_kind": ctx.info().kind,
    })
}

fn clean_scale(mut scale: Value) -> Value {
    if let Some(map) = scale.as_object_mut() {
        map.remove("_kind");
    }
    scale
}

async fn get_scale(ctx: &Ctx<'_>) -> ApiResult<Response> {
    let object = ctx.current().await?;
    Ok(json_response(
        StatusCode::OK,
        &clean_scale(scale_of(ctx, &object)),
    ))
}

async fn set_replicas(ctx: &Ctx<'_>, old: &DynamicObject, scale: &Value) -> ApiResult<Response> {
    let replicas = scale
        .get("spec")
        .and_then(|s| s.get("replicas"))
        .and_then(Value::as_i64)
        .ok_or_else(|| {
            ApiError::invalid(
                "Scale",
                "autoscaling",
                old.metadata.name.as_deref().unwrap_or_default(),
                vec![crate::encoding::status::Cause::required("spec.replicas")],
            )
        })?;
    if replicas < 0 {
        return Err(ApiError::invalid(
            "Scale",
            "autoscaling",
            old.metadata.name.as_deref().unwrap_or_default(),
            vec![crate::encoding::status::Cause::invalid(
                "spec.replicas",
                &replicas.to_string(),
                "must be greater than or equal to 0",
            )],
        ));
    }
    let mut object = old.clone();
    if let Some(Value::Object(spec)) = object.data.get_mut("spec") {
        spec.insert("replicas".into(), json!(replicas));
    }
    if let Some(rv) = scale
        .get("metadata")
        .and_then(|m| m.get("resourceVersion"))
        .and_then(Value::as_str)
    {
        object.metadata.resource_version = Some(rv.to_string());
    }
    let updated = store_update(ctx, object).await?;
    Ok(json_response(
        StatusCode::OK,
        &clean_scale(scale_of(ctx, &updated)),
    ))
}

async fn put_scale(ctx: &Ctx<'_>, body: Value) -> ApiResult<Response> {
    let old = ctx.current().await?;
    set_replicas(ctx, &old, &body).await
}

async fn patch_scale(
    ctx: &Ctx<'_>,
    old: &DynamicObject,
    kind: PatchType,
    patch_value: &Value,
) -> ApiResult<Response> {
    let mut scale = clean_scale(scale_of(ctx, old));
    apply_patch(kind, &mut scale, patch_value)?;
    if let Some(Value::Object(meta)) = scale.get_mut("metadata") {
        // The patch applies to what was read.
        if patch_value
            .get("metadata")
            .and_then(|m| m.get("resourceVersion"))
            .is_none()
        {
            meta.insert(
                "resourceVersion".into(),
                json!(old.metadata.resource_version),
            );
        }
    }
    set_replicas(ctx, old, &scale).await
}

/// `pods/binding`: assigns an unbound pod to a node, once.
async fn bind(ctx: &Ctx<'_>, body: Value) -> ApiResult<Response> {
    let node = body
        .get("target")
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "Binding",
                "",
                ctx.target.name.as_deref().unwrap_or_default(),
                vec![crate::encoding::status::Cause::required("target.name")],
            )
        })?
        .to_string();
    let key = ctx.key();
    let mut pod = ctx
        .inner
        .store
        .get(&GroupKind::POD, &key)
        .await
        .map_err(|e| ctx.store_error(e))?;
    if let Some(uid) = body
        .get("metadata")
        .and_then(|m| m.get("uid"))
        .and_then(Value::as_str)
    {
        if pod.metadata.uid.as_deref() != Some(uid) {
            return Err(ctx.store_error(StoreError::Conflict {
                kind: GroupKind::POD,
                key,
                message: "the pod's UID changed".into(),
            }));
        }
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Err(ctx.store_error(StoreError::Conflict {
            kind: GroupKind::POD,
            key,
            message: "the pod is being deleted".into(),
        }));
    }
    if let Some(bound) = pod
        .field("spec.nodeName")
        .and_then(|n| n.as_str().map(str::to_string))
        .filter(|n| !n.is_empty())
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on pods/binding \"{}\": pod {} is already assigned to node \"{bound}\"",
                key.name, key.name
            ),
        ));
    }
    if let Some(Value::Object(spec)) = pod.data.get_mut("spec") {
        spec.insert("nodeName".into(), json!(node));
    }
    ctx.inner
        .store
        .update(pod)
        .await
        .map_err(|e| ctx.store_error(e))?;
    Ok(json_response(StatusCode::CREATED, &success(json!({}))))
}

/// `pods/eviction`: a delete that respects PodDisruptionBudgets, as Kubernetes' eviction
/// subresource: a pod that is pending, finished or already going is deleted; one selected by
/// a budget is deleted only if the budget (as its controller last counted it) allows a
/// disruption, which is taken from `disruptionsAllowed` and recorded in `disruptedPods` by an
/// update conditional on the budget's version (retried when it loses a race).
async fn evict(ctx: &Ctx<'_>, body: Value) -> ApiResult<Response> {
    let key = ctx.key();
    let raw = body
        .get("deleteOptions")
        .map(|o| o.to_string())
        .unwrap_or_default();
    let options = delete_options(ctx, raw.as_bytes())?;
    for _ in 0..PATCH_RETRIES {
        let pod = ctx
            .inner
            .store
            .get(&GroupKind::POD, &key)
            .await
            .map_err(|e| ctx.store_error(e))?;
        let phase = pod
            .field("status.phase")
            .and_then(|p| p.as_str().map(str::to_string));
        let ignores_budgets = matches!(phase.as_deref(), Some("Succeeded" | "Failed" | "Pending"))
            || pod.metadata.deletion_timestamp.is_some();
        if !ignores_budgets {
            match take_disruption(ctx, &pod).await? {
                Taken::Yes => {}
                Taken::Lost => continue,
            }
        }
        delete_one(ctx, &key, &options).await?;
        return Ok(json_response(StatusCode::CREATED, &success(json!({}))));
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "Conflict",
        "the disruption budget kept changing during the eviction; try again",
    ))
}

/// Whether a budget's disruption was taken, or the update lost a race and must be retried.
enum Taken {
    Yes,
    Lost,
}

fn eviction_refused(cause: String, retry_after: Option<u64>) -> ApiError {
    let mut error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
    );
    error.details = Some(
        json!({"causes": [{"reason": "DisruptionBudget", "message": cause}],
        "retryAfterSeconds": retry_after.unwrap_or(0)}),
    );
    error.retry_after = retry_after;
    error
}

/// Takes one disruption from the budget selecting `pod`, if any.
async fn take_disruption(ctx: &Ctx<'_>, pod: &DynamicObject) -> ApiResult<Taken> {
    let pdb_kind = GroupKind::new("policy", "PodDisruptionBudget");
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let budgets = ctx
        .inner
        .store
        .list(&pdb_kind, Some(&namespace), &ListOptions::default())
        .await
        .map_err(|e| ctx.store_error(e))?;
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let mut selecting: Vec<DynamicObject> = budgets
        .items
        .into_iter()
        .filter(|budget| {
            budget
                .field("spec.selector")
                .and_then(|s| serde_json::from_value(s).ok())
                .and_then(|s| kube_core::selector::Selector::from_label_selector(&s).ok())
                .is_some_and(|s| s.matches(&labels))
        })
        .collect();
    if selecting.len() > 1 {
        return Err(ApiError::internal(
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    let Some(mut budget) = selecting.pop() else {
        return Ok(Taken::Yes);
    };
    let name = budget.metadata.name.clone().unwrap_or_default();
    let status = |field: &str| {
        budget
            .field(&format!("status.{field}"))
            .and_then(|v| v.as_i64())
    };
    if status("observedGeneration").unwrap_or(0) < budget.metadata.generation.unwrap_or(0) {
        return Err(eviction_refused(
            format!("The disruption budget {name} is still being processed by the server."),
            Some(10),
        ));
    }
    let (allowed, desired, healthy) = (
        status("disruptionsAllowed").unwrap_or(0),
        status("desiredHealthy").unwrap_or(0),
        status("currentHealthy").unwrap_or(0),
    );
    // An unready pod may go while the budget is met without it (IfHealthyBudget).
    let ready = pod
        .field("status.conditions")
        .and_then(|c| c.as_array().cloned())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
    if !ready && healthy >= desired && desired > 0 {
        return Ok(Taken::Yes);
    }
    if allowed <= 0 {
        return Err(eviction_refused(
            format!(
                "The disruption budget {name} needs {desired} healthy pods and has {healthy} currently"
            ),
            None,
        ));
    }
    if let Some(Value::Object(status)) = budget.data.get_mut("status") {
        status.insert("disruptionsAllowed".into(), json!(allowed - 1));
        let disrupted = status.entry("disruptedPods").or_insert_with(|| json!({}));
        if let Value::Object(disrupted) = disrupted {
            disrupted.insert(pod.metadata.name.clone().unwrap_or_default(), json!(now()));
        }
        if allowed == 1 {
            if let Some(Value::Array(conditions)) = status.get_mut("conditions") {
                for c in conditions
                    .iter_mut()
                    .filter(|c| c["type"] == "DisruptionAllowed")
                {
                    c["status"] = json!("False");
                    c["reason"] = json!("InsufficientPods");
                    c["lastTransitionTime"] = json!(now());
                }
            }
        }
    }
    match ctx.inner.store.update(budget).await {
        Ok(_) => Ok(Taken::Yes),
        Err(e) if e.is_conflict() => Ok(Taken::Lost),
        Err(e) => Err(ApiError::from_store(e, "poddisruptionbudgets", "policy")),
    }
}

/// `serviceaccounts/{name}/token` (TokenRequest): a signed token bound to the account.
async fn token_request(ctx: &Ctx<'_>, body: Value) -> ApiResult<Response> {
    let Some(security) = &ctx.inner.security else {
        return Err(ApiError::bad_request(
            "this server does not authenticate, so it issues no tokens",
        ));
    };
    let account = ctx.current().await?;
    let seconds = body["spec"]["expirationSeconds"]
        .as_u64()
        .unwrap_or(3600)
        .clamp(600, 86_400 * 2);
    let audiences = strings(&body["spec"]["audiences"]);
    let namespace = account.metadata.namespace.clone().unwrap_or_default();
    let name = account.metadata.name.clone().unwrap_or_default();
    let bound = &body["spec"]["boundObjectRef"];
    let pod = match bound["kind"].as_str() {
        None => None,
        Some("Pod") => Some(bound_pod(ctx, &namespace, &name, bound).await?),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "cannot bind a token to a {other}: only Pods are supported"
            )));
        }
    };
    if let Some(node) = authz::node_name(&ctx.user) {
        // NodeRestriction: a node's tokens are bound to its own pods.
        if pod.is_none() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("node \"{node}\" may only request tokens bound to its own pods"),
            ));
        }
    }
    let claims = authn::TokenClaims {
        namespace,
        name,
        uid: account.metadata.uid.clone().unwrap_or_default(),
        pod,
    };
    let (token, expires) =
        security
            .signer
            .issue(&claims, &audiences, std::time::Duration::from_secs(seconds));
    let answer = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "metadata": {"name": claims.name, "namespace": claims.namespace},
        "spec": {"audiences": audiences, "expirationSeconds": seconds},
        "status": {"token": token, "expirationTimestamp": kube_core::object::to_time(expires)},
    });
    Ok(json_response(StatusCode::CREATED, &answer))
}

/// The pod a TokenRequest's `boundObjectRef` names: it must exist (with the UID given, if
/// any), run as the account, and, when a node asks, be bound to that node. Returns its name
/// and UID.
async fn bound_pod(
    ctx: &Ctx<'_>,
    namespace: &str,
    account: &str,
    bound: &Value,
) -> ApiResult<(String, String)> {
    let name = bound["name"].as_str().unwrap_or_default();
    let forbidden = |message: String| ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message);
    let pod = match ctx
        .inner
        .store
        .get(
            &GroupKind::POD,
            &ObjectKey::namespaced(namespace, name.to_string()),
        )
        .await
    {
        Ok(pod) => pod,
        Err(e) if e.is_not_found() => {
            return Err(ApiError::not_found(format!("pods \"{name}\" not found")));
        }
        Err(e) => return Err(ApiError::from_store(e, "pods", "")),
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if bound["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty() && u != uid)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "the UID in the bound object reference ({}) does not match the UID in record ({uid}); the object might have been deleted and then recreated",
                bound["uid"].as_str().unwrap_or_default()
            ),
        ));
    }
    if authz::pod_account(&pod) != account {
        return Err(forbidden(format!(
            "pod \"{name}\" runs as ServiceAccount \"{}\", not \"{account}\"",
            authz::pod_account(&pod)
        )));
    }
    if let Some(node) = authz::node_name(&ctx.user) {
        let on = pod.field("spec.nodeName");
        if on.as_ref().and_then(Value::as_str) != Some(node) {
            return Err(forbidden(format!(
                "node \"{node}\" may only request tokens bound to its own pods"
            )));
        }
    }
    Ok((name.to_string(), uid))
}

/// Namespace lifecycle: no creation in a namespace that does not exist or is terminating.
async fn admit_namespace(ctx: &Ctx<'_>, object: &DynamicObject) -> ApiResult<()> {
    if !ctx.inner.config.namespace_lifecycle || !ctx.info().namespaced {
        return Ok(());
    }
    let Some(namespace) = object.metadata.namespace.clone() else {
        return Ok(());
    };
    match ctx
        .inner
        .store
        .get(
            &GroupKind::new("", "Namespace"),
            &ObjectKey::cluster(namespace.clone()),
        )
        .await
    {
        Ok(ns) => {
            let terminating = ns.metadata.deletion_timestamp.is_some()
                || ns
                    .field("status.phase")
                    .and_then(|p| p.as_str().map(str::to_string))
                    .as_deref()
                    == Some("Terminating");
            if terminating {
                let mut e = ApiError::new(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                        ctx.info().plural,
                        object.metadata.name.as_deref().unwrap_or_default()
                    ),
                );
                e.details = Some(
                    json!({"causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace"}]}),
                );
                return Err(e);
            }
            Ok(())
        }
        Err(e) if e.is_not_found() => Err(ApiError::not_found(format!(
            "namespaces \"{namespace}\" not found"
        ))),
        Err(e) => Err(ApiError::from_store(e, "namespaces", "")),
    }
}
