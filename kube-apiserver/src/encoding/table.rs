//! `Table` responses (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`): the columns
//! kubectl prints for each kind, computed by the server as Kubernetes' printers do.

use std::time::{Duration, SystemTime};

use kube_core::object::DynamicObject;
use serde_json::{Value, json};

/// Which object each row carries (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub(crate) fn parse(value: Option<&str>) -> Self {
        match value {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// Whether an `Accept` header asks for a Table.
pub(crate) fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
}

fn column(name: &str, kind: &str, priority: u32, description: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": kind, "format": format, "description": description, "priority": priority})
}

/// Column definitions for a kind.
pub(crate) fn columns(kind: &str) -> Vec<Value> {
    let name = column(
        "Name",
        "string",
        0,
        "Name must be unique within a namespace.",
    );
    let age = column("Age", "string", 0, "Time since the object was created.");
    let s = |n: &str, p: u32| column(n, "string", p, "");
    let i = |n: &str, p: u32| column(n, "integer", p, "");
    match kind {
        "Pod" => vec![
            name,
            s("Ready", 0),
            s("Status", 0),
            s("Restarts", 0),
            age,
            s("IP", 1),
            s("Node", 1),
            s("Nominated Node", 1),
            s("Readiness Gates", 1),
        ],
        "Deployment" => vec![
            name,
            s("Ready", 0),
            i("Up-to-date", 0),
            i("Available", 0),
            age,
            s("Containers", 1),
            s("Images", 1),
            s("Selector", 1),
        ],
        "ReplicaSet" => vec![
            name,
            i("Desired", 0),
            i("Current", 0),
            i("Ready", 0),
            age,
            s("Containers", 1),
            s("Images", 1),
            s("Selector", 1),
        ],
        "ReplicationController" => vec![
            name,
            i("Desired", 0),
            i("Current", 0),
            i("Ready", 0),
            age,
            s("Containers", 1),
            s("Images", 1),
            s("Selector", 1),
        ],
        "CronJob" => vec![
            name,
            s("Schedule", 0),
            s("Timezone", 0),
            s("Suspend", 0),
            i("Active", 0),
            s("Last Schedule", 0),
            age,
            s("Containers", 1),
            s("Images", 1),
            s("Selector", 1),
        ],
        "PodTemplate" => vec![name, s("Containers", 0), s("Images", 0), s("Pod Labels", 0)],
        "StatefulSet" => vec![name, s("Ready", 0), age, s("Containers", 1), s("Images", 1)],
        "ControllerRevision" => vec![name, s("Controller", 0), i("Revision", 0), age],
        "DaemonSet" => vec![
            name,
            i("Desired", 0),
            i("Current", 0),
            i("Ready", 0),
            i("Up-to-date", 0),
            i("Available", 0),
            s("Node Selector", 0),
            age,
        ],
        "Service" => vec![
            name,
            s("Type", 0),
            s("Cluster-IP", 0),
            s("External-IP", 0),
            s("Port(s)", 0),
            age,
            s("Selector", 1),
        ],
        "Node" => vec![
            name,
            s("Status", 0),
            s("Roles", 0),
            age,
            s("Version", 0),
            s("Internal-IP", 1),
            s("External-IP", 1),
            s("OS-Image", 1),
            s("Kernel-Version", 1),
            s("Container-Runtime", 1),
        ],
        "Namespace" => vec![name, s("Status", 0), age],
        "PriorityClass" => vec![
            name,
            i("Value", 0),
            column("Global-Default", "boolean", 0, ""),
            age,
            s("PreemptionPolicy", 0),
        ],
        "ResourceQuota" => vec![name, age, s("Request", 0), s("Limit", 0)],
        "LimitRange" => vec![name, column("Created At", "date", 0, "")],
        "PodDisruptionBudget" => vec![
            name,
            s("Min Available", 0),
            s("Max Unavailable", 0),
            i("Allowed Disruptions", 0),
            age,
        ],
        "NetworkPolicy" => vec![
            name,
            column(
                "Pod-Selector",
                "string",
                0,
                "Selects the pods to which this NetworkPolicy object applies.",
            ),
            age,
        ],
        "Job" => vec![
            name,
            s("Status", 0),
            s("Completions", 0),
            s("Duration", 0),
            age,
        ],
        "PersistentVolume" => vec![
            name,
            s("Capacity", 0),
            s("Access Modes", 0),
            s("Reclaim Policy", 0),
            s("Status", 0),
            s("Claim", 0),
            s("StorageClass", 0),
            s("VolumeAttributesClass", 0),
            s("Reason", 0),
            age,
            s("VolumeMode", 1),
        ],
        "PersistentVolumeClaim" => vec![
            name,
            s("Status", 0),
            s("Volume", 0),
            s("Capacity", 0),
            s("Access Modes", 0),
            s("StorageClass", 0),
            s("VolumeAttributesClass", 0),
            age,
            s("VolumeMode", 1),
        ],
        "StorageClass" => vec![
            name,
            s("Provisioner", 0),
            s("ReclaimPolicy", 0),
            s("VolumeBindingMode", 0),
            column("AllowVolumeExpansion", "boolean", 0, ""),
            age,
        ],
        "Event" => vec![
            s("Last Seen", 0),
            s("Type", 0),
            s("Reason", 0),
            s("Object", 0),
            s("Message", 0),
        ],
        _ => vec![name, age],
    }
}

