//! The field selectors each kind supports, as Kubernetes' field label conversion functions
//! define them; any other field is a 400.

use kube_core::kind::KindInfo;
use kube_core::selector::{FieldRequirement, FieldSelector};

use crate::encoding::status::{ApiError, ApiResult};

/// The fields a kind with its own conversion function supports, or `None` for the default
/// (`metadata.name` and `metadata.namespace`).
fn supported(group: &str, kind: &str) -> Option<&'static [&'static str]> {
    Some(match (group, kind) {
        ("", "Pod") => &[
            "metadata.name",
            "metadata.namespace",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        ("", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "metadata.namespace",
            "metadata.name",
        ],
        ("", "Namespace") => &["status.phase", "metadata.name"],
        ("", "Node") => &["metadata.name", "spec.unschedulable"],
        ("", "ReplicationController") => {
            &["metadata.name", "metadata.namespace", "status.replicas"]
        }
        ("", "Secret") => &["type", "metadata.namespace", "metadata.name"],
        ("", "Service") => &[
            "metadata.namespace",
            "metadata.name",
            "spec.clusterIP",
            "spec.type",
        ],
        ("apps", "ReplicaSet") => &["metadata.name", "metadata.namespace", "status.replicas"],
        ("batch", "Job") => &["metadata.name", "metadata.namespace", "status.successful"],
        _ => return None,
    })
}

/// `selector` with every field checked (and `spec.host` on pods read as `spec.nodeName`, as
/// Kubernetes does for old clients); 400 in Kubernetes' words for a field the kind lacks.
pub(crate) fn check(info: &KindInfo, selector: FieldSelector) -> ApiResult<FieldSelector> {
    let fields = supported(&info.group, &info.kind);
    let mut checked = FieldSelector::default();
    for requirement in selector.requirements() {
        let mut requirement: FieldRequirement = requirement.clone();
        match fields {
            Some(_)
                if info.group.is_empty()
                    && info.kind == "Pod"
                    && requirement.path == "spec.host" =>
            {
                requirement.path = "spec.nodeName".into();
            }
            Some(fields) if !fields.contains(&requirement.path.as_str()) => {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {}",
                    requirement.path
                )));
            }
            None if !matches!(
                requirement.path.as_str(),
                "metadata.name" | "metadata.namespace"
            ) =>
            {
                return Err(ApiError::bad_request(format!(
                    "\"{}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
                    requirement.path
                )));
            }
            _ => {}
        }
        checked = checked.and(requirement);
    }
    Ok(checked)
}
