//! [`EtcdStore`]: the [`Store`] trait over etcd v3 (cargo feature `etcd`).
//!
//! Objects live under a key prefix as JSON, at `<prefix>/<group>/<Kind>/<namespace>/<name>`
//! (`core` for the empty group; cluster-scoped kinds have no namespace segment). An object's
//! `resourceVersion` is its etcd `mod_revision`, so it is not stored in the value. Create, update
//! and delete are compare-and-swap transactions on the key's create/mod revision; watches resume
//! from a revision with `prev_kv` (to tell objects leaving a filter) and progress notifications
//! (bookmarks); etcd's compaction surfaces as [`StoreError::TooOld`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue, Txn, TxnOp,
    WatchOptions as EtcdWatchOptions,
};
use futures::StreamExt;
use kube_core::kind::Registry;
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::{
    ListOptions, ObjectList, Preconditions, Store, StoreError, WatchEvent, WatchOptions,
    WatchStream,
};

use crate::engine::{check_kind, check_preconditions};
use crate::paging::Continue;
use crate::prepare::{prepare_create, prepare_update};
use crate::transition::Scope;

/// How to reach etcd.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EtcdConfig {
    /// Client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Key prefix for every object (default `/registry`).
    pub prefix: String,
    /// Deadline for each request (default 5 s): with no quorum, calls fail after it.
    pub request_timeout: Duration,
    /// The kinds the store accepts.
    pub registry: Registry,
}

impl EtcdConfig {
    /// Settings for these endpoints, with defaults for the rest.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: "/registry".into(),
            request_timeout: Duration::from_secs(5),
            registry: Registry::builtin().clone(),
        }
    }

    /// Sets the key prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().trim_end_matches('/').to_string();
        self
    }

    /// Sets the per-request deadline.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
}

/// A [`Store`] backed by etcd v3. Cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    kv: Client,
    /// One client per member, for requests that failed to reach a member: the balanced
    /// client keeps picking a dead member until its connection is marked down, so a retry
    /// goes to the next member directly.
    members: Arc<Vec<Client>>,
    next_member: Arc<std::sync::atomic::AtomicUsize>,
    watcher: Client,
    config: EtcdConfig,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.config.endpoints)
            .field("prefix", &self.config.prefix)
            .finish()
    }
}

/// Most keys fetched per range request while filtering a list.
const LIST_CHUNK: i64 = 500;
/// Names generated from `generateName` tried before giving up (each one collides only by
/// chance).
const GENERATED_NAME_ATTEMPTS: usize = 16;

/// How long an unconditional update or delete that keeps losing races to other writers goes
/// on retrying (Kubernetes' GuaranteedUpdate retries until the request's deadline). A fixed
/// count gave up: with 8 writers on one key, 16 rounds lost every time about one time in eight.
const RACE_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

/// After losing round `round`, a short random pause, so that racing writers spread out.
async fn after_lost_race(round: u32) {
    let most = u64::from(round.min(8)) + 1;
    let pause = rand::random_range(0..most * 1000);
    tokio::time::sleep(std::time::Duration::from_micros(pause)).await;
}

fn backend(e: etcd_client::Error) -> StoreError {
    let text = e.to_string();
    if text.contains("required revision has been compacted") {
        return StoreError::TooOld {
            requested: 0,
            oldest: 0,
        };
    }
    if text.contains("future revision") {
        return StoreError::Invalid(format!("etcd: {text}"));
    }
    if text.contains("Timeout expired") {
        return StoreError::Backend(
            format!("etcd did not answer within the request timeout (is a quorum of members up?): {text}").into(),
        );
    }
    StoreError::Backend(Box::new(e))
}

fn corrupt(key: &[u8], e: impl fmt::Display) -> StoreError {
    StoreError::Backend(
        format!(
            "etcd value at {} is not an object: {e}",
            String::from_utf8_lossy(key)
        )
        .into(),
    )
}

/// Decodes a stored value, stamping its resourceVersion from etcd.
fn decode(kv: &KeyValue) -> Result<DynamicObject, StoreError> {
    let mut object: DynamicObject =
        serde_json::from_slice(kv.value()).map_err(|e| corrupt(kv.key(), e))?;
    object.metadata.resource_version = Some(kv.mod_revision().to_string());
    Ok(object)
}

fn encode(object: &DynamicObject) -> Result<Vec<u8>, StoreError> {
    let mut stored = object.clone();
    stored.metadata.resource_version = None;
    serde_json::to_vec(&stored).map_err(|e| StoreError::Invalid(e.to_string()))
}