/// Access modes as kubectl abbreviates them (`RWO,ROX,RWX,RWOP`).
fn access_modes(modes: &Value) -> String {
    let short = |m: &str| match m {
        "ReadWriteOnce" => "RWO".to_string(),
        "ReadOnlyMany" => "ROX".to_string(),
        "ReadWriteMany" => "RWX".to_string(),
        "ReadWriteOncePod" => "RWOP".to_string(),
        other => other.to_string(),
    };
    modes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(short)
        .collect::<Vec<_>>()
        .join(",")
}

/// kubectl's `<unset>` for an empty optional name.
fn unset(value: String) -> String {
    if value.is_empty() {
        "<unset>".into()
    } else {
        value
    }
}

/// A ResourceQuota's REQUEST and LIMIT columns: `name: used/hard` for each limited resource
/// in name order, `limits.*` in the second.
fn quota_columns(object: &DynamicObject) -> (String, String) {
    let status = object.data.get("status");
    let hard = kube_core::quota::parse_list(status.and_then(|s| s.get("hard")));
    let used = kube_core::quota::parse_list(status.and_then(|s| s.get("used")));
    let (mut request, mut limit) = (Vec::new(), Vec::new());
    for (name, amount) in &hard {
        let shown = used
            .get(name)
            .map_or_else(|| "0".to_string(), ToString::to_string);
        let cell = format!("{name}: {shown}/{amount}");
        if name.starts_with("limits.") {
            limit.push(cell);
        } else {
            request.push(cell);
        }
    }
    (request.join(", "), limit.join(", "))
}

