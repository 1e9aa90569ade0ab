//! [`DurableStore`]: the MVCC engine persisted in a directory.
//!
//! Every write goes through one committer thread. It takes a batch of waiting writes, plans
//! them against the current state (plus the batch's earlier writes), appends one framed,
//! checksummed record per change to the log, calls `fsync` once for the whole batch (group
//! commit), and only then applies the batch to the in-memory state, wakes watchers and answers
//! the writers. So nothing is visible or acknowledged before it is on disk. When the log grows
//! past a threshold the committer writes a snapshot and truncates the log.
//!
//! On open: take the directory lock (a second process gets an error), load the snapshot, replay
//! the log; a torn or corrupted tail (length past the end, checksum mismatch) is cut off. Every
//! acknowledged write was fsync'd before it was acknowledged, so it is in the valid prefix.

mod record;
mod snapshot;

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::store::{
    ListOptions, ObjectList, Preconditions, SharedList, Store, StoreError, WatchOptions,
    WatchStream,
};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tokio::sync::oneshot;

use crate::engine::{AfterUnlock, Change, Engine, State, View, watch};
use crate::mem::{StoreConfig, result_of};
use record::Record;

const LOG_FILE: &str = "log";
/// How long the committer waits for the next writer before syncing what it has. Under load,
/// writers answered by the last batch take about this long to come back with their next write.
const ARRIVAL_GAP: Duration = Duration::from_millis(1);
const LOCK_FILE: &str = "lock";

/// Settings for [`DurableStore`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DurableConfig {
    /// History, bookmarks and kinds, as for [`MemStore`](crate::MemStore).
    pub store: StoreConfig,
    /// When the log passes this size, a snapshot is written and the log truncated
    /// (default 64 MiB).
    pub max_log_bytes: u64,
    /// Most writes committed with one fsync (default 1024).
    pub max_batch: usize,
    /// How long the committer waits for more writers to join a batch before syncing
    /// (default 2 ms), as long as writes keep arriving within 1 ms of each other; a lone writer
    /// waits 1 ms. `Duration::ZERO` syncs every batch at once.
    pub linger: std::time::Duration,
}

impl Default for DurableConfig {
    fn default() -> Self {
        Self {
            store: StoreConfig::default(),
            max_log_bytes: 64 << 20,
            max_batch: 1024,
            linger: std::time::Duration::from_millis(2),
        }
    }
}

impl DurableConfig {
    /// Sets the log size that triggers a snapshot.
    pub fn max_log_bytes(mut self, bytes: u64) -> Self {
        self.max_log_bytes = bytes;
        self
    }

    /// Sets the history, bookmark and kind settings.
    pub fn store(mut self, store: StoreConfig) -> Self {
        self.store = store;
        self
    }
}

enum Op {
    Create(DynamicObject),
    Update(DynamicObject),
    Delete(GroupKind, ObjectKey, Preconditions),
    Compact(u64),
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Arc<DynamicObject>, StoreError>>,
}

/// The state plus the changes planned earlier in the same batch.
struct Overlay<'a> {
    state: &'a State,
    revision: u64,
    changed: HashMap<(GroupKind, ObjectKey), Option<Arc<DynamicObject>>>,
}

impl View for Overlay<'_> {
    fn revision(&self) -> u64 {
        self.revision
    }

    fn current(&self, kind: &GroupKind, key: &ObjectKey) -> Option<Arc<DynamicObject>> {
        match self.changed.get(&(kind.clone(), key.clone())) {
            Some(planned) => planned.clone(),
            None => self.state.current(kind, key),
        }
    }
}

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

struct Committer {
    engine: Arc<Engine>,
    dir: PathBuf,
    log: File,
    log_bytes: u64,
    config: DurableConfig,
    requests: mpsc::Receiver<Request>,
    /// Set after an I/O failure left the log in an unknown state: every later write fails.
    broken: Option<String>,
    /// A compaction requested in the current batch.
    pending_compaction: Option<u64>,
}

