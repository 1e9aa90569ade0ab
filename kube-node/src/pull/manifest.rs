//! The manifest and index JSON the puller reads, and platform selection from an index.

use serde::Deserialize;

use super::Platform;

/// Media types asked for when resolving a reference.
pub(super) const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

#[derive(Deserialize)]
pub(super) struct ManifestJson {
    #[serde(default, rename = "mediaType")]
    pub(super) media_type: Option<String>,
    pub(super) config: DescriptorJson,
    #[serde(default)]
    pub(super) layers: Vec<DescriptorJson>,
}

#[derive(Clone, Deserialize)]
pub(super) struct DescriptorJson {
    #[serde(rename = "mediaType", default)]
    pub(super) media_type: String,
    pub(super) digest: String,
    #[serde(default)]
    pub(super) size: i64,
    #[serde(default)]
    pub(super) platform: Option<PlatformJson>,
}

#[derive(Clone, Deserialize)]
pub(super) struct PlatformJson {
    #[serde(default)]
    pub(super) architecture: String,
    #[serde(default)]
    pub(super) os: String,
    #[serde(default)]
    pub(super) variant: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct IndexJson {
    pub(super) manifests: Vec<DescriptorJson>,
}

/// Picks the index entry for `platform`: OS and architecture must match; a matching variant
/// is preferred, then one without a variant.
pub(super) fn select_platform<'a>(
    manifests: &'a [DescriptorJson],
    platform: &Platform,
) -> Option<&'a DescriptorJson> {
    let candidates: Vec<&DescriptorJson> = manifests
        .iter()
        .filter(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == platform.os && p.architecture == platform.architecture)
        })
        .collect();
    let variant = |m: &&DescriptorJson| m.platform.as_ref().and_then(|p| p.variant.clone());
    candidates
        .iter()
        .find(|m| platform.variant.is_some() && variant(m) == platform.variant)
        .or_else(|| candidates.iter().find(|m| variant(m).is_none()))
        .or_else(|| candidates.first())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, variant: Option<&str>, digest: &str) -> DescriptorJson {
        DescriptorJson {
            media_type: String::new(),
            digest: digest.into(),
            size: 0,
            platform: Some(PlatformJson {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(Into::into),
            }),
        }
    }

    #[test]
    fn platform_selection_prefers_the_nodes_arch() {
        let list = [
            entry("arm", Some("v7"), "a"),
            entry("amd64", None, "b"),
            entry("arm64", Some("v8"), "c"),
        ];
        let amd64 = Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        };
        assert_eq!(select_platform(&list, &amd64).unwrap().digest, "b");
        let arm64 = Platform {
            architecture: "arm64".into(),
            ..amd64.clone()
        };
        assert_eq!(select_platform(&list, &arm64).unwrap().digest, "c");
        let s390 = Platform {
            architecture: "s390x".into(),
            ..amd64
        };
        assert!(select_platform(&list, &s390).is_none());
    }
}