/// Whether the request never reached a server (the connection was refused): safe to send again,
/// and the client's balancer will pick another member.
fn never_sent(e: &etcd_client::Error) -> bool {
    let text = format!("{e:?}");
    text.contains("ConnectError") || text.contains("tcp connect error")
}

/// Runs `call`, retrying requests that could not reach a member (one endpoint down must not
/// fail callers while others serve). The client's balancer only learns that a member is gone
/// after some failed connects, so retries go on, with growing pauses, for up to `budget`.
async fn retry_unsent<T, F, Fut>(budget: Duration, mut call: F) -> Result<T, etcd_client::Error>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + budget;
    let mut pause = Duration::from_millis(10);
    let mut attempt = 0;
    loop {
        match call(attempt).await {
            Err(e) if never_sent(&e) && tokio::time::Instant::now() + pause < deadline => {
                attempt += 1;
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            result => return result,
        }
    }
}

fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> u64 {
    header.map_or(0, |h| u64::try_from(h.revision()).unwrap_or(0))
}

impl EtcdStore {
    /// Connects to etcd.
    pub async fn connect(config: EtcdConfig) -> Result<Self, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(config.request_timeout)
            .with_require_leader(true);
        let kv = Client::connect(
            &config.endpoints,
            Some(options.clone().with_timeout(config.request_timeout)),
        )
        .await
        .map_err(backend)?;
        // Watches are long-lived: no per-request deadline, but they fail when there is no leader.
        let mut members = Vec::new();
        for endpoint in &config.endpoints {
            // Lazily connected: a member that is down now is simply skipped later.
            if let Ok(client) = Client::connect(
                [endpoint.as_str()],
                Some(options.clone().with_timeout(config.request_timeout)),
            )
            .await
            {
                members.push(client);
            }
        }
        let watcher = Client::connect(&config.endpoints, Some(options))
            .await
            .map_err(backend)?;
        Ok(Self {
            kv,
            members: Arc::new(members),
            next_member: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            watcher,
            config,
        })
    }

    /// The balanced client first; after a failed attempt, the members in turn.
    fn client_for(&self, attempt: usize) -> Client {
        if attempt == 0 || self.members.is_empty() {
            return self.kv.clone();
        }
        let i = self
            .next_member
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.members[i % self.members.len()].clone()
    }

    /// How long a request may keep retrying members it could not reach.
    fn retry_budget(&self) -> Duration {
        self.config.request_timeout
    }

    async fn kv_get(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse, etcd_client::Error> {
        let key: Vec<u8> = key.into();
        retry_unsent(self.retry_budget(), |attempt| {
            let mut kv = self.client_for(attempt);
            let (key, options) = (key.clone(), options.clone());
            async move { kv.get(key, options).await }
        })
        .await
    }

    async fn kv_txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, etcd_client::Error> {
        retry_unsent(self.retry_budget(), |attempt| {
            let mut kv = self.client_for(attempt);
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
    }

    fn kind_prefix(&self, kind: &GroupKind) -> String {
        let group = if kind.group.is_empty() {
            "core"
        } else {
            &kind.group
        };
        format!("{}/{group}/{}/", self.config.prefix, kind.kind)
    }

    fn scope_prefix(&self, kind: &GroupKind, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) => format!("{}{ns}/", self.kind_prefix(kind)),
            None => self.kind_prefix(kind),
        }
    }

    fn key(&self, kind: &GroupKind, key: &ObjectKey) -> String {
        match &key.namespace {
            Some(ns) => format!("{}{ns}/{}", self.kind_prefix(kind), key.name),
            None => format!("{}{}", self.kind_prefix(kind), key.name),
        }
    }

    async fn read(
        &self,
        kind: &GroupKind,
        key: &ObjectKey,
    ) -> Result<Option<KeyValue>, StoreError> {
        let mut response = self
            .kv_get(self.key(kind, key), None)
            .await
            .map_err(backend)?;
        Ok(response.take_kvs().into_iter().next())
    }
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, kind: &GroupKind, key: &ObjectKey) -> Result<DynamicObject, StoreError> {
        check_kind(&self.config.registry, kind)?;
        match self.read(kind, key).await? {
            Some(kv) => decode(&kv),
            None => Err(StoreError::NotFound {
                kind: kind.clone(),
                key: key.clone(),
            }),
        }
    }

    async fn list(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ObjectList, StoreError> {
        check_kind(&self.config.registry, kind)?;
        let prefix = self.scope_prefix(kind, namespace);
        let end = prefix_end(&prefix);
        let (mut revision, mut start) = match options.continue_token.as_deref() {
            Some(token) => {
                let c = Continue::decode(token)?;
                let mut start = self.key(kind, &c.after).into_bytes();
                start.push(0);
                (c.revision, start)
            }
            None => (0, prefix.clone().into_bytes()),
        };
        let limit = options.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut more = false;
        'pages: loop {
            let mut get = GetOptions::new()
                .with_range(end.clone())
                .with_limit(LIST_CHUNK);
            if revision > 0 {
                get = get.with_revision(i64::try_from(revision).unwrap_or(i64::MAX));
            }
            let mut response = match self.kv_get(start.clone(), Some(get)).await {
                Ok(r) => r,
                Err(e) => {
                    return Err(match backend(e) {
                        StoreError::TooOld { .. } => StoreError::TooOld {
                            requested: revision,
                            oldest: revision + 1,
                        },
                        other => other,
                    });
                }
            };
            if revision == 0 {
                // Every later chunk and page reads at the first chunk's revision.
                revision = revision_of(response.header());
            }
            let has_more = response.more();
            let kvs = response.take_kvs();
            let Some(last) = kvs.last() else { break };
            start = last.key().to_vec();
            start.push(0);
            for kv in &kvs {
                let object = decode(kv)?;
                if !options.matches(&object) {
                    continue;
                }
                if items.len() == limit {
                    more = true;
                    break 'pages;
                }
                items.push(object);
            }
            if !has_more {
                break;
            }
        }
        let continue_token = match (more, items.last()) {
            (true, Some(last)) => Some(
                Continue {
                    revision,
                    after: last.key(),
                }
                .encode(),
            ),
            _ => None,
        };
        Ok(ObjectList {
            items,
            resource_version: revision,
            continue_token,
        })
    }

    async fn create(&self, object: DynamicObject) -> Result<DynamicObject, StoreError> {
        let generated = object.metadata.name.as_deref().unwrap_or("").is_empty();
        let mut attempts = 0;
        loop {
            let mut candidate = object.clone();
            prepare_create(&mut candidate, &self.config.registry, 0, |_| false)?;
            let kind = candidate.group_kind();
            let key = candidate.key();
            let etcd_key = self.key(&kind, &key);
            let txn = Txn::new()
                .when([Compare::create_revision(
                    etcd_key.clone(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then([TxnOp::put(etcd_key, encode(&candidate)?, None)]);
            let response = self.kv_txn(txn).await.map_err(backend)?;
            if response.succeeded() {
                candidate.metadata.resource_version =
                    Some(revision_of(response.header()).to_string());
                return Ok(candidate);
            }
            attempts += 1;
            if !generated || attempts >= GENERATED_NAME_ATTEMPTS {
                return Err(StoreError::AlreadyExists { kind, key });
            }
        }
    }

    async fn update(&self, object: DynamicObject) -> Result<DynamicObject, StoreError> {
        let kind = object.group_kind();
        check_kind(&self.config.registry, &kind)?;
        let key = object.key();
        let etcd_key = self.key(&kind, &key);
        let deadline = std::time::Instant::now() + RACE_BUDGET;
        let mut round = 0;
        while std::time::Instant::now() < deadline {
            if round > 0 {
                after_lost_race(round).await;
            }
            round += 1;
            let Some(kv) = self.read(&kind, &key).await? else {
                return Err(StoreError::NotFound { kind, key });
            };
            let current = decode(&kv)?;
            let mut next = object.clone();
            prepare_update(&mut next, &current, 0)?;
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    etcd_key.clone(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([TxnOp::put(etcd_key.clone(), encode(&next)?, None)]);
            let response = self.kv_txn(txn).await.map_err(backend)?;
            if response.succeeded() {
                next.metadata.resource_version = Some(revision_of(response.header()).to_string());
                return Ok(next);
            }
            // Lost a race after reading: a conditional update re-checks its resourceVersion on
            // the next round (and conflicts); an unconditional one simply retries.
        }
        Err(StoreError::Conflict {
            kind,
            key,
            message: "too many concurrent writers; retry".into(),
        })
    }

    async fn delete(
        &self,
        kind: &GroupKind,
        key: &ObjectKey,
        preconditions: &Preconditions,
    ) -> Result<DynamicObject, StoreError> {
        check_kind(&self.config.registry, kind)?;
        let etcd_key = self.key(kind, key);
        let deadline = std::time::Instant::now() + RACE_BUDGET;
        let mut round = 0;
        while std::time::Instant::now() < deadline {
            if round > 0 {
                after_lost_race(round).await;
            }
            round += 1;
            let Some(kv) = self.read(kind, key).await? else {
                return Err(StoreError::NotFound {
                    kind: kind.clone(),
                    key: key.clone(),
                });
            };
            let mut last = decode(&kv)?;
            check_preconditions(&last, preconditions)?;
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    etcd_key.clone(),
                    CompareOp::Equal,
                    kv.mod_revision(),
                )])
                .and_then([TxnOp::delete(etcd_key.clone(), None)]);
            let response = self.kv_txn(txn).await.map_err(backend)?;
            if response.succeeded() {
                last.metadata.resource_version = Some(revision_of(response.header()).to_string());
                return Ok(last);
            }
        }
        Err(StoreError::Conflict {
            kind: kind.clone(),
            key: key.clone(),
            message: "too many concurrent writers; retry".into(),
        })
    }

    async fn watch(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &WatchOptions,
    ) -> Result<WatchStream, StoreError> {
        check_kind(&self.config.registry, kind)?;
        let from = match options.resource_version {
            Some(rv) => rv,
            None => self.current_revision().await?,
        };
        let mut watch_options = EtcdWatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(i64::try_from(from + 1).unwrap_or(i64::MAX));
        if options.bookmarks {
            watch_options = watch_options.with_progress_notify();
        }
        let stream = self
            .watcher
            .clone()
            .watch(self.scope_prefix(kind, namespace), Some(watch_options))
            .await
            .map_err(backend)?;
        let scope = Scope {
            namespace: namespace.map(str::to_string),
            filter: options.filter.clone(),
        };
        let bookmarks = options.bookmarks;
        let events = stream
            .map(move |response| -> Vec<Result<WatchEvent, StoreError>> {
                let response = match response {
                    Ok(r) => r,
                    Err(e) => return vec![Err(backend(e))],
                };
                if response.canceled() {
                    let compacted = u64::try_from(response.compact_revision()).unwrap_or(0);
                    return vec![Err(if compacted > 0 {
                        StoreError::TooOld {
                            requested: from,
                            oldest: compacted,
                        }
                    } else {
                        StoreError::Backend(
                            format!("etcd cancelled the watch: {}", response.cancel_reason())
                                .into(),
                        )
                    })];
                }
                if response.events().is_empty() {
                    // A progress notification (or the creation ack, which carries no news).
                    let revision = revision_of(response.header());
                    return if bookmarks && !response.created() && revision > 0 {
                        vec![Ok(WatchEvent::Bookmark {
                            resource_version: revision,
                        })]
                    } else {
                        Vec::new()
                    };
                }
                let mut out = Vec::new();
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let revision = u64::try_from(kv.mod_revision()).unwrap_or(0);
                    let before = match event
                        .prev_kv()
                        .map(|kv| decode(kv).map(Arc::new))
                        .transpose()
                    {
                        Ok(b) => b,
                        Err(e) => {
                            out.push(Err(e));
                            continue;
                        }
                    };
                    let after = match event.event_type() {
                        EventType::Put => match decode(kv) {
                            Ok(a) => Some(Arc::new(a)),
                            Err(e) => {
                                out.push(Err(e));
                                continue;
                            }
                        },
                        EventType::Delete => None,
                    };
                    if let Some(e) = scope.event(revision, before.as_ref(), after.as_ref()) {
                        out.push(Ok(e));
                    }
                }
                out
            })
            .flat_map(futures::stream::iter);
        // End the stream after the first error, like the other backends.
        let mut failed = false;
        Ok(events
            .take_while(move |item| {
                let go = !failed;
                failed |= item.is_err();
                futures::future::ready(go)
            })
            .boxed())
    }

    async fn current_revision(&self) -> Result<u64, StoreError> {
        let response = self
            .kv
            .clone()
            .get(
                self.config.prefix.clone(),
                Some(GetOptions::new().with_count_only()),
            )
            .await
            .map_err(backend)?;
        Ok(revision_of(response.header()))
    }

    async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        let revision = i64::try_from(revision)
            .map_err(|_| StoreError::Invalid("revision out of range".into()))?;
        match self.kv.clone().compact(revision, None).await {
            Ok(_) => Ok(()),
            // Compacting to where etcd already is is not an error for us.
            Err(e) if e.to_string().contains("has been compacted") => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }
}
