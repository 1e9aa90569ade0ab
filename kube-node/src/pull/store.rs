//! The content-addressed image store: blobs under `blobs/sha256/<hex>`, one flattened root
//! filesystem per image under `rootfs/<id hex>/`, and `images.json` naming them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use kube_core::runtime::{AuthConfig, Image};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::follow::{BlobWriter, CloseOnDrop, FollowReader, Progress, WRITE_CHUNK};
use super::manifest::{ACCEPT, DescriptorJson, IndexJson, ManifestJson, select_platform};
use super::reference::{ImageName, normalize};
use super::registries::{Endpoint, RegistryConfig};
use super::unpack::{Compression, apply_tar, decompress_ahead};
use super::{Platform, PullError};

/// What runtimes need from an image's config (`config` of the OCI image configuration).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, as `KEY=VALUE`.
    pub env: Vec<String>,
    /// `WorkingDir`, if set.
    pub working_dir: Option<String>,
    /// `User` (`name`, `uid`, `uid:gid`, `name:group`), if set.
    pub user: Option<String>,
}

/// An image in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoredImage {
    /// The image ID: its config's digest.
    pub id: String,
    /// Tagged references naming it.
    pub repo_tags: Vec<String>,
    /// Digested references it was pulled by.
    pub repo_digests: Vec<String>,
    /// The compressed layers' size.
    pub size_bytes: u64,
    /// The bytes of its unpacked files.
    pub unpacked_bytes: u64,
    /// Its config.
    pub config: ImageConfig,
    /// The blobs it uses (manifests, config, layers).
    blobs: Vec<String>,
    /// Where its root filesystem is unpacked (read-only: containers put an overlay on it).
    pub rootfs: PathBuf,
}

impl StoredImage {
    /// As CRI reports it.
    pub fn to_image(&self) -> Image {
        let mut image = Image::new(self.id.clone(), self.repo_tags.clone());
        image.repo_digests = self.repo_digests.clone();
        image.size_bytes = self.size_bytes;
        image.user = self.config.user.clone();
        image
    }

    /// The reference a pull reports (`repo@digest`, else the ID).
    pub fn image_ref(&self) -> String {
        self.repo_digests
            .first()
            .cloned()
            .unwrap_or_else(|| self.id.clone())
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Index {
    images: BTreeMap<String, StoredImage>,
}

type PullFuture = Shared<BoxFuture<'static, Result<StoredImage, PullError>>>;

struct Inner {
    root: PathBuf,
    registries: RegistryConfig,
    platform: Platform,
    index: Mutex<Index>,
    inflight: Mutex<HashMap<String, PullFuture>>,
    clients: Mutex<HashMap<String, Client>>,
    pulls: AtomicUsize,
    blob_downloads: AtomicUsize,
}

/// A content-addressed image store on disk, pulling with [`oci_client`].
///
/// * `blobs/sha256/<hex>`: manifests, configs and layers, each verified against its digest
///   while it is downloaded into `tmp/` and renamed into place only then;
/// * `rootfs/<hex>/`: an image's layers applied in order (whiteouts honoured), built in
///   `tmp/` and renamed when complete, so a crash mid-pull leaves nothing half-used (`tmp/`
///   is emptied when the store opens);
/// * `images.json`: images by ID with their tags and digests (written atomically), so the
///   store survives restarts.
///
/// Concurrent pulls of one reference are one pull. Cloning shares the store.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.inner.root)
            .field("platform", &self.inner.platform.name())
            .finish_non_exhaustive()
    }
}

fn store_err(context: &str, e: impl std::fmt::Display) -> PullError {
    PullError::Store(format!("{context}: {e}"))
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// A valid `sha256:<64 hex>` digest (anything else is refused before touching the disk).
fn check_digest(image: &str, digest: &str) -> Result<(), PullError> {
    let ok = digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(PullError::InvalidImage {
            image: image.to_owned(),
            reason: format!("unsupported digest {digest:?} (only sha256 is)"),
        })
    }
}

impl ImageStore {
    /// Opens (creating) the store under `root`, fetching through `registries`, for the
    /// node's platform.
    pub fn open(root: impl Into<PathBuf>, registries: RegistryConfig) -> Result<Self, PullError> {
        Self::open_for(root, registries, Platform::host())
    }

