//! Startup, liveness and readiness probes, run as the kubelet runs them: one task per running
//! container and probe, each on its own period. A task records its verdicts in a shared table
//! and queues the pod when a verdict changes; the pod's sync reads the table (to report
//! `started`/`ready`, and to kill a container whose liveness or startup probe failed).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_core::object::ObjectKey;
use kube_core::runtime::Runtime;
use kube_core::workqueue::WorkQueue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// What the probes of one container have concluded so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The startup probe succeeded (or there is none).
    pub(crate) started: bool,
    /// The readiness probe says ready (or there is none); only meaningful once started.
    pub(crate) ready: bool,
    /// The liveness or startup probe failed `failureThreshold` times: restart it.
    pub(crate) failed: Option<&'static str>,
}

impl Verdict {
    const NO_PROBES: Verdict = Verdict {
        started: true,
        ready: true,
        failed: None,
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Startup,
    Liveness,
    Readiness,
}

#[derive(Debug)]
struct Entry {
    pod: ObjectKey,
    verdict: Verdict,
    cancel: CancellationToken,
}

type Table = Arc<Mutex<HashMap<String, Entry>>>;

fn lock(table: &Table) -> MutexGuard<'_, HashMap<String, Entry>> {
    // Entries are replaced in single statements; a poisoned lock is still consistent.
    table.lock().unwrap_or_else(|p| p.into_inner())
}

/// The probe tasks of one agent.
#[derive(Debug)]
pub(crate) struct Prober {
    runtime: Arc<dyn Runtime>,
    queue: WorkQueue<ObjectKey>,
    table: Table,
}

impl Drop for Prober {
    fn drop(&mut self) {
        for e in lock(&self.table).values() {
            e.cancel.cancel();
        }
    }
}

/// Where and how one probe task probes.
#[derive(Debug, Clone)]
struct Target {
    container_id: String,
    ip: Option<String>,
    container: Container,
}

impl Prober {
    pub(crate) fn new(runtime: Arc<dyn Runtime>, queue: WorkQueue<ObjectKey>) -> Self {
        Self {
            runtime,
            queue,
            table: Arc::default(),
        }
    }

    /// The verdict for a running container, starting its probe tasks the first time.
    pub(crate) fn observe(
        &self,
        pod: &ObjectKey,
        container_id: &str,
        container: &Container,
        pod_ip: Option<&str>,
    ) -> Verdict {
        let probes = [
            (Kind::Startup, &container.startup_probe),
            (Kind::Liveness, &container.liveness_probe),
            (Kind::Readiness, &container.readiness_probe),
        ];
        if probes.iter().all(|(_, p)| p.is_none()) {
            return Verdict::NO_PROBES;
        }
        let mut table = lock(&self.table);
        if let Some(e) = table.get(container_id) {
            return e.verdict;
        }
        let verdict = Verdict {
            started: container.startup_probe.is_none(),
            ready: container.readiness_probe.is_none(),
            failed: None,
        };
        let cancel = CancellationToken::new();
        table.insert(
            container_id.to_string(),
            Entry {
                pod: pod.clone(),
                verdict,
                cancel: cancel.clone(),
            },
        );
        let target = Target {
            container_id: container_id.to_string(),
            ip: pod_ip.map(str::to_string),
            container: container.clone(),
        };
        for (kind, probe) in probes {
            if let Some(probe) = probe.clone() {
                let task = ProbeTask {
                    kind,
                    probe,
                    target: target.clone(),
                    runtime: self.runtime.clone(),
                    queue: self.queue.clone(),
                    table: self.table.clone(),
                    pod: pod.clone(),
                };
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = task.run() => {}
                    }
                });
            }
        }
        verdict
    }

    /// Stops the probes of the pod's containers that are not in `running`.
    pub(crate) fn retain(&self, pod: &ObjectKey, running: &HashSet<String>) {
        lock(&self.table).retain(|id, e| {
            let keep = e.pod != *pod || running.contains(id);
            if !keep {
                e.cancel.cancel();
            }
            keep
        });
    }
}

#[derive(Debug)]
struct ProbeTask {
    kind: Kind,
    probe: Probe,
    target: Target,
    runtime: Arc<dyn Runtime>,
    queue: WorkQueue<ObjectKey>,
    table: Table,
    pod: ObjectKey,
}

fn seconds(value: Option<i32>, default: u64, min: u64) -> Duration {
    let s = value.and_then(|v| u64::try_from(v).ok()).unwrap_or(default);
    Duration::from_secs(s.max(min))
}

