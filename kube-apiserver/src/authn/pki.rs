//! The cluster's certificates: a CA, the API server's serving certificate, and client
//! certificates (CN = user, O = groups), generated at first start and kept in a directory.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A PEM certificate and its private key.
#[derive(Clone, Debug)]
pub struct CertPair {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
}

/// Errors making or loading certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// Reading or writing the directory.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Generating or parsing a certificate or key.
    #[error("certificate: {0}")]
    Cert(String),
}

fn cert_error(e: impl std::fmt::Display) -> PkiError {
    PkiError::Cert(e.to_string())
}

/// The cluster CA: signs the serving and client certificates.
pub struct Pki {
    dir: PathBuf,
    ca: CertPair,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes a file readable only by its owner (keys are secrets).
fn write_private(path: &Path, text: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

impl Pki {
    /// Loads the CA from `dir` (`ca.crt`, `ca.key`), creating it at first start.
    pub fn load_or_create(dir: impl AsRef<Path>) -> Result<Self, PkiError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| PkiError::Io {
            path: dir.clone(),
            source,
        })?;
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        let ca = match (read(&cert_path)?, read(&key_path)?) {
            (Some(cert_pem), Some(key_pem)) => CertPair { cert_pem, key_pem },
            _ => {
                let key = KeyPair::generate().map_err(cert_error)?;
                let mut params = CertificateParams::default();
                params.distinguished_name = name("kube-parts-ca", &[]);
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                params.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::CrlSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
                params.not_after = rcgen::date_time_ymd(2036, 1, 1);
                let cert = params.self_signed(&key).map_err(cert_error)?;
                let pair = CertPair {
                    cert_pem: cert.pem(),
                    key_pem: key.serialize_pem(),
                };
                write_private(&key_path, &pair.key_pem)?;
                write_private(&cert_path, &pair.cert_pem)?;
                pair
            }
        };
        let key = KeyPair::from_pem(&ca.key_pem).map_err(cert_error)?;
        let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, key).map_err(cert_error)?;
        Ok(Self { dir, ca, issuer })
    }

    /// The CA certificate, PEM (what clients trust).
    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// The directory the certificates live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The serving certificate for `hosts` (DNS names and IPs), kept as `<name>.crt/.key`;
    /// re-issued when the kept one does not cover every host.
    pub fn serving(&self, name: &str, hosts: &[String]) -> Result<CertPair, PkiError> {
        let (cert_path, key_path) = self.paths(name);
        let hosts_path = self.dir.join(format!("{name}.hosts"));
        if let (Some(cert_pem), Some(key_pem), Some(kept)) =
            (read(&cert_path)?, read(&key_path)?, read(&hosts_path)?)
        {
            if hosts.iter().all(|h| kept.lines().any(|k| k == h)) {
                return Ok(CertPair { cert_pem, key_pem });
            }
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = name_of("kube-apiserver", &[]);
        params.subject_alt_names = hosts
            .iter()
            .map(|h| match h.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => h
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(cert_error),
            })
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let pair = self.issue(params)?;
        write_private(&key_path, &pair.key_pem)?;
        write_private(&cert_path, &pair.cert_pem)?;
        write_private(&hosts_path, &hosts.join("\n"))?;
        Ok(pair)
    }

    /// A client certificate for `user` in `groups`, kept as `<file>.crt/.key`.
    pub fn client(&self, file: &str, user: &str, groups: &[&str]) -> Result<CertPair, PkiError> {
        let (cert_path, key_path) = self.paths(file);
        if let (Some(cert_pem), Some(key_pem)) = (read(&cert_path)?, read(&key_path)?) {
            return Ok(CertPair { cert_pem, key_pem });
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = name_of(user, groups);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let pair = self.issue(params)?;
        write_private(&key_path, &pair.key_pem)?;
        write_private(&cert_path, &pair.cert_pem)?;
        Ok(pair)
    }

    fn paths(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        )
    }

    fn issue(&self, params: CertificateParams) -> Result<CertPair, PkiError> {
        let key = KeyPair::generate().map_err(cert_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_error)?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A rustls server configuration serving `pair`, asking for (not requiring) client
    /// certificates signed by this CA, so bearer tokens work on the same port.
    pub fn server_config(&self, pair: &CertPair) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(&self.ca.cert_pem)? {
            roots.add(cert).map_err(cert_error)?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(cert_error)?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(cert_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&pair.cert_pem)?, private_key(&pair.key_pem)?)
            .map_err(cert_error)?;
        Ok(Arc::new(config))
    }
}

fn name(common: &str, orgs: &[&str]) -> DistinguishedName {
    name_of(common, orgs)
}

fn name_of(common: &str, orgs: &[&str]) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common);
    for org in orgs {
        name.push(DnType::OrganizationName, *org);
    }
    name
}

/// Parses PEM certificates.
pub fn certs(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(cert_error)
}

/// Parses a PEM private key.
pub fn private_key(pem: &str) -> Result<rustls::pki_types::PrivateKeyDer<'static>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(cert_error)
}

/// The user (CN) and groups (O) of a client certificate.
pub(crate) fn subject(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some((user, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_certificates_carry_user_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path()).unwrap();
        let pair = pki
            .client("admin", "kubernetes-admin", &["system:masters"])
            .unwrap();
        let der = certs(&pair.cert_pem).unwrap().remove(0);
        assert_eq!(
            subject(&der),
            Some(("kubernetes-admin".into(), vec!["system:masters".into()]))
        );
        // A second start keeps the CA and the issued certificates.
        let again = Pki::load_or_create(dir.path()).unwrap();
        assert_eq!(again.ca_pem(), pki.ca_pem());
        let serving = pki
            .serving("apiserver", &["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        assert!(again.server_config(&serving).is_ok());
    }
}
