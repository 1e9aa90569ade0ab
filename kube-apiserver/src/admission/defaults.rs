//! Defaulting, as Kubernetes' API server applies it on create and update: the fields a client
//! may leave out get the values Kubernetes gives them (pod `restartPolicy`, `dnsPolicy`,
//! `terminationGracePeriodSeconds`, container `imagePullPolicy`; deployment strategy and
//! `revisionHistoryLimit`; service `sessionAffinity`, port protocols and target ports;
//! NetworkPolicy `policyTypes` and port protocols; ...).

use serde_json::{Map, Value, json};

use kube_core::object::DynamicObject;

mod stateful_set;

mod quota_kinds;

/// Fills defaults into `object` by its kind.
pub(crate) fn apply(object: &mut DynamicObject) {
    let group = object.group_kind().group.to_string();
    let data = &mut object.data;
    match (group.as_str(), object.kind.as_str()) {
        ("", "Pod") => {
            if let Some(spec) = obj(data, "spec") {
                pod_spec(spec);
            }
            let status = data.entry("status").or_insert_with(|| json!({}));
            if let Value::Object(status) = status {
                set(status, "phase", json!("Pending"));
            }
        }
        ("", "Service") => {
            if let Some(spec) = obj(data, "spec") {
                service_spec(spec);
            }
            // Kubernetes always writes a Service's status, `{"loadBalancer": {}}` at least.
            let status = data.entry("status").or_insert_with(|| json!({}));
            if let Value::Object(status) = status {
                set(status, "loadBalancer", json!({}));
            }
        }
        ("", "Secret") => secret_string_data(data),
        ("", "Namespace") => {
            let status = data.entry("status").or_insert_with(|| json!({}));
            if let Value::Object(status) = status {
                set(status, "phase", json!("Active"));
            }
        }
        ("apps", "Deployment") => {
            if let Some(spec) = obj(data, "spec") {
                set(spec, "replicas", json!(1));
                set(spec, "revisionHistoryLimit", json!(10));
                set(spec, "progressDeadlineSeconds", json!(600));
                let strategy = spec
                    .entry("strategy")
                    .or_insert_with(|| json!({"type": "RollingUpdate"}));
                if let Value::Object(strategy) = strategy {
                    set(strategy, "type", json!("RollingUpdate"));
                    if strategy.get("type") == Some(&json!("RollingUpdate")) {
                        let rolling = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
                        if let Value::Object(rolling) = rolling {
                            set(rolling, "maxSurge", json!("25%"));
                            set(rolling, "maxUnavailable", json!("25%"));
                        }
                    }
                }
                template(spec);
            }
        }
        ("apps", "ReplicaSet") => {
            if let Some(spec) = obj(data, "spec") {
                set(spec, "replicas", json!(1));
                template(spec);
            }
        }
        ("apps", "DaemonSet") => {
            if let Some(spec) = obj(data, "spec") {
                set(spec, "revisionHistoryLimit", json!(10));
                let strategy = spec
                    .entry("updateStrategy")
                    .or_insert_with(|| json!({"type": "RollingUpdate"}));
                if let Value::Object(strategy) = strategy {
                    set(strategy, "type", json!("RollingUpdate"));
                    if strategy.get("type") == Some(&json!("RollingUpdate")) {
                        let rolling = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
                        if let Value::Object(rolling) = rolling {
                            set(rolling, "maxUnavailable", json!(1));
                            set(rolling, "maxSurge", json!(0));
                        }
                    }
                }
                template(spec);
            }
        }
        ("batch", "Job") => {
            if let Some(spec) = obj(data, "spec") {
                job_spec(spec);
            }
        }
        ("batch", "CronJob") => {
            if let Some(spec) = obj(data, "spec") {
                set(spec, "concurrencyPolicy", json!("Allow"));
                set(spec, "suspend", json!(false));
                set(spec, "successfulJobsHistoryLimit", json!(3));
                set(spec, "failedJobsHistoryLimit", json!(1));
                // The job template's pod spec gets pod defaults; its Job fields are
                // defaulted when a Job is made from it.
                if let Some(pod) = obj(spec, "jobTemplate")
                    .and_then(|t| obj(t, "spec"))
                    .and_then(|s| obj(s, "template"))
                    .and_then(|t| obj(t, "spec"))
                {
                    pod_spec(pod);
                }
            }
        }
        ("", "ReplicationController") => {
            // As Kubernetes: an empty selector and empty labels become the template's labels.
            let template_labels = data
                .get("spec")
                .and_then(|s| s.get("template"))
                .and_then(|t| t.get("metadata"))
                .and_then(|m| m.get("labels"))
                .filter(|l| l.as_object().is_some_and(|l| !l.is_empty()))
                .cloned();
            if let Some(spec) = obj(data, "spec") {
                if let Some(labels) = &template_labels {
                    let empty = spec
                        .get("selector")
                        .is_none_or(|s| s.as_object().is_none_or(Map::is_empty));
                    if empty {
                        spec.insert("selector".into(), labels.clone());
                    }
                }
                set(spec, "replicas", json!(1));
                template(spec);
            }
            if let Some(Value::Object(labels)) = template_labels {
                let metadata_labels = object.metadata.labels.get_or_insert_with(Default::default);
                if metadata_labels.is_empty() {
                    for (key, value) in labels {
                        if let Value::String(value) = value {
                            metadata_labels.insert(key, value);
                        }
                    }
                }
            }
        }
        ("", "PodTemplate") => {
            if let Some(pod) = obj(data, "template").and_then(|t| obj(t, "spec")) {
                pod_spec(pod);
            }
        }
        ("apps", "StatefulSet") => obj(data, "spec").into_iter().for_each(stateful_set::spec),
        ("networking.k8s.io", "NetworkPolicy") => {
            let spec = data.entry("spec").or_insert_with(|| json!({}));
            if let Value::Object(spec) = spec {
                network_policy_spec(spec);
            }
        }
        ("scheduling.k8s.io", "PriorityClass") => quota_kinds::priority_class(data),
        ("", "LimitRange") => quota_kinds::limit_range(data),
        ("", kind @ ("PersistentVolumeClaim" | "PersistentVolume")) => {
            super::storage_protection::on_create(kind, &mut object.metadata);
        }
        _ => {}
    }
}

