//! How one change looks to one watch: objects entering the watch's filter are `Added`, leaving
//! it `Deleted`. Shared by every backend.

use std::sync::Arc;

use kube_core::object::DynamicObject;
use kube_core::store::{ListOptions, WatchEvent};

/// A watch's scope: an optional namespace and label/field filters.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scope {
    pub(crate) namespace: Option<String>,
    pub(crate) filter: ListOptions,
}

impl Scope {
    pub(crate) fn selects(&self, object: &DynamicObject) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| object.metadata.namespace.as_deref() == Some(ns))
            && self.filter.matches(object)
    }

    /// The event this scope sees for a change from `before` to `after` at `revision`.
    pub(crate) fn event(
        &self,
        revision: u64,
        before: Option<&Arc<DynamicObject>>,
        after: Option<&Arc<DynamicObject>>,
    ) -> Option<WatchEvent> {
        let before = before.filter(|o| self.selects(o));
        let after = after.filter(|o| self.selects(o));
        match (before, after) {
            (None, Some(after)) => Some(WatchEvent::Added(after.clone())),
            (Some(_), Some(after)) => Some(WatchEvent::Modified(after.clone())),
            (Some(before), None) => {
                // The last state, stamped with the revision that removed it from view.
                let mut last = (**before).clone();
                last.metadata.resource_version = Some(revision.to_string());
                Some(WatchEvent::Deleted(Arc::new(last)))
            }
            (None, None) => None,
        }
    }
}
