//! The userspace proxy against a direct connection to the same backend on loopback, and the
//! nftables data plane's sync time for 10,000 services × 10 endpoints.
//!
//! `cargo bench -p kube-net --bench proxy`. The last line is
//! `bulk_ratio=… conn_ratio=… added_p99_us=… nft_sync_10k_ms=… nft_bulk_ratio=…
//! nft_conn_ratio=…`: bulk transfer throughput and new connections per second (proxied /
//! direct), p99 latency the proxy adds to small request/response at a fixed rate, the time to
//! apply the big table with `nft`, and the nftables data plane's throughput and connection
//! rate on real traffic between network namespaces (see [`nft_dataplane`]). Each figure
//! is the median of several short runs, direct and proxied interleaved with the same client
//! load (one paced connection; 8 connecting in parallel; one bulk stream), each phase after a
//! warm-up of both paths, because the machine is shared and noisy. The nft figure needs root
//! and `nft`/`ip` (it runs in a network namespace it creates); without them it prints
//! `nft_sync_10k_ms=NA`.
//!
//! Before the last line it prints the load average and, for the connection phase, the CPU time
//! per connection of each thread (client, backend, proxy; from `/proc/self/task/*/schedstat`,
//! kernel work on the thread's behalf included). Their ratio, direct over proxied, is the
//! connection rate ratio the proxy could reach if the machine were otherwise idle and the run
//! CPU-bound; the load of other work on the machine hardly changes it.
//!
//! Knobs for exploring: `KUBE_NET_BENCH_PHASES=lat,bulk,conn` (a subset; others print `NA`),
//! `KUBE_NET_BENCH_RUNS`, `KUBE_NET_BENCH_CONN_MS`, `KUBE_NET_BENCH_WORKERS` (proxy runtime
//! workers; 0 for a current-thread runtime), `KUBE_NET_BENCH_ACCEPT_LOOPS`,
//! `KUBE_NET_BENCH_SPLICE=0`, `KUBE_NET_BENCH_RELAY=threads` (a naive blocking relay instead
//! of the proxy, for reference), `KUBE_NET_BENCH_VIA=ADDR` (another proxy listening at ADDR
//! that relays to `127.0.0.4:18080`, e.g. HAProxy, measured on this same workload), `--no-nft`,
//! `--nft-only`, `--nft-dataplane-only`, `KUBE_NET_DUMP_NFT=FILE`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_core::object::ObjectKey;
use kube_core::proxy::{Endpoint, Protocol, Proxy, ServiceEntry, ServicePort, ServiceTable};
use kube_net::{ClusterIpBinding, NftConfig, NftProxy, UserspaceConfig, UserspaceProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The backend listens on all loopback addresses; clients reach it directly at `BACKEND` and
/// the proxy at `BACKEND_VIA_PROXY`, so the two paths do not share (and exhaust) one range of
/// ephemeral ports towards the same address.
const BACKEND: &str = "127.0.0.2:18080";
const BACKEND_VIA_PROXY: &str = "127.0.0.4:18080";
const VIP: &str = "127.0.0.3:18081";
const BULK_BYTES: u64 = 512 << 20;
/// Bytes per bulk run through the nftables data plane (veth pairs move them faster than the
/// loopback proxy path).
const NFT_BULK_BYTES: u64 = 1 << 30;
const RUNS: usize = 7;

fn main() {
    // Cargo passes `--bench`, which is ignored; `--nft-only` measures only the nftables sync.
    if std::env::args().any(|a| a == "--nft-only") {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ms = rt.block_on(nft_sync_10k_ms());
        println!(
            "nft_sync_10k_ms={}",
            ms.map_or("NA".into(), |ms| format!("{ms:.0}"))
        );
        return;
    }
    if std::env::args().any(|a| a == "--nft-dataplane-only") {
        let runs = runs_knob();
        let ratios = nft_dataplane(runs);
        let figure = |f: fn(&(f64, f64)) -> f64| {
            ratios
                .as_ref()
                .map_or("NA".into(), |r| format!("{:.2}", f(r)))
        };
        println!(
            "nft_bulk_ratio={} nft_conn_ratio={}",
            figure(|r| r.0),
            figure(|r| r.1)
        );
        return;
    }
    // `--serve LISTEN TO SECONDS`: only run the proxy (its bench configuration) from LISTEN to
    // TO, for measuring it with other tools (wrk against nginx, as the HAProxy
    // figures were measured).
    if let Some(i) = std::env::args().position(|a| a == "--serve") {
        let args: Vec<String> = std::env::args().skip(i + 1).take(3).collect();
        let (listen, to): (SocketAddr, SocketAddr) =
            (args[0].parse().unwrap(), args[1].parse().unwrap());
        let seconds: u64 = args[2].parse().unwrap();
        let (rt, _keep) = proxy_runtime(workers_knob());
        let proxy = UserspaceProxy::new(proxy_config());
        rt.block_on(proxy.sync(&one_service(listen, to))).unwrap();
        std::thread::sleep(Duration::from_secs(seconds));
        rt.block_on(proxy.shutdown()).unwrap();
        return;
    }
    let backend: SocketAddr = BACKEND.parse().unwrap();
    let vip: SocketAddr = VIP.parse().unwrap();
    std::thread::Builder::new()
        .name("backend".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve_backend("0.0.0.0:18080".parse().unwrap()));
        })
        .unwrap();
    let (proxy_rt, _keep) = proxy_runtime(workers_knob());
    let proxy = Arc::new(UserspaceProxy::new(proxy_config()));
    proxy_rt
        .block_on(proxy.sync(&one_service(vip, BACKEND_VIA_PROXY.parse().unwrap())))
        .unwrap();

    // `KUBE_NET_BENCH_RELAY=threads`: measure a naive relay instead of the proxy (blocking
    // sockets, one thread per direction of each connection), a reference for what the
    // machine's scheduler allows a third hop.
    // `KUBE_NET_BENCH_VIA=ADDR`: measure another proxy already listening at ADDR and relaying
    // to 127.0.0.4:18080 (HAProxy in TCP mode, say), on exactly this workload.
    let vip = if std::env::var("KUBE_NET_BENCH_RELAY").as_deref() == Ok("threads") {
        let at: SocketAddr = "127.0.0.5:18082".parse().unwrap();
        thread_relay(at, BACKEND_VIA_PROXY.parse().unwrap());
        at
    } else if let Some(at) = std::env::var("KUBE_NET_BENCH_VIA")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        at
    } else {
        vip
    };

    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // `KUBE_NET_BENCH_PHASES=lat,bulk,conn` (the default: all) picks the phases to run, for
    // profiling one of them; a phase not run prints `NA`.
    let phases = std::env::var("KUBE_NET_BENCH_PHASES").unwrap_or_else(|_| "lat,bulk,conn".into());
    let runs = runs_knob();
    let load_before = load_average();
    client.block_on(async {
        // Every phase warms both paths up first (connections, listener and runtime threads,
        // page cache of the backend's buffers), then alternates direct and proxied runs with
        // the same client load, and takes the median of each.
        let mut line = BTreeMap::new();
        if phases.contains("lat") {
            let _ = p99_us(backend, 200).await;
            let _ = p99_us(vip, 200).await;
            let (mut d, mut p) = (Vec::new(), Vec::new());
            let (mut d50, mut p50) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                let (p50_d, p99_d) = p99_us(backend, 1000).await;
                let (p50_p, p99_p) = p99_us(vip, 1000).await;
                d.push(p99_d);
                p.push(p99_p);
                d50.push(p50_d);
                p50.push(p50_p);
            }
            let (lat_d, lat_p) = (median(d), median(p));
            println!(
                "round trip µs at 2000 req/s: p50 direct {:.0}, proxied {:.0}; p99 direct {lat_d:.0}, proxied {lat_p:.0}",
                median(d50),
                median(p50)
            );
            line.insert("added_p99_us", format!("{:.0}", (lat_p - lat_d).max(0.0)));
        }
        // Latency runs first, on a proxy that has not just moved gigabytes: on this shared
        // 2-core machine, after the bulk and connection-rate phases the proxy thread loses
        // wakeup races to other load and p99 turns into scheduler ticks (~4 ms) instead of
        // proxy cost.
        if phases.contains("bulk") {
            let _ = bulk(backend, 32 << 20).await;
            let _ = bulk(vip, 32 << 20).await;
            let (mut d, mut p) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                d.push(bulk(backend, BULK_BYTES).await);
                p.push(bulk(vip, BULK_BYTES).await);
            }
            let (bulk_d, bulk_p) = (median(d), median(p));
            println!("bulk MB/s: direct {bulk_d:.0}, proxied {bulk_p:.0}");
            line.insert("bulk_ratio", format!("{:.2}", bulk_p / bulk_d));
        }
        if phases.contains("conn") {
            let window = Duration::from_millis(
                std::env::var("KUBE_NET_BENCH_CONN_MS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(400),
            );
            let _ = conn_rate(backend, Duration::from_millis(100)).await;
            let _ = conn_rate(vip, Duration::from_millis(100)).await;
            let (mut d, mut p) = (Vec::new(), Vec::new());
            // CPU time (all of it: user, kernel, softirq work done on the thread's behalf)
            // per connection, by thread: a figure the machine's other load hardly changes.
            let (mut cpu_d, mut cpu_p) = (CpuTimes::default(), CpuTimes::default());
            for _ in 0..runs {
                let before = CpuTimes::now();
                let (rate, n) = conn_rate(backend, window).await;
                cpu_d.add(&CpuTimes::now().since(&before), n);
                d.push(rate);
                let before = CpuTimes::now();
                let (rate, n) = conn_rate(vip, window).await;
                cpu_p.add(&CpuTimes::now().since(&before), n);
                p.push(rate);
            }
            let (conn_d, conn_p) = (median(d), median(p));
            println!("connections/s: direct {conn_d:.0}, proxied {conn_p:.0}");
            println!(
                "CPU µs per connection: direct {} ; proxied {} ; CPU-bound ratio {:.2}",
                cpu_d.per_conn(),
                cpu_p.per_conn(),
                cpu_d.total_per_conn() / cpu_p.total_per_conn()
            );
            line.insert("conn_ratio", format!("{:.2}", conn_p / conn_d));
        }

        let nft = if std::env::args().any(|a| a == "--no-nft") {
            None
        } else {
            nft_sync_10k_ms().await
        };
        if let Some(ms) = nft {
            line.insert("nft_sync_10k_ms", format!("{ms:.0}"));
        }
        let dataplane = if std::env::args().any(|a| a == "--no-nft") {
            None
        } else {
            // Its own threads and runtimes, in the namespaces it makes; nothing else needs this
            // runtime meanwhile, so waiting for it here blocks nobody.
            std::thread::spawn(move || nft_dataplane(runs))
                .join()
                .ok()
                .flatten()
        };
        if let Some((bulk, conn)) = dataplane {
            line.insert("nft_bulk_ratio", format!("{bulk:.2}"));
            line.insert("nft_conn_ratio", format!("{conn:.2}"));
        }
        println!(
            "load average (1, 5, 15 min): before {load_before}, after {}",
            load_average()
        );
        let figure = |k: &str| line.get(k).cloned().unwrap_or_else(|| "NA".into());
        println!(
            "bulk_ratio={} conn_ratio={} added_p99_us={} nft_sync_10k_ms={} nft_bulk_ratio={} nft_conn_ratio={}",
            figure("bulk_ratio"),
            figure("conn_ratio"),
            figure("added_p99_us"),
            figure("nft_sync_10k_ms"),
            figure("nft_bulk_ratio"),
            figure("nft_conn_ratio"),
        );
    });
    proxy_rt.block_on(proxy.shutdown()).unwrap();
}

