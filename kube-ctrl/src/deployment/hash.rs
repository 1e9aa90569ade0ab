//! The pod-template hash that names a Deployment's ReplicaSets and labels their pods.

use k8s_openapi::api::core::v1::PodTemplateSpec;

/// The label (and selector term) that ties a ReplicaSet's pods to its template.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// Kubernetes' alphabet for hash strings: no vowels (no words), no look-alikes.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The template without our hash label: what "same template" compares.
pub(crate) fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut template = template.clone();
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH);
    }
    template
}

/// The hash of `template` (FNV-1a over its wire form, salted with the collision count), encoded
/// as Kubernetes does (each decimal digit mapped into a vowel-free alphabet).
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(&without_hash(template)).unwrap_or_default();
    if let Some(count) = collision_count {
        bytes.extend_from_slice(&count.to_le_bytes());
    }
    fnv1a32(&bytes)
        .to_string()
        .bytes()
        .map(|d| char::from(ALPHABET[usize::from(d) % ALPHABET.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_ignores_its_own_label_and_changes_with_collisions() {
        let template: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}
        }))
        .unwrap_or_default();
        let mut labelled = template.clone();
        if let Some(labels) = labelled.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.insert(POD_TEMPLATE_HASH.into(), "x".into());
        }
        let h = pod_template_hash(&template, None);
        assert_eq!(h, pod_template_hash(&labelled, None));
        assert_ne!(h, pod_template_hash(&template, Some(1)));
        assert!(h.bytes().all(|b| ALPHABET.contains(&b)));
    }
}
