//! The [`Store`] trait: the cluster's state and the one door to it.

use std::fmt;
use std::sync::Arc;

use futures::stream::BoxStream;

use crate::object::{DynamicObject, GroupKind, ObjectKey};
use crate::selector::{FieldSelector, Selector};

/// Errors from a [`Store`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No object of this kind has this key.
    #[error("{kind} {key} not found")]
    NotFound {
        /// Kind looked up.
        kind: GroupKind,
        /// Key looked up.
        key: ObjectKey,
    },
    /// Create of an object whose key is taken.
    #[error("{kind} {key} already exists")]
    AlreadyExists {
        /// Kind of the object.
        kind: GroupKind,
        /// Key of the object.
        key: ObjectKey,
    },
    /// An optimistic-concurrency or precondition check failed: re-read and retry.
    #[error("conflict on {kind} {key}: {message}")]
    Conflict {
        /// Kind of the object.
        kind: GroupKind,
        /// Key of the object.
        key: ObjectKey,
        /// Which check failed.
        message: String,
    },
    /// A watch asked for a revision older than the retained history: re-list, then watch from
    /// the list's revision.
    #[error("revision {requested} is too old (oldest retained is {oldest}); re-list")]
    TooOld {
        /// Revision the caller asked for.
        requested: u64,
        /// Oldest revision a watch can start from.
        oldest: u64,
    },
    /// The request itself is malformed (missing name, unknown kind, wrong scope, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The backend failed (I/O, network, ...).
    #[error("store backend error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl StoreError {
    /// Whether this is [`StoreError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Whether this is [`StoreError::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// Whether this is [`StoreError::AlreadyExists`].
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Self::AlreadyExists { .. })
    }
}

/// Filters for [`Store::list`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListOptions {
    /// Only objects whose labels match.
    pub label_selector: Option<Selector>,
    /// Only objects whose fields match.
    pub field_selector: Option<FieldSelector>,
    /// Return at most this many objects, and a continue token for the rest.
    pub limit: Option<usize>,
    /// Continue a paged list from where a previous page's token left off. Every page reflects
    /// the revision of the first page; a token older than the retained history is
    /// [`StoreError::TooOld`].
    pub continue_token: Option<String>,
}

impl ListOptions {
    /// Filters by labels.
    pub fn labels(mut self, selector: Selector) -> Self {
        self.label_selector = Some(selector);
        self
    }

    /// Filters by fields.
    pub fn fields(mut self, selector: FieldSelector) -> Self {
        self.field_selector = Some(selector);
        self
    }

    /// Pages the list: at most `limit` objects per call.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Continues a paged list.
    pub fn continue_from(mut self, token: impl Into<String>) -> Self {
        self.continue_token = Some(token.into());
        self
    }

    /// Whether `object` passes both selectors.
    pub fn matches(&self, object: &DynamicObject) -> bool {
        self.label_selector
            .as_ref()
            .is_none_or(|s| s.matches_object(object))
            && self
                .field_selector
                .as_ref()
                .is_none_or(|s| s.matches(object))
    }
}

/// Where and what a [`Store::watch`] delivers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatchOptions {
    /// Deliver every change after this revision (typically a list's revision). `None` starts at
    /// the current revision.
    pub resource_version: Option<u64>,
    /// Label and field filters. An object that stops matching is delivered as `Deleted`; one that
    /// starts matching as `Added`.
    pub filter: ListOptions,
    /// Ask for [`WatchEvent::Bookmark`]s: periodic progress markers carrying the revision the
    /// watch has reached even when no matching object changed.
    pub bookmarks: bool,
}

impl WatchOptions {
    /// Watch changes after `revision`.
    pub fn from_revision(revision: u64) -> Self {
        Self {
            resource_version: Some(revision),
            ..Self::default()
        }
    }

    /// Applies label and field filters.
    pub fn filter(mut self, filter: ListOptions) -> Self {
        self.filter = filter;
        self
    }

    /// Asks for bookmarks.
    pub fn bookmarks(mut self) -> Self {
        self.bookmarks = true;
        self
    }
}

/// The result of [`Store::list`]: the matching objects as of one revision. Items are owned
/// copies ([`DynamicObject`]) or, from [`Store::list_shared`], the store's own shared objects
/// ([`SharedList`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObjectList<T = DynamicObject> {
    /// Matching objects, ordered by namespace then name.
    pub items: Vec<T>,
    /// The store revision the list reflects; watch from it to see every later change.
    pub resource_version: u64,
    /// Set when the list was limited and more objects remain: pass it as
    /// [`ListOptions::continue_token`] to get the next page.
    pub continue_token: Option<String>,
}

impl<T> ObjectList<T> {
    /// A complete (unpaged) list.
    pub fn new(items: Vec<T>, resource_version: u64) -> Self {
        Self {
            items,
            resource_version,
            continue_token: None,
        }
    }

    /// The same list with each item converted.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> ObjectList<U> {
        ObjectList {
            items: self.items.into_iter().map(f).collect(),
            resource_version: self.resource_version,
            continue_token: self.continue_token,
        }
    }
}

/// A list of the store's own objects, shared rather than copied: what
/// [`Store::list_shared`] returns.
pub type SharedList = ObjectList<Arc<DynamicObject>>;

