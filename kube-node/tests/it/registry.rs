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
//! TLS with a self-signed certificate (`ca_pem()`); `Registry::builder().token_auth("user",
//! "pw").start()` authenticates as Docker Hub does, with bearer tokens from a token server in
//! this process ([`TokenServer`]). Everything here compiles on its own too, so the
//! `image_pull` bench includes this file with `#[path]`.
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
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
    token: Option<(String, String)>,
    tls: bool,
}

impl RegistryBuilder {
    /// Requires basic authentication as `user` / `password` (an htpasswd file, bcrypt).
    pub(crate) fn htpasswd(mut self, user: &str, password: &str) -> Self {
        self.htpasswd = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// Requires bearer tokens, as Docker Hub does, from a [`TokenServer`] started with the
    /// registry: `user` / `password` may pull and push every repository, anonymous requests
    /// may pull repositories under `public/` only.
    pub(crate) fn token_auth(mut self, user: &str, password: &str) -> Self {
        self.token = Some((user.to_owned(), password.to_owned()));
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
        let mut token = None;
        if let Some((user, password)) = &self.token {
            let server = TokenServer::start(user, password);
            let bundle = dir.path().join("token-ca.pem");
            std::fs::write(&bundle, server.cert_pem()).expect("write token cert bundle");
            // `info` logs each request with the user its token names (`auth.user.name`).
            config = config.replace("level: warn", "level: info");
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: \
                 {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                server.realm(),
                bundle.display()
            ));
            token = Some(server);
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
            auth: self.htpasswd.or(self.token),
            token,
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
    token: Option<TokenServer>,
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

    /// The token server of a `token_auth` registry.
    pub(crate) fn token_server(&self) -> Option<&TokenServer> {
        self.token.as_ref()
    }

    /// The registry's log so far (access log lines, and at `info` its request log).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
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

/// The `service` of a token-auth registry (the tokens' audience).
pub(crate) const TOKEN_SERVICE: &str = "test-registry";
/// The issuer the registry trusts.
pub(crate) const TOKEN_ISSUER: &str = "test-issuer";
/// What the token server answers wrong credentials with (Docker Hub's words).
pub(crate) const TOKEN_REFUSAL: &str = r#"{"details":"incorrect username or password"}"#;

/// One request to a [`TokenServer`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TokenRequest {
    /// The basic-auth user; `None` for an anonymous request.
    pub(crate) user: Option<String>,
    /// Its `scope` parameters (`repository:NAME:ACTIONS`).
    pub(crate) scopes: Vec<String>,
    /// The response's status.
    pub(crate) status: u16,
    /// What the issued token grants, as scopes (`repository:public/app:pull`); may be empty.
    pub(crate) granted: Vec<String>,
}

/// A Docker-style token server (the `realm` of `WWW-Authenticate: Bearer`) on a loopback port,
/// served by its own thread: `GET /token?service=…&scope=repository:NAME:ACTIONS`, with basic
/// credentials or none, answers `{"token": JWT}`, a JWT signed (ES256) by a key whose
/// self-signed certificate is the registry's `rootcertbundle`, carried in the `x5c` header
/// (Distribution's `VerifySigningKey` takes the key from the `x5c` chain it verifies against
/// that bundle). Wrong credentials get `401` and [`TOKEN_REFUSAL`]; like Docker Hub, an
/// anonymous request gets a token granting pull of `public/…` repositories and nothing else.
pub(crate) struct TokenServer {
    port: u16,
    cert_pem: String,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for TokenServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// What the token server's handler needs.
struct TokenIssuer {
    user: String,
    password: String,
    key: ring::signature::EcdsaKeyPair,
    /// The certificate, base64 DER, for `x5c`.
    cert_b64: String,
    rng: ring::rand::SystemRandom,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
}

impl TokenServer {
    /// Starts a token server accepting `user` / `password`.
    pub(crate) fn start(user: &str, password: &str) -> Self {
        use base64::Engine;
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("P-256 key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("P-256 key pair");
        let cert_key = rcgen::KeyPair::try_from(pkcs8.as_ref()).expect("rcgen key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, TOKEN_ISSUER);
        let cert = params.self_signed(&cert_key).expect("token certificate");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let issuer = Arc::new(TokenIssuer {
            user: user.to_owned(),
            password: password.to_owned(),
            key,
            cert_b64: base64::engine::general_purpose::STANDARD.encode(cert.der()),
            rng,
            requests: requests.clone(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("token server port");
        let port = listener.local_addr().expect("token server address").port();
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let (shutdown, stopped) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("token server runtime")
                .block_on(serve_tokens(listener, issuer, stopped));
        });
        Self {
            port,
            cert_pem: cert.pem(),
            requests,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT/token`.
    pub(crate) fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    /// The signing key's certificate (PEM): the registry's `rootcertbundle`.
    pub(crate) fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Every request served so far, oldest first.
    pub(crate) fn requests(&self) -> Vec<TokenRequest> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve_tokens(
    listener: std::net::TcpListener,
    issuer: Arc<TokenIssuer>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let issuer = issuer.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let response = issuer.answer(&req);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `%XX` and `+` decoded (a query parameter).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TokenIssuer {
    fn answer<B>(
        &self,
        req: &hyper::Request<B>,
    ) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
        use base64::Engine;
        let query: Vec<(String, String)> = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (percent_decode(k), percent_decode(v)))
            .collect();
        let scopes: Vec<String> = query
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| v.split(' ').map(str::to_owned).collect::<Vec<_>>())
            .filter(|s| !s.is_empty())
            .collect();
        let service_ok = query
            .iter()
            .any(|(k, v)| k == "service" && v == TOKEN_SERVICE);
        let credentials = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|c| c.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())));
        let user = credentials.as_ref().map(|(u, _)| u.clone());
        let mut record = TokenRequest {
            user: user.clone(),
            scopes: scopes.clone(),
            status: 200,
            granted: Vec::new(),
        };
        let response = if req.uri().path() != "/token" || !service_ok {
            record.status = 400;
            respond(400, r#"{"details":"unknown service"}"#.to_owned())
        } else if credentials
            .as_ref()
            .is_some_and(|(u, p)| *u != self.user || *p != self.password)
        {
            record.status = 401;
            respond(401, TOKEN_REFUSAL.to_owned())
        } else {
            let mut access = Vec::new();
            for scope in &scopes {
                // `repository:NAME:ACTIONS`; NAME may hold `:` (a registry port), ACTIONS not.
                let (Some((kind, rest)), Some((_, actions))) =
                    (scope.split_once(':'), scope.rsplit_once(':'))
                else {
                    continue;
                };
                let Some((name, _)) = rest.rsplit_once(':') else {
                    continue;
                };
                let allowed: &[&str] = match (&user, kind) {
                    (_, k) if k != "repository" => &[],
                    (Some(_), _) => &["pull", "push"],
                    (None, _) if name.starts_with("public/") => &["pull"],
                    (None, _) => &[],
                };
                let granted: Vec<&str> =
                    actions.split(',').filter(|a| allowed.contains(a)).collect();
                if !granted.is_empty() {
                    record
                        .granted
                        .push(format!("{kind}:{name}:{}", granted.join(",")));
                    access.push(serde_json::json!({
                        "type": kind, "name": name, "actions": granted,
                    }));
                }
            }
            let token = self.sign(user.as_deref().unwrap_or(""), access);
            let body = serde_json::json!({
                "token": token, "access_token": token, "expires_in": 300,
            });
            respond(200, body.to_string())
        };
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(record);
        response
    }

    /// A compact JWS (ES256) of the claims Distribution checks (`iss`, `aud`, `exp`, `nbf`;
    /// `access` for authorization), its key found by the `x5c` certificate chain.
    fn sign(&self, subject: &str, access: Vec<serde_json::Value>) -> String {
        use base64::Engine;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [self.cert_b64]});
        let claims = serde_json::json!({
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "aud": TOKEN_SERVICE,
            "exp": now + 300,
            "nbf": now,
            "iat": now,
            "jti": uuid::Uuid::new_v4().to_string(),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        // ECDSA_P256_SHA256_FIXED: `r || s`, as JWS (and libtrust) want, not DER.
        let signature = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .expect("ES256 signature");
        format!("{signing_input}.{}", b64(signature.as_ref()))
    }
}

fn respond(status: u16, body: String) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
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
