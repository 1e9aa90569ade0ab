//! Syncing one pod: make the runtime match the pod (sandbox, init containers in order, app
//! containers, restarts with back-off), report its status, and tear it down when it goes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_core::events::EventType;
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::runtime::{
    ContainerFilter, ContainerState, ContainerStatus, PodSandboxStatus, RuntimeError, SandboxState,
};
use kube_core::store::Preconditions;

use super::backoff::CrashBackoff;
use super::images::{NotReady, PullMemory, verify_run_as_non_root};
use super::pod_status::{Observed, Waiting, by_name, container_status, is_terminal, pod_phase};
use super::spec::{PodFacts, Sources, container_config, referenced, sandbox_config};
use super::volumes;
use super::{Agent, error_chain, probe};
use crate::error::{Error, Result};
use crate::tokens::{HeldToken, TokenRequest};

/// What the agent remembers about one pod key between syncs.
#[derive(Debug)]
pub(crate) struct PodRecord {
    /// The UID of the pod last synced under this key.
    uid: Option<String>,
    /// Grace period for stopping its containers, remembered for when the pod has vanished.
    pub(crate) grace: Duration,
    /// Sandboxes created for this key (any UID).
    pub(crate) sandboxes: BTreeSet<String>,
    /// Per container name: back-off and last error.
    containers: HashMap<String, ContainerMemory>,
    /// The pod's app containers as last seen, for their preStop hooks when the pod is gone.
    pub(crate) spec_containers: Vec<Container>,
    /// The pod's identity (metadata only), for the Events of stopping it once it is gone.
    subject: Option<Pod>,
}

impl PodRecord {
    pub(crate) fn new(grace: Duration) -> Self {
        Self {
            uid: None,
            grace,
            sandboxes: BTreeSet::new(),
            containers: HashMap::new(),
            spec_containers: Vec::new(),
            subject: None,
        }
    }
}

#[derive(Debug, Default)]
struct ContainerMemory {
    backoff: CrashBackoff,
    /// Why the last attempt to create or start it failed, shown while it waits.
    error: Option<Waiting>,
    /// Whether the current crash-loop wait has had its `BackOff` Event.
    backoff_reported: bool,
    /// While its ConfigMaps, Secrets or volumes do not resolve: when to try again, and the
    /// wait that led there.
    config_retry: Option<(std::time::Instant, Duration)>,
    /// Its image's pull back-off.
    pull: PullMemory,
}

/// The first wait after a container's references failed to resolve; it doubles up to
/// [`CONFIG_RETRY_MAX`]. Pods are synced every second, and each attempt records a `Failed`
/// Event (a store write), so attempts back off as the kubelet's pod worker does (~10 s).
const CONFIG_RETRY_FIRST: Duration = Duration::from_secs(1);
const CONFIG_RETRY_MAX: Duration = Duration::from_secs(10);
/// How soon a pod whose claims are not bound yet is looked at again.
const CLAIM_RETRY: Duration = Duration::from_secs(1);

/// The grace period a pod object asks for: `metadata.deletionGracePeriodSeconds` once it is
/// being deleted, else `spec.terminationGracePeriodSeconds`.
pub(crate) fn grace_period_of(object: &DynamicObject) -> Option<Duration> {
    let seconds = object
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| object.field("spec.terminationGracePeriodSeconds")?.as_i64())?;
    Some(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)))
}

fn ignore_not_found(result: Result<(), RuntimeError>) -> Result<(), RuntimeError> {
    match result {
        Err(RuntimeError::NotFound { .. }) => Ok(()),
        other => other,
    }
}

/// What to do next for one spec container.
#[derive(Debug)]
enum Next {
    /// Nothing: it runs, or it is done for good.
    Nothing,
    /// Start this created container.
    Start(String),
    /// Create and start this attempt.
    Create(u32),
    /// Wait this long (back-off), showing this reason.
    Wait(Duration, Waiting),
}

/// What one sync did, for the caller to act on.
#[derive(Debug, Default)]
struct Progress {
    /// Something was created, started or removed: list the containers again.
    changed: bool,
    /// Sync again after this long (the shortest back-off pending).
    requeue: Option<Duration>,
    /// Per container name, why it waits (back-off, errors).
    waiting: HashMap<String, Waiting>,
}

