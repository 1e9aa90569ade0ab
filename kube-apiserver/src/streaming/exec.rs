//! `pods/exec` (`kubectl exec POD -- COMMAND`): the command runs in the container through the
//! node agent that runs the pod (its kubelet server's `POST /exec/...`, the runtime's
//! ExecSync), and the answer goes back over the WebSocket protocol kubectl 1.30 and newer
//! speak (`v5.channel.k8s.io`, `v4.channel.k8s.io`): the output on the stdout and stderr
//! channels, then a
//! `Status` on the error channel (`Success`, or `NonZeroExitCode` with the code, which kubectl
//! exits with). Not interactive: a request for stdin or a tty is refused with a message that
//! says so, and the output arrives when the command ends (all stdout, then all stderr).
//! Older kubectl (SPDY) gets a 400 that names the version.

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::encoding::status::{ApiError, ApiResult};
use crate::registry::handlers::Ctx;
use crate::streaming::logs::{Located, kubelet_request, locate};

/// The channel protocols served, preferred first.
const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
/// Output is sent in pieces of at most this much.
const PIECE: usize = 32 * 1024;

pub(crate) async fn serve(
    ctx: &Ctx<'_>,
    upgrade: Option<WebSocketUpgrade>,
    raw_query: Option<&str>,
) -> ApiResult<Response> {
    let mut command = Vec::new();
    for (name, value) in form_urlencoded::parse(raw_query.unwrap_or_default().as_bytes()) {
        if name == "command" {
            command.push(value.into_owned());
        }
    }
    if ctx.query.flag("stdin")? || ctx.query.flag("tty")? {
        return Err(ApiError::bad_request(
            "interactive exec (stdin or a tty, kubectl exec -i/-t) is not supported: commands \
             run to completion through the runtime's ExecSync; run kubectl exec without -i and -t",
        ));
    }
    if command.is_empty() {
        return Err(ApiError::bad_request(
            "you must specify at least 1 command (kubectl exec POD -- COMMAND)",
        ));
    }
    let Some(upgrade) = upgrade else {
        return Err(ApiError::bad_request(
            "exec is served over WebSocket (kubectl 1.30 or newer); this request did not ask \
             for a WebSocket upgrade (older kubectl speaks SPDY, which this server does not)",
        ));
    };
    let upgrade = upgrade.protocols(PROTOCOLS);
    if upgrade.selected_protocol().is_none() {
        return Err(ApiError::bad_request(format!(
            "exec needs one of the WebSocket subprotocols {PROTOCOLS:?}"
        )));
    }
    let call = ExecCall::new(ctx, &locate(ctx).await?, &command)?;
    // The command runs once the socket is up: its output, or why it did not run, goes on the
    // socket's channels, as Kubernetes sends them.
    Ok(upgrade
        .on_upgrade(move |socket| async move { answer(socket, call.run().await).await })
        .into_response())
}

/// What the node agent answered: stdout, stderr and the exit code, or why the command did not
/// run.
type Outcome = Result<(Bytes, Bytes, i32), String>;

/// A call to the node agent's `/exec`, owned, to make once the socket is up.
struct ExecCall {
    request: hyper::Request<axum::body::Body>,
    node: String,
}

impl ExecCall {
    fn new(ctx: &Ctx<'_>, located: &Located, command: &[String]) -> ApiResult<Self> {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for part in command {
            query.append_pair("command", part);
        }
        let segment = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let url = format!(
            "{}/exec/{}/{}/{}?{}",
            located.kubelet,
            segment(located.key.namespace.as_deref().unwrap_or("default")),
            segment(&located.key.name),
            segment(&located.container),
            query.finish()
        );
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| ApiError::internal(format!("bad node agent address {url}: {e}")))?;
        let request = kubelet_request(ctx, hyper::Method::POST, uri)
            .body(axum::body::Body::empty())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(Self {
            request,
            node: located.node_name.clone(),
        })
    }

    async fn run(self) -> Outcome {
        let Self { request, node } = self;
        let client: Client<_, axum::body::Body> =
            Client::builder(TokioExecutor::new()).build_http();
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("node agent of {node}: {e}"))?;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i64>().ok())
        };
        let exit_code = header("x-exit-code").and_then(|c| i32::try_from(c).ok());
        let stdout_len = header("x-stdout-length").and_then(|n| usize::try_from(n).ok());
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("node agent of {node}: {e}"))?
            .to_bytes();
        match (status, exit_code) {
            (StatusCode::OK, Some(code)) => {
                // Without the length the runtime did not keep them apart: all of it is stdout.
                let split = stdout_len.unwrap_or(body.len()).min(body.len());
                Ok((body.slice(..split), body.slice(split..), code))
            }
            _ => Err(String::from_utf8_lossy(&body).trim().to_string()),
        }
    }
}

/// Sends the outcome as kubectl reads it, then closes.
async fn answer(mut socket: WebSocket, outcome: Outcome) {
    let status = match outcome {
        Ok((stdout, stderr, code)) => {
            for (channel, output) in [(STDOUT, stdout), (STDERR, stderr)] {
                for piece in output.chunks(PIECE) {
                    let mut frame = Vec::with_capacity(piece.len() + 1);
                    frame.push(channel);
                    frame.extend_from_slice(piece);
                    if socket.send(Message::Binary(frame.into())).await.is_err() {
                        return;
                    }
                }
            }
            exit_status(code)
        }
        Err(why) => json!({
            "metadata": {}, "status": "Failure", "reason": "InternalError", "code": 500,
            "message": why,
        }),
    };
    let mut frame = vec![ERROR];
    frame.extend_from_slice(status.to_string().as_bytes());
    if socket.send(Message::Binary(frame.into())).await.is_ok() {
        // A normal closure (1000): kubectl reads a close without a code as a broken stream.
        let _ = socket
            .send(Message::Close(Some(CloseFrame {
                code: axum::extract::ws::close_code::NORMAL,
                reason: "".into(),
            })))
            .await;
    }
}

/// The `Status` kubectl turns into its exit: `Success`, or the exit code as Kubernetes
/// reports it.
fn exit_status(code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}
