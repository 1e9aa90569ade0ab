//! API server benchmark: the Kubernetes REST API over HTTP on loopback, in front of a
//! `MemStore`.
//!
//! Load phase: 64 HTTP clients, each with its own keep-alive connection, loop "create a pod
//! (~1.8 KB of JSON, a unique name), then get one of the pods it created"; 64 watchers stream
//! `GET /api/v1/namespaces/bench/pods?watch=true&resourceVersion=<rv>`. Watch latency runs from
//! the moment a create's response reached its client to the moment a watcher read the `ADDED`
//! event of that pod (every watcher, every pod). A warm-up comes first and is not counted.
//!
//! List phase: a fresh server over a fresh store holding 100,000 pods (created directly in the
//! store, copies of one pod created over HTTP so they carry the server's defaults); one
//! `GET /api/v1/pods`, whole body read, best of 3.
//!
//! ```sh
//! cargo bench -p kube-store --bench apiserver --features server,client
//! cargo bench -p kube-store --bench apiserver --features server,client -- --seconds 5
//! # other flags: --warmup S, --clients N, --watchers N, --list-pods N, --list-runs N,
//! #              --skip-load, --skip-list (for profiling one phase)
//! ```
//! Prints human-readable lines, then one final line:
//! `creates_per_sec=<n> create_p99_ms=<x> gets_per_sec=<n> get_p99_ms=<x> watch_p99_ms=<x> list_100k_ms=<x>`
//! Goals (issue 4): create p99 ≤ 10 ms under this load; the 100k LIST ≤ 1 s.
//!
//! The process runs as a binary serving the API should: mimalloc, and transparent huge pages
//! off (`kube_store::disable_transparent_huge_pages`; with them, create p99 was ~16 ms).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use kube_apiserver::{ApiServer, RunningApiServer};
use kube_core::object::DynamicObject;
use kube_core::store::Store;
use kube_store::MemStore;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// Binaries that embed the server choose their allocator (see benches/store.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NAMESPACE: &str = "bench";
const PODS: &str = "/api/v1/namespaces/bench/pods";

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

struct Args {
    seconds: f64,
    warmup: f64,
    clients: usize,
    watchers: usize,
    list_pods: usize,
    list_runs: usize,
    load: bool,
    list: bool,
}

impl Args {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let number = |flag: &str, default: f64| {
            value(flag)
                .map(|v| {
                    v.parse::<f64>()
                        .unwrap_or_else(|_| panic!("{flag} wants a number, got {v:?}"))
                })
                .unwrap_or(default)
        };
        let flag = |name: &str| args.iter().any(|a| a == name);
        Self {
            seconds: number("--seconds", 10.0),
            warmup: number("--warmup", 2.0),
            clients: number("--clients", 64.0) as usize,
            watchers: number("--watchers", 64.0) as usize,
            list_pods: number("--list-pods", 100_000.0) as usize,
            list_runs: (number("--list-runs", 3.0) as usize).max(1),
            load: !flag("--skip-load"),
            list: !flag("--skip-list"),
        }
    }
}

