//! The kubelet HTTP server (`/containerLogs`, `/healthz`), asked by a real HTTP client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kube_node::{FakeBehavior, FakeRuntime, ProcessRuntime};

use crate::common::{Cluster, agent, eventually, pod};

const WAIT: Duration = Duration::from_secs(10);

/// Sends `method path` (with a bearer token if given) on its own connection.
async fn send(
    addr: SocketAddr,
    method: hyper::Method,
    path: &str,
    token: Option<&str>,
) -> hyper::Response<Incoming> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(Empty::<Bytes>::new()).expect("request");
    sender.send_request(request).await.expect("response")
}

/// `GET path` on its own connection; the status and the (still streaming) body.
async fn get(addr: SocketAddr, path: &str) -> (StatusCode, Incoming) {
    let response = send(addr, hyper::Method::GET, path, None).await;
    (response.status(), response.into_body())
}

/// `GET path`, the whole body as text.
async fn get_text(addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let (status, body) = get(addr, path).await;
    let bytes = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("the body ends")
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Reads the streaming body until the text so far contains `want`.
async fn read_until(body: &mut Incoming, text: &mut String, want: &str) {
    tokio::time::timeout(WAIT, async {
        while !text.contains(want) {
            let frame = body
                .frame()
                .await
                .unwrap_or_else(|| panic!("the stream ended before {want:?}; got {text:?}"))
                .expect("frame");
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {want:?} in time; got {text:?}"));
}

#[tokio::test]
async fn the_node_publishes_the_kubelet_endpoint_and_logs_are_served() {
    let fake = FakeRuntime::new();
    fake.set_default_behavior(FakeBehavior::run_forever().with_output("one\ntwo\nthree\n"));
    let agent = agent(Arc::new(fake))
        .node_ip("127.0.0.1")
        .serve("127.0.0.1:0".parse().expect("addr"))
        .build()
        .expect("agent");
    let addr = agent.kubelet_addr().expect("serving");
    assert_ne!(addr.port(), 0, "the port picked is reported");
    let cluster = Cluster::start(agent);

    let node = eventually(WAIT, "node registered", || async {
        cluster.nodes().get(crate::common::NODE).await.ok()
    })
    .await;
    let status = node.status.expect("node status");
    let port = status
        .daemon_endpoints
        .and_then(|d| d.kubelet_endpoint)
        .map(|e| e.port);
    assert_eq!(port, Some(i32::from(addr.port())));
    let addresses: Vec<(String, String)> = status
        .addresses
        .unwrap_or_default()
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert!(addresses.contains(&("InternalIP".into(), "127.0.0.1".into())));
    assert!(addresses.contains(&("Hostname".into(), crate::common::NODE.into())));

    assert_eq!(
        get_text(addr, "/healthz").await,
        (StatusCode::OK, "ok".into())
    );

    cluster
        .pods()
        .create(&pod(
            "web",
            "Always",
            serde_json::json!([{"name": "c", "image": "nginx"}]),
        ))
        .await
        .expect("create");
    cluster.wait_phase("web", "Running", WAIT).await;

    assert_eq!(
        get_text(addr, "/containerLogs/default/web/c").await,
        (StatusCode::OK, "one\ntwo\nthree\n".into())
    );
    assert_eq!(
        get_text(
            addr,
            "/containerLogs/default/web/c?tailLines=2&follow=false"
        )
        .await,
        (StatusCode::OK, "two\nthree\n".into())
    );
    assert_eq!(
        get_text(addr, "/containerLogs/default/web/c?limitBytes=6").await,
        (StatusCode::OK, "three\n".into())
    );
    for missing in [
        "/containerLogs/default/nope/c",
        "/containerLogs/default/web/nope",
        "/containerLogs/other/web/c",
        "/containerLogs/default/web/c?previous=true",
        "/containerLogs/default/web",
    ] {
        let (status, body) = get_text(addr, missing).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}: {body}");
        assert!(!body.is_empty(), "{missing}: a message says why");
    }
    for bad in [
        "/containerLogs/default/web/c?tailLines=-1",
        "/containerLogs/default/web/c?follow=maybe",
        "/containerLogs/default/web/c?limitBytes=0",
        "/containerLogs/default/web/c?timestamps=true",
    ] {
        let (status, body) = get_text(addr, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    cluster.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the server stops with the agent"
    );
}

#[tokio::test]
async fn previous_logs_after_a_restart_over_http() {
    let runtime = ProcessRuntime::temp().expect("runtime");
    let agent = agent(Arc::new(runtime))
        .serve("127.0.0.1:0".parse().expect("addr"))
        .build()
        .expect("agent");
    let addr = agent.kubelet_addr().expect("serving");
    let cluster = Cluster::start(agent);
    // The sandbox directory (the working directory) outlives container restarts.
    let script = "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; echo attempt$n; \
                  if [ $n -ge 2 ]; then exec sleep 30; fi; exit 1";
    cluster
        .pods()
        .create(&pod(
            "crash",
            "Always",
            serde_json::json!([{"name": "c", "image": "ignored", "command": ["sh", "-c", script]}]),
        ))
        .await
        .expect("create");
    eventually(WAIT, "the second attempt logs", || async {
        let (status, body) = get_text(addr, "/containerLogs/default/crash/c").await;
        (status == StatusCode::OK && body == "attempt2\n").then_some(())
    })
    .await;
    assert_eq!(
        get_text(addr, "/containerLogs/default/crash/c?previous=true").await,
        (StatusCode::OK, "attempt1\n".into())
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn followed_logs_stream_lines_written_later_until_the_container_exits() {
    let runtime = ProcessRuntime::temp().expect("runtime");
    let agent = agent(Arc::new(runtime))
        .serve("127.0.0.1:0".parse().expect("addr"))
        .build()
        .expect("agent");
    let addr = agent.kubelet_addr().expect("serving");
    let cluster = Cluster::start(agent);
    let dir = tempfile::tempdir().expect("tempdir");
    let go = dir.path().join("go");
    let script = format!(
        "echo early1; echo early2; while [ ! -e '{}' ]; do sleep 0.05; done; echo later; exit 0",
        go.display()
    );
    cluster
        .pods()
        .create(&pod(
            "talker",
            "Never",
            serde_json::json!([{"name": "c", "image": "ignored", "command": ["sh", "-c", script]}]),
        ))
        .await
        .expect("create");
    cluster.wait_phase("talker", "Running", WAIT).await;
    eventually(WAIT, "the early lines", || async {
        let (_, body) = get_text(addr, "/containerLogs/default/talker/c").await;
        (body == "early1\nearly2\n").then_some(())
    })
    .await;

    let (status, mut body) = get(
        addr,
        "/containerLogs/default/talker/c?follow=true&tailLines=1&timestamps=false",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut text = String::new();
    read_until(&mut body, &mut text, "early2\n").await;
    std::fs::write(&go, "").expect("signal the container");
    read_until(&mut body, &mut text, "later\n").await;
    assert_eq!(
        text, "early2\nlater\n",
        "tailLines applies to what was there"
    );
    // The container exits after its last line: the stream ends.
    let end = tokio::time::timeout(WAIT, body.frame())
        .await
        .expect("the stream ends when the container exits");
    assert!(end.is_none(), "no more data: {end:?}");

    // A followed unknown container is a 404 at once, not an empty stream.
    assert_eq!(
        get_text(addr, "/containerLogs/default/talker/nope?follow=true")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_follower_disconnecting_does_not_disturb_the_server() {
    let runtime = ProcessRuntime::temp().expect("runtime");
    let agent = agent(Arc::new(runtime))
        .serve("127.0.0.1:0".parse().expect("addr"))
        .build()
        .expect("agent");
    let addr = agent.kubelet_addr().expect("serving");
    let cluster = Cluster::start(agent);
    cluster
        .pods()
        .create(&pod(
            "loop",
            "Always",
            serde_json::json!([{"name": "c", "image": "ignored", "command": ["sh", "-c",
                "while true; do echo tick; sleep 0.1; done"]}]),
        ))
        .await
        .expect("create");
    cluster.wait_phase("loop", "Running", WAIT).await;
    for _ in 0..3 {
        let (status, mut body) = get(addr, "/containerLogs/default/loop/c?follow=true").await;
        assert_eq!(status, StatusCode::OK);
        let mut text = String::new();
        read_until(&mut body, &mut text, "tick\ntick\n").await;
        drop(body);
    }
    assert_eq!(
        get_text(addr, "/healthz").await,
        (StatusCode::OK, "ok".into())
    );
    cluster.shutdown().await;
}

/// A check that knows two tokens: the API server's (allowed) and bob's (not allowed).
#[derive(Debug)]
struct TwoTokens;

#[async_trait::async_trait]
impl kube_node::KubeletAuth for TwoTokens {
    async fn check(
        &self,
        bearer: Option<&str>,
        request: &kube_node::KubeletRequest<'_>,
    ) -> Result<kube_node::KubeletAccess, kube_core::orchestrator::BoxError> {
        assert_eq!(
            (request.node, request.subresource),
            (crate::common::NODE, "proxy")
        );
        assert!(["get", "create"].contains(&request.verb), "{request:?}");
        Ok(match bearer {
            Some("apiserver-token") => kube_node::KubeletAccess::Allowed,
            Some("bob-token") => kube_node::KubeletAccess::Forbidden { user: "bob".into() },
            Some("broken") => return Err("the API server is away".into()),
            _ => kube_node::KubeletAccess::Unauthenticated,
        })
    }
}

/// `GET path` with a bearer token; status and body.
async fn get_as(addr: SocketAddr, path: &str, token: &str) -> (StatusCode, String) {
    let (status, _, body) = call_as(addr, hyper::Method::GET, path, token).await;
    (status, body)
}

/// A request with a bearer token; status, headers and body.
async fn call_as(
    addr: SocketAddr,
    method: hyper::Method,
    path: &str,
    token: &str,
) -> (StatusCode, hyper::HeaderMap, String) {
    let response = send(addr, method, path, Some(token)).await;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

#[tokio::test]
async fn with_a_kubelet_auth_only_callers_it_allows_read_logs_and_exec() {
    let fake = FakeRuntime::new();
    fake.set_default_behavior(FakeBehavior::run_forever().with_output("secret\n"));
    let agent = agent(Arc::new(fake.clone()))
        .node_ip("127.0.0.1")
        .serve("127.0.0.1:0".parse().expect("addr"))
        .kubelet_auth(Arc::new(TwoTokens))
        .build()
        .expect("agent");
    let addr = agent.kubelet_addr().expect("serving");
    let cluster = Cluster::start(agent);
    cluster
        .pods()
        .create(&pod(
            "web",
            "Always",
            serde_json::json!([{"name": "c", "image": "nginx"}]),
        ))
        .await
        .expect("create");
    cluster.wait_phase("web", "Running", WAIT).await;
    let logs = "/containerLogs/default/web/c";

    assert_eq!(
        get_text(addr, "/healthz").await,
        (StatusCode::OK, "ok".into()),
        "health needs no token"
    );
    let (status, body) = get_text(addr, logs).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(!body.contains("secret"));
    assert_eq!(
        get_as(addr, logs, "nobody").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get_as(addr, logs, "bob-token").await,
        (
            StatusCode::FORBIDDEN,
            "Forbidden (user=bob, verb=get, resource=nodes, subresource=proxy)\n".into()
        )
    );
    assert_eq!(
        get_as(addr, logs, "broken").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get_as(addr, logs, "apiserver-token").await,
        (StatusCode::OK, "secret\n".into())
    );

    // Exec: POST, checked like the rest; the exit code comes in a header.
    let exec = "/exec/default/web/c?command=check&command=--all";
    let (status, _, body) = call_as(addr, hyper::Method::POST, exec, "bob-token").await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::FORBIDDEN,
            "Forbidden (user=bob, verb=create, resource=nodes, subresource=proxy)\n"
        )
    );
    let (status, headers, _) = call_as(addr, hyper::Method::POST, exec, "apiserver-token").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-exit-code"], "0");
    assert_eq!(headers["x-stdout-length"], "0");
    fake.set_exec_result("check", 3);
    let (_, headers, _) = call_as(addr, hyper::Method::POST, exec, "apiserver-token").await;
    assert_eq!(headers["x-exit-code"], "3");
    for (path, want) in [
        ("/exec/default/web/c", StatusCode::BAD_REQUEST),
        ("/exec/default/web/nope?command=x", StatusCode::NOT_FOUND),
        ("/exec/default/web?command=x", StatusCode::NOT_FOUND),
    ] {
        let (status, _, body) = call_as(addr, hyper::Method::POST, path, "apiserver-token").await;
        assert_eq!(status, want, "{path}: {body}");
    }
    assert_eq!(
        call_as(addr, hyper::Method::GET, exec, "apiserver-token")
            .await
            .0,
        StatusCode::METHOD_NOT_ALLOWED
    );
    cluster.shutdown().await;
}