/// A Job's selector, on create, as Kubernetes generates it unless `spec.manualSelector` is
/// true: the Job gets its UID now (the store keeps it), its pod template the labels
/// `batch.kubernetes.io/controller-uid`, `batch.kubernetes.io/job-name`, `controller-uid` and
/// `job-name` (labels the user set are kept), and `spec.selector.matchLabels` the
/// `batch.kubernetes.io/controller-uid` label. The job-name labels need the name, so a Job
/// named by `generateName` gets only the UID labels.
pub(crate) fn job_selector(object: &mut DynamicObject) {
    if object.kind != "Job" || object.api_version != "batch/v1" {
        return;
    }
    let Some(spec) = obj(&mut object.data, "spec") else {
        return;
    };
    if spec.get("manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let uid = object
        .metadata
        .uid
        .get_or_insert_with(|| uuid::Uuid::new_v4().to_string())
        .clone();
    let name = object.metadata.name.clone().filter(|n| !n.is_empty());
    let template = spec.entry("template").or_insert_with(|| json!({}));
    if let Value::Object(template) = template {
        let metadata = template.entry("metadata").or_insert_with(|| json!({}));
        if let Value::Object(metadata) = metadata {
            let labels = metadata.entry("labels").or_insert_with(|| json!({}));
            if let Value::Object(labels) = labels {
                for key in ["batch.kubernetes.io/controller-uid", "controller-uid"] {
                    set(labels, key, json!(uid));
                }
                if let Some(name) = &name {
                    for key in ["batch.kubernetes.io/job-name", "job-name"] {
                        set(labels, key, json!(name));
                    }
                }
            }
        }
    }
    let selector = spec.entry("selector").or_insert_with(|| json!({}));
    if let Value::Object(selector) = selector {
        let match_labels = selector.entry("matchLabels").or_insert_with(|| json!({}));
        if let Value::Object(match_labels) = match_labels {
            set(
                match_labels,
                "batch.kubernetes.io/controller-uid",
                json!(uid),
            );
        }
    }
}

/// ServiceAccount admission, on create only (a pod's spec is immutable afterwards): a pod runs
/// as its namespace's `default` account unless it names one.
pub(crate) fn service_account(object: &mut DynamicObject) {
    if object.kind != "Pod" || !object.api_version.eq("v1") {
        return;
    }
    if let Some(spec) = obj(&mut object.data, "spec") {
        set(spec, "serviceAccountName", json!("default"));
        if let Some(account) = spec.get("serviceAccountName").cloned() {
            set(spec, "serviceAccount", account);
        }
    }
}

/// A Job's spec, as Kubernetes' `SetDefaults_Job`: parallelism and completions 1 when neither
/// is set (parallelism alone leaves completions unset: a work queue), `backoffLimit` 6 (or
/// the maximum when `backoffLimitPerIndex` is set), `completionMode` NonIndexed, `suspend`
/// false, `podReplacementPolicy` Failed with a `podFailurePolicy` and TerminatingOrFailed
/// otherwise, `status: True` in a pod failure policy's condition patterns, and pod defaults
/// for the template.
fn job_spec(spec: &mut Map<String, Value>) {
    let unset = |spec: &Map<String, Value>, key: &str| spec.get(key).is_none_or(Value::is_null);
    if unset(spec, "completions") && unset(spec, "parallelism") {
        spec.insert("completions".into(), json!(1));
    }
    set(spec, "parallelism", json!(1));
    if unset(spec, "backoffLimitPerIndex") {
        set(spec, "backoffLimit", json!(6));
    } else {
        set(spec, "backoffLimit", json!(i32::MAX));
    }
    set(spec, "completionMode", json!("NonIndexed"));
    set(spec, "suspend", json!(false));
    let replacement = if unset(spec, "podFailurePolicy") {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    set(spec, "podReplacementPolicy", json!(replacement));
    // A pod failure policy's condition patterns match status True unless they say otherwise.
    if let Some(Value::Array(rules)) =
        obj(spec, "podFailurePolicy").and_then(|p| p.get_mut("rules"))
    {
        for rule in rules.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(Value::Array(patterns)) = rule.get_mut("onPodConditions") {
                for pattern in patterns.iter_mut().filter_map(Value::as_object_mut) {
                    set(pattern, "status", json!("True"));
                }
            }
        }
    }
    if let Some(pod) = obj(spec, "template").and_then(|t| obj(t, "spec")) {
        // Jobs have no default restart policy; validation requires one.
        pod_spec(pod);
    }
}

fn obj<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    map.get_mut(key).and_then(Value::as_object_mut)
}

