//! ServiceAccount tokens: JWTs (HS256) the server signs with a key kept in its data
//! directory and verifies on every request, bound to the ServiceAccount's UID so a deleted and
//! re-created account's old tokens stop working.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde_json::{Value, json};

/// Issuer written into and required of every token.
pub(crate) const ISSUER: &str = "https://kube-parts.local";

/// Signs and verifies ServiceAccount tokens.
#[derive(Clone)]
pub struct TokenSigner {
    key: hmac::Key,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner")
    }
}

/// What a valid token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TokenClaims {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: String,
    /// The pod the token is bound to (name, UID): it stops working when that pod is gone.
    pub(crate) pod: Option<(String, String)>,
}

impl TokenSigner {
    /// A signer with this secret (at least 32 bytes of randomness).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Loads the secret from `path`, creating a random one at first start.
    pub fn load_or_create(path: &std::path::Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(secret) if secret.len() >= 32 => Ok(Self::new(&secret)),
            _ => {
                let secret: [u8; 32] = rand::random();
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(path)?;
                file.write_all(&secret)?;
                file.sync_all()?;
                Ok(Self::new(&secret))
            }
        }
    }

    /// A token for the ServiceAccount `namespace/name` with this UID, valid for `ttl`.
    pub(crate) fn issue(
        &self,
        claims: &TokenClaims,
        audiences: &[String],
        ttl: Duration,
    ) -> (String, SystemTime) {
        let now = SystemTime::now();
        let expires = now + ttl;
        let seconds = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        let header = json!({"alg": "HS256", "typ": "JWT"});
        let mut payload = json!({
            "iss": ISSUER,
            "sub": format!("system:serviceaccount:{}:{}", claims.namespace, claims.name),
            "aud": audiences,
            "iat": seconds(now),
            "nbf": seconds(now),
            "exp": seconds(expires),
            "kubernetes.io": {
                "namespace": claims.namespace,
                "serviceaccount": {"name": claims.name, "uid": claims.uid},
            },
        });
        if let Some((name, uid)) = &claims.pod {
            payload["kubernetes.io"]["pod"] = json!({"name": name, "uid": uid});
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let signature = hmac::sign(&self.key, signing_input.as_bytes());
        (
            format!(
                "{signing_input}.{}",
                URL_SAFE_NO_PAD.encode(signature.as_ref())
            ),
            expires,
        )
    }

    /// The claims of a token this signer issued that has not expired; `None` otherwise.
    pub(crate) fn verify(&self, token: &str) -> Option<TokenClaims> {
        self.verify_with_audiences(token).map(|(claims, _)| claims)
    }

    /// [`verify`](Self::verify), with the audiences the token was issued for (`aud`).
    pub(crate) fn verify_with_audiences(&self, token: &str) -> Option<(TokenClaims, Vec<String>)> {
        let mut parts = token.split('.');
        let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        hmac::verify(
            &self.key,
            format!("{header}.{payload}").as_bytes(),
            &signature,
        )
        .ok()?;
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header["alg"] != "HS256" {
            return None;
        }
        let payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
        if payload["iss"] != ISSUER || payload["exp"].as_u64()? <= now {
            return None;
        }
        let k8s = &payload["kubernetes.io"];
        let audiences = match &payload["aud"] {
            Value::String(one) => vec![one.clone()],
            Value::Array(many) => many
                .iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let claims = TokenClaims {
            namespace: k8s["namespace"].as_str()?.to_string(),
            name: k8s["serviceaccount"]["name"].as_str()?.to_string(),
            uid: k8s["serviceaccount"]["uid"].as_str()?.to_string(),
            pod: match &k8s["pod"] {
                Value::Null => None,
                pod => Some((
                    pod["name"].as_str()?.to_string(),
                    pod["uid"].as_str()?.to_string(),
                )),
            },
        };
        Some((claims, audiences))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_unaltered_and_unexpired() {
        let signer = TokenSigner::new(&[7; 32]);
        let claims = TokenClaims {
            namespace: "default".into(),
            name: "robot".into(),
            uid: "u-1".into(),
            pod: None,
        };
        let (token, _) = signer.issue(&claims, &[], Duration::from_secs(60));
        assert_eq!(signer.verify(&token), Some(claims.clone()));
        let mut forged = token.clone();
        forged.replace_range(forged.len() - 3.., "AAA");
        assert_eq!(signer.verify(&forged), None);
        assert_eq!(TokenSigner::new(&[8; 32]).verify(&token), None);
        let (expired, _) = signer.issue(&claims, &[], Duration::ZERO);
        assert_eq!(signer.verify(&expired), None);
        let bound = TokenClaims {
            pod: Some(("web".into(), "p-1".into())),
            ..claims
        };
        let (token, _) = signer.issue(&bound, &[], Duration::from_secs(60));
        assert_eq!(signer.verify(&token), Some(bound));
    }
}