fn count(value: Option<i32>, default: u32) -> u32 {
    value
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

impl ProbeTask {
    fn verdict(&self) -> Option<Verdict> {
        lock(&self.table)
            .get(&self.target.container_id)
            .map(|e| e.verdict)
    }

    /// Applies `change` to the verdict; queues the pod if it changed.
    fn update(&self, change: impl FnOnce(&mut Verdict)) {
        let changed = {
            let mut table = lock(&self.table);
            let Some(e) = table.get_mut(&self.target.container_id) else {
                return;
            };
            let before = e.verdict;
            change(&mut e.verdict);
            e.verdict != before
        };
        if changed {
            self.queue.add(self.pod.clone());
        }
    }

    async fn run(self) {
        let p = &self.probe;
        let period = seconds(p.period_seconds, 10, 1);
        let timeout = seconds(p.timeout_seconds, 1, 1);
        // Liveness and startup probes must succeed once to count as success.
        let success_threshold = match self.kind {
            Kind::Readiness => count(p.success_threshold, 1),
            _ => 1,
        };
        let failure_threshold = count(p.failure_threshold, 3);
        tokio::time::sleep(seconds(p.initial_delay_seconds, 0, 0)).await;
        let (mut successes, mut failures) = (0u32, 0u32);
        loop {
            let Some(verdict) = self.verdict() else {
                return;
            };
            let waiting_for_startup = self.kind != Kind::Startup && !verdict.started;
            if !waiting_for_startup {
                if probe_once(&self.runtime, &self.target, p, timeout).await {
                    successes += 1;
                    failures = 0;
                } else {
                    failures += 1;
                    successes = 0;
                }
                let (ok, failed) = (
                    successes >= success_threshold,
                    failures >= failure_threshold,
                );
                match self.kind {
                    Kind::Startup if ok => {
                        self.update(|v| v.started = true);
                        return;
                    }
                    Kind::Startup if failed => {
                        self.update(|v| v.failed = Some("startup"));
                        return;
                    }
                    Kind::Liveness if failed => {
                        self.update(|v| v.failed = Some("liveness"));
                        return;
                    }
                    Kind::Readiness if ok => self.update(|v| v.ready = true),
                    Kind::Readiness if failed => self.update(|v| v.ready = false),
                    _ => {}
                }
            }
            tokio::time::sleep(period).await;
        }
    }
}

/// Runs one probe; `true` for success.
async fn probe_once(
    runtime: &Arc<dyn Runtime>,
    target: &Target,
    probe: &Probe,
    timeout: Duration,
) -> bool {
    if let Some(exec) = &probe.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        return matches!(
            runtime.exec_sync(&target.container_id, &cmd, timeout).await,
            Ok(r) if r.exit_code == 0
        );
    }
    let attempt = async {
        if let Some(http) = &probe.http_get {
            http_get(target, http).await
        } else if let Some(tcp) = &probe.tcp_socket {
            let host = tcp.host.clone().or_else(|| target.ip.clone())?;
            let port = port_of(&target.container, &tcp.port)?;
            tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .ok()
                .map(|_| true)
        } else {
            // gRPC probes are not supported: they never succeed.
            None
        }
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

/// Runs a lifecycle hook (preStop) within `timeout`; `true` if it succeeded.
pub(crate) async fn run_hook(
    runtime: &Arc<dyn Runtime>,
    container_id: &str,
    container: &Container,
    pod_ip: Option<&str>,
    hook: &LifecycleHandler,
    timeout: Duration,
) -> bool {
    if let Some(exec) = &hook.exec {
        let cmd = exec.command.clone().unwrap_or_default();
        return matches!(
            runtime.exec_sync(container_id, &cmd, timeout).await,
            Ok(r) if r.exit_code == 0
        );
    }
    if let Some(sleep) = &hook.sleep {
        let secs = u64::try_from(sleep.seconds).unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(secs).min(timeout)).await;
        return true;
    }
    let target = Target {
        container_id: container_id.to_string(),
        ip: pod_ip.map(str::to_string),
        container: container.clone(),
    };
    let attempt = async {
        if let Some(http) = &hook.http_get {
            http_get(&target, http).await
        } else if let Some(tcp) = &hook.tcp_socket {
            let host = tcp.host.clone().or(target.ip.clone())?;
            let port = port_of(container, &tcp.port)?;
            tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .ok()
                .map(|_| true)
        } else {
            None
        }
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

/// A port given by number or by the name of one of the container's ports.
fn port_of(container: &Container, port: &IntOrString) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// An HTTP/1.1 GET; a status from 200 to 399 is success. `None`: no connection or answer.
async fn http_get(target: &Target, http: &HTTPGetAction) -> Option<bool> {
    if http
        .scheme
        .as_deref()
        .is_some_and(|s| !s.eq_ignore_ascii_case("HTTP"))
    {
        // HTTPS needs a TLS client this crate does not carry.
        return Some(false);
    }
    let host = http.host.clone().or_else(|| target.ip.clone())?;
    let port = port_of(&target.container, &http.port)?;
    let path = http
        .path
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for h in http.http_headers.iter().flatten() {
        request.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    request.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .ok()?;
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let code: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((200..400).contains(&code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn http_get_reads_the_status_line() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for answer in [
                "HTTP/1.1 204 No Content\r\n\r\n",
                "HTTP/1.0 500 Oops\r\n\r\n",
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let target = Target {
            container_id: "c".into(),
            ip: Some("127.0.0.1".into()),
            container: Container::default(),
        };
        let action = HTTPGetAction {
            port: IntOrString::Int(i32::from(port)),
            path: Some("/healthz".into()),
            ..Default::default()
        };
        assert_eq!(http_get(&target, &action).await, Some(true));
        assert_eq!(http_get(&target, &action).await, Some(false));
    }
}
