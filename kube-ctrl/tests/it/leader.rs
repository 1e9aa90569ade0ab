use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::orchestrator::Orchestrator;
use kube_core::store::{
    ListOptions, ObjectList, Preconditions, Store, StoreError, WatchOptions, WatchStream,
};
use kube_core::typed::Api;
use kube_ctrl::{ControllerManager, LeaderElectionConfig, LeaderElector, Leadership};
use kube_store::MemStore;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::support::{eventually, eventually_within};

const LEASE: Duration = Duration::from_secs(15);
const RENEW: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_secs(2);

fn config(identity: &str) -> LeaderElectionConfig {
    LeaderElectionConfig::new("kube-system", "ctrl", identity).timing(LEASE, RENEW, RETRY)
}

/// Who is acting now, and whether two ever acted at once.
#[derive(Debug, Default)]
struct Referee {
    active: Mutex<Option<(String, i32)>>,
    overlaps: AtomicU32,
    terms: Mutex<Vec<(String, i32)>>,
}

/// Clears the referee when a leader's work ends, including when its task is aborted.
struct Acting(Arc<Referee>);

impl Drop for Acting {
    fn drop(&mut self) {
        *self.0.active.lock().unwrap() = None;
    }
}

impl Referee {
    fn current(&self) -> Option<(String, i32)> {
        self.active.lock().unwrap().clone()
    }

