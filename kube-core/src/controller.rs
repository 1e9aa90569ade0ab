//! The [`Controller`] trait: reconcile one object at a time towards its desired state.

use std::sync::Arc;
use std::time::Duration;

use crate::informer::InformerFactory;
use crate::object::{DynamicObject, GroupKind, ObjectKey};
use crate::store::{Store, StoreError};

/// What a controller watches: its primary kind, and the kinds whose objects it owns (changes to
/// an owned object trigger a reconcile of its controlling owner).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watches {
    /// The kind whose keys are reconciled.
    pub primary: GroupKind,
    /// Kinds whose objects carry a controller owner reference to a primary object.
    pub owns: Vec<GroupKind>,
    /// Other kinds whose changes are mapped to primary keys by [`Controller::map_related`].
    pub related: Vec<GroupKind>,
}

impl Watches {
    /// Watches only the primary kind.
    pub fn primary(kind: GroupKind) -> Self {
        Self {
            primary: kind,
            owns: Vec::new(),
            related: Vec::new(),
        }
    }

    /// Also watches objects of `kind` owned by primary objects.
    pub fn owns(mut self, kind: GroupKind) -> Self {
        self.owns.push(kind);
        self
    }

    /// Also watches `kind`, mapped to primary keys by [`Controller::map_related`].
    pub fn related(mut self, kind: GroupKind) -> Self {
        self.related.push(kind);
        self
    }
}

/// What to do after a reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Nothing more until something changes.
    pub fn await_change() -> Self {
        Self {
            requeue_after: None,
        }
    }

    /// Reconcile again after `duration` even if nothing changes.
    pub fn requeue(duration: Duration) -> Self {
        Self {
            requeue_after: Some(duration),
        }
    }

    /// When to reconcile again unprompted, if at all.
    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// A store call failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The object is malformed in a way the controller cannot act on.
    #[error("invalid object: {0}")]
    Invalid(String),
    /// Any other failure.
    #[error("reconcile failed")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What a controller can reach while reconciling.
#[derive(Clone, Debug)]
pub struct ControllerContext {
    /// The cluster state.
    pub store: Arc<dyn Store>,
    /// Shared caches (already synced for the kinds in [`Controller::watches`]).
    pub informers: InformerFactory,
}

/// Reconciles objects of one kind: brings the world in line with one object's desired state.
///
/// A runner (`kube_ctrl::ControllerManager`) watches what [`Controller::watches`] names, turns
/// changes into keys on a work queue (duplicates coalesce; one worker per key at a time), and
/// calls [`Controller::reconcile`]. Reconcile must be idempotent: it is called again after
/// every change and after failures.
///
/// ```
/// use std::sync::Arc;
/// use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
/// use kube_core::object::{GroupKind, ObjectKey};
///
/// #[derive(Debug)]
/// struct Noop;
/// #[async_trait::async_trait]
/// impl Controller for Noop {
///     fn name(&self) -> &str { "noop" }
///     fn watches(&self) -> Watches { Watches::primary(GroupKind::from_static("", "ConfigMap")) }
///     async fn reconcile(&self, _key: &ObjectKey, _ctx: &ControllerContext) -> Result<Action, ReconcileError> {
///         Ok(Action::await_change())
///     }
/// }
/// let _object_safe: Arc<dyn Controller> = Arc::new(Noop);
/// ```
#[async_trait::async_trait]
pub trait Controller: Send + Sync + std::fmt::Debug {
    /// A short name for logs and metrics, e.g. `replicaset`.
    fn name(&self) -> &str;

    /// The kinds this controller watches.
    fn watches(&self) -> Watches;

    /// Brings the world in line with the object at `key` (which may no longer exist).
    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError>;

    /// Maps a change to an object of a [`Watches::related`] kind to the primary keys to reconcile.
    fn map_related(
        &self,
        _kind: &GroupKind,
        _object: &DynamicObject,
        _ctx: &ControllerContext,
    ) -> Vec<ObjectKey> {
        Vec::new()
    }

    /// Decides what to do after a failed reconcile; `failures` counts consecutive failures of
    /// this key. The default retries with exponential backoff from 5 ms up to 5 minutes.
    fn error_policy(&self, _key: &ObjectKey, _error: &ReconcileError, failures: u32) -> Action {
        Action::requeue(crate::workqueue::Backoff::default().delay(failures))
    }
}
