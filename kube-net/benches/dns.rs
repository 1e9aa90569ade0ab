//! Our `DnsServer` against Debian's `unbound` (one thread) serving the same records as a local
//! zone, both on loopback, measured by Debian's `dnsperf` in the same run.
//!
//! `cargo bench -p kube-net --bench dns`. It creates 1,000 ClusterIP services in 10
//! namespaces and 10 headless ones with 3 ready endpoints each, waits until our server
//! answers them, writes the same A records as unbound `local-data`, and runs
//! `dnsperf -l 5` (as fast as each goes, no rate cap: a cap both reach says nothing) against
//! each, ours first. Then it paces its own client (one UDP socket, a sending thread, a
//! receiving one, one query per id) at half of unbound's rate against ours and against unbound
//! for a few seconds and takes percentiles of the latency (dnsperf 2.10 prints only average,
//! min and max), unbound's at the same rate being the reference. Latency runs from just before
//! the send to the answer's arrival at the client's socket (the kernel's receive timestamp),
//! so the client thread's own wake-ups, which on this shared 2-core machine wait for a core
//! too, do not count against the server; the p99 up to when the client read the answer is
//! printed as well, and how late the client sent against its schedule (a client that cannot
//! keep the pace shows there). Last lines: `p99 at <rate> qps: ours=… unbound=…` and
//! `dns_qps_ratio=<ours/unbound> dns_p99_ms=<ours>`.
//!
//! The dnsperf runs alternate, ours then unbound, `KUBE_NET_BENCH_DNS_ROUNDS` times (default
//! 3), and each side's median counts, because the machine is shared and noisy; so do the
//! latency runs.
//!
//! Knobs: `KUBE_NET_BENCH_DNS_SECONDS` (dnsperf run length, default 5),
//! `KUBE_NET_BENCH_DNS_WORKERS` (tokio workers of the bench's runtime, which runs our server's
//! informers and TCP; its UDP has threads of its own; default 2).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_core::orchestrator::Orchestrator;
use kube_core::store::Store;
use kube_core::typed::Api;
use kube_net::{DnsConfig, DnsServer};
use kube_store::MemStore;
use serde_json::json;

const SERVICES: usize = 1000;
const HEADLESS: usize = 10;
const NAMESPACES: usize = 10;

/// A name and its A records.
struct Entry {
    name: String,
    ips: Vec<Ipv4Addr>,
}

fn records() -> Vec<Entry> {
    let mut out = Vec::new();
    for i in 0..SERVICES {
        out.push(Entry {
            name: format!("svc-{i}.ns-{}.svc.cluster.local", i % NAMESPACES),
            ips: vec![Ipv4Addr::new(10, 96, (i / 250) as u8, (i % 250 + 1) as u8)],
        });
    }
    for h in 0..HEADLESS {
        out.push(Entry {
            name: format!("headless-{h}.ns-0.svc.cluster.local"),
            ips: (0..3)
                .map(|e| Ipv4Addr::new(10, 244, h as u8, e + 1))
                .collect(),
        });
    }
    out
}

