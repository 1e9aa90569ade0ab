//! kube-rs (the `kube` crate, a client nobody here wrote) against our API server: list,
//! watch, create, patch, delete, and a kube-rs `Controller` reconciling through it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Config};
use kube_apiserver::{ApiServer, RunningApiServer};
use kube_store::MemStore;
use serde_json::json;

async fn server_and_client() -> (RunningApiServer, Client) {
    let store: Arc<dyn kube_core::store::Store> = Arc::new(MemStore::new());
    let ns = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
    )
    .unwrap();
    store.create(ns).await.unwrap();
    let running = ApiServer::new(store)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut config = Config::new(running.url().parse().unwrap());
    config.default_namespace = "default".into();
    (running, Client::try_from(config).unwrap())
}

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "kube-rs"}},
        "data": {"greeting": "hello"},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_lists_watches_creates_patches_and_deletes() {
    let (_server, client) = server_and_client().await;
    let maps: Api<ConfigMap> = Api::default_namespaced(client.clone());

    let created = maps
        .create(&PostParams::default(), &config_map("a"))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    let err = maps
        .create(&PostParams::default(), &config_map("a"))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(status) => assert_eq!(
            (status.code, status.reason.as_str()),
            (409, "AlreadyExists")
        ),
        other => panic!("expected a Status, got {other:?}"),
    }

    // A watcher (list, then watch from the list's revision) sees later changes.
    let events = watcher(
        maps.clone(),
        watcher::Config::default().labels("app=kube-rs"),
    );
    let mut applied = Box::pin(
        events
            .try_filter_map(|e| async move {
                Ok(match e {
                    watcher::Event::Apply(cm) | watcher::Event::InitApply(cm) => {
                        Some(cm.metadata.name.unwrap_or_default())
                    }
                    _ => None,
                })
            })
            .boxed(),
    );
    let first = tokio::time::timeout(Duration::from_secs(10), applied.try_next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.as_deref(), Some("a"), "the initial list");
    maps.create(&PostParams::default(), &config_map("b"))
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), applied.try_next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.as_deref(), Some("b"), "a change after the list");

    let list = maps
        .list(&ListParams::default().labels("app=kube-rs"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 2);

    let patched = maps
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"greeting": "hi"}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["greeting"], "hi");
    let patched = maps
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"v": "2"}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["v"], "2");
    let applied_cm = maps
        .patch(
            "c",
            &PatchParams::apply("kube-rs-test"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(applied_cm.data.unwrap()["x"], "1");

    maps.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(maps.get_opt("a").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kube_rs_controller_reconciles_through_our_server() {
    let (_server, client) = server_and_client().await;
    let maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    for name in ["x", "y", "z"] {
        maps.create(&PostParams::default(), &config_map(name))
            .await
            .unwrap();
    }
    let reconciles = Arc::new(AtomicUsize::new(0));

    #[derive(Debug, thiserror::Error)]
    #[error(transparent)]
    struct Failed(#[from] kube::Error);

    struct Context {
        maps: Api<ConfigMap>,
        reconciles: Arc<AtomicUsize>,
    }
    async fn reconcile(cm: Arc<ConfigMap>, ctx: Arc<Context>) -> Result<Action, Failed> {
        let name = cm.metadata.name.clone().unwrap_or_default();
        let annotated = cm
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("reconciled"));
        if !annotated {
            ctx.maps
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {"reconciled": "true"}}})),
                )
                .await?;
        }
        ctx.reconciles.fetch_add(1, Ordering::SeqCst);
        Ok(Action::await_change())
    }
    fn error_policy(_: Arc<ConfigMap>, _: &Failed, _: Arc<Context>) -> Action {
        Action::requeue(Duration::from_millis(200))
    }

    let ctx = Arc::new(Context {
        maps: maps.clone(),
        reconciles: reconciles.clone(),
    });
    let controller = tokio::spawn(
        Controller::new(maps.clone(), watcher::Config::default())
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {}),
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let all = maps.list(&ListParams::default()).await.unwrap();
        let done = all
            .items
            .iter()
            .filter(|cm| {
                cm.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("reconciled"))
            })
            .count();
        // A reconcile counts itself after its patch returns: the third count may come a
        // moment after the third annotation is visible.
        if done == 3 && reconciles.load(Ordering::SeqCst) >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{done}/3 reconciled, {} reconciles",
            reconciles.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    controller.abort();
}

/// A kube client over TLS from a kubeconfig with a bearer token.
async fn client_with_token(url: &str, ca: &std::path::Path, token: &str) -> Client {
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {url}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: default\ncurrent-context: c\n",
        ca.display()
    );
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
    let config =
        Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_works_with_a_service_account_token_and_its_rbac_limits() {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
    use k8s_openapi::api::rbac::v1::RoleBinding;
    use kube_apiserver::{Pki, Security, TokenSigner};

    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path()).unwrap();
    let serving = pki
        .serving("apiserver", &["127.0.0.1".into(), "localhost".into()])
        .unwrap();
    let security = Security::new(
        pki.server_config(&serving).unwrap(),
        TokenSigner::load_or_create(&dir.path().join("sa.key")).unwrap(),
    )
    .token("admin-token", "admin", &["system:masters"]);
    let store: Arc<dyn kube_core::store::Store> = Arc::new(MemStore::new());
    for name in ["default", "kube-system"] {
        let ns = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
        )
        .unwrap();
        store.create(ns).await.unwrap();
    }
    let running = ApiServer::secure(
        store,
        kube_core::kind::Registry::builtin().clone(),
        kube_apiserver::ApiServerConfig::default(),
        security,
    )
    .serve("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap();
    let url = running.url();
    let ca = dir.path().join("ca.crt");

    let admin = client_with_token(&url, &ca, "admin-token").await;
    let accounts: Api<ServiceAccount> = Api::default_namespaced(admin.clone());
    let robot: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "robot"}})).unwrap();
    accounts
        .create(&PostParams::default(), &robot)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "robot-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "default"}],
    }))
    .unwrap();
    Api::<RoleBinding>::default_namespaced(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let request = accounts
        .create_token_request("robot", &PostParams::default(), &TokenRequest::default())
        .await
        .unwrap();
    let token = request.status.unwrap().token;

    let as_robot = client_with_token(&url, &ca, &token).await;
    let pods: Api<Pod> = Api::default_namespaced(as_robot.clone());
    pods.list(&ListParams::default()).await.unwrap();
    let forbidden = |e: kube::Error| match e {
        kube::Error::Api(status) => status.code == 403,
        _ => false,
    };
    let other: Api<Pod> = Api::namespaced(as_robot.clone(), "kube-system");
    assert!(
        forbidden(other.list(&ListParams::default()).await.unwrap_err()),
        "view is bound in default only"
    );
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap();
    assert!(
        forbidden(pods.create(&PostParams::default(), &pod).await.unwrap_err()),
        "view cannot create"
    );
    let anonymous = client_with_token(&url, &ca, "not-a-token").await;
    match Api::<Pod>::default_namespaced(anonymous)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 401),
        other => panic!("expected 401, got {other:?}"),
    }
}