/// Runs per figure (`KUBE_NET_BENCH_RUNS`, default [`RUNS`]).
fn runs_knob() -> usize {
    std::env::var("KUBE_NET_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RUNS)
}

/// Proxy runtime workers (`KUBE_NET_BENCH_WORKERS`, default 1). The proxy runs on its own
/// runtime, as it would in its own process: by default a one-worker runtime (0 for a
/// current-thread runtime). With client, backend and proxy on 2 shared cores, a second proxy
/// worker mostly adds wakeup latency.
fn workers_knob() -> usize {
    std::env::var("KUBE_NET_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// The proxy as measured, with the knobs for exploring (defaults are what the final line
/// reports): `KUBE_NET_BENCH_SPLICE=0`, `KUBE_NET_BENCH_ACCEPT_LOOPS`.
fn proxy_config() -> UserspaceConfig {
    UserspaceConfig {
        node_addresses: vec![],
        cluster_ips: ClusterIpBinding::Local,
        zero_copy: std::env::var("KUBE_NET_BENCH_SPLICE").as_deref() != Ok("0"),
        accept_loops: std::env::var("KUBE_NET_BENCH_ACCEPT_LOOPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        ..UserspaceConfig::default()
    }
}

/// A relay with blocking sockets and a thread per direction of each connection.
fn thread_relay(listen: SocketAddr, to: SocketAddr) {
    use std::net::Shutdown;
    let listener = std::net::TcpListener::bind(listen).unwrap();
    let spawn = |f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name("relay".into())
            .spawn(f)
            .unwrap();
    };
    spawn(Box::new(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(upstream) = std::net::TcpStream::connect(to) else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (client2, upstream2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            spawn(Box::new(move || {
                let _ = std::io::copy(&mut &client, &mut &upstream);
                let _ = upstream.shutdown(Shutdown::Write);
            }));
            spawn(Box::new(move || {
                let _ = std::io::copy(&mut &upstream2, &mut &client2);
                let _ = client2.shutdown(Shutdown::Write);
            }));
        }
    }));
}

/// A handle to run the proxy on; with `workers == 0` a current-thread runtime driven by a
/// thread of its own. The second value keeps a multi-thread runtime alive.
fn proxy_runtime(workers: usize) -> (tokio::runtime::Handle, Option<tokio::runtime::Runtime>) {
    if workers > 0 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("proxy")
            .enable_all()
            .build()
            .unwrap();
        return (rt.handle().clone(), Some(rt));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("proxy".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            tx.send(rt.handle().clone()).unwrap();
            rt.block_on(std::future::pending::<()>());
        })
        .unwrap();
    (rx.recv().unwrap(), None)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn one_service(vip: SocketAddr, backend: SocketAddr) -> ServiceTable {
    let entry = ServiceEntry {
        cluster_ip: Some(vip.ip()),
        ports: vec![ServicePort {
            name: String::new(),
            protocol: Protocol::Tcp,
            port: vip.port(),
            node_port: None,
            endpoints: vec![Endpoint {
                ip: backend.ip(),
                port: backend.port(),
                node_name: None,
                terminating: false,
            }],
        }],
        ..ServiceEntry::default()
    };
    ServiceTable {
        services: BTreeMap::from([(ObjectKey::namespaced("bench", "svc"), entry)]),
    }
}

/// The backend: the first byte of a connection picks the mode. `B` + u64: send that many
/// bytes; `C`: answer one byte and close; `E`: echo 64-byte messages until closed.
async fn serve_backend(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.unwrap();
    loop {
        let (mut s, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            let mut mode = [0u8; 1];
            if s.read_exact(&mut mode).await.is_err() {
                return;
            }
            match mode[0] {
                b'B' => {
                    let mut len = [0u8; 8];
                    if s.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut left = u64::from_be_bytes(len);
                    let buf = vec![7u8; 256 * 1024];
                    while left > 0 {
                        let n = left.min(buf.len() as u64) as usize;
                        if s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        left -= n as u64;
                    }
                }
                b'C' => {
                    let _ = s.write_all(b"k").await;
                }
                _ => {
                    let mut msg = [0u8; 64];
                    while s.read_exact(&mut msg).await.is_ok() {
                        if s.write_all(&msg).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// Connects, retrying while ephemeral ports are exhausted by the connection-rate runs.
async fn connect(to: SocketAddr) -> TcpStream {
    for _ in 0..200 {
        if let Ok(s) = TcpStream::connect(to).await {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("cannot connect to {to}");
}

/// MB/s receiving `bytes` from the backend through `to`.
async fn bulk(to: SocketAddr, bytes: u64) -> f64 {
    let mut s = connect(to).await;
    let started = Instant::now();
    let mut request = vec![b'B'];
    request.extend_from_slice(&bytes.to_be_bytes());
    s.write_all(&request).await.unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < bytes {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "bulk stream ended early");
        got += n as u64;
    }
    bytes as f64 / 1e6 / started.elapsed().as_secs_f64()
}

/// The machine's load average, as `uptime` shows it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// CPU time used so far by the bench's threads, by role (from `/proc/self/task/*/schedstat`,
/// nanoseconds on the CPU), and the connections it was spent on.
#[derive(Clone, Debug, Default)]
struct CpuTimes {
    ns: BTreeMap<&'static str, u64>,
    conns: u64,
}

impl CpuTimes {
    fn now() -> Self {
        let mut ns = BTreeMap::new();
        for task in std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
        {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let role = match comm.trim() {
                c if c.starts_with("proxy-") => "client",
                "backend" => "backend",
                c if c.starts_with("proxy") || c == "relay" => "proxy",
                _ => continue,
            };
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            let on_cpu: u64 = stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            *ns.entry(role).or_insert(0) += on_cpu;
        }
        Self { ns, conns: 0 }
    }

    fn since(&self, before: &Self) -> Self {
        let ns = self
            .ns
            .iter()
            .map(|(k, v)| (*k, v.saturating_sub(before.ns.get(k).copied().unwrap_or(0))))
            .collect();
        Self { ns, conns: 0 }
    }

    fn add(&mut self, run: &Self, conns: u64) {
        for (k, v) in &run.ns {
            *self.ns.entry(k).or_insert(0) += v;
        }
        self.conns += conns;
    }

    fn per_conn(&self) -> String {
        self.ns
            .iter()
            .map(|(k, v)| format!("{k} {:.1}", *v as f64 / 1e3 / self.conns.max(1) as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn total_per_conn(&self) -> f64 {
        self.ns.values().sum::<u64>() as f64 / 1e3 / self.conns.max(1) as f64
    }
}

/// New connections per second (connect, one byte each way, close) with 8 in parallel for
/// `window`, and how many were made.
async fn conn_rate(to: SocketAddr, window: Duration) -> (f64, u64) {
    let started = Instant::now();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                let mut done = 0u64;
                while started.elapsed() < window {
                    let Ok(mut s) = TcpStream::connect(to).await else {
                        // Out of ephemeral ports for a moment: let TIME_WAIT drain.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    let mut b = [0u8; 1];
                    if s.write_all(b"C").await.is_ok() && s.read_exact(&mut b).await.is_ok() {
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    (total as f64 / started.elapsed().as_secs_f64(), total)
}

/// p50 and p99 round trip in µs of `samples` 64-byte echoes sent at 2000/s on one connection.
async fn p99_us(to: SocketAddr, samples: usize) -> (f64, f64) {
    let mut s = connect(to).await;
    s.set_nodelay(true).unwrap();
    s.write_all(b"E").await.unwrap();
    let msg = [1u8; 64];
    let mut back = [0u8; 64];
    let count = samples;
    let mut samples = Vec::with_capacity(count);
    let mut tick = tokio::time::interval(Duration::from_micros(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..count {
        tick.tick().await;
        let t = Instant::now();
        s.write_all(&msg).await.unwrap();
        s.read_exact(&mut back).await.unwrap();
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

/// Median time for NftProxy to apply 10,000 services × 10 endpoints in a fresh namespace.
async fn nft_sync_10k_ms() -> Option<f64> {
    let ns = format!("kn-bench-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("cannot create a network namespace (needs root and iproute2)");
        return None;
    }
    struct Guard(String);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let _guard = Guard(ns.clone());
    let table = big_table(10_000, 10);
    let proxy = NftProxy::new(NftConfig {
        netns: Some(ns),
        ..NftConfig::default()
    });
    if let Ok(path) = std::env::var("KUBE_NET_DUMP_NFT") {
        let _ = std::fs::write(path, proxy.script(&table));
    }
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        if let Err(e) = proxy.sync(&table).await {
            eprintln!("nft sync failed: {e} ({:?})", std::error::Error::source(&e));
            return None;
        }
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let stats = proxy.stats().await;
    println!(
        "nft: {} rules/elements, script {} KiB, sync ms {times:.0?} (the last: {:.0} ms in nft)",
        stats.rules,
        stats.script_bytes / 1024,
        stats.apply_time.as_secs_f64() * 1e3
    );
    // One endpoint of one service replaced: an increment of a few elements.
    let key = ObjectKey::namespaced("bench", "svc-0");
    if let Some(mut entry) = table.services.get(&key).cloned() {
        entry.ports[0].endpoints[0].ip = IpAddr::from([10, 200, 0, 1]);
        let started = Instant::now();
        let change = kube_core::proxy::TableChange::Upsert(key, entry);
        if proxy.apply(&[change]).await.is_ok() {
            println!(
                "nft: one endpoint changed in {:.1} ms ({} bytes sent)",
                started.elapsed().as_secs_f64() * 1e3,
                proxy.stats().await.script_bytes
            );
        }
    }
    let _ = proxy.shutdown().await;
    Some(median(times))
}

fn big_table(services: u32, endpoints: u32) -> ServiceTable {
    let mut table = ServiceTable::default();
    for s in 0..services {
        let vip = IpAddr::from([10, 96, (s >> 8) as u8, s as u8]);
        let eps = (0..endpoints)
            .map(|e| {
                let n = s * endpoints + e;
                Endpoint {
                    ip: IpAddr::from([10, 128 + (n >> 16) as u8, (n >> 8) as u8, n as u8]),
                    port: 8080,
                    node_name: None,
                    terminating: false,
                }
            })
            .collect();
        table.services.insert(
            ObjectKey::namespaced("bench", format!("svc-{s}")),
            ServiceEntry {
                cluster_ip: Some(vip),
                ports: vec![ServicePort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                    node_port: None,
                    endpoints: eps,
                }],
                ..ServiceEntry::default()
            },
        );
    }
    table
}

/// `ip ARGS…`; whether it succeeded (the error is printed).
fn ip(args: &[&str]) -> bool {
    match Command::new("ip").args(args).output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!(
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("ip {args:?}: {e}");
            false
        }
    }
}

/// Network namespaces deleted on drop.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a new thread that has entered network namespace `ns` (its sockets live there).
fn in_netns<T: Send + 'static>(
    ns: &str,
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .unwrap()
}

/// The nftables data plane on real traffic, against the same traffic without it: three
/// namespaces as three machines, a client (10.11.0.2 and .3), a node routing between it and a
/// backend pod (10.11.1.2), both in the pod network 10.11.0.0/16 (so nothing is
/// masqueraded, as for pod-to-pod traffic). Direct: the client reaches the backend through
/// the router. Proxied: it reaches a ClusterIP that `NftProxy`, programming the router's
/// namespace with a table of its own, DNATs to the backend. The proxied path leaves from the
/// client's second address (a route's `src`), so the two paths never share source ports or
/// conntrack tuples. Returns bulk and connection-rate ratios (proxied / direct), medians of
/// `runs` interleaved runs; `None` without root, `ip` or `nft`.
fn nft_dataplane(runs: usize) -> Option<(f64, f64)> {
    let pid = std::process::id();
    let (client, router, backend) = (
        format!("kn-dp-c-{pid}"),
        format!("kn-dp-r-{pid}"),
        format!("kn-dp-b-{pid}"),
    );
    let mut made = Namespaces(Vec::new());
    for ns in [&client, &router, &backend] {
        if !ip(&["netns", "add", ns]) {
            eprintln!("nft data plane: cannot create network namespaces (needs root)");
            return None;
        }
        made.0.push(ns.clone());
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    let veth = |a: &str, a_ns: &str, a_addrs: &[&str], b: &str, b_ns: &str, b_addr: &str| {
        let mut ok = ip(&[
            "-n", a_ns, "link", "add", a, "type", "veth", "peer", "name", b, "netns", b_ns,
        ]);
        for addr in a_addrs {
            ok &= ip(&["-n", a_ns, "addr", "add", addr, "dev", a]);
        }
        ok &= ip(&["-n", b_ns, "addr", "add", b_addr, "dev", b]);
        ok &= ip(&["-n", a_ns, "link", "set", a, "up"]);
        ok && ip(&["-n", b_ns, "link", "set", b, "up"])
    };
    let ok = veth(
        "c0",
        &client,
        &["10.11.0.2/24", "10.11.0.3/24"],
        "r0",
        &router,
        "10.11.0.1/24",
    ) && veth(
        "b0",
        &backend,
        &["10.11.1.2/24"],
        "r1",
        &router,
        "10.11.1.1/24",
    ) && Command::new("ip")
        .args([
            "netns",
            "exec",
            &router,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])
        .status()
        .is_ok_and(|s| s.success())
        && ip(&[
            "-n",
            &client,
            "route",
            "add",
            "default",
            "via",
            "10.11.0.1",
            "src",
            "10.11.0.2",
        ])
        && ip(&[
            "-n",
            &client,
            "route",
            "add",
            "10.96.0.0/12",
            "via",
            "10.11.0.1",
            "src",
            "10.11.0.3",
        ])
        && ip(&[
            "-n",
            &backend,
            "route",
            "add",
            "default",
            "via",
            "10.11.1.1",
        ]);
    if !ok {
        return None;
    }
    let backend_addr: SocketAddr = "10.11.1.2:18080".parse().unwrap();
    let vip: SocketAddr = "10.96.50.1:18081".parse().unwrap();
    // The backend serves for as long as the process lives (the namespace goes at the end).
    drop(in_netns(&backend, "backend-dp", move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(serve_backend("0.0.0.0:18080".parse().unwrap()));
    }));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let proxy = NftProxy::new(NftConfig {
        table: format!("kube-net-bench-dp-{pid}"),
        netns: Some(router.clone()),
        pod_cidrs: vec!["10.11.0.0/16".parse().unwrap()],
        ..NftConfig::default()
    });
    if let Err(e) = rt.block_on(proxy.sync(&one_service(vip, backend_addr))) {
        eprintln!(
            "nft data plane: sync failed: {e} ({:?})",
            std::error::Error::source(&e)
        );
        return None;
    }
    let window = Duration::from_millis(400);
    let measured = in_netns(&client, "client-dp", move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            // Warm-up: ARP, routes, conntrack, the backend's buffers.
            let _ = bulk(backend_addr, 32 << 20).await;
            let _ = bulk(vip, 32 << 20).await;
            let (mut bd, mut bp) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                bd.push(bulk(backend_addr, NFT_BULK_BYTES).await);
                bp.push(bulk(vip, NFT_BULK_BYTES).await);
            }
            let _ = conn_rate(backend_addr, Duration::from_millis(100)).await;
            let _ = conn_rate(vip, Duration::from_millis(100)).await;
            let (mut cd, mut cp) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                cd.push(conn_rate(backend_addr, window).await.0);
                cp.push(conn_rate(vip, window).await.0);
            }
            (median(bd), median(bp), median(cd), median(cp))
        })
    })
    .join();
    let _ = rt.block_on(proxy.shutdown());
    let (bulk_d, bulk_p, conn_d, conn_p) = measured.ok()?;
    println!(
        "nft data plane (client → node → pod namespaces): bulk MB/s direct {bulk_d:.0}, via ClusterIP {bulk_p:.0}; connections/s direct {conn_d:.0}, via ClusterIP {conn_p:.0}"
    );
    Some((bulk_p / bulk_d, conn_p / conn_d))
}