    /// Opens the store selecting `platform` from image indexes.
    pub fn open_for(
        root: impl Into<PathBuf>,
        registries: RegistryConfig,
        platform: Platform,
    ) -> Result<Self, PullError> {
        // reqwest over rustls needs a process-wide crypto provider; ring, as elsewhere.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let root = root.into();
        let tmp = root.join("tmp");
        // Whatever a crashed pull left in `tmp/` is not used by anything.
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| store_err("clearing tmp", e))?;
        }
        for dir in ["blobs/sha256", "rootfs", "tmp"] {
            std::fs::create_dir_all(root.join(dir)).map_err(|e| store_err(dir, e))?;
        }
        let mut index: Index = match std::fs::read(root.join("images.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| store_err("images.json", e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(store_err("images.json", e)),
        };
        index.images.retain(|_, i| i.rootfs.is_dir());
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                registries,
                platform,
                index: Mutex::new(index),
                inflight: Mutex::new(HashMap::new()),
                clients: Mutex::new(HashMap::new()),
                pulls: AtomicUsize::new(0),
                blob_downloads: AtomicUsize::new(0),
            }),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// How many pulls went to a registry (concurrent pulls of one image count once).
    pub fn pulls(&self) -> usize {
        self.inner.pulls.load(Ordering::Relaxed)
    }

    /// How many blobs were downloaded.
    pub fn blob_downloads(&self) -> usize {
        self.inner.blob_downloads.load(Ordering::Relaxed)
    }

    /// Pulls `image` with `auth` (resolving its tag or digest again even when present, as
    /// `imagePullPolicy: Always` wants; blobs already held are not downloaded again).
    pub async fn pull(
        &self,
        image: &ImageName,
        auth: Option<&AuthConfig>,
    ) -> Result<StoredImage, PullError> {
        let key = format!("{image} {}", self.inner.platform.name());
        let future = {
            let mut inflight = lock(&self.inner.inflight);
            match inflight.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let inner = self.inner.clone();
                    let (name, auth, key2) = (image.clone(), registry_auth(auth), key.clone());
                    let f = async move {
                        let result = pull(&inner, &name, &auth).await;
                        lock(&inner.inflight).remove(&key2);
                        result
                    }
                    .boxed()
                    .shared();
                    inflight.insert(key, f.clone());
                    f
                }
            }
        };
        future.await
    }

    /// The image `image` names (a reference, `sha256:<id>` or `<id hex>`), if held.
    pub fn status(&self, image: &str) -> Option<StoredImage> {
        let index = lock(&self.inner.index);
        find(&index, image).cloned()
    }

    /// Every image held.
    pub fn list(&self) -> Vec<StoredImage> {
        lock(&self.inner.index).images.values().cloned().collect()
    }

    /// Removes the image `image` names: a tag only untags an image other tags still name;
    /// otherwise the image goes, with its root filesystem and the blobs no other image uses.
    /// Returns whether anything was removed.
    pub fn remove(&self, image: &str) -> Result<bool, PullError> {
        let (doomed, keep_blobs) = {
            let mut index = lock(&self.inner.index);
            let Some(found) = find(&index, image).cloned() else {
                return Ok(false);
            };
            let tag = normalize(image).ok().and_then(|n| n.tagged());
            let only_untag = tag
                .as_ref()
                .is_some_and(|t| found.repo_tags.contains(t) && found.repo_tags.len() > 1);
            if only_untag {
                if let Some(i) = index.images.get_mut(&found.id) {
                    i.repo_tags.retain(|t| Some(t) != tag.as_ref());
                }
                self.save(&index)?;
                return Ok(true);
            }
            index.images.remove(&found.id);
            self.save(&index)?;
            let keep: Vec<String> = index
                .images
                .values()
                .flat_map(|i| i.blobs.iter().cloned())
                .collect();
            (found, keep)
        };
        // Renamed away first: the name never points at a half-deleted tree.
        let trash = self
            .inner
            .root
            .join("tmp")
            .join(format!("rm-{}", uuid::Uuid::new_v4()));
        if std::fs::rename(&doomed.rootfs, &trash).is_ok() {
            std::fs::remove_dir_all(&trash).map_err(|e| store_err("removing rootfs", e))?;
        }
        for blob in doomed.blobs.iter().filter(|b| !keep_blobs.contains(b)) {
            let _ = std::fs::remove_file(self.blob_path(blob));
        }
        Ok(true)
    }

    /// Bytes the store takes (blobs and unpacked root filesystems).
    pub fn fs_usage(&self) -> u64 {
        let blobs: u64 = std::fs::read_dir(self.inner.root.join("blobs/sha256"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        let unpacked: u64 = lock(&self.inner.index)
            .images
            .values()
            .map(|i| i.unpacked_bytes)
            .sum();
        blobs + unpacked
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        blob_path(&self.inner.root, digest)
    }

    fn save(&self, index: &Index) -> Result<(), PullError> {
        save_index(&self.inner.root, index)
    }
}

fn blob_path(root: &Path, digest: &str) -> PathBuf {
    root.join("blobs/sha256").join(hex_of(digest))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn save_index(root: &Path, index: &Index) -> Result<(), PullError> {
    let bytes = serde_json::to_vec_pretty(index).map_err(|e| store_err("images.json", e))?;
    let tmp = root
        .join("tmp")
        .join(format!("index-{}", uuid::Uuid::new_v4()));
    std::fs::write(&tmp, bytes).map_err(|e| store_err("images.json", e))?;
    std::fs::rename(&tmp, root.join("images.json")).map_err(|e| store_err("images.json", e))
}

/// The image a reference or ID names.
fn find<'a>(index: &'a Index, image: &str) -> Option<&'a StoredImage> {
    let hex = image.strip_prefix("sha256:").unwrap_or(image);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        if let Some(i) = index.images.get(&format!("sha256:{hex}")) {
            return Some(i);
        }
    }
    let name = normalize(image).ok()?;
    match name.digest() {
        Some(d) => {
            let wanted = name.with_digest(d);
            index
                .images
                .values()
                .find(|i| i.repo_digests.contains(&wanted))
        }
        None => {
            let tagged = name.tagged()?;
            index
                .images
                .values()
                .find(|i| i.repo_tags.contains(&tagged))
        }
    }
}

