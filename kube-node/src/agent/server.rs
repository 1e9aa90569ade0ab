//! The kubelet's HTTP server: what the API server's `pods/log` proxies to.
//!
//! Plain HTTP/1.1 with the kubelet's paths:
//!
//! * `GET /containerLogs/{namespace}/{pod}/{container}` with the query parameters `follow`,
//!   `previous`, `timestamps` (booleans as Go's `strconv.ParseBool` reads them), `tailLines`
//!   and `limitBytes` (non-negative and positive integers): the container's log as
//!   `text/plain`. The runtimes keep no time per log line, so `timestamps=true`,
//!   `sinceSeconds` and `sinceTime` are refused (400) rather than ignored; other unknown
//!   parameters are ignored, as the kubelet does. With `follow=true` the response streams what the container writes next,
//!   until it exits or the client goes away. An unknown pod or container (or no previous
//!   instance) is 404, a bad parameter 400, both with a one-line message.
//! * `POST /exec/{namespace}/{pod}/{container}?command=..&command=..`: runs the command in the
//!   running container to completion (the runtime's ExecSync, at most 5 minutes, or
//!   `timeoutSeconds`) and answers its output (stdout, then stderr; `X-Stdout-Length` says
//!   where one ends when the runtime keeps them apart) with the exit code in `X-Exit-Code`; what the API
//!   server's `pods/exec` calls. Not interactive: no stdin, no tty, no streaming.
//! * `GET /healthz`: `ok`.
//!
//! With a [`KubeletAuth`] every request but `/healthz` carries a bearer token the check
//! accepts, as the kubelet's webhook authentication and authorization: 401 without one or with
//! one that stands for nobody, 403 (in the kubelet's words) for a user who may not `get` the
//! node's `proxy` subresource (where the kubelet puts `/containerLogs`), 503 when it cannot be
//! decided.
//!
//! Each connection is served by a task of the agent; they all end when the agent stops.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kube_core::runtime::{LogOptions, Runtime, RuntimeError};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::kubelet_auth::{KubeletAccess, KubeletAuth, KubeletRequest};
use crate::logs;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The longest an exec may run (its output comes when it ends).
const EXEC_TIMEOUT: Duration = Duration::from_secs(300);

/// The header an exec's exit code comes in.
const EXIT_CODE: &str = "x-exit-code";
/// The header saying how much of an exec's output is stdout (the rest is stderr).
const STDOUT_LENGTH: &str = "x-stdout-length";

/// What the server answers from.
#[derive(Debug, Clone)]
pub(crate) struct Kubelet {
    pub(crate) runtime: Arc<dyn Runtime>,
    /// Only containers this node's agent created are served.
    pub(crate) node_name: String,
    /// Who may call; `None`: anyone.
    pub(crate) auth: Option<Arc<dyn KubeletAuth>>,
}

/// Accepts and serves connections until `shutdown`; open connections (followed logs among
/// them) are cut when it returns.
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    kubelet: Kubelet,
    shutdown: CancellationToken,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "kubelet server: the listener cannot be used");
            return;
        }
    };
    let kubelet = Arc::new(kubelet);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let kubelet = kubelet.clone();
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let kubelet = kubelet.clone();
                            async move { Ok::<_, Infallible>(kubelet.handle(req).await) }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service);
                        if let Err(e) = conn.await {
                            tracing::debug!(%peer, error = %e, "kubelet server connection ended");
                        }
                    });
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "kubelet server: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// The parameters of `/containerLogs`.
#[derive(Debug, Default, PartialEq, Eq)]
struct LogParams {
    follow: bool,
    previous: bool,
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
}

/// Go's `strconv.ParseBool`, plus an empty value (`?follow`) meaning true.
fn parse_bool(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{name}={value:?} is not a boolean")),
    }
}

