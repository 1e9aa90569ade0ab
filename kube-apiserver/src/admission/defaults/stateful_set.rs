//! StatefulSet defaults, as Kubernetes' `SetDefaults_StatefulSet` (apps/v1): `replicas` 1,
//! `podManagementPolicy` OrderedReady, `updateStrategy` RollingUpdate with `partition` 0,
//! `revisionHistoryLimit` 10, `persistentVolumeClaimRetentionPolicy` Retain/Retain, the pod
//! template's defaults, and claim templates with `volumeMode: Filesystem` and a Pending phase.

use serde_json::{Map, Value, json};

use super::{obj, set, template};

/// Fills the defaults into a StatefulSet's `spec`.
pub(super) fn spec(spec: &mut Map<String, Value>) {
    set(spec, "replicas", json!(1));
    set(spec, "podManagementPolicy", json!("OrderedReady"));
    set(spec, "revisionHistoryLimit", json!(10));
    set(spec, "updateStrategy", json!({"type": "RollingUpdate"}));
    if let Some(strategy) = obj(spec, "updateStrategy") {
        set(strategy, "type", json!("RollingUpdate"));
        if strategy.get("type") == Some(&json!("RollingUpdate")) {
            set(strategy, "rollingUpdate", json!({}));
            if let Some(rolling) = obj(strategy, "rollingUpdate") {
                set(rolling, "partition", json!(0));
            }
        }
    }
    set(spec, "persistentVolumeClaimRetentionPolicy", json!({}));
    if let Some(policy) = obj(spec, "persistentVolumeClaimRetentionPolicy") {
        set(policy, "whenDeleted", json!("Retain"));
        set(policy, "whenScaled", json!("Retain"));
    }
    if let Some(Value::Array(claims)) = spec.get_mut("volumeClaimTemplates") {
        for claim in claims.iter_mut().filter_map(Value::as_object_mut) {
            set(claim, "apiVersion", json!("v1"));
            set(claim, "kind", json!("PersistentVolumeClaim"));
            if let Some(claim_spec) = obj(claim, "spec") {
                set(claim_spec, "volumeMode", json!("Filesystem"));
            }
            set(claim, "status", json!({}));
            if let Some(status) = obj(claim, "status") {
                set(status, "phase", json!("Pending"));
            }
        }
    }
    template(spec);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_spec_gets_kubernetes_defaults() {
        let mut value = json!({
            "template": {"spec": {"containers": [{"name": "c", "image": "db"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {}}]
        });
        let map = value.as_object_mut().expect("an object");
        spec(map);
        assert_eq!(value["replicas"], 1);
        assert_eq!(value["podManagementPolicy"], "OrderedReady");
        assert_eq!(value["revisionHistoryLimit"], 10);
        assert_eq!(
            value["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            value["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(value["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            value["volumeClaimTemplates"][0]["spec"]["volumeMode"],
            "Filesystem"
        );
        // OnDelete gets no rollingUpdate.
        let mut on_delete = json!({"updateStrategy": {"type": "OnDelete"}});
        spec(on_delete.as_object_mut().expect("an object"));
        assert_eq!(on_delete["updateStrategy"], json!({"type": "OnDelete"}));
    }
}
