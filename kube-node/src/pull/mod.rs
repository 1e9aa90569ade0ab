//! Image pulls from OCI registries into a content-addressed store on disk, shared by the runc
//! and host-process runtimes.
//!
//! | module / type | what |
//! |---|---|
//! | [`reference`](mod@reference) | image names normalized as containerd does (`nginx` → `docker.io/library/nginx:latest`) |
//! | [`RegistryConfig`] | per registry host: mirrors, plain HTTP, TLS (containerd's `hosts.toml`) |
//! | [`credentials::Keyring`] | `imagePullSecrets` and a node credentials file, matched as the kubelet does |
//! | [`ImageStore`] | pulls (manifest or index, config, layers; every blob verified by digest), keeps blobs under `blobs/sha256/`, unpacks each image once under `rootfs/` |
//! | [`unpack`] | layer application: gzip, zstd and plain tars, whiteouts and opaque directories |
//!
//! The store uses [`oci_client`] for the distribution protocol (Docker Hub's bearer-token flow
//! included) and [`oci_spec`] for image configs.

pub mod credentials;
mod follow;
pub(crate) mod local;
mod manifest;
pub mod reference;
pub mod registries;
mod store;
pub mod unpack;

pub use reference::{ImageName, InvalidImageName};
pub use registries::{Endpoint, HostConfig, RegistryConfig, RegistryConfigError};
pub use store::{ImageConfig, ImageStore, StoredImage};

use kube_core::runtime::RuntimeError;

/// Why a pull failed. The message carries the registry's reason where it gave one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    /// The image name does not parse.
    #[error(transparent)]
    InvalidName(#[from] InvalidImageName),
    /// The registry refused the request (`unauthorized: authentication required`,
    /// `manifest unknown: manifest unknown`, …).
    #[error("pulling {image} from {endpoint}: {reason}")]
    Registry {
        /// The image.
        image: String,
        /// The registry or mirror asked (`http://127.0.0.1:5000`).
        endpoint: String,
        /// The registry's reason.
        reason: String,
    },
    /// A blob's bytes do not match its digest: it is refused, nothing of it is used.
    #[error("blob {digest} of {image} failed verification: its content has digest {actual}")]
    DigestMismatch {
        /// The image.
        image: String,
        /// The digest the manifest names.
        digest: String,
        /// The digest of what was received.
        actual: String,
    },
    /// An index without a manifest for the node's platform.
    #[error("no manifest for platform {wanted} in the index of {image} (it has: {available})")]
    NoMatchingPlatform {
        /// The image.
        image: String,
        /// `linux/amd64`.
        wanted: String,
        /// The platforms it has.
        available: String,
    },
    /// A manifest, config or layer the puller cannot use.
    #[error("invalid image {image}: {reason}")]
    InvalidImage {
        /// The image.
        image: String,
        /// What is wrong.
        reason: String,
    },
    /// A local I/O error (the store's disk).
    #[error("image store: {0}")]
    Store(String),
}

impl From<PullError> for RuntimeError {
    fn from(e: PullError) -> Self {
        match e {
            PullError::InvalidName(e) => RuntimeError::InvalidArgument(e.to_string()),
            other => RuntimeError::Failed {
                operation: "pull_image",
                message: other.to_string(),
            },
        }
    }
}

/// An image platform (the node's: `linux` and the host's architecture).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `v8`, `v7`, … (`None`: any).
    pub variant: Option<String>,
}

impl Platform {
    /// The node's platform: `linux` on the host's architecture, named as OCI names it.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Self {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }

    /// `os/architecture[/variant]`.
    pub fn name(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

impl Default for Platform {
    fn default() -> Self {
        Self::host()
    }
}