impl Committer {
    fn run(mut self) {
        while let Ok(first) = self.requests.recv() {
            let mut batch = vec![first];
            // Linger while writers keep arriving (each within a short gap of the last), up to
            // `linger` in all: an fsync costs milliseconds, so a fuller batch beats several small
            // ones, and a lone writer waits only one short gap.
            let linger_until = Instant::now() + self.config.linger;
            while batch.len() < self.config.max_batch {
                let left = linger_until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match self.requests.recv_timeout(left.min(ARRIVAL_GAP)) {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<Request>) {
        if let Some(reason) = &self.broken {
            for request in batch {
                let _ = request
                    .reply
                    .send(Err(StoreError::Backend(reason.clone().into())));
            }
            return;
        }
        let registry = self.engine.config.registry.clone();
        let mut planned: Vec<(oneshot::Sender<_>, Result<Option<Change>, StoreError>)> = Vec::new();
        let mut bytes = Vec::new();
        {
            let state = self.engine.read();
            let mut overlay = Overlay {
                state: &state,
                revision: state.revision,
                changed: HashMap::new(),
            };
            for Request { op, reply } in batch {
                let plan = match op {
                    Op::Create(object) => overlay.plan_create(object, &registry),
                    Op::Update(object) => overlay.plan_update(object, &registry),
                    Op::Delete(kind, key, pre) => overlay.plan_delete(&kind, &key, &pre, &registry),
                    Op::Compact(revision) => {
                        let result: Result<(), StoreError> = if revision > overlay.revision {
                            Err(StoreError::Invalid(format!(
                                "cannot compact to revision {revision}: the store is at {}",
                                overlay.revision
                            )))
                        } else {
                            Ok(())
                        };
                        // Compaction is applied with the batch, in memory only: history is not
                        // persisted beyond the log, which snapshots truncate anyway.
                        if result.is_ok() {
                            self.pending_compaction = Some(revision);
                        }
                        planned.push((reply, result.map(|()| None)));
                        continue;
                    }
                };
                let plan = plan.and_then(|change| {
                    let record = Record {
                        revision: change.revision,
                        group: change.kind.group.to_string(),
                        kind: change.kind.kind.to_string(),
                        namespace: change.key.namespace.clone(),
                        name: change.key.name.clone(),
                        object: change.after.as_deref(),
                    };
                    record::encode(&record, &mut bytes).map_err(backend)?;
                    overlay.revision = change.revision;
                    overlay.changed.insert(
                        (change.kind.clone(), change.key.clone()),
                        change.after.clone(),
                    );
                    Ok(Some(change))
                });
                planned.push((reply, plan));
            }
        }
        if !bytes.is_empty() {
            if let Err(e) = self.append(&bytes) {
                let reason = format!("the store's log could not be written: {e}");
                tracing::error!(dir = %self.dir.display(), "{reason}");
                self.broken = Some(reason.clone());
                for (reply, plan) in planned {
                    let result = match plan {
                        Ok(Some(_)) => Err(StoreError::Backend(reason.clone().into())),
                        Ok(None) => Ok(Arc::default()),
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(result);
                }
                return;
            }
        }
        let mut replies = Vec::with_capacity(planned.len());
        {
            let mut after = AfterUnlock::default();
            let mut state = self.engine.write();
            for (reply, plan) in planned {
                let result = match plan {
                    Ok(Some(change)) => Ok(result_of(&state.apply(change, &mut after))),
                    Ok(None) => Ok(Arc::default()),
                    Err(e) => Err(e),
                };
                replies.push((reply, result));
            }
            if let Some(revision) = self.pending_compaction.take() {
                let _ = state.compact(revision);
            }
            state.trim_history(&self.engine.config, &mut after);
        }
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
        if self.log_bytes > self.config.max_log_bytes {
            if let Err(e) = self.snapshot() {
                // The log is intact; the next batch tries again.
                tracing::warn!(dir = %self.dir.display(), error = %e, "snapshot failed");
            }
        }
    }

    /// Appends and fsyncs: the group commit.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.log.write_all(bytes)?;
        self.log.sync_data()?;
        self.log_bytes += bytes.len() as u64;
        Ok(())
    }

    fn snapshot(&mut self) -> io::Result<()> {
        let started = Instant::now();
        snapshot::write(&self.dir, &self.engine.read())?;
        // Records now in the snapshot are skipped on replay even if this truncation is lost.
        self.log.set_len(0)?;
        self.log.seek(SeekFrom::Start(0))?;
        self.log.sync_all()?;
        self.log_bytes = 0;
        tracing::debug!(dir = %self.dir.display(), elapsed = ?started.elapsed(), "snapshot written");
        Ok(())
    }
}

struct Inner {
    engine: Arc<Engine>,
    requests: Mutex<Option<mpsc::Sender<Request>>>,
    committer: Mutex<Option<JoinHandle<()>>>,
    dir: PathBuf,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel stops the committer after its last batch; joining it releases the
        // directory lock before the store is considered gone, so it can be reopened at once.
        if let Ok(mut tx) = self.requests.lock() {
            tx.take();
        }
        if let Some(handle) = self.committer.lock().ok().and_then(|mut h| h.take()) {
            let _ = handle.join();
        }
    }
}

/// A [`Store`] persisted in a directory. Cheap to clone; clones share state.
///
/// Same semantics as [`MemStore`](crate::MemStore), plus: a write is acknowledged only after it
/// is fsync'd; concurrent writers share fsyncs; the directory survives crashes and is locked
/// against a second process.
#[derive(Clone)]
pub struct DurableStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for DurableStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableStore")
            .field("dir", &self.inner.dir)
            .field("revision", &self.inner.engine.read().revision)
            .finish()
    }
}

