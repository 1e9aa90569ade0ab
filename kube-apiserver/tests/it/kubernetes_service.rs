//! The `kubernetes` Service: kept while the server runs (created, repaired after deletes and
//! edits), and a serving certificate an in-cluster client verifies by the Service's names.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_apiserver::{ApiServer, ApiServerConfig, KubernetesService, Pki, Security, TokenSigner};
use kube_core::store::{Preconditions, Store};
use kube_core::typed::Api;
use kube_store::MemStore;
use rustls::pki_types::ServerName;

/// Polls `check` every 20 ms until it returns `Some`, for at most 10 s.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    for _ in 0..500 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn advertised() -> KubernetesService {
    KubernetesService::new(["127.0.0.1".parse().expect("ip")])
        .service_cidr("10.100.0.0/16")
        .expect("cidr")
        .interval(Duration::from_millis(50))
}

/// The endpoint addresses and port of the Endpoints.
fn endpoint_addresses(endpoints: &Endpoints) -> (Vec<String>, Vec<i32>) {
    let subsets = endpoints.subsets.clone().unwrap_or_default();
    let ips = subsets
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| a.ip.clone())
        .collect();
    let ports = subsets
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .map(|p| p.port)
        .collect();
    (ips, ports)
}

#[tokio::test]
async fn the_kubernetes_service_is_kept_and_repaired() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let mut config = ApiServerConfig::default();
    config.kubernetes_service = Some(advertised());
    let running = ApiServer::with_config(
        store.clone(),
        kube_core::kind::Registry::builtin().clone(),
        config,
    )
    .serve("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap();
    let port = i32::from(running.local_addr().port());
    let services: Api<Service> = Api::namespaced(store.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(store.clone(), "default");
    let slices: Api<EndpointSlice> = Api::namespaced(store.clone(), "default");

    let service = eventually("the Service", || async {
        services.get_opt("kubernetes").await.unwrap()
    })
    .await;
    let labels = service.metadata.labels.clone().unwrap();
    assert_eq!(labels["component"], "apiserver");
    assert_eq!(labels["provider"], "kubernetes");
    let spec = service.spec.clone().unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.100.0.1"));
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let ports = spec.ports.unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name.as_deref(), Some("https"));
    assert_eq!(ports[0].port, 443);
    assert_eq!(ports[0].target_port, Some(IntOrString::Int(port)));

    let eps = eventually("the Endpoints", || async {
        endpoints.get_opt("kubernetes").await.unwrap()
    })
    .await;
    assert_eq!(
        endpoint_addresses(&eps),
        (vec!["127.0.0.1".to_string()], vec![port])
    );
    let slice = eventually("the EndpointSlice", || async {
        slices.get_opt("kubernetes").await.unwrap()
    })
    .await;
    assert_eq!(
        slice.metadata.labels.as_ref().unwrap()["kubernetes.io/service-name"],
        "kubernetes"
    );
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(slice.endpoints.len(), 1);
    assert_eq!(slice.endpoints[0].addresses, vec!["127.0.0.1".to_string()]);
    let slice_ports = slice.ports.clone().unwrap();
    assert_eq!(slice_ports[0].port, Some(port));
    assert_eq!(slice_ports[0].name.as_deref(), Some("https"));

    // Deleted: created again.
    services
        .delete("kubernetes", &Preconditions::default())
        .await
        .unwrap();
    endpoints
        .delete("kubernetes", &Preconditions::default())
        .await
        .unwrap();
    slices
        .delete("kubernetes", &Preconditions::default())
        .await
        .unwrap();
    for what in ["Service", "Endpoints", "EndpointSlice"] {
        eventually(what, || async {
            let present = match what {
                "Service" => services.get_opt("kubernetes").await.unwrap().is_some(),
                "Endpoints" => endpoints.get_opt("kubernetes").await.unwrap().is_some(),
                _ => slices.get_opt("kubernetes").await.unwrap().is_some(),
            };
            present.then_some(())
        })
        .await;
    }

    // Edited: put back.
    let mut edited = services.get("kubernetes").await.unwrap();
    let spec = edited.spec.as_mut().unwrap();
    spec.ports.as_mut().unwrap()[0].port = 8443;
    spec.session_affinity = Some("ClientIP".into());
    edited.metadata.labels = None;
    services.replace(&edited).await.unwrap();
    let mut edited = endpoints.get("kubernetes").await.unwrap();
    edited.subsets.as_mut().unwrap()[0]
        .addresses
        .as_mut()
        .unwrap()[0]
        .ip = "10.9.9.9".into();
    endpoints.replace(&edited).await.unwrap();
    let mut edited = slices.get("kubernetes").await.unwrap();
    edited.endpoints.clear();
    slices.replace(&edited).await.unwrap();
    eventually("the Service repaired", || async {
        let s = services.get("kubernetes").await.unwrap();
        let spec = s.spec.clone()?;
        let fixed = spec.ports?[0].port == 443
            && spec.session_affinity.as_deref() == Some("None")
            && s.metadata.labels?.get("provider").map(String::as_str) == Some("kubernetes");
        fixed.then_some(())
    })
    .await;
    eventually("the Endpoints repaired", || async {
        let e = endpoints.get("kubernetes").await.unwrap();
        (endpoint_addresses(&e).0 == vec!["127.0.0.1".to_string()]).then_some(())
    })
    .await;
    eventually("the EndpointSlice repaired", || async {
        let s = slices.get("kubernetes").await.unwrap();
        (s.endpoints.len() == 1).then_some(())
    })
    .await;
    running.shutdown().await;
}

