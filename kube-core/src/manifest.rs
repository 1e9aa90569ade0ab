//! Decoding manifests: multi-document YAML or JSON into dynamic or typed objects, with errors
//! that say which document and which field is wrong.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::kind::{FieldError, Registry};
use crate::object::DynamicObject;

/// Why a manifest could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("document {document}{}: {reason}", describe(.kind.as_deref(), .name.as_deref()))]
pub struct ManifestError {
    /// 1-based index of the failing document in the input.
    pub document: usize,
    /// The document's `kind`, when it could be read.
    pub kind: Option<String>,
    /// The document's `metadata.name`, when it could be read.
    pub name: Option<String>,
    /// What went wrong.
    pub reason: ManifestErrorReason,
}

fn describe(kind: Option<&str>, name: Option<&str>) -> String {
    match (kind, name) {
        (Some(k), Some(n)) => format!(" ({k} {n})"),
        (Some(k), None) => format!(" ({k})"),
        _ => String::new(),
    }
}

/// The reason part of a [`ManifestError`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestErrorReason {
    /// Not valid YAML/JSON syntax.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// The document is not a mapping.
    #[error("expected a mapping with apiVersion and kind")]
    NotAnObject,
    /// `apiVersion` or `kind` is missing.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// The kind is not registered.
    #[error("unknown kind {kind} in {api_version}")]
    UnknownKind {
        /// The document's `apiVersion`.
        api_version: String,
        /// The document's `kind`.
        kind: String,
    },
    /// A field has the wrong type or value.
    #[error("{0}")]
    Field(FieldError),
}

/// Decodes every document into a [`DynamicObject`], checking each against its kind's typed form
/// in `registry`. `kind: List` documents are expanded into their items; empty documents are skipped.
pub fn decode(input: &str, registry: &Registry) -> Result<Vec<DynamicObject>, ManifestError> {
    let mut objects = Vec::new();
    for (index, value) in documents(input)?.into_iter().enumerate() {
        let document = index + 1;
        let fail = |value: &Value, reason| ManifestError {
            document,
            kind: value
                .get("kind")
                .and_then(Value::as_str)
                .map(str::to_string),
            name: value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .map(str::to_string),
            reason,
        };
        if value.is_null() {
            continue;
        }
        let items = if value.get("kind").and_then(Value::as_str) == Some("List") {
            match value.get("items") {
                Some(Value::Array(items)) => items.clone(),
                _ => return Err(fail(&value, ManifestErrorReason::MissingField("items"))),
            }
        } else {
            vec![value]
        };
        for value in items {
            objects.push(decode_one(value, registry).map_err(|r| fail(&r.0, r.1))?);
        }
    }
    Ok(objects)
}

fn decode_one(
    value: Value,
    registry: &Registry,
) -> Result<DynamicObject, (Value, ManifestErrorReason)> {
    let Some(map) = value.as_object() else {
        return Err((value, ManifestErrorReason::NotAnObject));
    };
    let Some(api_version) = map.get("apiVersion").and_then(Value::as_str) else {
        return Err((value, ManifestErrorReason::MissingField("apiVersion")));
    };
    let Some(kind) = map.get("kind").and_then(Value::as_str) else {
        return Err((value, ManifestErrorReason::MissingField("kind")));
    };
    let gk = crate::object::GroupKind::from_api_version(api_version, kind);
    let info = match registry.get(&gk) {
        Some(info) if info.api_version() == api_version => info,
        _ => {
            let reason = ManifestErrorReason::UnknownKind {
                api_version: api_version.to_string(),
                kind: kind.to_string(),
            };
            return Err((value, reason));
        }
    };
    match serde_path_to_error::deserialize::<_, DynamicObject>(&value) {
        Ok(object) => match info.validator.map_or(Ok(()), |validate| validate(&object)) {
            Ok(()) => Ok(object),
            Err(e) => Err((value, ManifestErrorReason::Field(e))),
        },
        Err(e) => {
            let reason = ManifestErrorReason::Field(FieldError {
                path: e.path().to_string(),
                message: e.inner().to_string(),
            });
            Err((value, reason))
        }
    }
}

