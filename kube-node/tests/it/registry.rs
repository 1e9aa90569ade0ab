//! A real registry on loopback (Debian's `docker-registry`, i.e. CNCF Distribution, what
//! Docker Hub runs) and test images built and pushed from Rust.
//!
//! ```ignore
//! let registry = Registry::start();                       // plain HTTP, no auth
//! let image = TestImage::busybox(&["/bin/sh", "-c"], &["echo hi"]);
//! let digest = registry.push("demo/busybox", "1", &image).await; // manifest digest
//! // registry.host() = "127.0.0.1:PORT", registry.url() = "http://127.0.0.1:PORT"
//! ```
//!
//! `Registry::builder().htpasswd("user", "pw").tls().start()` serves a private registry over
//! TLS with a self-signed certificate (`ca_pem()`). Everything here compiles on its own too,
//! so the `image_pull` bench includes this file with `#[path]`.
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use sha2::{Digest, Sha256};

/// The registry binary.
pub(crate) const REGISTRY_BIN: &str = "docker-registry";

/// The OCI media types used here.
pub(crate) mod media {
    /// An image manifest.
    pub(crate) const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// An image index.
    pub(crate) const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// An image config.
    pub(crate) const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// An uncompressed layer.
    pub(crate) const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// A gzip layer.
    pub(crate) const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// A zstd layer.
    pub(crate) const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
}

/// Whether `tool` runs (`--version`, or `--help` for tools without it). Under `CI=true` a
/// missing tool fails the test instead of skipping it.
pub(crate) fn require_tool(tool: &str) -> bool {
    let runs = ["--version", "--help"].iter().any(|flag| {
        Command::new(tool)
            .arg(flag)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if runs {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true and {tool} is not installed (apt-get install -y docker-registry skopeo)"
    );
    eprintln!("skipping: {tool} is not installed");
    false
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// How a [`Registry`] is started.
#[derive(Debug, Default)]
pub(crate) struct RegistryBuilder {
    htpasswd: Option<(String, String)>,
    tls: bool,
}

impl RegistryBuilder {
    /// Requires basic authentication as `user` / `password` (an htpasswd file, bcrypt).
    pub(crate) fn htpasswd(mut self, user: &str, password: &str) -> Self {
        self.htpasswd = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Serves HTTPS with a self-signed certificate for `127.0.0.1` (see [`Registry::ca_pem`]).
    pub(crate) fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Starts the registry and waits until it answers `/v2/`.
    pub(crate) fn start(self) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  \
             filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: \
             127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        let mut ca_pem = None;
        if self.tls {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params =
                rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
                    .expect("params");
            params.subject_alt_names = vec![
                rcgen::SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
                rcgen::SanType::DnsName("localhost".try_into().expect("dns name")),
            ];
            let cert = params.self_signed(&key).expect("self-signed");
            let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
            std::fs::write(&cert_file, cert.pem()).expect("write cert");
            std::fs::write(&key_file, key.serialize_pem()).expect("write key");
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert_file.display(),
                key_file.display()
            ));
            ca_pem = Some(cert.pem());
        }
        if let Some((user, password)) = &self.htpasswd {
            let hash = bcrypt::hash(password, 4).expect("bcrypt");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{user}:{hash}\n")).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test-registry\n    path: {}\n",
                file.display()
            ));
        }
        let config_file = dir.path().join("config.yml");
        std::fs::write(&config_file, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log clone"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let registry = Registry {
            child,
            dir,
            port,
            ca_pem,
            auth: self.htpasswd,
        };
        registry.wait_ready();
        registry
    }
}

/// A running registry in a temporary directory, killed on drop.
#[derive(Debug)]
pub(crate) struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    ca_pem: Option<String>,
    auth: Option<(String, String)>,
}

impl Registry {
    /// A builder (auth, TLS).
    pub(crate) fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// A plain-HTTP registry without authentication.
    pub(crate) fn start() -> Self {
        Self::builder().start()
    }