fn set(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_string(), value);
    }
}

fn template(spec: &mut Map<String, Value>) {
    if let Some(template) = obj(spec, "template") {
        if let Some(pod) = obj(template, "spec") {
            if !pod.contains_key("restartPolicy") {
                pod.insert("restartPolicy".into(), json!("Always"));
            }
            pod_spec(pod);
        }
    }
}

fn pod_spec(spec: &mut Map<String, Value>) {
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "schedulerName", json!("default-scheduler"));
    set(spec, "securityContext", json!({}));
    set(spec, "enableServiceLinks", json!(true));
    downward_api_volumes(spec);
    for list in ["initContainers", "containers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for container in containers.iter_mut().filter_map(Value::as_object_mut) {
                container_defaults(container);
            }
        }
    }
}

/// A NetworkPolicy's spec as Kubernetes defaults it: `podSelector` is always written (`{}`
/// selects every pod of the namespace), a policy without `policyTypes` is an `Ingress` one,
/// and also `Egress` when it has egress rules; ports without a protocol are TCP.
fn network_policy_spec(spec: &mut Map<String, Value>) {
    set(spec, "podSelector", json!({}));
    let no_types = spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if no_types {
        let has_egress = spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|rules| !rules.is_empty());
        let types = if has_egress {
            json!(["Ingress", "Egress"])
        } else {
            json!(["Ingress"])
        };
        spec.insert("policyTypes".into(), types);
    }
    for direction in ["ingress", "egress"] {
        let Some(Value::Array(rules)) = spec.get_mut(direction) else {
            continue;
        };
        for rule in rules.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(Value::Array(ports)) = rule.get_mut("ports") {
                for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                    set(port, "protocol", json!("TCP"));
                }
            }
        }
    }
}

/// A Secret's `stringData` written into `data` (base64), overriding it, and dropped, as
/// Kubernetes' conversion of a Secret does.
fn secret_string_data(secret: &mut Map<String, Value>) {
    use base64::Engine as _;
    let Some(Value::Object(string_data)) = secret.remove("stringData") else {
        return;
    };
    if string_data.is_empty() {
        return;
    }
    let data = secret.entry("data").or_insert_with(|| json!({}));
    if data.is_null() {
        *data = json!({});
    }
    if let Value::Object(data) = data {
        for (key, value) in string_data {
            let text = value.as_str().unwrap_or_default();
            let encoded = base64::engine::general_purpose::STANDARD.encode(text);
            data.insert(key, Value::String(encoded));
        }
    }
}

/// `fieldRef.apiVersion` defaults to `v1` (env `valueFrom.fieldRef`, downwardAPI items).
fn field_ref(holder: &mut Map<String, Value>) {
    if let Some(field_ref) = obj(holder, "fieldRef") {
        set(field_ref, "apiVersion", json!("v1"));
    }
}

/// The downwardAPI volumes (plain and projected) of a pod spec get `fieldRef` defaults.
fn downward_api_volumes(spec: &mut Map<String, Value>) {
    let Some(Value::Array(volumes)) = spec.get_mut("volumes") else {
        return;
    };
    for volume in volumes.iter_mut().filter_map(Value::as_object_mut) {
        downward_api_items(obj(volume, "downwardAPI"));
        if let Some(Value::Array(sources)) =
            obj(volume, "projected").and_then(|p| p.get_mut("sources"))
        {
            for source in sources.iter_mut().filter_map(Value::as_object_mut) {
                downward_api_items(obj(source, "downwardAPI"));
            }
        }
    }
}

