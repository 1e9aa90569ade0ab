//! Registry semantics: the verbs (get, list, create, update, patch, delete, the
//! subresources) with Kubernetes' object semantics on top of the store, and PATCH bodies.

pub(crate) mod field_selectors;
pub(crate) mod handlers;
pub(crate) mod patch;