/// One change seen by a watch. Objects are shared (`Arc`): a store hands the same object to
/// every watcher instead of copying it per watcher.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent {
    /// The object was created (or started matching the watch's filter).
    Added(Arc<DynamicObject>),
    /// The object was updated.
    Modified(Arc<DynamicObject>),
    /// The object was deleted (or stopped matching); carries its last state, with the deletion's
    /// revision as `resourceVersion`.
    Deleted(Arc<DynamicObject>),
    /// Progress: every change up to this revision has been delivered.
    Bookmark {
        /// The revision reached.
        resource_version: u64,
    },
}

impl WatchEvent {
    /// The revision this event carries.
    pub fn revision(&self) -> Option<u64> {
        match self {
            Self::Added(o) | Self::Modified(o) | Self::Deleted(o) => o.revision(),
            Self::Bookmark { resource_version } => Some(*resource_version),
        }
    }
}

/// A stream of watch events; it ends with an error item (e.g. [`StoreError::TooOld`]) or when
/// the store closes it.
pub type WatchStream = BoxStream<'static, Result<WatchEvent, StoreError>>;

/// Preconditions for [`Store::delete`]: refuse unless the stored object still has this UID
/// and/or resourceVersion.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Preconditions {
    /// Required `metadata.uid`.
    pub uid: Option<String>,
    /// Required `metadata.resourceVersion`.
    pub resource_version: Option<String>,
}

impl Preconditions {
    /// Requires this UID.
    pub fn uid(uid: impl Into<String>) -> Self {
        Self {
            uid: Some(uid.into()),
            resource_version: None,
        }
    }
}

/// The cluster state: versioned objects with optimistic concurrency and watch.
///
/// Every write gets a new, strictly increasing store revision, written into the object's
/// `metadata.resourceVersion`. Implementations: `kube_store::MemStore` (in memory) and others;
/// any type implementing this trait can back the whole orchestrator.
///
/// ```
/// use std::sync::Arc;
/// use kube_core::store::Store;
///
/// // The trait is object-safe: components share one `Arc<dyn Store>`.
/// fn share(store: Arc<dyn Store>) -> (Arc<dyn Store>, Arc<dyn Store>) {
///     (store.clone(), store)
/// }
/// ```
#[async_trait::async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Reads one object.
    async fn get(&self, kind: &GroupKind, key: &ObjectKey) -> Result<DynamicObject, StoreError>;

    /// Reads one object without copying it: the store's own shared object where it keeps one
    /// (as the in-memory stores do). Read-only callers that serialize or inspect objects (an API
    /// server, a cache) use the `*_shared` methods to skip a deep copy per object. The default
    /// wraps [`Store::get`].
    async fn get_shared(
        &self,
        kind: &GroupKind,
        key: &ObjectKey,
    ) -> Result<Arc<DynamicObject>, StoreError> {
        self.get(kind, key).await.map(Arc::new)
    }

    /// Lists objects of a kind, in one namespace or all (`None`), as of one revision.
    async fn list(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<ObjectList, StoreError>;

    /// Like [`Store::list`], with the store's shared objects instead of copies: listing 100,000
    /// objects costs 100,000 reference-count increments, not 100,000 deep copies. The default
    /// wraps [`Store::list`].
    async fn list_shared(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &ListOptions,
    ) -> Result<SharedList, StoreError> {
        Ok(self.list(kind, namespace, options).await?.map(Arc::new))
    }

    /// Creates an object. The store assigns `uid`, `creationTimestamp`, `generation` and
    /// `resourceVersion`, and a name from `generateName` when `name` is empty. An object that
    /// already has a `resourceVersion` is [`StoreError::Invalid`].
    async fn create(&self, object: DynamicObject) -> Result<DynamicObject, StoreError>;

    /// Like [`Store::create`], returning the stored object shared instead of a copy. The
    /// default wraps [`Store::create`].
    async fn create_shared(&self, object: DynamicObject) -> Result<Arc<DynamicObject>, StoreError> {
        self.create(object).await.map(Arc::new)
    }

    /// Replaces an object. If the object carries a `resourceVersion` it must equal the stored one,
    /// else [`StoreError::Conflict`]. `uid` and `creationTimestamp` are kept; `generation` is
    /// incremented when `spec` changes.
    async fn update(&self, object: DynamicObject) -> Result<DynamicObject, StoreError>;

    /// Like [`Store::update`], returning the stored object shared instead of a copy. The
    /// default wraps [`Store::update`].
    async fn update_shared(&self, object: DynamicObject) -> Result<Arc<DynamicObject>, StoreError> {
        self.update(object).await.map(Arc::new)
    }

    /// Deletes an object, returning its last state.
    async fn delete(
        &self,
        kind: &GroupKind,
        key: &ObjectKey,
        preconditions: &Preconditions,
    ) -> Result<DynamicObject, StoreError>;

    /// Watches changes to a kind, in one namespace or all (`None`).
    async fn watch(
        &self,
        kind: &GroupKind,
        namespace: Option<&str>,
        options: &WatchOptions,
    ) -> Result<WatchStream, StoreError>;

    /// The latest revision of the store.
    async fn current_revision(&self) -> Result<u64, StoreError>;

    /// Discards history up to and including `revision`: watches and paged lists from before it
    /// get [`StoreError::TooOld`]. Stores without history management return
    /// [`StoreError::Invalid`].
    async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        let _ = revision;
        Err(StoreError::Invalid(
            "this store does not support compaction".into(),
        ))
    }
}