fn open_error(dir: &Path, what: &str, e: io::Error) -> StoreError {
    StoreError::Backend(Box::new(io::Error::new(
        e.kind(),
        format!("{}: {what}: {e}", dir.display()),
    )))
}

impl DurableStore {
    /// Opens (or creates) the store in `dir` with default settings.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(dir, DurableConfig::default())
    }

    /// Opens (or creates) the store in `dir`.
    pub fn open_with(dir: impl AsRef<Path>, config: DurableConfig) -> Result<Self, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| open_error(&dir, "creating the directory", e))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(|e| open_error(&dir, "opening the lock file", e))?;
        let lock = Flock::lock(lock, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            if errno == Errno::EWOULDBLOCK {
                StoreError::Invalid(format!(
                    "{} is in use by another process (its lock is held)",
                    dir.display()
                ))
            } else {
                open_error(&dir, "locking", io::Error::from(errno))
            }
        })?;

        let mut state = snapshot::read(&dir)
            .map_err(|e| open_error(&dir, "reading the snapshot", e))?
            .unwrap_or_default();
        let snapshot_revision = state.revision;
        let mut log = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join(LOG_FILE))
            .map_err(|e| open_error(&dir, "opening the log", e))?;
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes)
            .map_err(|e| open_error(&dir, "reading the log", e))?;
        let (records, valid) = record::decode_all(&bytes);
        if valid < bytes.len() {
            tracing::warn!(
                dir = %dir.display(),
                cut = bytes.len() - valid,
                "cutting a torn or corrupted log tail (unacknowledged writes)"
            );
            log.set_len(valid as u64)
                .map_err(|e| open_error(&dir, "truncating the log", e))?;
            log.sync_all()
                .map_err(|e| open_error(&dir, "syncing the log", e))?;
        }
        log.seek(SeekFrom::Start(valid as u64))
            .map_err(|e| open_error(&dir, "seeking the log", e))?;
        // No watch exists yet; what replay compacts is freed at the end.
        let mut after = AfterUnlock::default();
        for record in records
            .into_iter()
            .filter(|r| r.revision > snapshot_revision)
        {
            let kind = record.group_kind();
            let key = record.key();
            let before = state.current(&kind, &key);
            state.apply(
                Change {
                    revision: record.revision,
                    kind,
                    key,
                    before,
                    after: record.object.map(Arc::new),
                    at: Instant::now(),
                },
                &mut after,
            );
        }
        let engine_config = config.store.engine_config();
        state.trim_history(&engine_config, &mut after);
        drop(after);
        let engine = Arc::new(Engine::new(engine_config, state));

        let (tx, rx) = mpsc::channel();
        let committer = Committer {
            engine: engine.clone(),
            dir: dir.clone(),
            log,
            log_bytes: valid as u64,
            config,
            requests: rx,
            broken: None,
            pending_compaction: None,
        };
        let handle = std::thread::Builder::new()
            .name("kube-store-commit".into())
            .spawn(move || {
                // The lock lives as long as the committer: no other process writes meanwhile.
                let _lock = lock;
                committer.run();
            })
            .map_err(|e| open_error(&dir, "starting the committer", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                requests: Mutex::new(Some(tx)),
                committer: Mutex::new(Some(handle)),
                dir,
            }),
        })
    }

    /// The directory this store lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    async fn submit(&self, op: Op) -> Result<Arc<DynamicObject>, StoreError> {
        let (reply, response) = oneshot::channel();
        let sent = match self.inner.requests.lock() {
            Ok(tx) => tx
                .as_ref()
                .is_some_and(|tx| tx.send(Request { op, reply }).is_ok()),
            Err(_) => false,
        };
        if !sent {
            return Err(StoreError::Backend(
                "the store's committer has stopped".into(),
            ));
        }
        response
            .await
            .map_err(|_| StoreError::Backend("the store's committer has stopped".into()))?
    }
}