    /// `127.0.0.1:PORT`: the registry part of image references.
    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT` (or `https://`).
    pub(crate) fn url(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.host())
    }

    /// The self-signed certificate (PEM) of a TLS registry.
    pub(crate) fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The registry's storage root.
    pub(crate) fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `host/repo:tag`.
    pub(crate) fn reference(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.host())
    }

    /// The number of blob downloads (`GET /v2/…/blobs/…`) served so far, from the access log.
    pub(crate) fn blob_gets(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
            .count()
    }

    /// The number of manifest requests (`GET` or `HEAD /v2/…/manifests/…`) served so far.
    pub(crate) fn manifest_gets(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        log.lines()
            .filter(|l| {
                (l.contains("\"GET /v2/") || l.contains("\"HEAD /v2/")) && l.contains("/manifests/")
            })
            .count()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A client pushing to this registry (as the htpasswd user, if any).
    fn client(&self) -> Client {
        let mut config = ClientConfig {
            protocol: if self.ca_pem.is_some() {
                ClientProtocol::Https
            } else {
                ClientProtocol::Http
            },
            ..ClientConfig::default()
        };
        if let Some(pem) = &self.ca_pem {
            config
                .extra_root_certificates
                .push(oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data: pem.as_bytes().to_vec(),
                });
        }
        Client::new(config)
    }

    fn registry_auth(&self) -> RegistryAuth {
        match &self.auth {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    async fn authed(&self, repo: &str) -> (Client, Reference) {
        install_crypto();
        let client = self.client();
        let reference = Reference::with_tag(self.host(), repo.to_owned(), "x".to_owned());
        if self.auth.is_some() {
            client
                .auth(&reference, &self.registry_auth(), RegistryOperation::Push)
                .await
                .expect("registry auth");
        }
        (client, reference)
    }

    /// Pushes a blob (skipped if present).
    pub(crate) async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let (client, reference) = self.authed(repo).await;
        let digest = sha256(bytes);
        client
            .push_blob(&reference, bytes.to_vec(), &digest)
            .await
            .expect("push blob");
        digest
    }

    /// Pushes `image` (its layers, config, manifest) as `repo:tag`; returns the manifest digest.
    pub(crate) async fn push(&self, repo: &str, tag: &str, image: &TestImage) -> String {
        let (client, _) = self.authed(repo).await;
        let reference = Reference::with_tag(self.host(), repo.to_owned(), tag.to_owned());
        for layer in &image.layers {
            client
                .push_blob(&reference, layer.bytes.clone(), &layer.digest())
                .await
                .expect("push layer");
        }
        let config = image.config_bytes();
        client
            .push_blob(&reference, config.clone(), &sha256(&config))
            .await
            .expect("push config");
        let manifest = image.manifest_bytes();
        client
            .push_manifest_raw(
                &reference,
                manifest.clone(),
                media::MANIFEST.parse().expect("header"),
            )
            .await
            .expect("push manifest");
        sha256(&manifest)
    }

    /// Pushes an image index `repo:tag` of `images` (each with its own platform); returns the
    /// index digest.
    pub(crate) async fn push_index(&self, repo: &str, tag: &str, images: &[&TestImage]) -> String {
        let mut manifests = Vec::new();
        for (i, image) in images.iter().enumerate() {
            let digest = self.push(repo, &format!("{tag}-platform-{i}"), image).await;
            manifests.push(serde_json::json!({
                "mediaType": media::MANIFEST,
                "digest": digest,
                "size": image.manifest_bytes().len(),
                "platform": {"architecture": image.architecture, "os": "linux"},
            }));
        }
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::INDEX,
            "manifests": manifests,
        }))
        .expect("index json");
        let (client, _) = self.authed(repo).await;
        let reference = Reference::with_tag(self.host(), repo.to_owned(), tag.to_owned());
        client
            .push_manifest_raw(
                &reference,
                index.clone(),
                media::INDEX.parse().expect("header"),
            )
            .await
            .expect("push index");
        sha256(&index)
    }

    /// Overwrites the stored bytes of blob `digest` with as many different bytes: the registry
    /// then serves content that does not match its digest.
    pub(crate) fn corrupt_blob(&self, digest: &str) {
        let hex = digest.trim_start_matches("sha256:");
        let path = self
            .storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data");
        let mut bytes = std::fs::read(&path).expect("stored blob");
        for b in bytes.iter_mut().take(64) {
            *b = !*b;
        }
        std::fs::write(&path, bytes).expect("corrupt blob");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Installs rustls' ring provider for the process (once; later calls are no-ops).
pub(crate) fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How a layer is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// One entry of a layer tar.
#[derive(Clone, Debug)]
pub(crate) enum Entry {
    /// A directory.
    Dir(String),
    /// A file with its mode.
    File(String, Vec<u8>, u32),
    /// A symbolic link `path` → `target`.
    Symlink(String, String),
    /// A whiteout deleting `path` from the layers below (`.wh.NAME`).
    Whiteout(String),
    /// An opaque directory: hides what lower layers have in it (`DIR/.wh..wh..opq`).
    Opaque(String),
}

/// A compressed (or not) layer blob.
#[derive(Clone, Debug)]
pub(crate) struct Layer {
    /// The blob.
    pub(crate) bytes: Vec<u8>,
    /// The digest of the uncompressed tar.
    pub(crate) diff_id: String,
    /// Its media type.
    pub(crate) media_type: &'static str,
}

impl Layer {
    /// A layer of `entries`.
    pub(crate) fn new(entries: &[Entry], compression: Compression) -> Self {
        let tar = tar_of(entries);
        let diff_id = sha256(&tar);
        let (bytes, media_type) = match compression {
            Compression::None => (tar, media::LAYER_TAR),
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&tar).expect("gzip");
                (enc.finish().expect("gzip"), media::LAYER_GZIP)
            }
            Compression::Zstd => (
                ruzstd::encoding::compress_to_vec(
                    tar.as_slice(),
                    ruzstd::encoding::CompressionLevel::Fastest,
                ),
                media::LAYER_ZSTD,
            ),
        };
        Self {
            bytes,
            diff_id,
            media_type,
        }
    }

    /// The blob's digest.
    pub(crate) fn digest(&self) -> String {
        sha256(&self.bytes)
    }
}