/// Removes the scratch directory and stops unbound, also when the bench panics.
struct Scratch {
    dir: PathBuf,
    unbound: Option<Child>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(mut child) = self.unbound.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let seconds: u64 = env_or("KUBE_NET_BENCH_DNS_SECONDS", 5);
    let workers: usize = env_or("KUBE_NET_BENCH_DNS_WORKERS", 2);
    let rounds: usize = env_or("KUBE_NET_BENCH_DNS_ROUNDS", 3);
    let entries = records();
    let dir = std::env::temp_dir().join(format!("kube-net-dns-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut scratch = Scratch {
        dir: dir.clone(),
        unbound: None,
    };

    let queries = dir.join("queries");
    let mut text = String::new();
    for e in &entries {
        writeln!(text, "{} A", e.name).unwrap();
    }
    std::fs::write(&queries, text).unwrap();

    // Our server, on a runtime of its own.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .unwrap();
    let (ours, running) = rt.block_on(start_ours(&entries));
    println!("ours on {ours}, {} names", entries.len());

    // Unbound with the same records.
    let unbound_port = free_port();
    let unbound_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, unbound_port));
    scratch.unbound = Some(start_unbound(&dir, unbound_port, &entries));
    wait_answers(unbound_addr, &entries[0].name);
    println!("unbound on {unbound_addr}");

    // Warm both up, then measure: ours, unbound.
    dnsperf(ours, &queries, 1);
    dnsperf(unbound_addr, &queries, 1);
    // The machine is shared and noisy: alternate, and take each side's median.
    let (mut ours_runs, mut unbound_runs) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        ours_runs.push(dnsperf(ours, &queries, seconds));
        unbound_runs.push(dnsperf(unbound_addr, &queries, seconds));
    }
    println!("runs: ours={ours_runs:.0?} unbound={unbound_runs:.0?}");
    let (ours_qps, unbound_qps) = (median(ours_runs), median(unbound_runs));
    println!("dns_qps ours={ours_qps:.0} unbound={unbound_qps:.0}");

    // Latency at half of unbound's rate: the same client, pacing and queries for both, in
    // alternating rounds, each side's median.
    let rate = (unbound_qps / 2.0).max(1000.0);
    let names: Vec<String> = entries.iter().map(|e| format!("{}.", e.name)).collect();
    let length = Duration::from_secs(3);
    let (mut ours_lat, mut unbound_lat) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        ours_lat.push(latency_at_rate(ours, &names, rate, length));
        unbound_lat.push(latency_at_rate(unbound_addr, &names, rate, length));
    }
    for (side, runs) in [("ours", &ours_lat), ("unbound", &unbound_lat)] {
        for run in runs.iter() {
            println!("  {side} at {rate:.0} qps: {run}");
        }
    }
    let ours_p99 = median(ours_lat.iter().map(|l| l.p99_ms).collect());
    let unbound_p99 = median(unbound_lat.iter().map(|l| l.p99_ms).collect());
    let ours_read = median(ours_lat.iter().map(|l| l.p99_read_ms).collect());
    let unbound_read = median(unbound_lat.iter().map(|l| l.p99_read_ms).collect());
    println!(
        "p99 read by the client at {rate:.0} qps: ours={ours_read:.3} ms unbound={unbound_read:.3} ms"
    );
    println!("p99 at {rate:.0} qps: ours={ours_p99:.3} ms unbound={unbound_p99:.3} ms");

    rt.block_on(running.shutdown()).unwrap();
    drop(scratch);
    println!(
        "dns_qps_ratio={:.2} dns_p99_ms={:.3}",
        ours_qps / unbound_qps,
        ours_p99
    );
}

/// Starts our server over a MemStore holding the services, and waits until it answers all.
async fn start_ours(
    entries: &[Entry],
) -> (SocketAddr, kube_core::orchestrator::RunningOrchestrator) {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let server = DnsServer::bind(DnsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: Vec::new(),
        ..DnsConfig::default()
    })
    .await
    .unwrap();
    let addr = server.local_addr().unwrap();
    let running = Orchestrator::builder()
        .store(store.clone())
        .component(server)
        .build()
        .unwrap()
        .start();
    for (i, entry) in entries.iter().enumerate().take(SERVICES) {
        let namespace = format!("ns-{}", i % NAMESPACES);
        let api: Api<Service> = Api::namespaced(store.clone(), &namespace);
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": format!("svc-{i}"), "namespace": namespace},
            "spec": {"clusterIP": entry.ips[0].to_string(),
                     "ports": [{"name": "http", "port": 80}]}
        }))
        .unwrap();
        api.create(&service).await.unwrap();
    }
    let services: Api<Service> = Api::namespaced(store.clone(), "ns-0");
    let slices: Api<EndpointSlice> = Api::namespaced(store.clone(), "ns-0");
    for h in 0..HEADLESS {
        let entry = &entries[SERVICES + h];
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": format!("headless-{h}"), "namespace": "ns-0"},
            "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}
        }))
        .unwrap();
        services.create(&service).await.unwrap();
        let endpoints: Vec<_> = entry
            .ips
            .iter()
            .enumerate()
            .map(|(e, ip)| json!({"addresses": [ip.to_string()], "hostname": format!("pod-{e}")}))
            .collect();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": format!("headless-{h}-1"), "namespace": "ns-0",
                         "labels": {"kubernetes.io/service-name": format!("headless-{h}")}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))
        .unwrap();
        slices.create(&slice).await.unwrap();
    }
    let last = entries.last().unwrap();
    tokio::task::spawn_blocking({
        let name = last.name.clone();
        let expected = last.ips.len();
        let first = entries[0].name.clone();
        move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if answer_count(addr, &name) == Some(expected)
                    && answer_count(addr, &first) == Some(1)
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("our server never answered {name}");
        }
    })
    .await
    .unwrap();
    (addr, running)
}