#[async_trait::async_trait]
impl Store for DurableStore {
    async fn get(&self, kind: &GroupKind, key: &ObjectKey) -> Result<DynamicObject, StoreError> {
        self.inner.engine.get(kind, key)
    }

    async fn get_shared(
        &self,
        kind: &GroupKind,
        key: &ObjectKey,
    ) -> Result<Arc<DynamicObject>, StoreError> {
        self.inner.engine.get_shared(kind, key)
    }

    async fn list_shared(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<SharedList, StoreError> {
        self.inner.engine.list_shared(kind, namespace, options)
    }

    async fn list(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ObjectList, StoreError> {
        self.inner.engine.list(kind, namespace, options)
    }

    async fn create(&self, object: DynamicObject) -> Result<DynamicObject, StoreError> {
        self.create_shared(object).await.map(Arc::unwrap_or_clone)
    }

    async fn create_shared(&self, object: DynamicObject) -> Result<Arc<DynamicObject>, StoreError> {
        self.submit(Op::Create(object)).await
    }

    async fn update(&self, object: DynamicObject) -> Result<DynamicObject, StoreError> {
        self.update_shared(object).await.map(Arc::unwrap_or_clone)
    }

    async fn update_shared(&self, object: DynamicObject) -> Result<Arc<DynamicObject>, StoreError> {
        self.submit(Op::Update(object)).await
    }

    async fn delete(
        &self,
        kind: &GroupKind,
        key: &ObjectKey,
        preconditions: &Preconditions,
    ) -> Result<DynamicObject, StoreError> {
        self.submit(Op::Delete(kind.clone(), key.clone(), preconditions.clone()))
            .await
            .map(Arc::unwrap_or_clone)
    }

    async fn watch(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &WatchOptions,
    ) -> Result<WatchStream, StoreError> {
        watch(&self.inner.engine, kind, namespace, options)
    }

    async fn current_revision(&self) -> Result<u64, StoreError> {
        Ok(self.inner.engine.read().revision)
    }

    async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        self.submit(Op::Compact(revision)).await.map(drop)
    }
}