/// CRI credentials as oci-client takes them.
fn registry_auth(auth: Option<&AuthConfig>) -> RegistryAuth {
    let Some(auth) = auth else {
        return RegistryAuth::Anonymous;
    };
    if !auth.registry_token.is_empty() {
        return RegistryAuth::Bearer(auth.registry_token.clone());
    }
    if !auth.username.is_empty() {
        return RegistryAuth::Basic(auth.username.clone(), auth.password.clone());
    }
    if !auth.auth.is_empty() {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        if let Some((u, p)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
            return RegistryAuth::Basic(u.to_owned(), p.to_owned());
        }
    }
    if !auth.identity_token.is_empty() {
        // Docker sends an identity token as the password of the `<token>` user.
        return RegistryAuth::Basic("<token>".into(), auth.identity_token.clone());
    }
    RegistryAuth::Anonymous
}

/// The registry's reason, as Docker prints it (`unauthorized: authentication required`).
fn reason(e: &OciDistributionError) -> String {
    match e {
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .map(|err| {
                let code = serde_json::to_string(&err.code).unwrap_or_default();
                let code = code.trim_matches('"').replace('_', " ").to_lowercase();
                if err.message.is_empty() {
                    code
                } else {
                    format!("{code}: {}", err.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        // oci-client drops the 401 body; Distribution's is always this.
        OciDistributionError::UnauthorizedError { .. } => {
            "unauthorized: authentication required".into()
        }
        OciDistributionError::AuthenticationFailure(body) => {
            format!("unauthorized: {}", body.trim())
        }
        OciDistributionError::ServerError { code, message, .. } => {
            format!("HTTP {code}: {}", message.trim())
        }
        OciDistributionError::ImageManifestNotFoundError(m) => format!("manifest unknown: {m}"),
        other => {
            // Include the cause chain (e.g. "connection refused").
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

fn is_unreachable(e: &PullError) -> bool {
    matches!(e, PullError::Registry { reason, .. } if reason.contains("error sending request") || reason.contains("connect"))
}

/// One pull over the endpoints of the image's registry: mirrors first, then the upstream.
async fn pull(
    inner: &Arc<Inner>,
    name: &ImageName,
    auth: &RegistryAuth,
) -> Result<StoredImage, PullError> {
    // A digest already held needs no registry.
    if let Some(digest) = name.digest() {
        let wanted = name.with_digest(digest);
        let mut index = lock(&inner.index);
        let hit = index
            .images
            .values()
            .find(|i| i.repo_digests.contains(&wanted))
            .map(|i| i.id.clone());
        if let Some(id) = hit {
            return tag(inner, &mut index, &id, name, None);
        }
    }
    inner.pulls.fetch_add(1, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let mut first_error: Option<PullError> = None;
    let mut last_error = None;
    for endpoint in inner.registries.endpoints(name.registry()) {
        match pull_from(inner, &endpoint, name, auth).await {
            Ok(image) => {
                tracing::info!(
                    image = %name,
                    endpoint = %endpoint.url(),
                    id = %image.id,
                    size_bytes = image.size_bytes,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "pulled"
                );
                return Ok(image);
            }
            Err(e) => {
                tracing::debug!(image = %name, endpoint = %endpoint.url(), error = %e, "pull failed");
                if first_error.is_none() && !is_unreachable(&e) {
                    first_error = Some(e);
                } else {
                    last_error = Some(e);
                }
            }
        }
    }
    Err(first_error
        .or(last_error)
        .unwrap_or_else(|| PullError::Store("no endpoint to pull from".into())))
}

/// Records `name` (and `repo_digest`) as naming image `id`, moving the tag off others.
fn tag(
    inner: &Inner,
    index: &mut Index,
    id: &str,
    name: &ImageName,
    repo_digest: Option<String>,
) -> Result<StoredImage, PullError> {
    if let Some(tagged) = name.tagged() {
        for other in index.images.values_mut().filter(|i| i.id != id) {
            other.repo_tags.retain(|t| *t != tagged);
        }
        if let Some(image) = index.images.get_mut(id) {
            if !image.repo_tags.contains(&tagged) {
                image.repo_tags.push(tagged);
            }
        }
    }
    if let (Some(d), Some(image)) = (repo_digest, index.images.get_mut(id)) {
        if !image.repo_digests.contains(&d) {
            image.repo_digests.push(d);
        }
    }
    save_index(&inner.root, index)?;
    index
        .images
        .get(id)
        .cloned()
        .ok_or_else(|| PullError::Store(format!("image {id} vanished")))
}

impl Inner {
    /// A client for `endpoint` and `auth` (oci-client keeps the first credentials it is
    /// given per registry, and tokens with them, so each set of credentials has its own).
    fn client(&self, endpoint: &Endpoint, auth: &RegistryAuth) -> Result<Client, PullError> {
        let who = match auth {
            RegistryAuth::Anonymous => String::new(),
            RegistryAuth::Basic(u, p) => sha256(format!("basic\0{u}\0{p}").as_bytes()),
            RegistryAuth::Bearer(t) => sha256(format!("bearer\0{t}").as_bytes()),
        };
        let key = format!("{endpoint:?} {who}");
        let mut clients = lock(&self.clients);
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let config = ClientConfig {
            protocol: if endpoint.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: endpoint.skip_verify,
            extra_root_certificates: endpoint
                .ca_pem
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.as_bytes().to_vec(),
                })
                .collect(),
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(120)),
            ..ClientConfig::default()
        };
        let client = Client::new(config);
        clients.insert(key, client.clone());
        Ok(client)
    }
}

async fn pull_from(
    inner: &Arc<Inner>,
    endpoint: &Endpoint,
    name: &ImageName,
    auth: &RegistryAuth,
) -> Result<StoredImage, PullError> {
    let image = name.to_string();
    let registry_err = |e: OciDistributionError| match e {
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            PullError::DigestMismatch {
                image: image.clone(),
                digest: expected,
                actual,
            }
        }
        e => PullError::Registry {
            image: image.clone(),
            endpoint: endpoint.url(),
            reason: reason(&e),
        },
    };
    let client = inner.client(endpoint, auth)?;
    let repository = name.repository().to_owned();
    let reference = match (name.digest(), name.tag()) {
        (Some(d), _) => Reference::with_digest(endpoint.host.clone(), repository, d.to_owned()),
        (None, Some(t)) => Reference::with_tag(endpoint.host.clone(), repository, t.to_owned()),
        (None, None) => Reference::with_tag(endpoint.host.clone(), repository, "latest".into()),
    };
    let (top, _) = match client.pull_manifest_raw(&reference, auth, ACCEPT).await {
        Ok(pulled) => pulled,
        // With token authentication (Docker Hub's), oci-client gets the bearer token on the
        // first request but ignores a failed token request and sends that request without a
        // token: a wrong password shows only as the registry's "authentication required".
        // Asking for the token again, explicitly, reports why the token server refused it
        // (`{"details":"incorrect username or password"}`); if it is granted, the registry's
        // refusal stands (an anonymous token without access to a private repository).
        Err(e @ OciDistributionError::UnauthorizedError { .. }) => {
            return Err(
                match client.auth(&reference, auth, RegistryOperation::Pull).await {
                    Err(refused) => PullError::Registry {
                        image: image.clone(),
                        endpoint: endpoint.url(),
                        reason: format!("getting a token: {}", reason(&refused)),
                    },
                    Ok(_) => registry_err(e),
                },
            );
        }
        Err(e) => return Err(registry_err(e)),
    };
    let top_digest = sha256(&top);
    if let Some(wanted) = name.digest() {
        if wanted != top_digest {
            return Err(PullError::DigestMismatch {
                image,
                digest: wanted.to_owned(),
                actual: top_digest,
            });
        }
    }
    let invalid = |reason: String| PullError::InvalidImage {
        image: image.clone(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&top).map_err(|e| invalid(format!("manifest: {e}")))?;
    let mut manifest_blobs = vec![(top_digest.clone(), top.to_vec())];
    let manifest_bytes = if value.get("manifests").is_some() {
        let index: IndexJson =
            serde_json::from_value(value).map_err(|e| invalid(format!("index: {e}")))?;
        let chosen = select_platform(&index.manifests, &inner.platform).ok_or_else(|| {
            PullError::NoMatchingPlatform {
                image: image.clone(),
                wanted: inner.platform.name(),
                available: index
                    .manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref())
                    .map(|p| format!("{}/{}", p.os, p.architecture))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })?;
        check_digest(&image, &chosen.digest)?;
        let child_ref = reference.clone_with_digest(chosen.digest.clone());
        let (bytes, _) = client
            .pull_manifest_raw(&child_ref, auth, ACCEPT)
            .await
            .map_err(registry_err)?;
        let actual = sha256(&bytes);
        if actual != chosen.digest {
            return Err(PullError::DigestMismatch {
                image,
                digest: chosen.digest.clone(),
                actual,
            });
        }
        manifest_blobs.push((actual, bytes.to_vec()));
        bytes.to_vec()
    } else {
        top.to_vec()
    };
    let manifest: ManifestJson =
        serde_json::from_slice(&manifest_bytes).map_err(|e| invalid(format!("manifest: {e}")))?;
    if manifest
        .media_type
        .as_deref()
        .is_some_and(|m| m.contains("manifest.v1+prettyjws"))
    {
        return Err(invalid("schema 1 manifests are not supported".into()));
    }
    let repo_digest = name.with_digest(&top_digest);
    let id = manifest.config.digest.clone();
    check_digest(&image, &id)?;
    // Held already (another tag, or pulled before): only the names change.
    {
        let mut index = lock(&inner.index);
        if index.images.contains_key(&id) {
            return tag(inner, &mut index, &id, name, Some(repo_digest));
        }
    }
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for layer in &manifest.layers {
        check_digest(&image, &layer.digest)?;
        let compression = Compression::of_media_type(&layer.media_type)
            .ok_or_else(|| invalid(format!("unsupported layer media type {}", layer.media_type)))?;
        layers.push((layer.clone(), compression));
    }
    let root = inner.root.clone();
    for (digest, bytes) in &manifest_blobs {
        write_blob(&root, digest, bytes)?;
    }

    // Layers download concurrently (aborted if the pull fails) while one blocking task applies
    // them in order, each following its download as it arrives: unpacking overlaps the
    // transfer. The staging tree is used only once every blob is verified.
    let mut downloads = Vec::with_capacity(layers.len());
    let mut readers = Vec::with_capacity(layers.len());
    for (layer, compression) in &layers {
        let path = blob_path(&root, &layer.digest);
        if path.exists() {
            let file = std::fs::File::open(&path).map_err(|e| store_err("opening blob", e))?;
            let len = file
                .metadata()
                .map_err(|e| store_err("opening blob", e))?
                .len();
            let reader = decompress_ahead(FollowReader::done(file, len), *compression);
            readers.push((reader, layer.digest.clone()));
            continue;
        }
        let tmp = root
            .join("tmp")
            .join(format!("blob-{}", uuid::Uuid::new_v4()));
        // Readable too: the follower's handle is a clone of this one.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| store_err("creating blob", e))?;
        let follow = file
            .try_clone()
            .map_err(|e| store_err("creating blob", e))?;
        let progress = Progress::new();
        let reader = decompress_ahead(FollowReader::new(follow, progress.clone()), *compression);
        readers.push((reader, layer.digest.clone()));
        // Closes the progress (as failed) however the task ends, even aborted unpolled.
        let closer = CloseOnDrop(progress);
        let (client, reference, inner2) = (client.clone(), reference.clone(), inner.clone());
        let (layer, image2, endpoint2) = (layer.clone(), image.clone(), endpoint.url());
        downloads.push(AbortOnDrop(tokio::spawn(async move {
            let closer = closer;
            let target = Download {
                tmp,
                file,
                progress: Some(closer.0.clone()),
            };
            download(
                &inner2, &client, &reference, &layer, target, &image2, &endpoint2,
            )
            .await
        })));
    }
    let config_desc = DescriptorJson {
        platform: None,
        ..manifest.config.clone()
    };
    let staging = root
        .join("tmp")
        .join(format!("rootfs-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&staging).map_err(|e| store_err("staging rootfs", e))?;
    let cleanup = RemoveOnDrop(Some(staging.clone()));
    let dest = staging.clone();
    let applier = tokio::task::spawn_blocking(move || {
        let mut unpacked = 0;
        for (reader, digest) in readers {
            unpacked += apply_tar(reader, &dest).map_err(|e| (digest, e))?;
        }
        Ok::<u64, (String, std::io::Error)>(unpacked)
    });
    let size_bytes: u64 = layers
        .iter()
        .map(|(l, _)| u64::try_from(l.size).unwrap_or(0))
        .sum();
    let mut failure = fetch_blob(
        inner,
        &client,
        &reference,
        &config_desc,
        &root,
        &image,
        &endpoint.url(),
    )
    .await
    .err();
    for mut d in downloads {
        if failure.is_some() {
            break;
        }
        failure = match (&mut d.0).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(store_err("download task", e)),
        };
    }
    // (Remaining downloads are aborted on drop, which fails their readers: the applier ends.)
    let applied = applier.await.map_err(|e| store_err("unpack task", e))?;
    if let Some(e) = failure {
        return Err(e);
    }
    let unpacked_bytes = applied.map_err(|(digest, e)| invalid(format!("layer {digest}: {e}")))?;
    let config_bytes = std::fs::read(blob_path(&root, &id)).map_err(|e| store_err("config", e))?;
    let config = parse_config(&config_bytes).map_err(|e| invalid(format!("config: {e}")))?;
    let rootfs = root.join("rootfs").join(hex_of(&id));
    match std::fs::rename(&staging, &rootfs) {
        Ok(()) => {}
        // Unpacked meanwhile by a pull under another name: that copy is as good.
        Err(_) if rootfs.is_dir() => {}
        Err(e) => return Err(store_err("installing rootfs", e)),
    }
    drop(cleanup);
    let mut blobs: Vec<String> = manifest_blobs.into_iter().map(|(d, _)| d).collect();
    blobs.push(id.clone());
    blobs.extend(layers.iter().map(|(l, _)| l.digest.clone()));
    let record = StoredImage {
        id: id.clone(),
        repo_tags: vec![],
        repo_digests: vec![],
        size_bytes,
        unpacked_bytes,
        config,
        blobs,
        rootfs,
    };
    let mut index = lock(&inner.index);
    index.images.entry(id.clone()).or_insert(record);
    tag(inner, &mut index, &id, name, Some(repo_digest))
}

/// A task aborted when the handle is dropped (a failed pull stops its other downloads).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Removes a temporary file or directory when dropped (gone already after a rename).
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {
                    let _ = std::fs::remove_dir_all(&p);
                }
                Ok(_) => {
                    let _ = std::fs::remove_file(&p);
                }
                Err(_) => {}
            }
        }
    }
}

fn parse_config(bytes: &[u8]) -> Result<ImageConfig, String> {
    let parsed =
        oci_spec::image::ImageConfiguration::from_reader(bytes).map_err(|e| e.to_string())?;
    let Some(c) = parsed.config() else {
        return Ok(ImageConfig::default());
    };
    Ok(ImageConfig {
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        env: c.env().clone().unwrap_or_default(),
        working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
        user: c.user().clone().filter(|u| !u.is_empty()),
    })
}

/// Stores a blob already in memory (and verified by the caller).
fn write_blob(root: &Path, digest: &str, bytes: &[u8]) -> Result<(), PullError> {
    let path = blob_path(root, digest);
    if path.exists() {
        return Ok(());
    }
    let tmp = root
        .join("tmp")
        .join(format!("blob-{}", uuid::Uuid::new_v4()));
    std::fs::write(&tmp, bytes).map_err(|e| store_err("writing blob", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| store_err("writing blob", e))
}

/// Downloads blob `desc` into the store unless held.
async fn fetch_blob(
    inner: &Inner,
    client: &Client,
    reference: &Reference,
    desc: &DescriptorJson,
    root: &Path,
    image: &str,
    endpoint: &str,
) -> Result<(), PullError> {
    if blob_path(root, &desc.digest).exists() {
        return Ok(());
    }
    let tmp = root
        .join("tmp")
        .join(format!("blob-{}", uuid::Uuid::new_v4()));
    let file = std::fs::File::create(&tmp).map_err(|e| store_err("creating blob", e))?;
    let target = Download {
        tmp,
        file,
        progress: None,
    };
    download(inner, client, reference, desc, target, image, endpoint).await
}

/// Where a download goes: a temporary file, and who follows it.
struct Download {
    tmp: PathBuf,
    file: std::fs::File,
    progress: Option<Arc<Progress>>,
}

/// Downloads blob `desc` into `target`, verifying its digest on the way: the blob reaches
/// `blobs/` only whole and verified, and a follower sees its end only then.
async fn download(
    inner: &Inner,
    client: &Client,
    reference: &Reference,
    desc: &DescriptorJson,
    target: Download,
    image: &str,
    endpoint: &str,
) -> Result<(), PullError> {
    inner.blob_downloads.fetch_add(1, Ordering::Relaxed);
    let path = blob_path(&inner.root, &desc.digest);
    let _cleanup = RemoveOnDrop(Some(target.tmp.clone()));
    let mut writer = BlobWriter {
        file: target.file,
        buffer: Vec::with_capacity(WRITE_CHUNK),
        progress: target.progress.clone(),
    };
    let descriptor = OciDescriptor {
        media_type: desc.media_type.clone(),
        digest: desc.digest.clone(),
        size: desc.size,
        ..OciDescriptor::default()
    };
    // oci-client hashes the bytes as they arrive and fails the pull, after the last byte,
    // unless they match the layer's digest (and the registry's `Docker-Content-Digest`).
    let result = client.pull_blob(reference, &descriptor, &mut writer).await;
    let verdict = match result {
        Ok(()) => Ok(()),
        Err(OciDistributionError::DigestError(DigestError::VerificationError {
            expected,
            actual,
        })) => Err(PullError::DigestMismatch {
            image: image.to_owned(),
            digest: expected,
            actual,
        }),
        Err(e) => Err(PullError::Registry {
            image: image.to_owned(),
            endpoint: endpoint.to_owned(),
            reason: format!("fetching blob {}: {}", desc.digest, reason(&e)),
        }),
    };
    let verdict = verdict.and_then(|()| {
        std::fs::rename(&target.tmp, &path).map_err(|e| store_err("installing blob", e))
    });
    if let Some(progress) = &target.progress {
        progress.finish(verdict.as_ref().map(|_| ()).map_err(ToString::to_string));
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_configs_map_to_registry_auth() {
        assert_eq!(registry_auth(None), RegistryAuth::Anonymous);
        let basic = AuthConfig::basic("h", "u", "p");
        assert_eq!(
            registry_auth(Some(&basic)),
            RegistryAuth::Basic("u".into(), "p".into())
        );
        let mut encoded = AuthConfig::default();
        encoded.auth = "dTpw".into(); // u:p
        assert_eq!(
            registry_auth(Some(&encoded)),
            RegistryAuth::Basic("u".into(), "p".into())
        );
        let mut token = AuthConfig::default();
        token.registry_token = "t".into();
        assert_eq!(
            registry_auth(Some(&token)),
            RegistryAuth::Bearer("t".into())
        );
    }

    #[test]
    fn configs_parse_with_oci_spec() {
        let c = parse_config(
            br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/sh"],
            "Cmd":["-c","x"],"Env":["A=1"],"WorkingDir":"/w","User":"app"},
            "rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        assert_eq!(c.entrypoint, ["/bin/sh"]);
        assert_eq!(c.cmd, ["-c", "x"]);
        assert_eq!(c.working_dir.as_deref(), Some("/w"));
        assert_eq!(c.user.as_deref(), Some("app"));
        assert!(parse_config(b"[]").is_err());
    }
}