fn downward_api_items(downward: Option<&mut Map<String, Value>>) {
    if let Some(Value::Array(items)) = downward.and_then(|d| d.get_mut("items")) {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            field_ref(item);
        }
    }
}

fn container_defaults(container: &mut Map<String, Value>) {
    if let Some(Value::Array(env)) = container.get_mut("env") {
        for var in env.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(from) = obj(var, "valueFrom") {
                field_ref(from);
            }
        }
    }
    let image = container
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    set(container, "imagePullPolicy", json!(pull_policy(&image)));
    set(
        container,
        "terminationMessagePath",
        json!("/dev/termination-log"),
    );
    set(container, "terminationMessagePolicy", json!("File"));
    set(container, "resources", json!({}));
    quota_kinds::requests_from_limits(container);
    if let Some(Value::Array(ports)) = container.get_mut("ports") {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            set(port, "protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = obj(container, probe) {
            set(probe, "timeoutSeconds", json!(1));
            set(probe, "periodSeconds", json!(10));
            set(probe, "successThreshold", json!(1));
            set(probe, "failureThreshold", json!(3));
            if let Some(http) = obj(probe, "httpGet") {
                set(http, "scheme", json!("HTTP"));
                set(http, "path", json!("/"));
            }
        }
    }
}

/// `Always` for `:latest` or untagged images, `IfNotPresent` otherwise (digests included).
fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn service_spec(spec: &mut Map<String, Value>) {
    set(spec, "type", json!("ClusterIP"));
    set(spec, "sessionAffinity", json!("None"));
    let service_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if service_type != "ExternalName" {
        set(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if matches!(service_type.as_str(), "NodePort" | "LoadBalancer") {
        set(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if spec.get("sessionAffinity") == Some(&json!("ClientIP")) {
        set(
            spec,
            "sessionAffinityConfig",
            json!({"clientIP": {"timeoutSeconds": 10800}}),
        );
    }
    if let Some(Value::Array(ports)) = spec.get_mut("ports") {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            set(port, "protocol", json!("TCP"));
            if let Some(number) = port.get("port").cloned() {
                set(port, "targetPort", number);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(api_version: &str, kind: &str, data: Value) -> DynamicObject {
        let mut value = data;
        value["apiVersion"] = json!(api_version);
        value["kind"] = json!(kind);
        value["metadata"] = json!({"name": "x"});
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn pods_get_kubernetes_defaults() {
        let mut pod = object(
            "v1",
            "Pod",
            json!({"spec": {"containers": [
                {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}]},
                {"name": "b", "image": "busybox:1.36"},
            ]}}),
        );
        apply(&mut pod);
        let spec = &pod.data["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(spec["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(pod.data["status"]["phase"], "Pending");
    }

    #[test]
    fn explicit_values_are_kept() {
        let mut deploy = object(
            "apps/v1",
            "Deployment",
            json!({"spec": {"replicas": 0, "strategy": {"type": "Recreate"},
                "template": {"spec": {"containers": []}}}}),
        );
        apply(&mut deploy);
        let spec = &deploy.data["spec"];
        assert_eq!(spec["replicas"], 0);
        assert_eq!(spec["strategy"], json!({"type": "Recreate"}));
        assert_eq!(spec["revisionHistoryLimit"], 10);
    }

    #[test]
    fn service_ports_target_their_port() {
        let mut svc = object("v1", "Service", json!({"spec": {"ports": [{"port": 80}]}}));
        apply(&mut svc);
        assert_eq!(svc.data["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc.data["spec"]["sessionAffinity"], "None");
        assert_eq!(svc.data["spec"]["type"], "ClusterIP");
    }

    #[test]
    fn network_policies_get_policy_types_and_tcp_ports() {
        let mut deny = object("networking.k8s.io/v1", "NetworkPolicy", json!({}));
        apply(&mut deny);
        assert_eq!(
            deny.data["spec"],
            json!({"podSelector": {}, "policyTypes": ["Ingress"]})
        );

        let mut both = object(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            json!({"spec": {"podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"ports": [{"port": 5432}, {"port": 53, "protocol": "UDP"}]}],
                "egress": [{"ports": [{"port": 443}]}]}}),
        );
        apply(&mut both);
        let spec = &both.data["spec"];
        assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(spec["ingress"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["ingress"][0]["ports"][1]["protocol"], "UDP");
        assert_eq!(spec["egress"][0]["ports"][0]["protocol"], "TCP");

        let mut egress_only = object(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            json!({"spec": {"podSelector": {}, "policyTypes": ["Egress"]}}),
        );
        apply(&mut egress_only);
        assert_eq!(egress_only.data["spec"]["policyTypes"], json!(["Egress"]));
    }
}