fn query_bytes(name: &str, id: u16) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

/// The number of answers to an A query for `name`, if NOERROR.
fn answer_count(server: SocketAddr, name: &str) -> Option<usize> {
    let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    socket
        .send_to(&query_bytes(&format!("{name}."), 1), server)
        .ok()?;
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    let m = Message::from_vec(&buf[..n]).ok()?;
    (m.metadata.response_code == ResponseCode::NoError).then_some(m.answers.len())
}

fn median(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

/// A big receive buffer, so a scheduling hiccup of the client does not drop answers.
fn big_receive_buffer(socket: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    let size = 8 << 20;
    if setsockopt(socket, sockopt::RcvBufForce, &size).is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &size);
    }
}

fn free_port() -> u16 {
    // Free for both UDP and TCP at the time we look; unbound binds right after.
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn start_unbound(dir: &Path, port: u16, entries: &[Entry]) -> Child {
    let mut conf = format!(
        "server:\n  interface: 127.0.0.1@{port}\n  port: {port}\n  do-daemonize: no\n  \
         username: \"\"\n  chroot: \"\"\n  directory: \"{dir}\"\n  pidfile: \"\"\n  \
         use-syslog: no\n  logfile: \"\"\n  verbosity: 0\n  access-control: 127.0.0.0/8 allow\n  \
         num-threads: 1\n  so-rcvbuf: 4m\n  do-ip6: no\n  local-zone: \"cluster.local.\" static\n",
        dir = dir.display()
    );
    for e in entries {
        for ip in &e.ips {
            writeln!(conf, "  local-data: \"{}. 30 IN A {ip}\"", e.name).unwrap();
        }
    }
    let path = dir.join("unbound.conf");
    std::fs::write(&path, conf).unwrap();
    Command::new("/usr/sbin/unbound")
        .arg("-d")
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("unbound (apt-get install unbound)")
}

fn wait_answers(server: SocketAddr, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if answer_count(server, name) == Some(1) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{server} never answered {name}");
}

/// dnsperf's "Queries per second" against `server`.
fn dnsperf(server: SocketAddr, queries: &Path, seconds: u64) -> f64 {
    let output = Command::new("/usr/bin/dnsperf")
        .args([
            "-s",
            &server.ip().to_string(),
            "-p",
            &server.port().to_string(),
        ])
        .arg("-d")
        .arg(queries)
        .args(["-l", &seconds.to_string()])
        .output()
        .expect("dnsperf (apt-get install dnsperf)");
    let text = String::from_utf8_lossy(&output.stdout);
    let qps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Queries per second:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no qps in dnsperf output:\n{text}"));
    if seconds > 1 {
        for line in text.lines().filter(|l| {
            l.contains("Queries lost")
                || l.contains("Average Latency")
                || l.contains("Response codes")
        }) {
            println!("  {server}: {}", line.trim());
        }
    }
    qps
}

/// What one paced run saw.
struct Latency {
    /// Percentiles from the send to the answer's arrival at the client's socket (the kernel's
    /// receive timestamp): the server's latency, whenever the client thread gets to read it.
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    /// The 99th percentile up to when the client's thread read the answer: adds the client's
    /// own wake-ups, which on a busy machine wait for a core like everything else.
    p99_read_ms: f64,
    /// Queries without an answer (counted as the slowest).
    lost: usize,
    /// The 99th percentile of how late the client sent a query against its schedule, in ms,
    /// and how late its last one went: a late end means the client could not keep the rate.
    client_late_p99_ms: f64,
    client_late_end_ms: f64,
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50={:.3} p99={:.3} p99.9={:.3} ms (read by the client: p99={:.3} ms), lost={}, \
             client sent late by p99 {:.3} ms, at the end {:.3} ms",
            self.p50_ms,
            self.p99_ms,
            self.p999_ms,
            self.p99_read_ms,
            self.lost,
            self.client_late_p99_ms,
            self.client_late_end_ms
        )
    }
}

