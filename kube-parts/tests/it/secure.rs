//! A secure API server over a MemStore for the tests of components running as its clients,
//! and client identities (certificates signed by its CA) for them.

use std::sync::Arc;

use kube_parts::apiserver::{
    ApiServer, ApiServerConfig, Pki, RunningApiServer, Security, TokenSigner,
};
use kube_parts::core::DynamicObject;
use kube_parts::core::store::Store;
use kube_parts::store::{MemStore, RemoteAuth, RemoteStore};
use serde_json::{Value, json};

pub(crate) fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

pub(crate) struct SecureServer {
    pub(crate) pki: Pki,
    pub(crate) running: RunningApiServer,
    _dir: tempfile::TempDir,
}

impl SecureServer {
    /// Serves on loopback with the usual namespaces; `publish_ca` gives the server its CA, so
    /// it publishes `kube-root-ca.crt` for pods' token volumes.
    pub(crate) async fn start(publish_ca: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::load_or_create(dir.path().join("pki")).unwrap();
        let serving = pki
            .serving("apiserver", &["localhost".into(), "127.0.0.1".into()])
            .unwrap();
        let mut security = Security::new(
            pki.server_config(&serving).unwrap(),
            TokenSigner::load_or_create(&dir.path().join("sa.key")).unwrap(),
        );
        if publish_ca {
            security = security.ca_pem(pki.ca_pem());
        }
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        for name in ["default", "kube-system", "kube-node-lease"] {
            store
                .create(object(
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
                ))
                .await
                .unwrap();
        }
        let running = ApiServer::secure(
            store,
            kube_parts::core::Registry::builtin().clone(),
            ApiServerConfig::default(),
            security,
        )
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
        Self {
            pki,
            running,
            _dir: dir,
        }
    }

    /// A client of the server as `user` in `groups` (a client certificate saved as `file`).
    pub(crate) fn identity(&self, file: &str, user: &str, groups: &[&str]) -> Arc<RemoteStore> {
        let pair = self.pki.client(file, user, groups).unwrap();
        Arc::new(
            RemoteStore::with_auth(
                &self.running.url(),
                RemoteAuth {
                    ca_pem: Some(self.pki.ca_pem().to_string()),
                    client_cert: Some((pair.cert_pem, pair.key_pem)),
                    token: None,
                },
            )
            .unwrap(),
        )
    }
}
