//! Registry credentials from `imagePullSecrets` (`kubernetes.io/dockerconfigjson`,
//! `kubernetes.io/dockercfg`) and a node credentials file (`~/.docker/config.json`), matched
//! to images as the kubelet matches them.

use std::collections::BTreeMap;

use base64::Engine;
use kube_core::runtime::AuthConfig;

use super::reference::ImageName;

/// The `.dockerconfigjson` key of a `kubernetes.io/dockerconfigjson` Secret.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
/// The `.dockercfg` key of a `kubernetes.io/dockercfg` Secret.
pub const DOCKERCFG_KEY: &str = ".dockercfg";

/// Credentials that do not parse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// Not the JSON expected.
    #[error("invalid docker config: {0}")]
    Json(#[from] serde_json::Error),
    /// A secret of another type, or without its key.
    #[error("secret of type {0:?} holds no registry credentials")]
    NotDockerConfig(String),
    /// The credentials file could not be read.
    #[error("reading credentials file")]
    Io(#[from] std::io::Error),
}

#[derive(Clone, Default, serde::Deserialize)]
struct DockerEntry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
    #[serde(default, alias = "identityToken")]
    identitytoken: String,
    #[serde(default, alias = "registryToken")]
    registrytoken: String,
}

#[derive(serde::Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, DockerEntry>,
}

/// One credential: the key it was filed under, parsed.
#[derive(Clone)]
struct Credential {
    host: String,
    path: String,
    auth: AuthConfig,
}

/// Credentials by registry, in the order they were added.
#[derive(Clone, Default)]
pub struct Keyring {
    entries: Vec<Credential>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| format!("{}{}", e.host, e.path)))
            .finish()
    }
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the credentials of a `.dockerconfigjson` value (`{"auths": {HOST: {...}}}`).
    pub fn add_docker_config_json(&mut self, data: &[u8]) -> Result<(), CredentialsError> {
        let config: DockerConfigJson = serde_json::from_slice(data)?;
        self.add_entries(config.auths);
        Ok(())
    }

    /// Adds the credentials of a legacy `.dockercfg` value (`{HOST: {...}}`).
    pub fn add_dockercfg(&mut self, data: &[u8]) -> Result<(), CredentialsError> {
        let entries: BTreeMap<String, DockerEntry> = serde_json::from_slice(data)?;
        self.add_entries(entries);
        Ok(())
    }

    /// Adds a Secret's credentials by its type (`kubernetes.io/dockerconfigjson` or
    /// `kubernetes.io/dockercfg`) and (decoded) data.
    pub fn add_secret(
        &mut self,
        secret_type: &str,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<(), CredentialsError> {
        let not = || CredentialsError::NotDockerConfig(secret_type.to_owned());
        match secret_type {
            "kubernetes.io/dockerconfigjson" => {
                self.add_docker_config_json(data.get(DOCKER_CONFIG_JSON_KEY).ok_or_else(not)?)
            }
            "kubernetes.io/dockercfg" => {
                self.add_dockercfg(data.get(DOCKERCFG_KEY).ok_or_else(not)?)
            }
            _ => Err(not()),
        }
    }

    /// Adds the credentials of a node credentials file (Docker's `config.json` format).
    pub fn add_file(&mut self, path: &std::path::Path) -> Result<(), CredentialsError> {
        let data = std::fs::read(path)?;
        self.add_docker_config_json(&data)
    }

    /// Adds the entries of `other` after this keyring's.
    pub fn extend(&mut self, other: &Keyring) {
        self.entries.extend(other.entries.iter().cloned());
    }

    /// Whether it holds no credentials.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn add_entries(&mut self, entries: BTreeMap<String, DockerEntry>) {
        for (key, e) in entries {
            let (host, path) = parse_key(&key);
            let (mut username, mut password) = (e.username, e.password);
            if username.is_empty() && !e.auth.is_empty() {
                if let Some((u, p)) = decode_auth(&e.auth) {
                    (username, password) = (u, p);
                }
            }
            let mut auth = AuthConfig::basic(host.clone(), username, password);
            auth.auth = e.auth;
            auth.identity_token = e.identitytoken;
            auth.registry_token = e.registrytoken;
            self.entries.push(Credential { host, path, auth });
        }
    }

    /// The credentials for `image`'s registry, most specific first (as the kubelet's
    /// keyring: a key's host must match the image's, `*.` matching one DNS label, and a key's
    /// path must be a prefix of the image's repository; `index.docker.io/v1/` and friends
    /// are `docker.io`).
    pub fn lookup(&self, image: &ImageName) -> Vec<AuthConfig> {
        let registry = canonical_host(image.registry());
        let repository = image.repository();
        let mut found: Vec<&Credential> = self
            .entries
            .iter()
            .filter(|c| host_matches(&c.host, &registry) && path_matches(&c.path, repository))
            .collect();
        // Longer (more specific) keys first; the sort is stable for equal lengths.
        found.sort_by_key(|c| std::cmp::Reverse(c.host.len() + c.path.len()));
        found.into_iter().map(|c| c.auth.clone()).collect()
    }
}

