//! Kubernetes' LimitRanger admission plugin: a new pod's containers get the `default` limits
//! and `defaultRequest` requests of their namespace's LimitRanges where they state none
//! (recorded in the `kubernetes.io/limit-ranger` annotation), then every container, every pod
//! and every PersistentVolumeClaim is held to the `min`, `max` and `maxLimitRequestRatio` of
//! their items, worded as Kubernetes words the refusals.

use kube_core::object::{DynamicObject, GroupKind};
use kube_core::quota::{Amount, ResourceList, parse_list};
use kube_core::store::{ListOptions, Store};
use serde_json::{Map, Value, json};

use super::refused::Refused;

const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// Applies defaults to a new pod and checks pods and claims against the namespace's
/// LimitRanges (claims on update too: they may grow).
pub(crate) async fn admit(store: &dyn Store, object: &mut DynamicObject) -> Result<(), Refused> {
    let is_pod = object.kind == "Pod" && object.api_version == "v1";
    let is_claim = object.kind == "PersistentVolumeClaim" && object.api_version == "v1";
    if !is_pod && !is_claim {
        return Ok(());
    }
    let Some(namespace) = object.metadata.namespace.clone() else {
        return Ok(());
    };
    let ranges = store
        .list(
            &GroupKind::new("", "LimitRange"),
            Some(&namespace),
            &ListOptions::default(),
        )
        .await?;
    if ranges.items.is_empty() {
        return Ok(());
    }
    let items: Vec<Value> = ranges
        .items
        .iter()
        .flat_map(|r| {
            r.data
                .get("spec")
                .and_then(|s| s.get("limits"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    let mut errors = Vec::new();
    if is_pod {
        for range in &ranges.items {
            set_defaults(object, range);
        }
        let spec = object.data.get("spec").cloned().unwrap_or(Value::Null);
        check_pod(&items, &spec, &mut errors);
    } else {
        let requests = parse_list(
            object
                .data
                .get("spec")
                .and_then(|s| s.get("resources"))
                .and_then(|r| r.get("requests")),
        );
        for item in items
            .iter()
            .filter(|i| i["type"] == "PersistentVolumeClaim")
        {
            for (name, min) in parse_list(item.get("min")) {
                min_constraint(
                    &mut errors,
                    "PersistentVolumeClaim",
                    &name,
                    min,
                    &requests,
                    &ResourceList::new(),
                );
            }
            for (name, max) in parse_list(item.get("max")) {
                let kind = "PersistentVolumeClaim";
                match requests.get(&name) {
                    None => errors.push(format!(
                        "maximum {name} usage per {kind} is {max}.  No request is specified"
                    )),
                    Some(r) if r.milli() > max.milli() => errors.push(format!(
                        "maximum {name} usage per {kind} is {max}, but request is {r}"
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(Refused::Forbidden(errors.remove(0))),
        _ => Err(Refused::Forbidden(format!("[{}]", errors.join(", ")))),
    }
}

/// The Container items' defaults of one LimitRange: (requests, limits).
fn container_defaults(range: &DynamicObject) -> (Map<String, Value>, Map<String, Value>) {
    let mut requests = Map::new();
    let mut limits = Map::new();
    let items = range
        .data
        .get("spec")
        .and_then(|s| s.get("limits"))
        .and_then(Value::as_array);
    for item in items
        .into_iter()
        .flatten()
        .filter(|i| i["type"] == "Container")
    {
        if let Some(d) = item["defaultRequest"].as_object() {
            requests.extend(d.clone());
        }
        if let Some(d) = item["default"].as_object() {
            limits.extend(d.clone());
        }
    }
    (requests, limits)
}

/// Fills what each container leaves out, and says so in the pod's annotation.
fn set_defaults(pod: &mut DynamicObject, range: &DynamicObject) {
    let (requests, limits) = container_defaults(range);
    if requests.is_empty() && limits.is_empty() {
        return;
    }
    let mut notes = Vec::new();
    let Some(Value::Object(spec)) = pod.data.get_mut("spec") else {
        return;
    };
    for (list, label) in [
        ("containers", "container"),
        ("initContainers", "init container"),
    ] {
        let Some(Value::Array(containers)) = spec.get_mut(list) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            let name = container
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let resources = container.entry("resources").or_insert_with(|| json!({}));
            let Value::Object(resources) = resources else {
                continue;
            };
            for (which, defaults, word) in [
                ("requests", &requests, "request"),
                ("limits", &limits, "limit"),
            ] {
                let own = resources.entry(which).or_insert_with(|| json!({}));
                let Value::Object(own) = own else {
                    continue;
                };
                let mut set: Vec<&String> = Vec::new();
                for (resource, amount) in defaults {
                    if !own.contains_key(resource) {
                        own.insert(resource.clone(), amount.clone());
                        set.push(resource);
                    }
                }
                if !set.is_empty() {
                    set.sort();
                    let set: Vec<&str> = set.iter().map(|s| s.as_str()).collect();
                    notes.push(format!("{} {word} for {label} {name}", set.join(", ")));
                }
                if own.is_empty() {
                    resources.remove(which);
                }
            }
        }
    }
    if !notes.is_empty() {
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                ANNOTATION.into(),
                format!("LimitRanger plugin set: {}", notes.join("; ")),
            );
    }
}

fn lists(container: &Value) -> (ResourceList, ResourceList) {
    (
        parse_list(container["resources"].get("requests")),
        parse_list(container["resources"].get("limits")),
    )
}

/// A pod's requests and limits as LimitRanger sums them: containers added, each init
/// container's amount taken where larger.
fn pod_lists(spec: &Value) -> (ResourceList, ResourceList) {
    let mut requests = ResourceList::new();
    let mut limits = ResourceList::new();
    for c in spec["containers"].as_array().into_iter().flatten() {
        let (r, l) = lists(c);
        requests = kube_core::quota::add(&requests, &r);
        limits = kube_core::quota::add(&limits, &l);
    }
    for c in spec["initContainers"].as_array().into_iter().flatten() {
        let (r, l) = lists(c);
        for (own, total) in [(r, &mut requests), (l, &mut limits)] {
            for (k, v) in own {
                let entry = total.entry(k).or_insert(v);
                if v.milli() > entry.milli() {
                    *entry = v;
                }
            }
        }
    }
    (requests, limits)
}

fn check_pod(items: &[Value], spec: &Value, errors: &mut Vec<String>) {
    for item in items {
        let kind = item["type"].as_str().unwrap_or_default();
        let targets: Vec<(ResourceList, ResourceList)> = match kind {
            "Container" => ["containers", "initContainers"]
                .iter()
                .flat_map(|list| spec[*list].as_array().into_iter().flatten())
                .map(lists)
                .collect(),
            "Pod" => vec![pod_lists(spec)],
            _ => continue,
        };
        for (requests, limits) in &targets {
            for (name, min) in parse_list(item.get("min")) {
                min_constraint(errors, kind, &name, min, requests, limits);
            }
            for (name, max) in parse_list(item.get("max")) {
                max_constraint(errors, kind, &name, max, requests, limits);
            }
            for (name, ratio) in parse_list(item.get("maxLimitRequestRatio")) {
                ratio_constraint(errors, kind, &name, ratio, requests, limits);
            }
        }
    }
}

fn min_constraint(
    errors: &mut Vec<String>,
    kind: &str,
    name: &str,
    min: Amount,
    requests: &ResourceList,
    limits: &ResourceList,
) {
    let Some(request) = requests.get(name) else {
        errors.push(format!(
            "minimum {name} usage per {kind} is {min}.  No request is specified"
        ));
        return;
    };
    if request.milli() < min.milli() {
        errors.push(format!(
            "minimum {name} usage per {kind} is {min}, but request is {request}"
        ));
    } else if let Some(limit) = limits.get(name).filter(|l| l.milli() < min.milli()) {
        errors.push(format!(
            "minimum {name} usage per {kind} is {min}, but limit is {limit}"
        ));
    }
}

fn max_constraint(
    errors: &mut Vec<String>,
    kind: &str,
    name: &str,
    max: Amount,
    requests: &ResourceList,
    limits: &ResourceList,
) {
    let Some(limit) = limits.get(name) else {
        errors.push(format!(
            "maximum {name} usage per {kind} is {max}.  No limit is specified"
        ));
        return;
    };
    if limit.milli() > max.milli() {
        errors.push(format!(
            "maximum {name} usage per {kind} is {max}, but limit is {limit}"
        ));
    } else if let Some(request) = requests.get(name).filter(|r| r.milli() > max.milli()) {
        errors.push(format!(
            "maximum {name} usage per {kind} is {max}, but request is {request}"
        ));
    }
}

fn ratio_constraint(
    errors: &mut Vec<String>,
    kind: &str,
    name: &str,
    ratio: Amount,
    requests: &ResourceList,
    limits: &ResourceList,
) {
    let request = requests.get(name).map_or(0, Amount::milli);
    let limit = limits.get(name).map_or(0, Amount::milli);
    if request == 0 {
        errors.push(format!(
            "{name} max limit to request ratio per {kind} is {ratio}, but no request is specified or request is 0"
        ));
        return;
    }
    if limit == 0 {
        errors.push(format!(
            "{name} max limit to request ratio per {kind} is {ratio}, but no limit is specified or limit is 0"
        ));
        return;
    }
    // Compared in thousandths, as Kubernetes does while the values allow it.
    let observed = limit as f64 / request as f64;
    if observed * 1000.0 > ratio.milli() as f64 {
        errors.push(format!(
            "{name} max limit to request ratio per {kind} is {ratio}, but provided ratio is {observed:.6}"
        ));
    }
}
