//! Where images of a registry host are fetched from, configured per host as containerd's
//! `hosts.toml` does: mirrors tried in order before the upstream, plain HTTP, TLS settings.

use std::collections::BTreeMap;
use std::path::Path;

/// Docker Hub's registry API host (images name `docker.io`).
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// Errors from reading registry configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryConfigError {
    /// A `--registry-mirror` value is not `HOST=URL`.
    #[error(
        "invalid registry mirror {0:?}: expected HOST=URL (e.g. docker.io=http://127.0.0.1:5000)"
    )]
    InvalidMirror(String),
    /// A URL is not `http(s)://host[:port]`.
    #[error("invalid registry URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A hosts file could not be read.
    #[error("reading {path}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A hosts file is not valid TOML of the expected shape.
    #[error("parsing {path}: {message}")]
    Toml {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
}

/// One place to fetch from: a mirror or the upstream registry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` of the endpoint.
    pub host: String,
    /// Plain HTTP instead of HTTPS.
    pub plain_http: bool,
    /// Accept any TLS certificate.
    pub skip_verify: bool,
    /// Extra trusted CA certificates (PEM).
    pub ca_pem: Vec<String>,
}

impl Endpoint {
    /// Parses `http(s)://host[:port]` (a trailing `/` or `/v2` is allowed).
    pub fn from_url(url: &str) -> Result<Self, RegistryConfigError> {
        let invalid = |reason: &str| RegistryConfigError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (plain_http, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (false, rest)
        } else {
            return Err(invalid("the scheme must be http:// or https://"));
        };
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let path = path.trim_end_matches('/');
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        if !(path.is_empty() || path == "v2") {
            return Err(invalid("path prefixes are not supported"));
        }
        Ok(Self {
            host: host.to_owned(),
            plain_http,
            ..Self::default()
        })
    }

    /// `http(s)://host`.
    pub fn url(&self) -> String {
        let scheme = if self.plain_http { "http" } else { "https" };
        format!("{scheme}://{}", self.host)
    }
}

/// The configuration of one registry host (one `hosts.toml`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// Tried in order before the upstream.
    pub mirrors: Vec<Endpoint>,
    /// The upstream (`server = …`); `None`: the default for the host.
    pub server: Option<Endpoint>,
}

/// Registry configuration for every host, keyed by the registry name images use
/// (`docker.io`, `ghcr.io`, `127.0.0.1:5000`).
///
/// ```
/// use kube_node::pull::RegistryConfig;
/// let config = RegistryConfig::default()
///     .mirror("docker.io", "http://127.0.0.1:5000")?;
/// let endpoints = config.endpoints("docker.io");
/// assert_eq!(endpoints[0].url(), "http://127.0.0.1:5000");
/// assert_eq!(endpoints[1].url(), "https://registry-1.docker.io");
/// # Ok::<(), kube_node::pull::RegistryConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryConfig {
    hosts: BTreeMap<String, HostConfig>,
}

impl RegistryConfig {
    /// Adds a mirror `url` for registry `host`, tried before the upstream (and before the
    /// mirrors added later).
    pub fn mirror(mut self, host: &str, url: &str) -> Result<Self, RegistryConfigError> {
        let endpoint = Endpoint::from_url(url)?;
        self.hosts
            .entry(host.to_owned())
            .or_default()
            .mirrors
            .push(endpoint);
        Ok(self)
    }

    /// Adds a `--registry-mirror` value: `HOST=URL`.
    pub fn mirror_flag(self, flag: &str) -> Result<Self, RegistryConfigError> {
        let (host, url) = flag
            .split_once('=')
            .filter(|(h, u)| !h.is_empty() && !u.is_empty())
            .ok_or_else(|| RegistryConfigError::InvalidMirror(flag.to_owned()))?;
        self.mirror(host, url)
    }

    /// Sets the whole configuration of `host`.
    pub fn host(mut self, host: &str, config: HostConfig) -> Self {
        self.hosts.insert(host.to_owned(), config);
        self
    }

    /// The configuration of `host`, if any.
    pub fn host_config(&self, host: &str) -> Option<&HostConfig> {
        self.hosts.get(host)
    }

    /// Loads a containerd hosts directory: `DIR/<host>/hosts.toml` for each host, e.g.
    ///
    /// ```toml
    /// server = "https://registry-1.docker.io"
    /// [host."http://127.0.0.1:5000"]
    ///   capabilities = ["pull", "resolve"]
    ///   skip_verify = true
    ///   ca = "/etc/certs/mirror.pem"
    /// ```
    ///
    /// Hosts already configured here are replaced. `_default` is not supported.
    pub fn load_hosts_dir(mut self, dir: &Path) -> Result<Self, RegistryConfigError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| RegistryConfigError::Io { path, source }
        };
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let file = entry.path().join("hosts.toml");
            if !file.is_file() {
                continue;
            }
            let host = entry.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&file).map_err(io(&file))?;
            let config = parse_hosts_toml(&text, &entry.path()).map_err(|e| match e {
                RegistryConfigError::Toml { message, .. } => RegistryConfigError::Toml {
                    path: file.display().to_string(),
                    message,
                },
                other => other,
            })?;
            self.hosts.insert(host, config);
        }
        Ok(self)
    }

    /// Where to fetch `registry`'s images, in order: its mirrors, then the upstream
    /// (`server`, else `https://<registry>`; Docker Hub is `registry-1.docker.io`;
    /// loopback registries (`localhost`, `127.0.0.1`) default to plain HTTP).
    pub fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let config = self.hosts.get(registry);
        let mut out: Vec<Endpoint> = config.map(|c| c.mirrors.clone()).unwrap_or_default();
        let upstream = config.and_then(|c| c.server.clone()).unwrap_or_else(|| {
            let name = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
            Endpoint {
                host: if registry == "docker.io" {
                    DOCKER_HUB_API.to_owned()
                } else {
                    registry.to_owned()
                },
                plain_http: name == "localhost" || name == "127.0.0.1" || name == "[::1]",
                ..Endpoint::default()
            }
        });
        out.push(upstream);
        out
    }
}