fn tar_of(entries: &[Entry]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    };
    for entry in entries {
        match entry {
            Entry::Dir(path) => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                builder
                    .append_data(&mut h, path, std::io::empty())
                    .expect("tar dir");
            }
            Entry::File(path, data, mode) => {
                let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
                builder
                    .append_data(&mut h, path, data.as_slice())
                    .expect("tar file");
            }
            Entry::Symlink(path, target) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                builder.append_link(&mut h, path, target).expect("tar link");
            }
            Entry::Whiteout(path) => {
                let p = Path::new(path);
                let name = p.file_name().and_then(|n| n.to_str()).expect("file name");
                let wh = p.with_file_name(format!(".wh.{name}"));
                let mut h = header(tar::EntryType::Regular, 0o644, 0);
                builder
                    .append_data(&mut h, wh, std::io::empty())
                    .expect("tar whiteout");
            }
            Entry::Opaque(dir) => {
                let mut h = header(tar::EntryType::Regular, 0o644, 0);
                builder
                    .append_data(
                        &mut h,
                        Path::new(dir).join(".wh..wh..opq"),
                        std::io::empty(),
                    )
                    .expect("tar opaque");
            }
        }
    }
    builder.into_inner().expect("tar")
}

/// An image: layers and the config fields tests care about.
#[derive(Clone, Debug)]
pub(crate) struct TestImage {
    /// Bottom first.
    pub(crate) layers: Vec<Layer>,
    /// `Entrypoint`.
    pub(crate) entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    pub(crate) cmd: Option<Vec<String>>,
    /// `Env` (`K=V`).
    pub(crate) env: Vec<String>,
    /// `WorkingDir`.
    pub(crate) working_dir: Option<String>,
    /// `User`.
    pub(crate) user: Option<String>,
    /// `amd64`, `arm64`.
    pub(crate) architecture: String,
}

/// The node's architecture as OCI names it.
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The host's static busybox.
pub(crate) const HOST_BUSYBOX: &str = "/bin/busybox";

/// Entries for busybox and its applet links under `/bin`, plus `/etc/passwd` and
/// `/etc/group` with `root` (0), `app` (1000:1000) and group `staff` (50).
pub(crate) fn busybox_entries() -> Vec<Entry> {
    let busybox =
        std::fs::read(HOST_BUSYBOX).expect("host busybox (apt-get install busybox-static)");
    let list = Command::new(HOST_BUSYBOX)
        .arg("--list")
        .output()
        .expect("busybox --list");
    let mut entries = vec![
        Entry::Dir("bin".into()),
        Entry::Dir("etc".into()),
        Entry::Dir("tmp".into()),
        Entry::Dir("home".into()),
        Entry::Dir("home/app".into()),
        Entry::File("bin/busybox".into(), busybox, 0o755),
        Entry::File(
            "etc/passwd".into(),
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n".to_vec(),
            0o644,
        ),
        Entry::File(
            "etc/group".into(),
            b"root:x:0:\nstaff:x:50:app\napp:x:1000:\n".to_vec(),
            0o644,
        ),
    ];
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if !applet.is_empty() && applet != "busybox" {
            entries.push(Entry::Symlink(format!("bin/{applet}"), "busybox".into()));
        }
    }
    entries
}

impl TestImage {
    /// An image of `layers` for the host's architecture, with `PATH` set.
    pub(crate) fn new(layers: Vec<Layer>) -> Self {
        Self {
            layers,
            entrypoint: None,
            cmd: None,
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            working_dir: None,
            user: None,
            architecture: host_arch().to_owned(),
        }
    }

