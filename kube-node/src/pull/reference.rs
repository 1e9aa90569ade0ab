//! Image references normalized as containerd and the kubelet do: `nginx` is
//! `docker.io/library/nginx:latest`.

use std::fmt;

use oci_client::{ParseError, Reference};

/// A normalized image reference: registry host, repository, tag and/or digest.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ImageName {
    reference: Reference,
}

/// An image name that is not a valid reference (the kubelet's `InvalidImageName`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "Failed to apply default image tag {image:?}: couldn't parse image name {image:?}: {reason}"
)]
pub struct InvalidImageName {
    /// The name as given.
    pub image: String,
    /// Why it does not parse (`invalid reference format`, …).
    pub reason: String,
}

/// Parses and normalizes `image`: the registry defaults to `docker.io`, Docker Hub's
/// single-component names get `library/`, and a name with neither tag nor digest gets
/// `:latest`.
///
/// ```
/// use kube_node::pull::reference::normalize;
/// assert_eq!(normalize("nginx").unwrap().to_string(), "docker.io/library/nginx:latest");
/// assert_eq!(normalize("host:5000/a/b:1").unwrap().registry(), "host:5000");
/// assert!(normalize("Nginx").is_err());
/// ```
pub fn normalize(image: &str) -> Result<ImageName, InvalidImageName> {
    let invalid = |reason: String| InvalidImageName {
        image: image.to_owned(),
        reason,
    };
    if image.trim() != image || image.is_empty() {
        return Err(invalid("invalid reference format".into()));
    }
    match image.parse::<Reference>() {
        Ok(reference) => Ok(ImageName { reference }),
        Err(ParseError::ReferenceInvalidFormat) => Err(invalid("invalid reference format".into())),
        Err(e) => Err(invalid(format!("invalid reference format: {e}"))),
    }
}

/// Whether the image's pull policy defaults to `Always`, as the kubelet decides: its tag is
/// `latest`, explicitly or because it had neither tag nor digest (`name@sha256:…` has no
/// tag and defaults to `IfNotPresent`). Invalid names count as `latest`.
pub fn tag_is_latest_or_missing(image: &str) -> bool {
    normalize(image).map_or(true, |name| name.tag() == Some("latest"))
}

impl ImageName {
    /// The registry host as written (`docker.io`, `127.0.0.1:5000`).
    pub fn registry(&self) -> &str {
        self.reference.registry()
    }

    /// The repository (`library/nginx`).
    pub fn repository(&self) -> &str {
        self.reference.repository()
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.reference.tag()
    }

    /// The digest (`sha256:…`), if any.
    pub fn digest(&self) -> Option<&str> {
        self.reference.digest()
    }

    /// `registry/repository` without tag or digest.
    pub fn repo_name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// `registry/repository:tag`, if tagged.
    pub fn tagged(&self) -> Option<String> {
        self.tag().map(|t| format!("{}:{t}", self.repo_name()))
    }

    /// `registry/repository@digest` for `digest`.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.repo_name())
    }

    /// The parsed reference, as oci-client takes it.
    pub fn reference(&self) -> &Reference {
        &self.reference
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.reference.whole())
    }
}

impl fmt::Debug for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageName({self})")
    }
}

impl std::str::FromStr for ImageName {
    type Err = InvalidImageName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        normalize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn names_normalize_as_containerd_does() {
        let cases = [
            ("nginx", "docker.io/library/nginx:latest"),
            ("nginx:1.27", "docker.io/library/nginx:1.27"),
            ("library/nginx", "docker.io/library/nginx:latest"),
            ("docker.io/nginx", "docker.io/library/nginx:latest"),
            ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
            ("ghcr.io/a/b", "ghcr.io/a/b:latest"),
            ("host:5000/x:tag", "host:5000/x:tag"),
            ("localhost/x", "localhost/x:latest"),
            ("127.0.0.1:5000/a/b/c:v1", "127.0.0.1:5000/a/b/c:v1"),
        ];
        for (given, want) in cases {
            assert_eq!(normalize(given).unwrap().to_string(), want, "{given}");
        }
        let by_digest = normalize(&format!("busybox@{D}")).unwrap();
        assert_eq!(
            by_digest.to_string(),
            format!("docker.io/library/busybox@{D}")
        );
        assert_eq!(by_digest.tag(), None);
        assert_eq!(by_digest.digest(), Some(D));
        let both = normalize(&format!("busybox:1.36@{D}")).unwrap();
        assert_eq!(both.tag(), Some("1.36"));
        assert_eq!(both.digest(), Some(D));
        assert_eq!(both.tagged().unwrap(), "docker.io/library/busybox:1.36");
    }

    #[test]
    fn invalid_names_give_the_kubelets_message() {
        for bad in [
            "",
            "Nginx",
            "a b",
            "nginx:",
            "-x",
            "busybox@sha256:12",
            " nginx",
        ] {
            let err = normalize(bad).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!(
                    "Failed to apply default image tag {bad:?}: couldn't parse image name {bad:?}: invalid reference format"
                )),
                "{msg}"
            );
        }
    }

    #[test]
    fn latest_or_missing_tags_default_to_always() {
        assert!(tag_is_latest_or_missing("nginx"));
        assert!(tag_is_latest_or_missing("nginx:latest"));
        assert!(tag_is_latest_or_missing("host:5000/x"));
        assert!(!tag_is_latest_or_missing("nginx:1.27"));
        assert!(!tag_is_latest_or_missing("host:5000/x:1"));
        assert!(!tag_is_latest_or_missing(&format!("nginx@{D}")));
    }
}