/// One row's cells.
fn cells(object: &DynamicObject, now: SystemTime) -> Vec<Value> {
    let name = json!(object.metadata.name.clone().unwrap_or_default());
    let age = json!(age(object, now));
    let get = |path: &str| object.field(path).unwrap_or(Value::Null);
    let int = |path: &str| json!(get(path).as_i64().unwrap_or(0));
    let text = |path: &str| get(path).as_str().unwrap_or_default().to_string();
    match object.kind.as_str() {
        "Pod" => {
            let (ready, total, restarts) = container_counts(object);
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(pod_status(object)),
                json!(restarts),
                age,
                json!(or_none(text("status.podIP"))),
                json!(or_none(text("spec.nodeName"))),
                json!(or_none(text("status.nominatedNodeName"))),
                json!("<none>"),
            ]
        }
        "Deployment" => vec![
            name,
            json!(format!(
                "{}/{}",
                get("status.readyReplicas").as_i64().unwrap_or(0),
                get("spec.replicas").as_i64().unwrap_or(0)
            )),
            int("status.updatedReplicas"),
            int("status.availableReplicas"),
            age,
            json!(template_field(object, "name")),
            json!(template_field(object, "image")),
            json!(selector(object)),
        ],
        "ReplicaSet" => vec![
            name,
            int("spec.replicas"),
            int("status.replicas"),
            int("status.readyReplicas"),
            age,
            json!(template_field(object, "name")),
            json!(template_field(object, "image")),
            json!(selector(object)),
        ],
        "ReplicationController" => vec![
            name,
            int("spec.replicas"),
            int("status.replicas"),
            int("status.readyReplicas"),
            age,
            json!(containers_at(
                object,
                "spec.template.spec.containers",
                "name"
            )),
            json!(containers_at(
                object,
                "spec.template.spec.containers",
                "image"
            )),
            json!(map_text(&get("spec.selector"))),
        ],
        "CronJob" => {
            let containers = "spec.jobTemplate.spec.template.spec.containers";
            let last = object.field("status.lastScheduleTime").and_then(|t| {
                t.as_str()
                    .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
            });
            let last = last.map_or_else(
                || "<none>".to_string(),
                |t| {
                    let secs = u64::try_from(t.as_second()).unwrap_or(0);
                    let then = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
                    human_duration(now.duration_since(then).unwrap_or_default())
                },
            );
            let suspend = get("spec.suspend").as_bool() == Some(true);
            vec![
                name,
                json!(text("spec.schedule")),
                json!(or_none(text("spec.timeZone"))),
                json!(if suspend { "True" } else { "False" }),
                json!(get("status.active").as_array().map_or(0, Vec::len)),
                json!(last),
                age,
                json!(containers_at(object, containers, "name")),
                json!(containers_at(object, containers, "image")),
                json!(map_text(&get("spec.jobTemplate.spec.selector.matchLabels"))),
            ]
        }
        "PodTemplate" => vec![
            name,
            json!(containers_at(object, "template.spec.containers", "name")),
            json!(containers_at(object, "template.spec.containers", "image")),
            json!(map_text(&get("template.metadata.labels"))),
        ],
        "StatefulSet" => vec![
            name,
            json!(format!(
                "{}/{}",
                get("status.readyReplicas").as_i64().unwrap_or(0),
                get("spec.replicas").as_i64().unwrap_or(0)
            )),
            age,
            json!(template_field(object, "name")),
            json!(template_field(object, "image")),
        ],
        "ControllerRevision" => vec![
            name,
            // As Kubernetes prints it: `<kind>.<group>/<name>`, lower case.
            json!(object.controller_ref().map_or_else(
                || "<none>".to_string(),
                |owner| {
                    let kind = kube_core::object::GroupKind::from_api_version(
                        &owner.api_version,
                        &owner.kind,
                    );
                    let kind = if kind.group.is_empty() {
                        kind.kind.to_string()
                    } else {
                        format!("{}.{}", kind.kind, kind.group)
                    };
                    format!("{}/{}", kind.to_lowercase(), owner.name)
                },
            )),
            int("revision"),
            age,
        ],
        "DaemonSet" => vec![
            name,
            int("status.desiredNumberScheduled"),
            int("status.currentNumberScheduled"),
            int("status.numberReady"),
            int("status.updatedNumberScheduled"),
            int("status.numberAvailable"),
            json!(map_text(&get("spec.template.spec.nodeSelector"))),
            age,
        ],
        "Service" => {
            let ports = get("spec.ports")
                .as_array()
                .map(|ports| {
                    ports
                        .iter()
                        .map(|p| {
                            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                            match p.get("nodePort").and_then(Value::as_i64) {
                                Some(node) => format!("{port}:{node}/{proto}"),
                                None => format!("{port}/{proto}"),
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            vec![
                name,
                json!(text("spec.type")),
                json!(or_none(text("spec.clusterIP"))),
                json!("<none>"),
                json!(or_none(ports)),
                age,
                json!(map_text(&get("spec.selector"))),
            ]
        }
        "Node" => {
            let ready = get("status.conditions")
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .map(|c| c["status"] == "True");
            let mut status = match ready {
                Some(true) => "Ready".to_string(),
                _ => "NotReady".to_string(),
            };
            if get("spec.unschedulable").as_bool() == Some(true) {
                status.push_str(",SchedulingDisabled");
            }
            let address = |kind: &str| {
                get("status.addresses")
                    .as_array()
                    .and_then(|a| a.iter().find(|a| a["type"] == kind))
                    .and_then(|a| a["address"].as_str())
                    .unwrap_or("<none>")
                    .to_string()
            };
            vec![
                name,
                json!(status),
                json!("<none>"),
                age,
                json!(text("status.nodeInfo.kubeletVersion")),
                json!(address("InternalIP")),
                json!(address("ExternalIP")),
                json!(or_none(text("status.nodeInfo.osImage"))),
                json!(or_none(text("status.nodeInfo.kernelVersion"))),
                json!(or_none(text("status.nodeInfo.containerRuntimeVersion"))),
            ]
        }
        "Namespace" => vec![name, json!(text("status.phase")), age],
        "PriorityClass" => vec![
            name,
            int("value"),
            json!(get("globalDefault").as_bool().unwrap_or(false)),
            age,
            json!(text("preemptionPolicy")),
        ],
        "ResourceQuota" => {
            let (request, limit) = quota_columns(object);
            vec![name, age, json!(request), json!(limit)]
        }
        "LimitRange" => vec![name, get("metadata.creationTimestamp")],
        "PodDisruptionBudget" => {
            let or_na = |path: &str| match get(path) {
                Value::Null => "N/A".to_string(),
                Value::String(s) => s,
                other => other.to_string(),
            };
            vec![
                name,
                json!(or_na("spec.minAvailable")),
                json!(or_na("spec.maxUnavailable")),
                int("status.disruptionsAllowed"),
                age,
            ]
        }
        "NetworkPolicy" => vec![
            name,
            json!(format_label_selector(&get("spec.podSelector"))),
            age,
        ],
        "Job" => {
            let conditions = get("status.conditions");
            let has = |t: &str| {
                conditions
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == t && c["status"] == "True"))
            };
            let status = if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else if has("Suspended") {
                "Suspended"
            } else {
                "Running"
            };
            vec![
                name,
                json!(status),
                json!(format!(
                    "{}/{}",
                    get("status.succeeded").as_i64().unwrap_or(0),
                    get("spec.completions").as_i64().unwrap_or(1)
                )),
                json!(""),
                age,
            ]
        }
        "PersistentVolume" => {
            let claim = match (text("spec.claimRef.namespace"), text("spec.claimRef.name")) {
                (_, n) if n.is_empty() => String::new(),
                (ns, n) => format!("{ns}/{n}"),
            };
            vec![
                name,
                json!(text("spec.capacity.storage")),
                json!(access_modes(&get("spec.accessModes"))),
                json!(text("spec.persistentVolumeReclaimPolicy")),
                json!(text("status.phase")),
                json!(claim),
                json!(text("spec.storageClassName")),
                json!(unset(text("spec.volumeAttributesClassName"))),
                json!(text("status.reason")),
                age,
                json!(text("spec.volumeMode")),
            ]
        }
        "PersistentVolumeClaim" => {
            let bound = text("status.phase") == "Bound";
            let (capacity, modes) = if bound {
                (
                    text("status.capacity.storage"),
                    access_modes(&get("status.accessModes")),
                )
            } else {
                (String::new(), String::new())
            };
            vec![
                name,
                json!(text("status.phase")),
                json!(text("spec.volumeName")),
                json!(capacity),
                json!(modes),
                json!(text("spec.storageClassName")),
                json!(unset(text("spec.volumeAttributesClassName"))),
                age,
                json!(text("spec.volumeMode")),
            ]
        }
        "StorageClass" => {
            let default = object
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("storageclass.kubernetes.io/is-default-class"))
                .is_some_and(|v| v == "true");
            let shown = object.metadata.name.clone().unwrap_or_default();
            let shown = if default {
                format!("{shown} (default)")
            } else {
                shown
            };
            let or = |path: &str, fallback: &str| {
                let v = text(path);
                if v.is_empty() {
                    fallback.to_string()
                } else {
                    v
                }
            };
            vec![
                json!(shown),
                json!(text("provisioner")),
                json!(or("reclaimPolicy", "Delete")),
                json!(or("volumeBindingMode", "Immediate")),
                json!(get("allowVolumeExpansion").as_bool().unwrap_or(false)),
                age,
            ]
        }
        "Event" => vec![
            json!(age),
            json!(text("type")),
            json!(text("reason")),
            json!(format!(
                "{}/{}",
                text("involvedObject.kind").to_ascii_lowercase(),
                text("involvedObject.name")
            )),
            json!(text("message")),
        ],
        _ => vec![name, age],
    }
}

fn or_none(value: String) -> String {
    if value.is_empty() {
        "<none>".into()
    } else {
        value
    }
}

fn map_text(value: &Value) -> String {
    match value.as_object() {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

fn selector(object: &DynamicObject) -> String {
    map_text(
        &object
            .field("spec.selector.matchLabels")
            .unwrap_or(Value::Null),
    )
}

/// A label selector as Kubernetes' `FormatLabelSelector` prints it: requirements sorted by
/// key, set values sorted, `<none>` when empty, `<error>` when it is not a valid selector.
fn format_label_selector(selector: &Value) -> String {
    use kube_core::selector::{Operator, Selector};
    let parsed = serde_json::from_value(selector.clone())
        .ok()
        .and_then(|s| Selector::from_label_selector(&s).ok());
    let Some(parsed) = parsed else {
        return if selector.is_null() {
            "<none>".into()
        } else {
            "<error>".into()
        };
    };
    let mut requirements = parsed.requirements().to_vec();
    for requirement in &mut requirements {
        if let Operator::In(values) | Operator::NotIn(values) = &mut requirement.operator {
            values.sort();
            values.dedup();
        }
    }
    requirements.sort_by(|a, b| a.key.cmp(&b.key));
    let text = Selector::from_requirements(requirements).to_string();
    if text.is_empty() {
        "<none>".into()
    } else {
        text
    }
}

fn template_field(object: &DynamicObject, field: &str) -> String {
    containers_at(object, "spec.template.spec.containers", field)
}

/// One field of each container in the list at `path`, comma-separated.
fn containers_at(object: &DynamicObject, path: &str, field: &str) -> String {
    object
        .field(path)
        .and_then(|c| c.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.get(field).and_then(Value::as_str).map(str::to_string))
        .collect::<Vec<_>>()
        .join(",")
}

fn container_counts(pod: &DynamicObject) -> (usize, usize, i64) {
    let total = pod
        .field("spec.containers")
        .and_then(|c| c.as_array().map(Vec::len))
        .unwrap_or(0);
    let statuses = pod
        .field("status.containerStatuses")
        .and_then(|c| c.as_array().cloned())
        .unwrap_or_default();
    let ready = statuses.iter().filter(|s| s["ready"] == true).count();
    let restarts = statuses
        .iter()
        .map(|s| s["restartCount"].as_i64().unwrap_or(0))
        .sum();
    (ready, total, restarts)
}

/// The STATUS column as kubectl's pod printer computes it.
fn pod_status(pod: &DynamicObject) -> String {
    let mut reason = pod
        .field("status.reason")
        .and_then(|r| r.as_str().map(str::to_string))
        .or_else(|| {
            pod.field("status.phase")
                .and_then(|p| p.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| "Pending".into());
    let init_statuses = pod
        .field("status.initContainerStatuses")
        .and_then(|c| c.as_array().cloned())
        .unwrap_or_default();
    let init_total = pod
        .field("spec.initContainers")
        .and_then(|c| c.as_array().map(Vec::len))
        .unwrap_or(0);
    let mut initializing = false;
    for (i, status) in init_statuses.iter().enumerate() {
        let state = &status["state"];
        if state["terminated"]["exitCode"] == 0 && state["terminated"].is_object() {
            continue;
        }
        initializing = true;
        reason = if let Some(r) = state["terminated"]["reason"].as_str() {
            format!("Init:{r}")
        } else if let Some(r) = state["waiting"]["reason"]
            .as_str()
            .filter(|r| *r != "PodInitializing")
        {
            format!("Init:{r}")
        } else {
            format!("Init:{i}/{init_total}")
        };
        break;
    }
    if !initializing {
        let statuses = pod
            .field("status.containerStatuses")
            .and_then(|c| c.as_array().cloned())
            .unwrap_or_default();
        let mut running = false;
        for status in statuses.iter().rev() {
            let state = &status["state"];
            if let Some(r) = state["waiting"]["reason"].as_str() {
                reason = r.to_string();
            } else if let Some(r) = state["terminated"]["reason"].as_str() {
                reason = r.to_string();
            } else if state["terminated"].is_object() {
                reason = match state["terminated"]["signal"].as_i64() {
                    Some(signal) if signal != 0 => format!("Signal:{signal}"),
                    _ => format!("ExitCode:{}", state["terminated"]["exitCode"]),
                };
            } else if state["running"].is_object() && status["ready"] == true {
                running = true;
            }
        }
        if reason == "Completed" && running {
            reason = "Running".into();
        }
    }
    if pod.metadata.deletion_timestamp.is_some() {
        reason = if pod
            .field("status.reason")
            .and_then(|r| r.as_str().map(str::to_string))
            .as_deref()
            == Some("NodeLost")
        {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    reason
}

fn age(object: &DynamicObject, now: SystemTime) -> String {
    let field = if object.kind == "Event" {
        object
            .field("lastTimestamp")
            .and_then(|t| t.as_str().map(str::to_string))
            .or_else(|| {
                object
                    .field("eventTime")
                    .and_then(|t| t.as_str().map(str::to_string))
            })
    } else {
        None
    };
    let created = field
        .or_else(|| {
            object
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
        })
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    match created {
        Some(created) => {
            let created = SystemTime::UNIX_EPOCH
                + Duration::from_secs(u64::try_from(created.as_second()).unwrap_or(0));
            human_duration(now.duration_since(created).unwrap_or_default())
        }
        None => "<unknown>".into(),
    }
}

/// Kubernetes' `HumanDuration`: `45s`, `3m20s`, `4h`, `2d3h`, `400d`.
pub(crate) fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (m, h, days) = (s / 60, s / 3600, s / 86_400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        let rest = s % 60;
        if rest == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{rest}s")
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        let rest = m % 60;
        if rest == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{rest}m")
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        let rest = h % 24;
        if rest == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{rest}h")
        }
    } else if days < 365 * 2 {
        format!("{days}d")
    } else {
        format!("{}y", days / 365)
    }
}

fn row(object: &DynamicObject, include: IncludeObject, now: SystemTime) -> Value {
    let mut row = json!({"cells": cells(object, now)});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": object.metadata,
            });
        }
        IncludeObject::Object => {
            row["object"] = serde_json::to_value(object).unwrap_or(Value::Null);
        }
    }
    row
}

/// A Table of `objects`.
pub(crate) fn table<O: std::borrow::Borrow<DynamicObject>>(
    kind: &str,
    objects: &[O],
    resource_version: Option<String>,
    continue_token: Option<String>,
    include: IncludeObject,
    with_columns: bool,
) -> Value {
    let now = SystemTime::now();
    let mut metadata = json!({});
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    let mut table = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "rows": objects.iter().map(|o| row(o.borrow(), include, now)).collect::<Vec<_>>(),
    });
    if with_columns {
        table["columnDefinitions"] = json!(columns(kind));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_read_like_kubectl() {
        assert_eq!(human_duration(Duration::from_secs(45)), "45s");
        assert_eq!(human_duration(Duration::from_secs(200)), "3m20s");
        assert_eq!(human_duration(Duration::from_secs(4 * 3600)), "4h");
        assert_eq!(human_duration(Duration::from_secs(51 * 3600)), "2d3h");
    }

    #[test]
    fn pod_rows_show_ready_status_and_node() {
        let pod: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"nodeName": "n1", "containers": [{"name": "a", "image": "x"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}}]},
        }))
        .unwrap();
        let table = table(
            "Pod",
            &[pod],
            Some("5".into()),
            None,
            IncludeObject::Metadata,
            true,
        );
        let cells = &table["rows"][0]["cells"];
        assert_eq!(cells[0], "web");
        assert_eq!(cells[1], "1/1");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], 2);
        assert_eq!(cells[5], "10.0.0.5");
        assert_eq!(cells[6], "n1");
        assert_eq!(table["rows"][0]["object"]["metadata"]["name"], "web");
    }

    #[test]
    fn replication_controller_and_cron_job_rows_read_like_kubectl() {
        let rc: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "web"},
            "spec": {"replicas": 3, "selector": {"app": "web"},
                "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
            "status": {"replicas": 2, "readyReplicas": 1},
        }))
        .unwrap();
        let t = table(
            "ReplicationController",
            &[rc],
            None,
            None,
            IncludeObject::None,
            true,
        );
        let names: Vec<_> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["priority"] == 0)
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["Name", "Desired", "Current", "Ready", "Age"]);
        let cells = t["rows"][0]["cells"].as_array().unwrap();
        assert_eq!(cells[..4], [json!("web"), json!(3), json!(2), json!(1)]);
        assert_eq!(cells[5..], [json!("c"), json!("busybox"), json!("app=web")]);

        let cj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
            "spec": {"schedule": "*/1 * * * *", "suspend": false, "jobTemplate": {"spec": {
                "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "tick-1"}]},
        }))
        .unwrap();
        let t = table("CronJob", &[cj], None, None, IncludeObject::None, true);
        let cells = t["rows"][0]["cells"].as_array().unwrap();
        assert_eq!(
            cells[..6],
            [
                json!("tick"),
                json!("*/1 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("<none>")
            ]
        );
        assert_eq!(cells[7], "c");
    }

    #[test]
    fn network_policy_rows_print_the_pod_selector() {
        let row = |spec: Value| {
            let policy: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "p", "namespace": "default"}, "spec": spec,
            }))
            .unwrap();
            let t = table(
                "NetworkPolicy",
                &[policy],
                None,
                None,
                IncludeObject::None,
                true,
            );
            assert_eq!(t["columnDefinitions"][1]["name"], "Pod-Selector");
            t["rows"][0]["cells"][1].clone()
        };
        assert_eq!(row(json!({"podSelector": {}})), "<none>");
        assert_eq!(
            row(
                json!({"podSelector": {"matchLabels": {"tier": "db", "app": "web"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]},
                    {"key": "zz", "operator": "DoesNotExist"}]}})
            ),
            "app=web,env in (dev,prod),tier=db,!zz"
        );
    }

    #[test]
    fn accept_headers_for_tables() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}