/// Nanoseconds of the realtime clock, the clock of the kernel's receive timestamps.
fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Latency percentiles of A queries paced at `rate` per second for `length`. One UDP socket,
/// a sending thread and a receiving one (batched receives, so it keeps up cheaply); a query's
/// latency runs from just before its send to its answer's arrival, matched by id.
fn latency_at_rate(server: SocketAddr, names: &[String], rate: f64, length: Duration) -> Latency {
    use nix::sys::socket::{
        ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, setsockopt, sockopt,
    };
    use nix::sys::time::TimeSpec;
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd;

    const BATCH: usize = 64;
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    big_receive_buffer(&socket);
    setsockopt(&socket, sockopt::ReceiveTimestampns, &true).unwrap();
    socket.connect(server).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let packets: Vec<Vec<u8>> = (0..=u16::MAX)
        .map(|id| query_bytes(&names[usize::from(id) % names.len()], id))
        .collect();
    // Send time per id, in realtime ns (0: none outstanding).
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..=u16::MAX).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let socket = socket.try_clone().unwrap();
        let (sent, done) = (sent.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut arrived, mut read) = (Vec::new(), Vec::new());
            let mut bufs = vec![[0u8; 512]; BATCH];
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(
                BATCH,
                Some(nix::cmsg_space!(TimeSpec)),
            );
            let mut got: Vec<(usize, u64)> = Vec::with_capacity(BATCH);
            while !done.load(Ordering::SeqCst) {
                got.clear();
                {
                    let mut slices: Vec<[IoSliceMut<'_>; 1]> =
                        bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
                    let Ok(batch) = recvmmsg(
                        socket.as_raw_fd(),
                        &mut headers,
                        slices.iter_mut(),
                        MsgFlags::MSG_WAITFORONE,
                        None,
                    ) else {
                        continue;
                    };
                    for message in batch {
                        let stamp = message.cmsgs().ok().and_then(|mut c| {
                            c.find_map(|c| match c {
                                ControlMessageOwned::ScmTimestampns(t) => {
                                    Some(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
                                }
                                _ => None,
                            })
                        });
                        got.push((message.bytes, stamp.unwrap_or(0)));
                    }
                }
                let now = wall_ns();
                for (buf, &(n, stamp)) in bufs.iter().zip(&got) {
                    if n < 2 {
                        continue;
                    }
                    let id = u16::from_be_bytes([buf[0], buf[1]]);
                    let at = sent[usize::from(id)].swap(0, Ordering::SeqCst);
                    if at != 0 {
                        let stamp = if stamp == 0 { now } else { stamp };
                        arrived.push(stamp.saturating_sub(at));
                        read.push(now.saturating_sub(at));
                    }
                }
            }
            (arrived, read)
        })
    };
    let total = (rate * length.as_secs_f64()) as u64;
    let interval = 1e9 / rate;
    let mut id: u16 = 0;
    let mut lags = Vec::with_capacity(total as usize);
    let start = Instant::now();
    for i in 0..total {
        // Sleep (not spin: the machine has two cores) until due; queries that came due
        // meanwhile go out back to back.
        let due = Duration::from_nanos((i as f64 * interval) as u64);
        let now = start.elapsed();
        if due > now + Duration::from_micros(100) {
            std::thread::sleep(due - now - Duration::from_micros(60));
        }
        lags.push(start.elapsed().saturating_sub(due).as_nanos() as u64);
        sent[usize::from(id)].store(wall_ns(), Ordering::SeqCst);
        let _ = socket.send(&packets[usize::from(id)]);
        id = id.wrapping_add(1);
    }
    std::thread::sleep(Duration::from_millis(500));
    done.store(true, Ordering::SeqCst);
    let (mut arrived, mut read) = receiver.join().unwrap();
    let lost = (total as usize).saturating_sub(arrived.len());
    for latencies in [&mut arrived, &mut read] {
        latencies.extend(std::iter::repeat_n(u64::MAX, lost));
        latencies.sort_unstable();
    }
    let client_late_end_ms = lags.last().map_or(0.0, |&l| l as f64 / 1e6);
    lags.sort_unstable();
    Latency {
        p50_ms: percentile_ms(&arrived, 500),
        p99_ms: percentile_ms(&arrived, 990),
        p999_ms: percentile_ms(&arrived, 999),
        p99_read_ms: percentile_ms(&read, 990),
        lost,
        client_late_p99_ms: percentile_ms(&lags, 990),
        client_late_end_ms,
    }
}

/// The `per_mille`th value of sorted nanoseconds, in ms (infinite for a lost query).
fn percentile_ms(sorted: &[u64], per_mille: usize) -> f64 {
    let Some(&v) =
        sorted.get((sorted.len() * per_mille / 1000).min(sorted.len().saturating_sub(1)))
    else {
        return 0.0;
    };
    if v == u64::MAX {
        f64::INFINITY
    } else {
        v as f64 / 1e6
    }
}