/// Decodes every document as the typed kind `K` (e.g. a file of Pods).
pub fn decode_typed<K>(input: &str) -> Result<Vec<K>, ManifestError>
where
    K: k8s_openapi::Resource + DeserializeOwned,
{
    let mut out = Vec::new();
    for (index, value) in documents(input)?.into_iter().enumerate() {
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .map(str::to_string);
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_string);
        let fail = |reason| ManifestError {
            document: index + 1,
            kind: kind.clone(),
            name: name.clone(),
            reason,
        };
        if kind.as_deref() != Some(K::KIND)
            || value.get("apiVersion").and_then(Value::as_str) != Some(K::API_VERSION)
        {
            return Err(fail(ManifestErrorReason::UnknownKind {
                api_version: value
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                kind: format!(
                    "{} (expected {} {})",
                    kind.as_deref().unwrap_or(""),
                    K::API_VERSION,
                    K::KIND
                ),
            }));
        }
        let typed = serde_path_to_error::deserialize::<_, K>(&value).map_err(|e| {
            fail(ManifestErrorReason::Field(FieldError {
                path: e.path().to_string(),
                message: e.inner().to_string(),
            }))
        })?;
        out.push(typed);
    }
    Ok(out)
}

/// Splits the input into documents: a JSON value (object or array of objects), or YAML
/// documents separated by `---`.
fn documents(input: &str) -> Result<Vec<Value>, ManifestError> {
    let trimmed = input.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let mut out = Vec::new();
        for (i, value) in serde_json::Deserializer::from_str(input)
            .into_iter::<Value>()
            .enumerate()
        {
            match value {
                Ok(Value::Array(items)) => out.extend(items),
                Ok(v) => out.push(v),
                Err(e) => return Err(syntax(i + 1, e.to_string())),
            }
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(input).enumerate() {
        match Value::deserialize(doc) {
            Ok(v) => out.push(v),
            Err(e) => return Err(syntax(i + 1, e.to_string())),
        }
    }
    Ok(out)
}

fn syntax(document: usize, message: String) -> ManifestError {
    ManifestError {
        document,
        kind: None,
        name: None,
        reason: ManifestErrorReason::Syntax(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;

    const GOOD: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: busybox, command: [sleep, "30"]}]}
---
"#;

    #[test]
    fn multi_document_yaml_decodes() {
        let objects = decode(GOOD, Registry::builtin()).unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[1].kind, "ReplicaSet");
        let rs: Vec<ReplicaSet> = decode_typed(GOOD.split("---").nth(1).unwrap()).unwrap();
        assert_eq!(rs[0].spec.as_ref().unwrap().replicas, Some(2));
    }

    #[test]
    fn json_list_decodes() {
        let json = r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v"}}]}"#;
        let objects = decode(json, Registry::builtin()).unwrap();
        assert_eq!(objects[0].data["data"]["k"], "v");
    }

    #[test]
    fn errors_name_document_and_field() {
        let bad = GOOD.replace("replicas: 2", "replicas: two");
        let err = decode(&bad, Registry::builtin()).unwrap_err();
        assert_eq!(err.document, 2);
        assert_eq!(err.kind.as_deref(), Some("ReplicaSet"));
        match &err.reason {
            ManifestErrorReason::Field(f) => assert_eq!(f.path, "spec.replicas"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("document 2 (ReplicaSet web): field `spec.replicas`"),
            "{err}"
        );

        let err = decode("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, ports: [{containerPort: x}]}]}", Registry::builtin()).unwrap_err();
        assert!(
            matches!(&err.reason, ManifestErrorReason::Field(f) if f.path == "spec.containers[0].ports[0].containerPort"),
            "{err}"
        );

        let err = decode("kind: Pod\n", Registry::builtin()).unwrap_err();
        assert_eq!(err.reason, ManifestErrorReason::MissingField("apiVersion"));
        let err = decode("a: [1\n", Registry::builtin()).unwrap_err();
        assert!(matches!(err.reason, ManifestErrorReason::Syntax(_)));
        let err = decode(
            "apiVersion: example.com/v1\nkind: Widget\n",
            Registry::builtin(),
        )
        .unwrap_err();
        assert!(matches!(
            err.reason,
            ManifestErrorReason::UnknownKind { .. }
        ));
        let err = decode("apiVersion: v1\nkind: Pod\n---\n- 1\n", Registry::builtin()).unwrap_err();
        assert_eq!(
            (err.document, err.reason),
            (2, ManifestErrorReason::NotAnObject)
        );
    }
}