    /// A leader's work: registers as acting until its term ends.
    fn lead(
        self: &Arc<Self>,
        identity: &str,
    ) -> impl FnMut(Leadership) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + use<> {
        let referee = self.clone();
        let identity = identity.to_string();
        move |leadership: Leadership| {
            let referee = referee.clone();
            let identity = identity.clone();
            Box::pin(async move {
                {
                    let mut active = referee.active.lock().unwrap();
                    if active.is_some() {
                        referee.overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    *active = Some((identity.clone(), leadership.term));
                    referee
                        .terms
                        .lock()
                        .unwrap()
                        .push((identity, leadership.term));
                }
                let _acting = Acting(referee.clone());
                leadership.token.cancelled().await;
            })
        }
    }
}

fn campaign(
    store: Arc<dyn Store>,
    identity: &str,
    referee: &Arc<Referee>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let elector = LeaderElector::new(store, config(identity)).unwrap();
    let shutdown = CancellationToken::new();
    let lead = referee.lead(identity);
    let token = shutdown.clone();
    let task = tokio::spawn(async move { elector.run(&token, lead).await });
    (shutdown, task)
}

async fn leader_is(referee: &Referee, identity: &str) -> i32 {
    eventually_within(&format!("{identity} leads"), LEASE * 2, || async {
        referee
            .current()
            .filter(|(who, _)| who == identity)
            .map(|(_, term)| term)
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn crashed_leader_is_replaced_within_the_lease_duration() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let referee = Arc::new(Referee::default());
    let (_a_stop, a) = campaign(store.clone(), "a", &referee);
    let first = leader_is(&referee, "a").await;
    let (_b_stop, _b) = campaign(store.clone(), "b", &referee);
    // b waits while a renews, for several lease durations.
    tokio::time::sleep(LEASE * 3).await;
    assert_eq!(referee.current(), Some(("a".into(), first)));

    // a dies without releasing: b must wait out the lease, and no longer than that.
    a.abort();
    let crashed = Instant::now();
    let second = leader_is(&referee, "b").await;
    let took = crashed.elapsed();
    assert!(took >= LEASE - RETRY, "took over too early: {took:?}");
    assert!(took <= LEASE + RETRY * 2, "took over too late: {took:?}");
    assert_eq!(second, first + 1, "a new term");
    assert_eq!(referee.overlaps.load(Ordering::SeqCst), 0);
    let lease: Lease = Api::namespaced(store, "kube-system")
        .get("ctrl")
        .await
        .unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
}

#[tokio::test(start_paused = true)]
async fn shutdown_releases_the_lease_for_an_immediate_handover() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let referee = Arc::new(Referee::default());
    let (a_stop, a) = campaign(store.clone(), "a", &referee);
    leader_is(&referee, "a").await;
    let (_b_stop, _b) = campaign(store.clone(), "b", &referee);
    tokio::time::sleep(LEASE).await;
    a_stop.cancel();
    a.await.unwrap();
    let released = Instant::now();
    leader_is(&referee, "b").await;
    assert!(released.elapsed() <= RETRY * 2, "{:?}", released.elapsed());
    assert_eq!(referee.overlaps.load(Ordering::SeqCst), 0);
}

/// A store that can be cut off, as a partitioned replica would see it.
#[derive(Debug)]
struct Partitionable {
    inner: Arc<dyn Store>,
    cut: AtomicBool,
}

impl Partitionable {
    fn check(&self) -> Result<(), StoreError> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("partitioned".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for Partitionable {
    async fn get(&self, kind: &GroupKind, key: &ObjectKey) -> Result<DynamicObject, StoreError> {
        self.check()?;
        self.inner.get(kind, key).await
    }
    async fn list(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ObjectList, StoreError> {
        self.check()?;
        self.inner.list(kind, namespace, options).await
    }
    async fn create(&self, object: DynamicObject) -> Result<DynamicObject, StoreError> {
        self.check()?;
        self.inner.create(object).await
    }
    async fn update(&self, object: DynamicObject) -> Result<DynamicObject, StoreError> {
        self.check()?;
        self.inner.update(object).await
    }
    async fn delete(
        &self,
        kind: &GroupKind,
        key: &ObjectKey,
        preconditions: &Preconditions,
    ) -> Result<DynamicObject, StoreError> {
        self.check()?;
        self.inner.delete(kind, key, preconditions).await
    }
    async fn watch(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &WatchOptions,
    ) -> Result<WatchStream, StoreError> {
        self.check()?;
        self.inner.watch(kind, namespace, options).await
    }
    async fn current_revision(&self) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.current_revision().await
    }
}

#[tokio::test(start_paused = true)]
async fn partitioned_leader_steps_down_before_anyone_takes_over() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let a_store = Arc::new(Partitionable {
        inner: store.clone(),
        cut: AtomicBool::new(false),
    });
    let referee = Arc::new(Referee::default());
    let (_a_stop, _a) = campaign(a_store.clone(), "a", &referee);
    leader_is(&referee, "a").await;
    let (_b_stop, _b) = campaign(store.clone(), "b", &referee);
    tokio::time::sleep(LEASE).await;

    // a can no longer reach the store but keeps running: it must stop acting by itself.
    a_store.cut.store(true, Ordering::SeqCst);
    let cut = Instant::now();
    eventually("a steps down", || async {
        referee.current().is_none().then_some(())
    })
    .await;
    assert!(cut.elapsed() <= RENEW, "a acted past its renew deadline");
    leader_is(&referee, "b").await;
    assert_eq!(referee.overlaps.load(Ordering::SeqCst), 0);

    // When the partition heals, a campaigns again but b keeps the lease.
    a_store.cut.store(false, Ordering::SeqCst);
    tokio::time::sleep(LEASE * 2).await;
    assert_eq!(referee.current().map(|(who, _)| who), Some("b".into()));
    let terms = referee.terms.lock().unwrap().clone();
    assert_eq!(terms, vec![("a".into(), 0), ("b".into(), 1)]);
}

#[test]
fn config_must_leave_room_between_renewal_and_expiry() {
    let bad = LeaderElectionConfig::new("ns", "l", "me").timing(RENEW, RENEW, RETRY);
    assert!(bad.validate().is_err());
    let bad = LeaderElectionConfig::new("ns", "l", "me").timing(LEASE, RETRY, RETRY);
    assert!(bad.validate().is_err());
    assert!(LeaderElectionConfig::new("ns", "l", "").validate().is_err());
    assert!(config("me").validate().is_ok());
}

/// Records which manager reconciled.
#[derive(Debug)]
struct Recording {
    identity: &'static str,
    log: Arc<Mutex<Vec<(&'static str, String)>>>,
}

#[async_trait::async_trait]
impl Controller for Recording {
    fn name(&self) -> &str {
        "recording"
    }
    fn watches(&self) -> Watches {
        Watches::primary(GroupKind::from_static("", "ConfigMap"))
    }
    async fn reconcile(
        &self,
        key: &ObjectKey,
        _ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        self.log
            .lock()
            .unwrap()
            .push((self.identity, key.name.clone()));
        Ok(Action::await_change())
    }
}

#[tokio::test(start_paused = true)]
async fn only_the_elected_manager_reconciles_and_a_standby_takes_over() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let log = Arc::new(Mutex::new(Vec::new()));
    let manager = |identity: &'static str| {
        let manager = ControllerManager::new()
            .with(Recording {
                identity,
                log: log.clone(),
            })
            .leader_election(config(identity));
        Orchestrator::builder()
            .store(store.clone())
            .controllers(manager)
            .build()
            .unwrap()
            .start()
    };
    let a = manager("a");
    let maps: Api<ConfigMap> = Api::namespaced(store.clone(), "default");
    maps.create(&serde_json::from_value(json!({"metadata": {"name": "one"}})).unwrap())
        .await
        .unwrap();
    eventually("a reconciles", || async {
        (!log.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    let b = manager("b");
    tokio::time::sleep(LEASE).await;
    maps.create(&serde_json::from_value(json!({"metadata": {"name": "two"}})).unwrap())
        .await
        .unwrap();
    eventually("a reconciles two", || async {
        log.lock()
            .unwrap()
            .contains(&("a", "two".into()))
            .then_some(())
    })
    .await;
    a.shutdown().await.unwrap();
    eventually_within("b takes over and resyncs", LEASE * 2, || async {
        log.lock()
            .unwrap()
            .contains(&("b", "one".into()))
            .then_some(())
    })
    .await;
    let log = log.lock().unwrap().clone();
    let first_b = log.iter().position(|(who, _)| *who == "b").unwrap();
    assert!(
        log[first_b..].iter().all(|(who, _)| *who == "b"),
        "a acted after b: {log:?}"
    );
    b.shutdown().await.unwrap();
}

/// A component that counts how many instances are running.
#[derive(Debug)]
struct Counted(Arc<AtomicU32>, Arc<AtomicU32>);

#[async_trait::async_trait]
impl kube_core::orchestrator::Component for Counted {
    fn name(&self) -> String {
        "counted".into()
    }
    async fn run(
        self: Box<Self>,
        ctx: kube_core::orchestrator::ComponentContext,
    ) -> Result<(), kube_core::orchestrator::BoxError> {
        let now = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        self.1.fetch_max(now, Ordering::SeqCst);
        ctx.shutdown.cancelled().await;
        self.0.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_leader_elected_component_runs_once_across_replicas() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let (running, peak) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let replica = |identity: &str| {
        let component = kube_ctrl::LeaderElected::new(
            Counted(running.clone(), peak.clone()),
            LeaderElectionConfig::new("kube-system", "scheduler", identity)
                .timing(LEASE, RENEW, RETRY),
        );
        Orchestrator::builder()
            .store(store.clone())
            .component(component)
            .build()
            .unwrap()
            .start()
    };
    let a = replica("a");
    let b = replica("b");
    eventually("one running", || async {
        (running.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    tokio::time::sleep(LEASE * 2).await;
    assert_eq!(peak.load(Ordering::SeqCst), 1, "two replicas ran at once");
    // Whichever leads shuts down; the other takes over.
    let lease: Lease = Api::namespaced(store.clone(), "kube-system")
        .get("scheduler")
        .await
        .unwrap();
    let (leader, standby) = if lease.spec.unwrap().holder_identity.as_deref() == Some("a") {
        (a, b)
    } else {
        (b, a)
    };
    leader.shutdown().await.unwrap();
    eventually_within("standby runs", LEASE, || async {
        (running.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    assert_eq!(peak.load(Ordering::SeqCst), 1);
    standby.shutdown().await.unwrap();
}