#[derive(serde::Deserialize)]
struct HostsFile {
    server: Option<String>,
    #[serde(default)]
    skip_verify: bool,
    ca: Option<CaList>,
    #[serde(default)]
    host: toml::Table,
}

#[derive(serde::Deserialize)]
struct HostEntry {
    capabilities: Option<Vec<String>>,
    #[serde(default)]
    skip_verify: bool,
    ca: Option<CaList>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum CaList {
    One(String),
    Many(Vec<String>),
}

/// Reads CA files (relative paths are relative to the host's directory).
fn read_cas(ca: Option<CaList>, base: &Path) -> Result<Vec<String>, RegistryConfigError> {
    let files = match ca {
        None => vec![],
        Some(CaList::One(f)) => vec![f],
        Some(CaList::Many(f)) => f,
    };
    files
        .into_iter()
        .map(|f| {
            let path = base.join(f);
            std::fs::read_to_string(&path).map_err(|source| RegistryConfigError::Io {
                path: path.display().to_string(),
                source,
            })
        })
        .collect()
}

/// Parses one `hosts.toml` (CA paths relative to `base`).
fn parse_hosts_toml(text: &str, base: &Path) -> Result<HostConfig, RegistryConfigError> {
    let toml_err = |message: String| RegistryConfigError::Toml {
        path: String::new(),
        message,
    };
    let file: HostsFile = toml::from_str(text).map_err(|e| toml_err(e.to_string()))?;
    let mut config = HostConfig::default();
    if let Some(server) = &file.server {
        let mut endpoint = Endpoint::from_url(server)?;
        endpoint.skip_verify = file.skip_verify;
        endpoint.ca_pem = read_cas(file.ca, base)?;
        config.server = Some(endpoint);
    }
    for (url, value) in file.host {
        let entry: HostEntry = value
            .try_into()
            .map_err(|e: toml::de::Error| toml_err(format!("[host.{url:?}]: {e}")))?;
        // Mirrors without `pull` are not for pulling (containerd's default is all of them).
        if entry
            .capabilities
            .as_ref()
            .is_some_and(|c| !c.iter().any(|c| c == "pull"))
        {
            continue;
        }
        let mut endpoint = Endpoint::from_url(&url)?;
        endpoint.skip_verify = entry.skip_verify;
        endpoint.ca_pem = read_cas(entry.ca, base)?;
        config.mirrors.push(endpoint);
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_come_before_the_upstream() {
        let c = RegistryConfig::default()
            .mirror_flag("docker.io=http://127.0.0.1:5000")
            .unwrap()
            .mirror("docker.io", "https://mirror.example/v2/")
            .unwrap();
        let e = c.endpoints("docker.io");
        let urls: Vec<_> = e.iter().map(Endpoint::url).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:5000",
                "https://mirror.example",
                "https://registry-1.docker.io"
            ]
        );
        assert_eq!(c.endpoints("ghcr.io")[0].url(), "https://ghcr.io");
        assert_eq!(
            c.endpoints("localhost:5000")[0].url(),
            "http://localhost:5000"
        );
        assert!(RegistryConfig::default().mirror_flag("docker.io").is_err());
        assert!(RegistryConfig::default().mirror_flag("a=ftp://x").is_err());
    }

    #[test]
    fn hosts_dirs_load_as_containerd_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let hub = dir.path().join("docker.io");
        std::fs::create_dir_all(&hub).unwrap();
        std::fs::write(hub.join("ca.pem"), "PEM").unwrap();
        std::fs::write(
            hub.join("hosts.toml"),
            r#"
server = "https://registry-1.docker.io"

[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
  skip_verify = true

[host."https://push-only.example"]
  capabilities = ["push"]

[host."https://mirror.example"]
  ca = "ca.pem"
"#,
        )
        .unwrap();
        let c = RegistryConfig::default()
            .load_hosts_dir(dir.path())
            .unwrap();
        let e = c.endpoints("docker.io");
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].url(), "http://127.0.0.1:5000");
        assert!(e[0].skip_verify);
        assert_eq!(e[1].url(), "https://mirror.example");
        assert_eq!(e[1].ca_pem, ["PEM"]);
        assert_eq!(e[2].url(), "https://registry-1.docker.io");

        std::fs::write(hub.join("hosts.toml"), "server = 5").unwrap();
        let err = RegistryConfig::default()
            .load_hosts_dir(dir.path())
            .unwrap_err();
        assert!(err.to_string().contains("hosts.toml"), "{err}");
    }
}
