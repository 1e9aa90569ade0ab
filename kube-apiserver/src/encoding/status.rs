//! Errors as Kubernetes `Status` objects: every failed request answers with one, carrying the
//! HTTP code and the `reason` clients switch on (`NotFound`, `AlreadyExists`, `Conflict`, ...).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kube_core::StoreError;
use serde_json::{Value, json};

/// One invalid field of a 422 `Invalid` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cause {
    /// Kubernetes' cause type, e.g. `FieldValueRequired`.
    pub(crate) reason: &'static str,
    /// Dotted field path, e.g. `spec.containers[0].image`.
    pub(crate) field: String,
    /// What is wrong, e.g. `Required value`.
    pub(crate) message: String,
}

impl Cause {
    pub(crate) fn required(field: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".into(),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, value: &str, why: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: \"{value}\": {}", why.into()),
        }
    }

    pub(crate) fn duplicate(field: impl Into<String>, value: &str) -> Self {
        Self {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: \"{value}\""),
        }
    }

    pub(crate) fn forbidden(field: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {}", why.into()),
        }
    }

    pub(crate) fn unknown_field(field: impl Into<String>) -> Self {
        let field = field.into();
        Self {
            reason: "FieldValueInvalid",
            message: format!("unknown field \"{field}\""),
            field,
        }
    }
}

/// A failed request: the `Status` the server answers with.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ApiError {
    pub(crate) code: StatusCode,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    pub(crate) details: Option<Value>,
    /// Seconds a client should wait before retrying (`Retry-After`).
    pub(crate) retry_after: Option<u64>,
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub(crate) fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    pub(crate) fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
    }

    pub(crate) fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got \"{content_type}\")"
            ),
        )
    }

    pub(crate) fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }

    /// 422 `Invalid` listing each invalid field, worded like Kubernetes:
    /// `Pod "web" is invalid: spec.containers[0].image: Required value`.
    pub(crate) fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> Self {
        let list = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect::<Vec<_>>();
        let list = if list.len() == 1 {
            list.join("")
        } else {
            format!("[{}]", list.join(", "))
        };
        let mut error = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {list}"),
        );
        error.details = Some(json!({
            "name": name,
            "group": group,
            "kind": kind,
            "causes": causes.iter().map(|c| json!({
                "reason": c.reason, "message": c.message, "field": c.field,
            })).collect::<Vec<_>>(),
        }));
        error
    }

    /// Maps a store error, naming the resource as Kubernetes does (`pods "web"`,
    /// `deployments.apps "web"`).
    pub(crate) fn from_store(error: StoreError, resource: &str, group: &str) -> Self {
        let qualified = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        let details = |name: &str| json!({"name": name, "group": group, "kind": resource});
        match error {
            StoreError::NotFound { key, .. } => {
                let mut e = Self::not_found(format!("{qualified} \"{}\" not found", key.name));
                e.details = Some(details(&key.name));
                e
            }
            StoreError::AlreadyExists { key, .. } => {
                let mut e = Self::new(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("{qualified} \"{}\" already exists", key.name),
                );
                e.details = Some(details(&key.name));
                e
            }
            StoreError::Conflict { key, message, .. } => {
                let mut e = Self::new(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on {qualified} \"{}\": the object has been modified; please apply your changes to the latest version and try again ({message})",
                        key.name
                    ),
                );
                e.details = Some(details(&key.name));
                e
            }
            StoreError::TooOld { requested, oldest } => Self::new(
                StatusCode::GONE,
                "Expired",
                format!("too old resource version: {requested} ({oldest})"),
            ),
            StoreError::Invalid(message) => Self::bad_request(message),
            other => {
                let source = std::error::Error::source(&other)
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                Self::internal(format!("{other}{source}"))
            }
        }
    }

    /// The `Status` object.
    pub(crate) fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.to_status().to_string();
        let mut response = (
            self.code,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            if let Ok(value) = seconds.to_string().parse() {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// A `Status` of success, as answered by some deletes.
pub(crate) fn success(details: Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
