//! `pods/log`: proxied to the node agent that runs the pod, at the kubelet's
//! `/containerLogs/{namespace}/{pod}/{container}` on the address and port its Node object
//! publishes (`status.addresses` InternalIP, `status.daemonEndpoints.kubeletEndpoint.Port`).

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kube_core::object::{GroupKind, ObjectKey};
use serde_json::Value;

use crate::encoding::status::{ApiError, ApiResult};
use crate::registry::handlers::Ctx;

const PASSED_PARAMETERS: [&str; 6] = [
    "follow",
    "tailLines",
    "previous",
    "timestamps",
    "limitBytes",
    "sinceSeconds",
];

/// Where a `pods/log` or `pods/exec` request goes: the container it names (or the pod's only
/// app container), the node that runs the pod, and that node agent's kubelet server.
pub(crate) struct Located {
    pub(crate) key: ObjectKey,
    pub(crate) container: String,
    pub(crate) node_name: String,
    /// `http://host:port`.
    pub(crate) kubelet: String,
}

pub(crate) async fn locate(ctx: &Ctx<'_>) -> ApiResult<Located> {
    let key = ctx.key();
    let pod = ctx
        .inner
        .store
        .get(&GroupKind::POD, &key)
        .await
        .map_err(|e| ctx.store_error(e))?;
    let containers: Vec<String> = pod
        .field("spec.containers")
        .and_then(|c| c.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .chain(
            pod.field("spec.initContainers")
                .and_then(|c| c.as_array().cloned())
                .unwrap_or_default()
                .iter(),
        )
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    let container = match ctx.query.get("container") {
        Some(name) if containers.iter().any(|c| c == name) => name.to_string(),
        Some(name) => {
            return Err(ApiError::bad_request(format!(
                "container {name} is not valid for pod {}",
                key.name
            )));
        }
        None => {
            let app: Vec<String> = pod
                .field("spec.containers")
                .and_then(|c| c.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect();
            match app.as_slice() {
                [one] => one.clone(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "a container name must be specified for pod {}, choose one of: [{}]",
                        key.name,
                        app.join(" ")
                    )));
                }
            }
        }
    };
    let node_name = pod
        .field("spec.nodeName")
        .and_then(|n| n.as_str().map(str::to_string))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "container \"{container}\" in pod \"{}\" is waiting to start: the pod is not scheduled",
                key.name
            ))
        })?;
    let node = ctx
        .inner
        .store
        .get(&GroupKind::NODE, &ObjectKey::cluster(node_name.clone()))
        .await
        .map_err(|e| ApiError::from_store(e, "nodes", ""))?;
    let address = node
        .field("status.addresses")
        .and_then(|a| a.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str().map(str::to_string));
    let port = node
        .field("status.daemonEndpoints.kubeletEndpoint.Port")
        .and_then(|p| p.as_u64())
        .filter(|p| *p > 0);
    let (Some(address), Some(port)) = (address, port) else {
        return Err(ApiError::unavailable(format!(
            "node {node_name} publishes no address and port to fetch logs from"
        )));
    };
    let host = if address.contains(':') {
        format!("[{address}]")
    } else {
        address
    };
    Ok(Located {
        key,
        container,
        node_name,
        kubelet: format!("http://{host}:{port}"),
    })
}

/// A request to a kubelet server, carrying the API server's identity when it is secure (node
/// agents check who calls them with TokenReview and SubjectAccessReview back here).
pub(crate) fn kubelet_request(
    ctx: &Ctx<'_>,
    method: hyper::Method,
    uri: hyper::Uri,
) -> hyper::http::request::Builder {
    let mut request = hyper::Request::builder().method(method).uri(uri);
    if let Some(security) = &ctx.inner.security {
        request = request.header(
            header::AUTHORIZATION,
            format!("Bearer {}", security.kubelet_client_token),
        );
    }
    request
}

pub(crate) async fn serve(ctx: &Ctx<'_>) -> ApiResult<Response> {
    let Located {
        key,
        container,
        node_name,
        kubelet,
    } = locate(ctx).await?;
    let query = {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for name in PASSED_PARAMETERS {
            if let Some(value) = ctx.query.get(name) {
                query.append_pair(name, value);
            }
        }
        query.finish()
    };
    let url = format!(
        "{kubelet}/containerLogs/{}/{}/{container}?{query}",
        key.namespace.as_deref().unwrap_or("default"),
        key.name,
    );
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| ApiError::internal(format!("bad node agent address {url}: {e}")))?;
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
    let request = kubelet_request(ctx, hyper::Method::GET, uri)
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let response = tokio::time::timeout(
        ctx.inner.config.node_connect_timeout,
        client.request(request),
    )
    .await
    .map_err(|_| ApiError::unavailable(format!("node agent of {node_name} did not answer")))?
    .map_err(|e| ApiError::unavailable(format!("node agent of {node_name}: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
            .unwrap_or_default();
        let code = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let reason = if code == StatusCode::NOT_FOUND {
            "NotFound"
        } else {
            "BadRequest"
        };
        return Err(ApiError::new(code, reason, body));
    }
    let body = Body::new(response.into_body().map_err(axum::Error::new));
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], body).into_response())
}