impl Progress {
    fn requeue_after(&mut self, after: Duration) {
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }
}

impl Agent {
    /// Syncs one pod key; returns when to sync it again, if a back-off is pending.
    pub(super) async fn sync(&self, key: &ObjectKey) -> Result<Option<Duration>> {
        let mut record = self
            .records()
            .remove(key)
            .unwrap_or_else(|| PodRecord::new(self.config.default_grace_period));
        let result = self.sync_record(key, &mut record).await;
        // Keep the record while something of the pod may be left in the runtime or the pod
        // still exists; a failed sync keeps it so the retry knows what to clean up.
        let keep = result.is_err() || !record.sandboxes.is_empty() || self.pods.get(key).is_some();
        if keep {
            self.records().insert(key.clone(), record);
        }
        result
    }

    async fn sync_record(
        &self,
        key: &ObjectKey,
        record: &mut PodRecord,
    ) -> Result<Option<Duration>> {
        let Some(object) = self.pods.get(key) else {
            // Gone from the store (deleted at once, or moved to another node): stop everything.
            self.prober.retain(key, &HashSet::new());
            self.release(key);
            let subject = record.subject.take();
            self.teardown(record, None, subject.as_ref()).await?;
            return Ok(None);
        };
        let pod: Pod = match object.to_typed() {
            Ok(pod) => pod,
            Err(source) => {
                let e = Error::Decode {
                    what: format!("pod {key}"),
                    source,
                };
                // Retrying will not make it decode; the next change will be looked at.
                tracing::warn!(pod = %key, error = %error_chain(&e), "skipping pod");
                return Ok(None);
            }
        };
        record.grace = grace_period_of(&object).unwrap_or(self.config.default_grace_period);
        if let Some(spec) = &pod.spec {
            record.spec_containers.clone_from(&spec.containers);
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if record.uid.as_deref() != Some(&uid) {
            record.uid = Some(uid.clone());
            record.containers.clear();
            record.subject = Some(Pod {
                metadata: ObjectMeta {
                    name: pod.metadata.name.clone(),
                    namespace: pod.metadata.namespace.clone(),
                    uid: pod.metadata.uid.clone(),
                    ..ObjectMeta::default()
                },
                ..Pod::default()
            });
        }
        if pod.metadata.deletion_timestamp.is_some() {
            // Graceful deletion: stop everything, then finish the deletion for the API.
            self.prober.retain(key, &HashSet::new());
            self.release(key);
            self.teardown(record, None, Some(&pod)).await?;
            match self
                .store
                .delete(&GroupKind::POD, key, &Preconditions::uid(uid))
                .await
            {
                Ok(_) => tracing::info!(pod = %key, "pod terminated and deleted"),
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(None);
        }
        // Sandboxes of an earlier pod with the same name go first.
        self.teardown(record, Some(&uid), None).await?;
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if !is_terminal(phase) {
            // What the runtime already runs for this pod (an agent restart) stays admitted.
            let running = !record.sandboxes.is_empty();
            if let Some(rejection) = self.admit(key, &pod, running) {
                self.reject(key, &object, &rejection).await?;
                return Ok(None);
            }
        }
        self.sync_pod(key, &object, &pod, &uid, record).await
    }

    /// Stops (with the record's grace period) and removes the record's sandboxes, all of them
    /// or those not belonging to `keep_uid`; `deleted`, the pod being deleted (or gone), gets
    /// a `Killing` Event per container stopped.
    async fn teardown(
        &self,
        record: &mut PodRecord,
        keep_uid: Option<&str>,
        deleted: Option<&Pod>,
    ) -> Result<()> {
        for id in record.sandboxes.clone() {
            let status = match self.runtime.pod_sandbox_status(&id).await {
                Ok(s) => s,
                Err(RuntimeError::NotFound { .. }) => {
                    record.sandboxes.remove(&id);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if keep_uid.is_some_and(|uid| status.metadata.uid == uid) {
                continue;
            }
            self.kill_sandbox(
                &id,
                record.grace,
                Some(&record.spec_containers),
                true,
                deleted,
            )
            .await?;
            record.sandboxes.remove(&id);
            volumes::remove(&self.pods_dir.join(&status.metadata.uid));
            self.tokens()
                .retain(|request, _| request.pod_uid != status.metadata.uid);
        }
        Ok(())
    }

    /// Stops a sandbox's running containers concurrently, then the sandbox; with `remove`,
    /// removes the containers and the sandbox too. Each container first runs its preStop hook
    /// (from `hooks`, the pod's app containers), then gets SIGTERM and what is left of `grace`
    /// before SIGKILL, as in the kubelet.
    async fn kill_sandbox(
        &self,
        sandbox_id: &str,
        grace: Duration,
        hooks: Option<&[Container]>,
        remove: bool,
        deleted: Option<&Pod>,
    ) -> Result<()> {
        let filter = ContainerFilter {
            sandbox_id: Some(sandbox_id.to_string()),
            state: None,
        };
        let containers = match self.runtime.list_containers(&filter).await {
            Ok(c) => c,
            Err(RuntimeError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let has_hooks = hooks.is_some_and(|cs| {
            cs.iter()
                .any(|c| c.lifecycle.as_ref().is_some_and(|l| l.pre_stop.is_some()))
        });
        let pod_ip = if has_hooks && !grace.is_zero() {
            self.runtime
                .pod_sandbox_status(sandbox_id)
                .await
                .ok()
                .and_then(|s| s.ip)
        } else {
            None
        };
        let stops = containers
            .iter()
            .filter(|c| c.state == ContainerState::Running)
            .inspect(|c| {
                if let Some(pod) = deleted {
                    self.event(
                        pod,
                        EventType::Normal,
                        "Killing",
                        format!("Stopping container {}", c.name),
                    );
                }
            })
            .map(|c| {
                let spec = hooks
                    .into_iter()
                    .flatten()
                    .find(|s| s.name == c.name)
                    .filter(|_| !grace.is_zero());
                self.stop_with_hook(c, spec, pod_ip.as_deref(), grace)
            });
        for result in futures::future::join_all(stops).await {
            ignore_not_found(result)?;
        }
        if remove {
            for c in &containers {
                ignore_not_found(self.runtime.remove_container(&c.id).await)?;
            }
        }
        ignore_not_found(self.runtime.stop_pod_sandbox(sandbox_id).await)?;
        if remove {
            ignore_not_found(self.runtime.remove_pod_sandbox(sandbox_id).await)?;
            tracing::debug!(sandbox = sandbox_id, "sandbox removed");
        }
        Ok(())
    }

    /// Runs the container's preStop hook (bounded by `grace`), then stops it with the rest of
    /// the grace period.
    async fn stop_with_hook(
        &self,
        c: &ContainerStatus,
        spec: Option<&Container>,
        pod_ip: Option<&str>,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let hook = spec.and_then(|s| s.lifecycle.as_ref()?.pre_stop.as_ref());
        let mut left = grace;
        if let (Some(hook), Some(spec)) = (hook, spec) {
            let started = std::time::Instant::now();
            let ok = probe::run_hook(&self.runtime, &c.id, spec, pod_ip, hook, grace).await;
            tracing::debug!(container = %c.name, ok, "preStop hook ran");
            left = grace.saturating_sub(started.elapsed());
            // Like the kubelet, a hook that used up the grace period still leaves the
            // container a short moment for SIGTERM.
            left = left.max(Duration::from_secs(2).min(grace));
        }
        self.runtime.stop_container(&c.id, left).await
    }

    /// The ServiceAccount tokens of the pod's projected volumes, by volume and path: held ones
    /// while they are fresh, new ones from the token source once 80% of their lifetime has
    /// passed. Without a token source there are none (warned about once). `Err` says why a
    /// token could not be had (the volume then fails, as in the kubelet, and is retried).
    async fn projected_tokens(&self, pod: &Pod, uid: &str) -> Result<volumes::Tokens, String> {
        let mut out = volumes::Tokens::new();
        let Some(spec) = &pod.spec else {
            return Ok(out);
        };
        for v in spec.volumes.iter().flatten() {
            let projected = v.projected.as_ref().and_then(|p| p.sources.as_ref());
            for token in projected
                .into_iter()
                .flatten()
                .filter_map(|s| s.service_account_token.as_ref())
            {
                let Some(source) = &self.token_source else {
                    if !self
                        .warned_no_tokens
                        .swap(true, std::sync::atomic::Ordering::Relaxed)
                    {
                        tracing::warn!(
                            "no token source: projected ServiceAccount tokens are not written"
                        );
                    }
                    return Ok(out);
                };
                let request = TokenRequest {
                    namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                    service_account: spec
                        .service_account_name
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                    audiences: token.audience.clone().into_iter().collect(),
                    expiration_seconds: token
                        .expiration_seconds
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(3600),
                    pod_name: pod.metadata.name.clone().unwrap_or_default(),
                    pod_uid: uid.to_string(),
                };
                let now = SystemTime::now();
                let held = self.tokens().get(&request).cloned();
                let token_text = match held {
                    Some(held) if !held.due(now) => held.token.token,
                    held => match source.token(&request).await {
                        Ok(token) => {
                            let text = token.token.clone();
                            self.tokens().insert(
                                request,
                                HeldToken {
                                    token,
                                    fetched: now,
                                },
                            );
                            text
                        }
                        // A renewal that fails keeps the old token while it works.
                        Err(e) if held.as_ref().is_some_and(|h| h.token.expires > now) => {
                            tracing::warn!(error = %e, "renewing a ServiceAccount token failed");
                            held.map(|h| h.token.token).unwrap_or_default()
                        }
                        Err(e) => {
                            return Err(format!(
                                "getting a token for ServiceAccount \"{}\": {e}",
                                request.service_account
                            ));
                        }
                    },
                };
                out.insert((v.name.clone(), token.path.clone()), token_text);
            }
        }
        Ok(out)
    }

    /// Reads the ConfigMaps and Secrets the pod refers to.
    async fn load_sources(&self, pod: &Pod) -> Result<Sources> {
        let (config_maps, secrets) = referenced(pod);
        let mut sources = Sources::default();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        for (names, secret) in [(config_maps, false), (secrets, true)] {
            for name in names {
                let key = ObjectKey::namespaced(ns.clone(), name.clone());
                let data = if secret {
                    match self.store.get(&GroupKind::of::<Secret>(), &key).await {
                        Ok(o) => o.to_typed::<Secret>().ok().map(|s| {
                            let mut data: BTreeMap<String, String> = s
                                .data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                                .collect();
                            data.extend(s.string_data.unwrap_or_default());
                            data
                        }),
                        Err(e) if e.is_not_found() => None,
                        Err(e) => return Err(e.into()),
                    }
                } else {
                    match self.store.get(&GroupKind::of::<ConfigMap>(), &key).await {
                        Ok(o) => o
                            .to_typed::<ConfigMap>()
                            .ok()
                            .map(|c| c.data.unwrap_or_default()),
                        Err(e) if e.is_not_found() => None,
                        Err(e) => return Err(e.into()),
                    }
                };
                if secret {
                    sources.secrets.insert(name, data);
                } else {
                    sources.config_maps.insert(name, data);
                }
            }
        }
        Ok(sources)
    }

    /// The record's sandboxes for this pod, oldest first.
    async fn own_sandboxes(&self, record: &mut PodRecord) -> Result<Vec<PodSandboxStatus>> {
        let mut mine = Vec::new();
        for id in record.sandboxes.clone() {
            match self.runtime.pod_sandbox_status(&id).await {
                Ok(s) => mine.push(s),
                Err(RuntimeError::NotFound { .. }) => {
                    record.sandboxes.remove(&id);
                }
                Err(e) => return Err(e.into()),
            }
        }
        mine.sort_by_key(|s| (s.metadata.attempt, s.created_at));
        Ok(mine)
    }

    async fn container_history(
        &self,
        sandbox_id: &str,
    ) -> Result<HashMap<String, Vec<ContainerStatus>>> {
        let filter = ContainerFilter {
            sandbox_id: Some(sandbox_id.to_string()),
            state: None,
        };
        Ok(by_name(self.runtime.list_containers(&filter).await?))
    }

    async fn sync_pod(
        &self,
        key: &ObjectKey,
        object: &DynamicObject,
        pod: &Pod,
        uid: &str,
        record: &mut PodRecord,
    ) -> Result<Option<Duration>> {
        let Some(spec) = &pod.spec else {
            return Ok(None);
        };
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let sandboxes = self.own_sandboxes(record).await?;
        if is_terminal(phase) {
            self.prober.retain(key, &HashSet::new());
            self.release(key);
            // Finished pods keep their exited containers (for logs) but nothing may run.
            for s in sandboxes.iter().filter(|s| s.state == SandboxState::Ready) {
                self.kill_sandbox(&s.id, record.grace, Some(&spec.containers), false, None)
                    .await?;
            }
            return Ok(None);
        }

        // As the kubelet, nothing starts until the pod's claims are bound to volumes.
        // A running pod keeps what it mounted; a restarted container then fails to be created.
        let running = sandboxes.iter().any(|s| s.state == SandboxState::Ready);
        let (claim_paths, claim_error) =
            match super::claims::resolve(self.store.as_ref(), pod).await {
                Ok(paths) => (paths, None),
                Err(message) if !running => {
                    self.event(pod, EventType::Warning, "FailedMount", message);
                    return Ok(Some(CLAIM_RETRY));
                }
                Err(message) => (HashMap::new(), Some(message)),
            };

        // Whether the sandbox is new: its resolv.conf and hosts file are then written anew.
        let mut fresh = false;
        let sandbox = match sandboxes
            .iter()
            .rev()
            .find(|s| s.state == SandboxState::Ready)
        {
            Some(s) => s.clone(),
            None => {
                fresh = true;
                // No usable sandbox: replace any dead one (its containers go with it).
                let attempt = sandboxes.last().map_or(0, |s| s.metadata.attempt + 1);
                for s in &sandboxes {
                    self.kill_sandbox(&s.id, Duration::ZERO, None, true, None)
                        .await?;
                    record.sandboxes.remove(&s.id);
                }
                let config = sandbox_config(pod, &self.config.node_name, attempt);
                let id = match self.runtime.run_pod_sandbox(&config).await {
                    Ok(id) => id,
                    Err(e) => {
                        // As the kubelet: the reason is in `kubectl describe pod`, not only
                        // in the node's log; the sync is retried with back-off.
                        self.event(
                            pod,
                            EventType::Warning,
                            "FailedCreatePodSandBox",
                            format!("Failed to create pod sandbox: {}", error_chain(&e)),
                        );
                        return Err(e.into());
                    }
                };
                record.sandboxes.insert(id.clone());
                tracing::debug!(pod = %key, sandbox = %id, "sandbox created");
                self.runtime.pod_sandbox_status(&id).await?
            }
        };

        let sources = self.load_sources(pod).await?;
        let pod_dir = self.pods_dir.join(uid);
        let prepared = match self.projected_tokens(pod, uid).await {
            Ok(tokens) => volumes::prepare(&pod_dir, pod, &sources, &tokens),
            Err(e) => Err(e),
        };
        let (mut volume_dirs, mut volume_error) = match prepared {
            Ok(dirs) => (dirs, None),
            Err(e) => (HashMap::new(), Some(e)),
        };
        if let Some(e) = claim_error {
            volume_error.get_or_insert(e);
        }
        for (name, claim) in claim_paths {
            match volumes::host_dir(&claim.path, claim.type_.as_deref()) {
                Ok(dir) => {
                    volume_dirs.insert(name, dir);
                }
                Err(e) => {
                    volume_error.get_or_insert(e);
                }
            }
        }
        let pod_mounts = match self.pod_files(pod, &pod_dir, sandbox.ip.as_deref(), fresh) {
            Ok(mounts) => mounts,
            Err(e) => {
                volume_error.get_or_insert(e);
                Vec::new()
            }
        };
        let facts = PodFacts {
            pod,
            node_name: &self.config.node_name,
            host_ip: &self.config.node_ip,
            pod_ip: sandbox.ip.as_deref(),
            sources: &sources,
            volumes: &volume_dirs,
            volume_error: volume_error.as_deref(),
            pod_mounts: &pod_mounts,
        };
        let policy = spec.restart_policy.as_deref().unwrap_or("Always");
        let mut history = self.container_history(&sandbox.id).await?;
        let mut progress = Progress::default();

        // Init containers run one at a time, in order, each to a zero exit.
        let mut initialized = true;
        for c in spec.init_containers.iter().flatten() {
            let h = history.get(&c.name).map_or(&[][..], Vec::as_slice);
            if h.first()
                .is_some_and(|l| l.state == ContainerState::Exited && l.exit_code == Some(0))
            {
                continue;
            }
            initialized = false;
            // Failed init containers are retried unless the pod never restarts anything.
            let restart = |l: &ContainerStatus| policy != "Never" && l.exit_code != Some(0);
            self.advance(&sandbox.id, &facts, c, h, restart, record, &mut progress)
                .await?;
            break;
        }
        if initialized {
            for c in &spec.containers {
                let h = history.get(&c.name).map_or(&[][..], Vec::as_slice);
                let restart = |l: &ContainerStatus| match policy {
                    "Never" => false,
                    "OnFailure" => l.exit_code != Some(0),
                    _ => true,
                };
                self.advance(&sandbox.id, &facts, c, h, restart, record, &mut progress)
                    .await?;
            }
        }
        if progress.changed {
            history = self.container_history(&sandbox.id).await?;
        }
        let verdicts = self
            .probe_containers(
                key,
                spec,
                &history,
                sandbox.ip.as_deref(),
                record.grace,
                &mut progress,
            )
            .await?;
        if progress.changed {
            history = self.container_history(&sandbox.id).await?;
        }

        let mut observed = self.observe(spec, policy, &history, &progress, initialized, sandbox.ip);
        for status in &mut observed.statuses {
            let running = status.state.as_ref().is_some_and(|s| s.running.is_some());
            if let (true, Some(v)) = (running, verdicts.get(&status.name)) {
                status.started = Some(v.started);
                status.ready = v.started && v.ready;
            }
        }
        self.write_pod_status(key, uid, object, pod.status.as_ref(), &observed)
            .await?;
        if is_terminal(Some(observed.phase)) {
            // Only once the phase is stored: a dead sandbox would otherwise be re-created.
            self.kill_sandbox(
                &sandbox.id,
                record.grace,
                Some(&spec.containers),
                false,
                None,
            )
            .await?;
            tracing::info!(pod = %key, phase = observed.phase, "pod finished");
        }
        Ok(progress.requeue)
    }

    /// Runs the probes of the running app containers; kills those whose liveness or startup
    /// probe failed (restart policy then decides). Returns the verdicts by container name.
    async fn probe_containers(
        &self,
        key: &ObjectKey,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        history: &HashMap<String, Vec<ContainerStatus>>,
        pod_ip: Option<&str>,
        grace: Duration,
        progress: &mut Progress,
    ) -> Result<HashMap<String, probe::Verdict>> {
        let mut verdicts = HashMap::new();
        let mut running = HashSet::new();
        for c in &spec.containers {
            let Some(latest) = history.get(&c.name).and_then(|h| h.first()) else {
                continue;
            };
            if latest.state != ContainerState::Running {
                continue;
            }
            let verdict = self.prober.observe(key, &latest.id, c, pod_ip);
            if let Some(which) = verdict.failed {
                tracing::info!(pod = %key, container = %c.name, probe = which, "probe failed; killing the container");
                ignore_not_found(self.runtime.stop_container(&latest.id, grace).await)?;
                progress.changed = true;
                progress.requeue_after(Duration::from_millis(10));
                continue;
            }
            running.insert(latest.id.clone());
            verdicts.insert(c.name.clone(), verdict);
        }
        self.prober.retain(key, &running);
        Ok(verdicts)
    }

    fn observe(
        &self,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        policy: &str,
        history: &HashMap<String, Vec<ContainerStatus>>,
        progress: &Progress,
        initialized: bool,
        pod_ip: Option<String>,
    ) -> Observed {
        let status_of = |c: &Container, idle: &str, init: bool| {
            container_status(
                &c.name,
                c.image.as_deref().unwrap_or_default(),
                history.get(&c.name).map_or(&[][..], Vec::as_slice),
                progress.waiting.get(&c.name),
                idle,
                &self.runtime_type,
                init,
            )
        };
        let init_statuses = spec.init_containers.as_ref().map(|cs| {
            cs.iter()
                .map(|c| status_of(c, "PodInitializing", true))
                .collect::<Vec<_>>()
        });
        let idle = if initialized {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let statuses: Vec<_> = spec
            .containers
            .iter()
            .map(|c| status_of(c, idle, false))
            .collect();
        let phase = pod_phase(
            policy,
            init_statuses.as_deref().unwrap_or_default(),
            &statuses,
        );
        Observed {
            phase,
            init_statuses,
            statuses,
            host_ip: self.config.node_ip.clone(),
            pod_ip,
        }
    }

    /// Decides what one spec container needs, given its runtime containers (newest first).
    fn next_step(
        &self,
        history: &[ContainerStatus],
        restart: impl Fn(&ContainerStatus) -> bool,
        memory: &ContainerMemory,
        pod_name: &str,
        container: &str,
    ) -> Next {
        let max = self.config.crash_backoff_max;
        let Some(latest) = history.first() else {
            return match (&memory.error, memory.backoff.remaining_since_step(max)) {
                (Some(error), Some(left)) => Next::Wait(left, error.clone()),
                _ => Next::Create(0),
            };
        };
        match latest.state {
            ContainerState::Created => Next::Start(latest.id.clone()),
            ContainerState::Running | ContainerState::Unknown => Next::Nothing,
            ContainerState::Exited if !restart(latest) => Next::Nothing,
            ContainerState::Exited => match memory.backoff.remaining(latest.finished_at, max) {
                Some(left) => {
                    let waiting = memory.error.clone().unwrap_or_else(|| Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: format!(
                            "back-off {:?} restarting failed container={container} pod={pod_name}",
                            memory.backoff.delay(max)
                        ),
                    });
                    Next::Wait(left, waiting)
                }
                None => Next::Create(latest.attempt + 1),
            },
        }
    }

    /// Moves one spec container one step on: create, start or restart it, or note why it waits.
    // The arguments are the pod-level context, the container, and what the step updates;
    // bundling them in a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    async fn advance(
        &self,
        sandbox_id: &str,
        facts: &PodFacts<'_>,
        c: &Container,
        history: &[ContainerStatus],
        restart: impl Fn(&ContainerStatus) -> bool,
        record: &mut PodRecord,
        progress: &mut Progress,
    ) -> Result<()> {
        let (base, max) = (
            self.config.crash_backoff_base,
            self.config.crash_backoff_max,
        );
        let pod_name = facts.pod.metadata.name.as_deref().unwrap_or_default();
        let memory = record.containers.entry(c.name.clone()).or_default();
        let id = match self.next_step(history, restart, memory, pod_name, &c.name) {
            Next::Nothing => return Ok(()),
            Next::Wait(left, waiting) => {
                if waiting.reason == "CrashLoopBackOff" && !memory.backoff_reported {
                    memory.backoff_reported = true;
                    self.event(
                        facts.pod,
                        EventType::Warning,
                        "BackOff",
                        format!(
                            "Back-off restarting failed container {} in pod {pod_name}",
                            c.name
                        ),
                    );
                }
                progress.waiting.insert(c.name.clone(), waiting);
                progress.requeue_after(left);
                return Ok(());
            }
            Next::Start(id) => id,
            Next::Create(_)
                if memory
                    .config_retry
                    .is_some_and(|(at, _)| at > std::time::Instant::now()) =>
            {
                // Its references did not resolve a moment ago: wait as it was told.
                if let (Some(waiting), Some((at, _))) = (memory.error.clone(), memory.config_retry)
                {
                    progress.waiting.insert(c.name.clone(), waiting);
                    progress.requeue_after(at.saturating_duration_since(std::time::Instant::now()));
                }
                return Ok(());
            }
            Next::Create(attempt) => {
                memory.backoff_reported = false;
                if !history.is_empty() {
                    // A restart: the next one waits longer.
                    memory.backoff.step(base, max);
                }
                let image = match self.ensure_image(facts.pod, c, &mut memory.pull).await {
                    Ok(image) => image,
                    Err(NotReady::Wait(waiting, retry)) => {
                        memory.error = Some(waiting.clone());
                        progress.waiting.insert(c.name.clone(), waiting);
                        progress.requeue_after(retry);
                        return Ok(());
                    }
                };
                // The Services are listed only when a container is made (not at every sync of
                // a running pod): its variables are fixed when it starts, as in the kubelet.
                let service_env = super::service_env::load(self.store.as_ref(), facts.pod).await?;
                let config = match facts.volume_error {
                    Some(e) => Err(e.to_string()),
                    None => verify_run_as_non_root(facts.pod, c, image.as_ref())
                        .and_then(|()| container_config(facts, c, attempt, &service_env)),
                };
                let config = match config {
                    Ok(config) => {
                        memory.config_retry = None;
                        config
                    }
                    Err(message) => {
                        // Like the kubelet: the container waits until the references resolve.
                        self.event(
                            facts.pod,
                            EventType::Warning,
                            "Failed",
                            format!("Error: {message}"),
                        );
                        let waiting = Waiting {
                            reason: "CreateContainerConfigError".into(),
                            message,
                        };
                        memory.error = Some(waiting.clone());
                        progress.waiting.insert(c.name.clone(), waiting);
                        let wait = memory.config_retry.map_or(CONFIG_RETRY_FIRST, |(_, last)| {
                            (last * 2).min(CONFIG_RETRY_MAX)
                        });
                        memory.config_retry = Some((std::time::Instant::now() + wait, wait));
                        progress.requeue_after(wait);
                        return Ok(());
                    }
                };
                match self.runtime.create_container(sandbox_id, &config).await {
                    Ok(id) => {
                        self.event(
                            facts.pod,
                            EventType::Normal,
                            "Created",
                            format!("Created container {}", c.name),
                        );
                        id
                    }
                    Err(e) => {
                        self.note_failure(
                            facts.pod,
                            memory,
                            progress,
                            &c.name,
                            "CreateContainerError",
                            &e,
                        );
                        return Ok(());
                    }
                }
            }
        };
        progress.changed = true;
        match self.runtime.start_container(&id).await {
            Ok(()) => {
                memory.error = None;
                self.event(
                    facts.pod,
                    EventType::Normal,
                    "Started",
                    format!("Started container {}", c.name),
                );
            }
            Err(e) => {
                // Runtimes that mark the container exited (StartError) let restart handling
                // take over; one left merely created is removed and retried after back-off.
                let created = matches!(
                    self.runtime.container_status(&id).await,
                    Ok(s) if s.state == ContainerState::Created
                );
                if created {
                    ignore_not_found(self.runtime.remove_container(&id).await)?;
                    self.note_failure(
                        facts.pod,
                        memory,
                        progress,
                        &c.name,
                        "RunContainerError",
                        &e,
                    );
                } else {
                    tracing::info!(container = %c.name, error = %error_chain(&e), "container failed to start");
                }
                return Ok(());
            }
        }
        // The container's older instances go by the GC policy (by default the one that just
        // exited stays, for `lastState` and `previous` logs).
        self.remove_planned(history).await?;
        Ok(())
    }

    fn note_failure(
        &self,
        pod: &Pod,
        memory: &mut ContainerMemory,
        progress: &mut Progress,
        name: &str,
        reason: &str,
        error: &RuntimeError,
    ) {
        let (base, max) = (
            self.config.crash_backoff_base,
            self.config.crash_backoff_max,
        );
        let message = error_chain(error);
        tracing::info!(container = %name, reason, error = %message, "container could not be run");
        self.event(
            pod,
            EventType::Warning,
            "Failed",
            format!("Error: {message}"),
        );
        memory.backoff.step(base, max);
        let waiting = Waiting {
            reason: reason.to_string(),
            message,
        };
        memory.error = Some(waiting.clone());
        progress.waiting.insert(name.to_string(), waiting);
        progress.requeue_after(memory.backoff.delay(max));
    }
}
