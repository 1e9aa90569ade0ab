//! Why an admission plugin refused a write, and the answer Kubernetes gives for it.

use axum::http::StatusCode;
use kube_core::store::StoreError;
use serde_json::json;

use crate::encoding::status::ApiError;

/// Why a write was not admitted.
#[derive(Debug)]
pub(crate) enum Refused {
    /// A plugin forbids it (403, `<resource> "<name>" is forbidden: <why>`).
    Forbidden(String),
    /// The store failed while a plugin looked something up or recorded usage.
    Store(StoreError),
}

impl From<StoreError> for Refused {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl Refused {
    /// The API error for a refused write of the object `name` of resource `plural` in
    /// `group`, worded as Kubernetes' `admission.NewForbidden`.
    pub(crate) fn into_api_error(self, plural: &str, group: &str, name: &str) -> ApiError {
        match self {
            Self::Forbidden(why) => {
                let resource = if group.is_empty() {
                    plural.to_string()
                } else {
                    format!("{plural}.{group}")
                };
                let mut error = ApiError::new(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    format!("{resource} \"{name}\" is forbidden: {why}"),
                );
                error.details = Some(json!({"name": name, "group": group, "kind": plural}));
                error
            }
            Self::Store(e) => ApiError::from_store(e, plural, group),
        }
    }
}