#[tokio::test]
async fn without_an_address_to_advertise_nothing_is_kept() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let mut config = ApiServerConfig::default();
    config.kubernetes_service = Some(
        KubernetesService::new(["0.0.0.0".parse().expect("ip")])
            .interval(Duration::from_millis(20)),
    );
    let running = ApiServer::with_config(
        store.clone(),
        kube_core::kind::Registry::builtin().clone(),
        config,
    )
    .serve("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let services: Api<Service> = Api::namespaced(store.clone(), "default");
    assert!(services.get_opt("kubernetes").await.unwrap().is_none());
    running.shutdown().await;
}

/// SANs of a PEM certificate: DNS names and IP addresses, as strings.
fn sans(pem: &str) -> Vec<String> {
    let der = kube_apiserver::authn::pki::certs(pem).unwrap().remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let ext = cert.subject_alternative_name().unwrap().unwrap();
    ext.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => Some(IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string()),
                16 => Some(IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The serving certificate names the Service; a client that trusts only the cluster CA and
/// asks for `kubernetes.default.svc` (or the ClusterIP) completes the TLS handshake.
#[tokio::test]
async fn the_serving_certificate_names_the_service_for_in_cluster_clients() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path().join("pki")).unwrap();
    let service = advertised();
    let mut hosts = vec!["localhost".to_string()];
    hosts.extend(service.serving_hosts());
    let serving = pki.serving("apiserver", &hosts).unwrap();
    let names = sans(&serving.cert_pem);
    for want in [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "10.100.0.1",
        "127.0.0.1",
    ] {
        assert!(names.contains(&want.to_string()), "{want} not in {names:?}");
    }

    let security = Security::new(
        pki.server_config(&serving).unwrap(),
        TokenSigner::load_or_create(&dir.path().join("sa.key")).unwrap(),
    )
    .ca_pem(pki.ca_pem());
    let running = ApiServer::secure(
        Arc::new(MemStore::new()),
        kube_core::kind::Registry::builtin().clone(),
        ApiServerConfig::default(),
        security,
    )
    .serve("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in kube_apiserver::authn::pki::certs(pki.ca_pem()).unwrap() {
        roots.add(cert).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let handshake = |name: ServerName<'static>| {
        let connector = connector.clone();
        let addr = running.local_addr();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            connector.connect(name, tcp).await.map(|_| ())
        }
    };
    for name in [
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "10.100.0.1",
    ] {
        let server_name = ServerName::try_from(name.to_string()).unwrap();
        handshake(server_name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // A name the certificate does not carry fails: the check is real.
    let wrong = ServerName::try_from("kubernetes.other.svc".to_string()).unwrap();
    assert!(handshake(wrong).await.is_err());
    running.shutdown().await;
}