impl LogParams {
    fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut params = Self::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode(name)?;
            let value = percent_decode(value)?;
            let int = |min: i64| -> Result<usize, String> {
                value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= min)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| format!("{name}={value:?} must be an integer >= {min}"))
            };
            match name.as_str() {
                "follow" => params.follow = parse_bool(&name, &value)?,
                "previous" => params.previous = parse_bool(&name, &value)?,
                "timestamps" if parse_bool(&name, &value)? => {
                    return Err(
                        "timestamps=true is not supported: the runtimes keep no time per log line"
                            .into(),
                    );
                }
                "timestamps" => {}
                "tailLines" => params.tail_lines = Some(int(0)?),
                "limitBytes" => params.limit_bytes = Some(int(1)?),
                "sinceSeconds" | "sinceTime" => {
                    return Err(format!(
                        "{name} is not supported: the runtimes keep no time per log line"
                    ));
                }
                // Unknown parameters are ignored, as the kubelet does.
                _ => {}
            }
        }
        Ok(params)
    }

    fn options(&self) -> LogOptions {
        LogOptions {
            tail_lines: self.tail_lines,
            limit_bytes: self.limit_bytes,
        }
    }
}

/// Decodes `%XX` escapes (and `+` as a space, as in a form-encoded query).
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// `{namespace}/{pod}/{container}` after `/{route}/`, percent-decoded; a wrong shape is 404,
/// bad escapes 400.
#[allow(clippy::result_large_err)]
fn pod_container(rest: &str, route: &str) -> Result<(String, String, String), Response<Body>> {
    let segments: Result<Vec<String>, String> = rest.split('/').map(percent_decode).collect();
    match segments.as_deref() {
        Ok([ns, pod, c]) if !ns.is_empty() && !pod.is_empty() && !c.is_empty() => {
            Ok((ns.clone(), pod.clone(), c.clone()))
        }
        Ok(_) => Err(text(
            StatusCode::NOT_FOUND,
            format!("expected /{route}/{{namespace}}/{{pod}}/{{container}}\n"),
        )),
        Err(e) => Err(text(StatusCode::BAD_REQUEST, format!("{e}\n"))),
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl Kubelet {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path();
        let exec = path.starts_with("/exec/");
        let verb = match (req.method(), exec) {
            (&Method::GET | &Method::HEAD, false) => "get",
            (&Method::POST, true) => "create",
            _ => {
                return text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("method {} is not allowed\n", req.method()),
                );
            }
        };
        if path == "/healthz" {
            return text(StatusCode::OK, "ok");
        }
        if let Some(refused) = self.refused(&req, verb).await {
            return refused;
        }
        if let Some(rest) = path.strip_prefix("/exec/") {
            return self.exec(rest, req.uri().query()).await;
        }
        let Some(rest) = path.strip_prefix("/containerLogs/") else {
            return text(StatusCode::NOT_FOUND, format!("no such path: {path}\n"));
        };
        let (namespace, pod, container) = match pod_container(rest, "containerLogs") {
            Ok(names) => names,
            Err(refusal) => return refusal,
        };
        let params = match LogParams::parse(req.uri().query()) {
            Ok(p) => p,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        };
        self.container_logs(namespace, pod, container, params).await
    }

    /// The answer to a caller the [`KubeletAuth`] does not let through, if any.
    async fn refused(&self, req: &Request<Incoming>, verb: &str) -> Option<Response<Body>> {
        let auth = self.auth.as_ref()?;
        let bearer = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            // The scheme is case-insensitive (RFC 7235), as the API server reads it.
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty());
        let request = KubeletRequest {
            node: &self.node_name,
            verb,
            subresource: "proxy",
        };
        match auth.check(bearer, &request).await {
            Ok(KubeletAccess::Allowed) => None,
            Ok(KubeletAccess::Unauthenticated) => {
                Some(text(StatusCode::UNAUTHORIZED, "Unauthorized\n"))
            }
            Ok(KubeletAccess::Forbidden { user }) => Some(text(
                StatusCode::FORBIDDEN,
                format!(
                    "Forbidden (user={user}, verb={verb}, resource=nodes, subresource=proxy)\n"
                ),
            )),
            Err(e) => {
                tracing::warn!(error = %e, "kubelet server: cannot check a caller");
                Some(text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot check who is calling: {e}\n"),
                ))
            }
        }
    }

    /// `POST /exec/{namespace}/{pod}/{container}?command=..&command=..[&timeoutSeconds=N]`:
    /// runs the command in the running container to completion (the runtime's ExecSync) and
    /// answers its output (stdout, then stderr) with the exit code in `X-Exit-Code`.
    async fn exec(&self, rest: &str, query: Option<&str>) -> Response<Body> {
        let (namespace, pod, container) = match pod_container(rest, "exec") {
            Ok(names) => names,
            Err(refusal) => return refusal,
        };
        let mut command = Vec::new();
        let mut timeout = EXEC_TIMEOUT;
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = match percent_decode(&value.replace('+', " ")) {
                Ok(v) => v,
                Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            };
            match name {
                "command" => command.push(value),
                "timeoutSeconds" => match value.parse::<u64>() {
                    Ok(s) if s > 0 => timeout = Duration::from_secs(s).min(EXEC_TIMEOUT),
                    _ => {
                        return text(
                            StatusCode::BAD_REQUEST,
                            format!("timeoutSeconds must be a positive integer, not {value:?}\n"),
                        );
                    }
                },
                _ => {}
            }
        }
        if command.is_empty() {
            return text(StatusCode::BAD_REQUEST, "no command given\n");
        }
        let node = Some(self.node_name.as_str());
        let instance =
            match logs::find_instance(&*self.runtime, node, &namespace, &pod, &container, false)
                .await
            {
                Ok(instance) => instance,
                Err(e) => return error_response(&e),
            };
        if instance.state != kube_core::runtime::ContainerState::Running {
            return text(
                StatusCode::BAD_REQUEST,
                format!("container {container} is not running\n"),
            );
        }
        match self
            .runtime
            .exec_sync(&instance.id, &command, timeout)
            .await
        {
            Ok(result) => {
                let mut response = Response::new(Full::new(result.output).boxed_unsync());
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                response
                    .headers_mut()
                    .insert(EXIT_CODE, HeaderValue::from(result.exit_code));
                if let Some(len) = result.stdout_len {
                    response
                        .headers_mut()
                        .insert(STDOUT_LENGTH, HeaderValue::from(len));
                }
                response
            }
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("exec in container {container}: {e}\n"),
            ),
        }
    }

    async fn container_logs(
        &self,
        namespace: String,
        pod: String,
        container: String,
        params: LogParams,
    ) -> Response<Body> {
        let node = Some(self.node_name.as_str());
        let options = params.options();
        if !params.follow || params.previous {
            // A previous instance has exited: following it ends at once.
            return match logs::node_pod_logs(
                &*self.runtime,
                node,
                &namespace,
                &pod,
                &container,
                params.previous,
                &options,
            )
            .await
            {
                Ok(log) => text(StatusCode::OK, log),
                Err(e) => error_response(&e),
            };
        }
        // Look the container up first, so a missing one is a 404 rather than an empty stream.
        if let Err(e) =
            logs::find_instance(&*self.runtime, node, &namespace, &pod, &container, false).await
        {
            return error_response(&e);
        }
        let stream = logs::follow_node_pod_logs(
            self.runtime.clone(),
            Some(self.node_name.clone()),
            namespace.clone(),
            pod.clone(),
            container.clone(),
            options,
        )
        .take_while(move |item| {
            let ok = match item {
                Ok(_) => true,
                Err(e) => {
                    // The status line has gone out: the stream can only end.
                    tracing::debug!(pod = %format!("{namespace}/{pod}"), %container, error = %e, "followed log ended");
                    false
                }
            };
            std::future::ready(ok)
        })
        .filter_map(|item| std::future::ready(item.ok().map(|b| Ok(Frame::data(b)))));
        let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}

fn error_response(e: &RuntimeError) -> Response<Body> {
    match e {
        RuntimeError::NotFound { .. } => text(StatusCode::NOT_FOUND, format!("{e}\n")),
        RuntimeError::InvalidArgument(_) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        _ => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}\n", crate::agent::error_chain(e)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_log_parameters() {
        let p = LogParams::parse(Some("follow=true&tailLines=3&previous=0&limitBytes=10&x=y"))
            .expect("valid");
        assert_eq!(
            p,
            LogParams {
                follow: true,
                previous: false,
                tail_lines: Some(3),
                limit_bytes: Some(10),
            }
        );
        assert_eq!(LogParams::parse(None).expect("empty"), LogParams::default());
        assert!(LogParams::parse(Some("follow")).expect("bare").follow);
        for bad in [
            "follow=yes",
            "tailLines=-1",
            "tailLines=x",
            "limitBytes=0",
            "sinceSeconds=5",
            "timestamps=true",
            "previous=%zz",
        ] {
            assert!(
                LogParams::parse(Some(bad)).is_err(),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("a%2Fb+c").expect("valid"), "a/b c");
        assert!(percent_decode("%4").is_err());
    }
}