/// A pod as a ReplicaSet would create it: labels, annotations, an owner, two containers with
/// a probe, resources, env and mounts; about 1.8 KB of JSON. `__NAME__` is replaced per pod.
fn pod_template() -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "__NAME__",
            "namespace": NAMESPACE,
            "labels": {
                "app.kubernetes.io/name": "web",
                "app.kubernetes.io/part-of": "shop",
                "tier": "frontend",
                "pod-template-hash": "7d9c5b8f6d"
            },
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "9090",
                "kubectl.kubernetes.io/default-container": "web"
            },
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web-7d9c5b8f6d",
                "uid": "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9",
                "controller": true,
                "blockOwnerDeletion": true
            }]
        },
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "registry.example.com/shop/web:1.24.3",
                    "imagePullPolicy": "IfNotPresent",
                    "args": ["--port=8080", "--metrics-port=9090", "--log-format=json"],
                    "ports": [
                        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}
                    ],
                    "env": [
                        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "SHOP_BACKEND", "value": "http://shop-api:8080"}
                    ],
                    "resources": {
                        "requests": {"cpu": "250m", "memory": "256Mi"},
                        "limits": {"cpu": "1", "memory": "512Mi"}
                    },
                    "readinessProbe": {
                        "httpGet": {"path": "/readyz", "port": 8080},
                        "initialDelaySeconds": 2,
                        "periodSeconds": 5
                    },
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/web", "readOnly": true}]
                },
                {
                    "name": "log-shipper",
                    "image": "registry.example.com/infra/log-shipper:2.1.0",
                    "args": ["--input=/var/log/web", "--output=loki"],
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "64Mi"},
                        "limits": {"memory": "128Mi"}
                    },
                    "volumeMounts": [{"name": "logs", "mountPath": "/var/log/web"}]
                }
            ],
            "volumes": [
                {"name": "config", "configMap": {"name": "web-config"}},
                {"name": "logs", "emptyDir": {}}
            ],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ],
            "serviceAccountName": "web",
            "terminationGracePeriodSeconds": 30
        }
    })
    .to_string()
}

fn pod_name(client: usize, seq: usize) -> String {
    format!("p{client}-{seq}")
}

/// The client and sequence number of a pod name made by [`pod_name`].
fn parse_pod_name(name: &[u8]) -> Option<(usize, usize)> {
    let name = std::str::from_utf8(name.strip_prefix(b"p")?).ok()?;
    let (client, seq) = name.split_once('-')?;
    Some((client.parse().ok()?, seq.parse().ok()?))
}

/// Where `needle` first occurs in `haystack` (SIMD search: the watchers scan every byte of
/// every event, and the CPU they spend is CPU the server also needs).
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// The pod name of an `ADDED` watch event line, without decoding the whole event: the first
/// `"name":"` inside `"metadata":{` is the object's name (metadata keys are written in order:
/// annotations, creationTimestamp, generation, labels, name, ...; the values used here contain
/// no such pattern).
fn added_pod_name(line: &[u8]) -> Option<&[u8]> {
    // `type` is the first or the last key, depending on how the server orders them.
    if !(line.ends_with(b"\"type\":\"ADDED\"}") || line.starts_with(b"{\"type\":\"ADDED\"")) {
        return None;
    }
    let meta = find(line, b"metadata\":{")?;
    let mut rest = &line[meta..];
    // `"name":"`, not a key ending in it (`app.kubernetes.io/name`).
    loop {
        let at = find(rest, b"name\":\"")?;
        let quoted = at > 0 && rest[at - 1] == b'"';
        rest = &rest[at + b"name\":\"".len()..];
        if quoted {
            break;
        }
    }
    let end = rest.iter().position(|b| *b == b'"')?;
    Some(&rest[..end])
}

/// One keep-alive HTTP/1.1 connection of a client's (or watcher's) own: hyper's connection API
/// with no pool in front of it, so the load generator spends as little of the CPUs the server
/// shares as it can.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    async fn open(url: &str) -> Self {
        let host = url
            .strip_prefix("http://")
            .expect("the server's URL is http://host:port")
            .to_string();
        let stream = TcpStream::connect(&host).await.expect("connect");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("HTTP handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Self { sender, host }
    }

    /// Sends a request for `path` and returns the response once its head arrived.
    async fn send(&mut self, method: Method, path: &str, body: Bytes) -> Response<Incoming> {
        self.sender.ready().await.expect("connection ready");
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(body))
            .expect("request");
        self.sender
            .send_request(request)
            .await
            .expect("HTTP request")
    }
}