/// `user:password` from base64.
fn decode_auth(auth: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// A key (`https://index.docker.io/v1/`, `host:5000/path`) as `(host, path)`.
fn parse_key(key: &str) -> (String, String) {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = canonical_host(host);
    let path = path.trim_matches('/');
    // Docker Hub's legacy key names the API version, not a repository.
    let path = if host == "docker.io" && (path == "v1" || path == "v2") {
        ""
    } else {
        path
    };
    (host, path.to_owned())
}

/// Docker Hub's aliases as `docker.io`.
fn canonical_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        _ => host,
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    let split = |h: &str| -> (String, Option<String>) {
        match h.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => {
                (name.to_owned(), Some(port.to_owned()))
            }
            _ => (h.to_owned(), None),
        }
    };
    let ((pname, pport), (hname, hport)) = (split(pattern), split(host));
    if pport != hport {
        return false;
    }
    let (plabels, hlabels): (Vec<&str>, Vec<&str>) =
        (pname.split('.').collect(), hname.split('.').collect());
    plabels.len() == hlabels.len()
        && plabels
            .iter()
            .zip(&hlabels)
            .all(|(p, h)| *p == "*" || p == h)
}

fn path_matches(prefix: &str, repository: &str) -> bool {
    if prefix.is_empty() {
        return true;
    }
    let (p, r): (Vec<&str>, Vec<&str>) =
        (prefix.split('/').collect(), repository.split('/').collect());
    p.len() <= r.len() && p.iter().zip(&r).all(|(a, b)| a == b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pull::reference::normalize;

    #[test]
    fn dockerconfigjson_and_dockercfg_secrets_parse() {
        let mut ring = Keyring::new();
        let json = br#"{"auths":{"127.0.0.1:5000":{"username":"u","password":"p"},
            "https://index.docker.io/v1/":{"auth":"aHViOnNlY3JldA=="}}}"#;
        let mut data = BTreeMap::new();
        data.insert(DOCKER_CONFIG_JSON_KEY.to_owned(), json.to_vec());
        ring.add_secret("kubernetes.io/dockerconfigjson", &data)
            .unwrap();
        let local = ring.lookup(&normalize("127.0.0.1:5000/app:1").unwrap());
        assert_eq!(local.len(), 1);
        assert_eq!(
            (local[0].username.as_str(), local[0].password.as_str()),
            ("u", "p")
        );
        assert_eq!(local[0].server_address, "127.0.0.1:5000");
        let hub = ring.lookup(&normalize("nginx").unwrap());
        assert_eq!(hub.len(), 1);
        assert_eq!(
            (hub[0].username.as_str(), hub[0].password.as_str()),
            ("hub", "secret")
        );
        assert!(
            ring.lookup(&normalize("127.0.0.1:5001/app").unwrap())
                .is_empty()
        );
        assert!(ring.lookup(&normalize("ghcr.io/a/b").unwrap()).is_empty());

        let mut legacy = Keyring::new();
        let mut data = BTreeMap::new();
        data.insert(
            DOCKERCFG_KEY.to_owned(),
            br#"{"quay.io":{"username":"q","password":"w","email":"x@y"}}"#.to_vec(),
        );
        legacy.add_secret("kubernetes.io/dockercfg", &data).unwrap();
        assert_eq!(
            legacy.lookup(&normalize("quay.io/a/b").unwrap())[0].username,
            "q"
        );
        assert!(legacy.add_secret("Opaque", &data).is_err());
        assert!(legacy.add_dockercfg(b"not json").is_err());
    }

    #[test]
    fn paths_and_wildcards_match_most_specific_first() {
        let mut ring = Keyring::new();
        ring.add_docker_config_json(
            br#"{"auths":{
                "registry.example/team":{"username":"team","password":"1"},
                "registry.example":{"username":"all","password":"2"},
                "*.cloud.example":{"username":"wild","password":"3"},
                "registry.example/teamx":{"username":"other","password":"4"}}}"#,
        )
        .unwrap();
        let users = |image: &str| -> Vec<String> {
            ring.lookup(&normalize(image).unwrap())
                .into_iter()
                .map(|a| a.username)
                .collect()
        };
        assert_eq!(users("registry.example/team/app"), ["team", "all"]);
        assert_eq!(users("registry.example/other/app"), ["all"]);
        assert_eq!(users("eu.cloud.example/x"), ["wild"]);
        assert!(users("a.b.cloud.example/x").is_empty());
    }
}