    /// One gzip layer: host busybox + applet links; `entrypoint` / `cmd` (empty: unset) and
    /// `IMAGE_VAR=from-image` in `Env`.
    pub(crate) fn busybox(entrypoint: &[&str], cmd: &[&str]) -> Self {
        let mut image = Self::new(vec![Layer::new(&busybox_entries(), Compression::Gzip)]);
        let owned = |v: &[&str]| (!v.is_empty()).then(|| v.iter().map(|s| s.to_string()).collect());
        image.entrypoint = owned(entrypoint);
        image.cmd = owned(cmd);
        image.env.push("IMAGE_VAR=from-image".into());
        image
    }

    /// Adds a layer on top.
    pub(crate) fn with_layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    /// At least 50 MB in 6 layers (gzip, zstd and plain): busybox, then incompressible data
    /// files; `/data/deleted.bin` (layer 2) is deleted by a whiteout in layer 4, `/opaque/`
    /// (layer 3, holding `old.txt`) is made opaque in layer 5 which adds `opaque/new.txt`, and
    /// `/data/kept.bin` stays.
    pub(crate) fn big() -> Self {
        const MB: usize = 1 << 20;
        let layers = vec![
            Layer::new(&busybox_entries(), Compression::Gzip),
            Layer::new(
                &[
                    Entry::Dir("data".into()),
                    Entry::File("data/deleted.bin".into(), noise(1, 12 * MB), 0o644),
                    Entry::File("data/kept.bin".into(), noise(2, 12 * MB), 0o644),
                ],
                Compression::Gzip,
            ),
            Layer::new(
                &[
                    Entry::Dir("opaque".into()),
                    Entry::File("opaque/old.txt".into(), b"old\n".to_vec(), 0o644),
                    Entry::File("data/more.bin".into(), noise(3, 12 * MB), 0o644),
                ],
                Compression::Zstd,
            ),
            Layer::new(
                &[
                    Entry::Whiteout("data/deleted.bin".into()),
                    Entry::File("data/four.bin".into(), noise(4, 10 * MB), 0o644),
                ],
                Compression::None,
            ),
            Layer::new(
                &[
                    Entry::Dir("opaque".into()),
                    Entry::Opaque("opaque".into()),
                    Entry::File("opaque/new.txt".into(), b"new\n".to_vec(), 0o644),
                    Entry::File("data/five.bin".into(), noise(5, 10 * MB), 0o644),
                ],
                Compression::Gzip,
            ),
            Layer::new(
                &[Entry::File(
                    "etc/motd".into(),
                    b"big image\n".to_vec(),
                    0o644,
                )],
                Compression::Gzip,
            ),
        ];
        let mut image = Self::new(layers);
        image.cmd = Some(vec!["/bin/sh".into()]);
        image
    }

    /// The same busybox image for another architecture (a `/platform` file names it).
    pub(crate) fn for_arch(arch: &str) -> Self {
        let mut image = Self::busybox(&[], &["/bin/sh"]).with_layer(Layer::new(
            &[Entry::File(
                "platform".into(),
                format!("{arch}\n").into_bytes(),
                0o644,
            )],
            Compression::Gzip,
        ));
        image.architecture = arch.to_owned();
        image
    }

    /// The config blob.
    pub(crate) fn config_bytes(&self) -> Vec<u8> {
        let mut config = serde_json::json!({"Env": self.env});
        if let Some(e) = &self.entrypoint {
            config["Entrypoint"] = serde_json::json!(e);
        }
        if let Some(c) = &self.cmd {
            config["Cmd"] = serde_json::json!(c);
        }
        if let Some(w) = &self.working_dir {
            config["WorkingDir"] = serde_json::json!(w);
        }
        if let Some(u) = &self.user {
            config["User"] = serde_json::json!(u);
        }
        serde_json::to_vec(&serde_json::json!({
            "architecture": self.architecture,
            "os": "linux",
            "config": config,
            "rootfs": {
                "type": "layers",
                "diff_ids": self.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
            },
        }))
        .expect("config json")
    }

    /// The image ID (the config's digest).
    pub(crate) fn id(&self) -> String {
        sha256(&self.config_bytes())
    }

    /// The manifest blob.
    pub(crate) fn manifest_bytes(&self) -> Vec<u8> {
        let config = self.config_bytes();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::MANIFEST,
            "config": {"mediaType": media::CONFIG, "digest": sha256(&config), "size": config.len()},
            "layers": self.layers.iter().map(|l| serde_json::json!({
                "mediaType": l.media_type,
                "digest": l.digest(),
                "size": l.bytes.len(),
            })).collect::<Vec<_>>(),
        }))
        .expect("manifest json")
    }

    /// The total size of its layers.
    pub(crate) fn size(&self) -> usize {
        self.layers.iter().map(|l| l.bytes.len()).sum()
    }
}

/// `len` incompressible bytes from `seed` (xorshift).
pub(crate) fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