/// Sends a request and reads its whole body.
async fn call(
    connection: &mut Connection,
    method: Method,
    path: &str,
    body: Bytes,
) -> (StatusCode, Bytes) {
    let response = connection.send(method, path, body).await;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    (status, body)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn summary(name: &str, unit: &str, mut latencies: Vec<Duration>, elapsed: f64) -> (f64, f64) {
    latencies.sort();
    let rate = latencies.len() as f64 / elapsed;
    println!(
        "{name:<7} {:>8} {unit:<7} {rate:>8.0}/s  p50={:.2}ms p90={:.2}ms p99={:.2}ms max={:.2}ms",
        latencies.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    (rate, percentile(&latencies, 0.99))
}

/// What one create/get client did.
#[derive(Default)]
struct ClientRecord {
    /// When the response of each of its creates arrived, by sequence number.
    acks: Vec<Instant>,
    /// The first sequence number created in the measured window.
    first_measured: Option<usize>,
    creates: Vec<Duration>,
    gets: Vec<Duration>,
    errors: u64,
}

async fn create_get_client(
    url: String,
    client_id: usize,
    template: Arc<String>,
    phase: Arc<AtomicU8>,
) -> ClientRecord {
    let mut http = Connection::open(&url).await;
    let collection = PODS;
    let mut record = ClientRecord::default();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ (client_id as u64 + 1);
    loop {
        let now_phase = phase.load(Ordering::Relaxed);
        if now_phase == STOP {
            break;
        }
        let measured = now_phase == MEASURE;
        let seq = record.acks.len();
        if measured && record.first_measured.is_none() {
            record.first_measured = Some(seq);
        }
        let body = Bytes::from(template.replace("__NAME__", &pod_name(client_id, seq)));
        let started = Instant::now();
        let (status, answer) = call(&mut http, Method::POST, collection, body).await;
        let acked = Instant::now();
        assert_eq!(
            status,
            StatusCode::CREATED,
            "create: {}",
            String::from_utf8_lossy(&answer)
        );
        record.acks.push(acked);
        if measured {
            record.creates.push(acked - started);
        }

        // Get one of the pods this client created.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let target = (rng % record.acks.len() as u64) as usize;
        let item = format!("{collection}/{}", pod_name(client_id, target));
        let started = Instant::now();
        let (status, _) = call(&mut http, Method::GET, &item, Bytes::new()).await;
        let done = Instant::now();
        if status != StatusCode::OK {
            record.errors += 1;
        }
        if measured {
            record.gets.push(done - started);
        }
    }
    record
}

/// Undoes HTTP/1.1 chunked framing as bytes arrive, handing on the data of each chunk.
#[derive(Default)]
struct Dechunker {
    /// Data bytes left in the current chunk, then its closing CRLF.
    left: usize,
    in_data: bool,
    /// A size line cut across reads.
    size_line: Vec<u8>,
    /// The last chunk (size 0) was read.
    done: bool,
}

impl Dechunker {
    /// Feeds `bytes` through, calling `data` with each piece of chunk data in order.
    fn feed(&mut self, mut bytes: &[u8], mut data: impl FnMut(&[u8])) {
        while !bytes.is_empty() && !self.done {
            if self.in_data {
                let take = self.left.min(bytes.len());
                // Data, then the CRLF that ends the chunk (counted in `left`, not handed on).
                let data_left = self.left.saturating_sub(2);
                if data_left > 0 {
                    data(&bytes[..take.min(data_left)]);
                }
                self.left -= take;
                bytes = &bytes[take..];
                if self.left == 0 {
                    self.in_data = false;
                }
                continue;
            }
            let Some(end) = memchr::memchr(b'\n', bytes) else {
                self.size_line.extend_from_slice(bytes);
                return;
            };
            self.size_line.extend_from_slice(&bytes[..end]);
            bytes = &bytes[end + 1..];
            let line = std::str::from_utf8(&self.size_line).expect("chunk size line");
            let hex = line.trim_end_matches('\r').split(';').next().unwrap_or("");
            let size = usize::from_str_radix(hex.trim(), 16).expect("chunk size");
            self.size_line.clear();
            if size == 0 {
                self.done = true;
            } else {
                self.left = size + 2;
                self.in_data = true;
            }
        }
    }
}

/// One watcher: when it read the `ADDED` event of each pod, as (client, seq, arrival).
///
/// It reads its watch off its own socket, the request written by hand and the chunked framing
/// undone here: every watcher reads every event the server sends, so this is most of the load
/// generator's work, and an HTTP client adds a task hop and a channel per chunk on the cores
/// the server needs.
async fn watcher(
    url: String,
    from: u64,
    expected: Arc<AtomicU64>,
    connected: tokio::sync::mpsc::Sender<()>,
) -> Vec<(u32, u32, Instant)> {
    let host = url
        .strip_prefix("http://")
        .expect("the server's URL is http://host:port");
    let mut stream = TcpStream::connect(host).await.expect("connect");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let request = format!(
        "GET {PODS}?watch=true&resourceVersion={from}&timeoutSeconds=3600 HTTP/1.1\r\n\
         Host: {host}\r\nAccept: application/json\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("watch request");

    let mut read = vec![0u8; 256 * 1024];
    // The response head.
    let mut head: Vec<u8> = Vec::new();
    let body_start = loop {
        let n = stream.read(&mut read).await.expect("watch response");
        assert!(n > 0, "the server closed the watch before answering");
        head.extend_from_slice(&read[..n]);
        if let Some(end) = find(&head, b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head_text = String::from_utf8_lossy(&head[..body_start]).to_ascii_lowercase();
    assert!(head_text.starts_with("http/1.1 200"), "watch: {head_text}");
    assert!(
        head_text.contains("transfer-encoding: chunked"),
        "watch response is chunked: {head_text}"
    );
    let _ = connected.send(()).await;

    let mut dechunker = Dechunker::default();
    // An event line cut across reads or chunks.
    let mut partial: Vec<u8> = Vec::new();
    let mut arrivals = Vec::new();
    let mut seen = 0u64;
    let mut take = |data: &[u8], now: Instant, seen: &mut u64, arrivals: &mut Vec<_>| {
        let mut record = |line: &[u8]| {
            if let Some((client, seq)) = added_pod_name(line).and_then(parse_pod_name) {
                arrivals.push((client as u32, seq as u32, now));
                *seen += 1;
            }
        };
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', data) {
            if partial.is_empty() {
                record(&data[start..end]);
            } else {
                partial.extend_from_slice(&data[start..end]);
                record(&partial);
                partial.clear();
            }
            start = end + 1;
        }
        partial.extend_from_slice(&data[start..]);
    };
    let now = Instant::now();
    dechunker.feed(&head[body_start..], |data| {
        take(data, now, &mut seen, &mut arrivals)
    });
    loop {
        if seen >= expected.load(Ordering::Relaxed) || dechunker.done {
            break;
        }
        let n = match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut read)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
            Ok(Err(e)) => panic!("watch stream failed: {e}"),
            // Nothing for 1 s: once every create is done, this watcher has all it will get.
            Err(_) if expected.load(Ordering::Relaxed) != u64::MAX => break,
            Err(_) => continue,
        };
        let now = Instant::now();
        dechunker.feed(&read[..n], |data| take(data, now, &mut seen, &mut arrivals));
    }
    arrivals
}

/// The bench's own check of [`Dechunker`] (a `harness = false` bench runs no `#[test]`), run
/// before it measures anything.
fn check_dechunker() {
    let wire = b"5\r\nhello\r\nC;ext=1\r\n world\nagain\r\n0\r\n\r\n";
    for cut in 1..wire.len() {
        let mut dechunker = Dechunker::default();
        let mut out = Vec::new();
        for piece in wire.chunks(cut) {
            dechunker.feed(piece, |data| out.extend_from_slice(data));
        }
        assert_eq!(out, b"hello world\nagain", "cut every {cut} bytes");
        assert!(dechunker.done);
    }
}

struct LoadFigures {
    creates_per_sec: f64,
    create_p99_ms: f64,
    gets_per_sec: f64,
    get_p99_ms: f64,
    watch_p99_ms: f64,
}

async fn load_phase(
    running: &RunningApiServer,
    store: &Arc<dyn Store>,
    args: &Args,
) -> LoadFigures {
    let url = running.url();
    let template = Arc::new(pod_template());
    println!(
        "load: {} create+get clients, {} watchers, pod body {} bytes, warm-up {:.1}s, measured {:.1}s",
        args.clients,
        args.watchers,
        template.replace("__NAME__", &pod_name(0, 0)).len(),
        args.warmup,
        args.seconds
    );

    let from = store.current_revision().await.expect("revision");
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let (connected_tx, mut connected_rx) = tokio::sync::mpsc::channel(args.watchers.max(1));
    let watchers: Vec<_> = (0..args.watchers)
        .map(|_| {
            tokio::spawn(watcher(
                url.clone(),
                from,
                expected.clone(),
                connected_tx.clone(),
            ))
        })
        .collect();
    drop(connected_tx);
    for _ in 0..args.watchers {
        connected_rx.recv().await.expect("watcher connected");
    }

    let phase = Arc::new(AtomicU8::new(WARMUP));
    let clients: Vec<_> = (0..args.clients)
        .map(|c| {
            tokio::spawn(create_get_client(
                url.clone(),
                c,
                template.clone(),
                phase.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    phase.store(MEASURE, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    phase.store(STOP, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();

    let mut records = Vec::new();
    for c in clients {
        records.push(c.await.expect("client"));
    }
    let total: usize = records.iter().map(|r| r.acks.len()).sum();
    expected.store(total as u64, Ordering::Relaxed);
    let errors: u64 = records.iter().map(|r| r.errors).sum();

    let mut watch = Vec::new();
    let mut missed = 0usize;
    let mut early = 0usize;
    for w in watchers {
        let arrivals = w.await.expect("watcher");
        missed += total.saturating_sub(arrivals.len());
        for (client, seq, arrived) in arrivals {
            let record = &records[client as usize];
            let seq = seq as usize;
            if record.first_measured.is_none_or(|first| seq < first) {
                continue;
            }
            let Some(ack) = record.acks.get(seq) else {
                continue;
            };
            if arrived < *ack {
                early += 1;
            }
            watch.push(arrived.saturating_duration_since(*ack));
        }
    }

    let creates: Vec<Duration> = records.iter().flat_map(|r| r.creates.clone()).collect();
    let gets: Vec<Duration> = records.iter().flat_map(|r| r.gets.clone()).collect();
    println!(
        "load: {total} pods created in all (warm-up included); get errors {errors}; \
         watch events missed {missed}; seen before the create's response {early}"
    );
    let (creates_per_sec, create_p99_ms) = summary("create", "creates", creates, elapsed);
    let (gets_per_sec, get_p99_ms) = summary("get", "gets", gets, elapsed);
    let (_, watch_p99_ms) = summary("watch", "events", watch, elapsed);
    LoadFigures {
        creates_per_sec,
        create_p99_ms,
        gets_per_sec,
        get_p99_ms,
        watch_p99_ms,
    }
}

async fn list_phase(running: &RunningApiServer, store: &Arc<dyn Store>, args: &Args) -> f64 {
    let url = running.url();
    let mut http = Connection::open(&url).await;

    // One pod through the API (defaults, uid, timestamps), the rest copied into the store.
    let body = Bytes::from(pod_template().replace("__NAME__", &pod_name(0, 0)));
    let (status, created) = call(&mut http, Method::POST, PODS, body).await;
    assert_eq!(status, StatusCode::CREATED, "create the list template pod");
    let template: DynamicObject = serde_json::from_slice(&created).expect("created pod");
    let filling = Instant::now();
    for i in 1..args.list_pods {
        let mut pod = template.clone();
        // A deep copy of the fields too: pods created over HTTP share nothing, and 100,000
        // pods sharing one spec would serialize from one cache-warm tree.
        pod.data = serde_json::Map::clone(&template.data).into();
        pod.metadata.name = Some(pod_name(0, i));
        pod.metadata.uid = None;
        pod.metadata.resource_version = None;
        pod.metadata.creation_timestamp = None;
        store.create(pod).await.expect("store create");
    }
    println!(
        "list: {} pods stored in {:.1}s",
        args.list_pods,
        filling.elapsed().as_secs_f64()
    );

    let all = "/api/v1/pods";
    let mut best = f64::INFINITY;
    for run in 0..args.list_runs {
        let started = Instant::now();
        let response = http.send(Method::GET, all, Bytes::new()).await;
        let first_byte = started.elapsed();
        assert_eq!(response.status(), StatusCode::OK, "list");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("list body")
            .to_bytes();
        let took = started.elapsed();
        if run == 0 {
            let items = body
                .windows(b"\"kind\":\"Pod\"".len())
                .filter(|w| *w == b"\"kind\":\"Pod\"")
                .count();
            assert_eq!(items, args.list_pods, "the list holds every pod");
        }
        println!(
            "list: GET /api/v1/pods run {}: {:.1} ms ({:.1} ms to the response head), {:.1} MB",
            run + 1,
            took.as_secs_f64() * 1000.0,
            first_byte.as_secs_f64() * 1000.0,
            body.len() as f64 / 1e6
        );
        best = best.min(took.as_secs_f64() * 1000.0);
    }
    best
}

/// A server on loopback over a fresh `MemStore`, running on its own runtime.
fn start_server(runtime: &tokio::runtime::Runtime) -> (RunningApiServer, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let running = runtime
        .block_on(async {
            // The bench writes to a namespace it does not create.
            let mut config = kube_apiserver::ApiServerConfig::default();
            config.namespace_lifecycle = false;
            ApiServer::with_config(
                store.clone(),
                kube_core::kind::Registry::builtin().clone(),
                config,
            )
            .serve("127.0.0.1:0".parse().expect("addr"))
            .await
        })
        .expect("serve");
    (running, store)
}

fn main() {
    // As a binary that serves the API should (see `kube_store::disable_transparent_huge_pages`):
    // the store grows by every created pod, and 2 MiB first-touch stalls land on requests.
    kube_store::disable_transparent_huge_pages().expect("prctl(PR_SET_THP_DISABLE)");
    let args = Args::parse();
    check_dechunker();
    // The server and the load generator get a runtime each, so that profiles tell them apart
    // by thread name. The machine's cores are shared by both, as with a real co-located client.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("apiserver")
        .enable_all()
        .build()
        .expect("server runtime");
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench-client")
        .enable_all()
        .build()
        .expect("client runtime");

    let load = args.load.then(|| {
        let (running, store) = start_server(&server_runtime);
        let figures = client_runtime.block_on(load_phase(&running, &store, &args));
        server_runtime.block_on(running.shutdown());
        figures
    });
    let list_ms = args.list.then(|| {
        let (running, store) = start_server(&server_runtime);
        let ms = client_runtime.block_on(list_phase(&running, &store, &args));
        server_runtime.block_on(running.shutdown());
        ms
    });

    let nan = f64::NAN;
    let l = load.unwrap_or(LoadFigures {
        creates_per_sec: nan,
        create_p99_ms: nan,
        gets_per_sec: nan,
        get_p99_ms: nan,
        watch_p99_ms: nan,
    });
    let list_ms = list_ms.unwrap_or(nan);
    println!(
        "goals: create p99 {:.2} ms (goal <= 10 ms: {}), LIST of {} pods {:.0} ms (goal <= 1000 ms: {})",
        l.create_p99_ms,
        if l.create_p99_ms <= 10.0 {
            "met"
        } else {
            "NOT met"
        },
        args.list_pods,
        list_ms,
        if list_ms <= 1000.0 { "met" } else { "NOT met" },
    );
    println!(
        "creates_per_sec={:.0} create_p99_ms={:.2} gets_per_sec={:.0} get_p99_ms={:.2} watch_p99_ms={:.2} list_100k_ms={:.1}",
        l.creates_per_sec, l.create_p99_ms, l.gets_per_sec, l.get_p99_ms, l.watch_p99_ms, list_ms
    );
}
