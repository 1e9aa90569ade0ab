//! Which volume a claim binds to: Kubernetes' `findMatchingVolume` (pkg/controller/volume/
//! persistentvolume/index.go) — a volume pre-bound to the claim first, else the smallest
//! Available volume of the claim's class with enough capacity, the claim's access modes, its
//! volume mode and labels its selector matches.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube_core::quantity::parse_bytes;
use kube_core::selector::Selector;

/// The storage a claim requests, in bytes (0 when unset or unparsable).
pub fn claim_request(claim: &PersistentVolumeClaim) -> i64 {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| parse_bytes(&q.0).ok())
        .unwrap_or(0)
}

/// A volume's `capacity.storage` in bytes (0 when unset or unparsable).
pub fn volume_capacity(volume: &PersistentVolume) -> i64 {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| parse_bytes(&q.0).ok())
        .unwrap_or(0)
}

/// Whether the volume offers every access mode the claim asks for.
pub fn access_modes_fit(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> bool {
    let offered = volume
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or(&[]);
    claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.as_deref())
        .unwrap_or(&[])
        .iter()
        .all(|m| offered.contains(m))
}

/// The claim's class ("" for none).
pub(crate) fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

/// The volume's class ("" for none).
pub(crate) fn volume_class(volume: &PersistentVolume) -> &str {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

/// Whether `volume.spec.claimRef` names this claim (and its uid, when the reference has one).
pub(crate) fn bound_to(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(r) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    r.name == claim.metadata.name
        && r.namespace == claim.metadata.namespace
        && r.uid
            .as_deref()
            .is_none_or(|u| u.is_empty() || Some(u) == claim.metadata.uid.as_deref())
}

fn volume_mode_matches(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> bool {
    let claim_mode = claim.spec.as_ref().and_then(|s| s.volume_mode.as_deref());
    let volume_mode = volume.spec.as_ref().and_then(|s| s.volume_mode.as_deref());
    claim_mode.unwrap_or("Filesystem") == volume_mode.unwrap_or("Filesystem")
}

/// Whether a volume nobody claims may be bound: Available (or not yet given a phase).
fn available(volume: &PersistentVolume) -> bool {
    let phase = volume.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, None | Some("Available"))
        && volume
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_none()
}

/// The volume `claim` should bind to among `volumes`: one pre-bound to it (`spec.claimRef`),
/// else the smallest that fits. With `delay_binding` (a `WaitForFirstConsumer` class and no
/// node chosen yet) only pre-bound volumes are taken: the scheduler picks the others.
pub fn best_match<'a>(
    claim: &PersistentVolumeClaim,
    volumes: impl IntoIterator<Item = &'a PersistentVolume>,
    delay_binding: bool,
) -> Option<&'a PersistentVolume> {
    let request = claim_request(claim);
    let class = claim_class(claim);
    let selector = claim
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .map(Selector::from_label_selector);
    let selector = match selector {
        // A selector that does not parse matches nothing.
        Some(Err(_)) => return None,
        Some(Ok(s)) => Some(s),
        None => None,
    };
    let mut best: Option<(&PersistentVolume, i64)> = None;
    for volume in volumes {
        let capacity = volume_capacity(volume);
        if capacity < request
            || !volume_mode_matches(claim, volume)
            || volume.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        if bound_to(volume, claim) {
            return Some(volume);
        }
        if delay_binding || !available(volume) {
            continue;
        }
        let labels = volume.metadata.labels.clone().unwrap_or_default();
        if selector.as_ref().is_some_and(|s| !s.matches(&labels)) {
            continue;
        }
        if volume_class(volume) != class || !access_modes_fit(claim, volume) {
            continue;
        }
        if best.is_none_or(|(_, c)| capacity < c) {
            best = Some((volume, capacity));
        }
    }
    best.map(|(v, _)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(spec: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(
            json!({"metadata": {"name": "c", "namespace": "ns", "uid": "u1"},
            "spec": spec}),
        )
        .expect("claim")
    }

    fn volume(name: &str, size: &str, class: &str, modes: &[&str]) -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"tier": name}},
            "spec": {"capacity": {"storage": size}, "storageClassName": class,
                "accessModes": modes, "hostPath": {"path": "/tmp"}},
            "status": {"phase": "Available"}}))
        .expect("volume")
    }

    #[test]
    fn smallest_fit_of_the_class_and_modes_wins() {
        let c = claim(
            json!({"storageClassName": "slow", "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "2Gi"}}}),
        );
        let vs = [
            volume("big", "10Gi", "slow", &["ReadWriteOnce"]),
            volume("small", "1Gi", "slow", &["ReadWriteOnce"]),
            volume("right", "3Gi", "slow", &["ReadWriteOnce", "ReadOnlyMany"]),
            volume("other-class", "2Gi", "fast", &["ReadWriteOnce"]),
            volume("rox", "2Gi", "slow", &["ReadOnlyMany"]),
        ];
        let best = best_match(&c, &vs, false).expect("a match");
        assert_eq!(best.metadata.name.as_deref(), Some("right"));
        assert!(
            best_match(&c, &vs, true).is_none(),
            "delayed: only pre-bound"
        );
    }

    #[test]
    fn selector_and_prebinding() {
        let c = claim(
            json!({"accessModes": ["ReadWriteOnce"], "storageClassName": "",
            "selector": {"matchLabels": {"tier": "b"}},
            "resources": {"requests": {"storage": "1Gi"}}}),
        );
        let mut vs = vec![
            volume("a", "1Gi", "", &["ReadWriteOnce"]),
            volume("b", "5Gi", "", &["ReadWriteOnce"]),
        ];
        let best = best_match(&c, &vs, false).expect("b");
        assert_eq!(best.metadata.name.as_deref(), Some("b"));
        // A volume whose claimRef names the claim is taken first, even when delayed.
        let mut pre = volume("pre", "1Gi", "", &["ReadWriteOnce"]);
        pre.spec.as_mut().expect("spec").claim_ref =
            Some(serde_json::from_value(json!({"name": "c", "namespace": "ns"})).expect("ref"));
        vs.push(pre);
        let best = best_match(&c, &vs, true).expect("pre");
        assert_eq!(best.metadata.name.as_deref(), Some("pre"));
    }
}
