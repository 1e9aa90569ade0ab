//! Image pulls against a real registry on loopback (see `registry.rs`): the store on its own.

use std::sync::Arc;

use kube_core::runtime::AuthConfig;
use kube_node::pull::reference::normalize;
use kube_node::pull::{HostConfig, ImageStore, Platform, PullError, RegistryConfig};

use crate::registry::{Registry, TOKEN_REFUSAL, TestImage, TokenRequest, host_arch, require_tool};

fn store(dir: &std::path::Path) -> ImageStore {
    ImageStore::open(dir.join("store"), RegistryConfig::default()).expect("the store opens")
}

#[tokio::test]
async fn pulls_by_tag_and_by_digest_and_survives_a_restart() {
    if !require_tool(crate::registry::REGISTRY_BIN) {
        return;
    }
    let registry = Registry::start();
    let image = TestImage::busybox(&["/bin/sh", "-c"], &["echo hi"]);
    let digest = registry.push("demo/busybox", "1", &image).await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());

    let name = normalize(&registry.reference("demo/busybox", "1")).unwrap();
    let pulled = store.pull(&name, None).await.unwrap();
    assert_eq!(pulled.id, image.id());
    assert_eq!(pulled.repo_tags, [registry.reference("demo/busybox", "1")]);
    let by_digest = format!("{}/demo/busybox@{digest}", registry.host());
    assert_eq!(pulled.repo_digests, [by_digest.as_str()]);
    assert_eq!(pulled.config.entrypoint, ["/bin/sh", "-c"]);
    assert_eq!(pulled.config.cmd, ["echo hi"]);
    assert!(
        pulled
            .config
            .env
            .contains(&"IMAGE_VAR=from-image".to_string())
    );
    assert!(pulled.rootfs.join("bin/busybox").is_file());
    assert!(pulled.rootfs.join("bin/sh").is_symlink());
    assert_eq!(pulled.size_bytes as usize, image.size());
    let blobs = registry.blob_gets();
    assert_eq!(blobs, 2, "one layer and the config");

    // By digest: already held, no registry request at all.
    let manifests = registry.manifest_gets();
    let again = store
        .pull(&normalize(&by_digest).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(again.id, image.id());
    assert_eq!(registry.manifest_gets(), manifests);
    assert_eq!(store.status(&by_digest).unwrap().id, image.id());
    assert_eq!(store.status(&image.id()).unwrap().id, image.id());

    // A fresh store over the same root knows the image; a digest pull into an empty store works.
    drop(store);
    let reopened = ImageStore::open(dir.path().join("store"), RegistryConfig::default()).unwrap();
    assert_eq!(reopened.list().len(), 1);
    assert!(
        reopened
            .status(&registry.reference("demo/busybox", "1"))
            .is_some()
    );
    assert!(reopened.fs_usage() > image.size() as u64);
    let other = tempfile::tempdir().unwrap();
    let fresh = self::store(other.path());
    let pulled = fresh
        .pull(&normalize(&by_digest).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(pulled.id, image.id());
    assert!(pulled.repo_tags.is_empty());

    // Remove: the tag, the rootfs and the blobs go.
    assert!(
        reopened
            .remove(&registry.reference("demo/busybox", "1"))
            .unwrap()
    );
    assert!(reopened.list().is_empty());
    assert!(!pulled.rootfs.starts_with(dir.path()) || !pulled.rootfs.exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("store/blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert!(!reopened.remove("nothing:here").unwrap());
}

#[tokio::test]
async fn unknown_images_fail_with_the_registrys_reason() {
    if !require_tool(crate::registry::REGISTRY_BIN) {
        return;
    }
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let err = store(dir.path())
        .pull(
            &normalize(&registry.reference("no/such", "1")).unwrap(),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::Registry { .. }), "{err:?}");
    assert!(
        err.to_string().contains("name unknown") || err.to_string().contains("manifest unknown"),
        "{err}"
    );
    let runtime_err = kube_core::runtime::RuntimeError::from(err);
    assert!(
        runtime_err.to_string().starts_with("pull_image failed: "),
        "{runtime_err}"
    );
}

#[tokio::test]
async fn an_index_with_two_platforms_yields_the_nodes() {
    if !require_tool(crate::registry::REGISTRY_BIN) {
        return;
    }
    let registry = Registry::start();
    let other = if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let (mine, theirs) = (TestImage::for_arch(host_arch()), TestImage::for_arch(other));
    registry.push_index("multi", "1", &[&theirs, &mine]).await;
    let dir = tempfile::tempdir().unwrap();
    let pulled = store(dir.path())
        .pull(&normalize(&registry.reference("multi", "1")).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(pulled.id, mine.id());
    assert_eq!(
        std::fs::read_to_string(pulled.rootfs.join("platform")).unwrap(),
        format!("{}\n", host_arch())
    );
    // The other platform when asked for it; none for a platform the index lacks.
    let for_other = ImageStore::open_for(
        dir.path().join("other"),
        RegistryConfig::default(),
        Platform {
            architecture: other.into(),
            ..Platform::host()
        },
    )
    .unwrap();
    let pulled = for_other
        .pull(&normalize(&registry.reference("multi", "1")).unwrap(), None)
        .await
        .unwrap();
    assert_eq!(pulled.id, theirs.id());
    let none = ImageStore::open_for(
        dir.path().join("none"),
        RegistryConfig::default(),
        Platform {
            architecture: "s390x".into(),
            ..Platform::host()
        },
    )
    .unwrap();
    let err = none
        .pull(&normalize(&registry.reference("multi", "1")).unwrap(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::NoMatchingPlatform { .. }), "{err}");
}

#[tokio::test]
async fn a_private_tls_registry_needs_the_right_credentials() {
    if !require_tool(crate::registry::REGISTRY_BIN) {
        return;
    }
    let registry = Registry::builder()
        .htpasswd("alice", "s3cret")
        .tls()
        .start();
    let image = TestImage::busybox(&[], &["/bin/sh"]);
    registry.push("private/app", "1", &image).await;
    let mut endpoint = kube_node::pull::Endpoint::from_url(&registry.url()).unwrap();
    endpoint.ca_pem.push(registry.ca_pem().unwrap().to_owned());
    let config = RegistryConfig::default().host(
        &registry.host(),
        HostConfig {
            server: Some(endpoint),
            ..HostConfig::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path().join("s"), config).unwrap();
    let name = normalize(&registry.reference("private/app", "1")).unwrap();

    for auth in [
        None,
        Some(AuthConfig::basic(registry.host(), "alice", "wrong")),
    ] {
        let err = store.pull(&name, auth.as_ref()).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("unauthorized: authentication required"),
            "{err}"
        );
    }
    let good = AuthConfig::basic(registry.host(), "alice", "s3cret");
    let pulled = store.pull(&name, Some(&good)).await.unwrap();
    assert_eq!(pulled.id, image.id());
}

// ---- Docker Hub's token authentication ----

/// A token-auth registry (user `alice`, password `s3cret`) holding `image` as `private/app:1`
/// and `public/app:1`, and an empty store; `None` if the registry is not installed.
async fn token_registry(dir: &std::path::Path) -> Option<(Registry, TestImage, ImageStore)> {
    if !require_tool(crate::registry::REGISTRY_BIN) {
        return None;
    }
    let registry = Registry::builder().token_auth("alice", "s3cret").start();
    let image = TestImage::busybox(&[], &["/bin/sh"]);
    registry.push("private/app", "1", &image).await;
    registry.push("public/app", "1", &image).await;
    Some((registry, image, store(dir)))
}

/// The token requests made since `before` of them.
fn token_requests_since(registry: &Registry, before: usize) -> Vec<TokenRequest> {
    let requests = registry.token_server().expect("a token server").requests();
    requests[before..].to_vec()
}

fn token_request(user: Option<&str>, scope: &str, status: u16, granted: &[&str]) -> TokenRequest {
    TokenRequest {
        user: user.map(str::to_owned),
        scopes: vec![scope.to_owned()],
        status,
        granted: granted.iter().map(|g| g.to_string()).collect(),
    }
}

#[tokio::test]
async fn token_auth_pulls_with_a_bearer_token_from_the_realm() {
    let dir = tempfile::tempdir().unwrap();
    let Some((registry, image, store)) = token_registry(dir.path()).await else {
        return;
    };
    // Without a token the registry challenges, as Docker Hub does.
    assert!(registry.log().contains("\"GET /v2/ HTTP/1.1\" 401"));
    let before = registry.token_server().unwrap().requests().len();
    let name = normalize(&registry.reference("private/app", "1")).unwrap();
    let good = AuthConfig::basic(registry.host(), "alice", "s3cret");
    let pulled = store.pull(&name, Some(&good)).await.unwrap();
    assert_eq!(pulled.id, image.id());
    assert!(pulled.rootfs.join("bin/busybox").is_file());
    // One token for the manifest and every blob, asked with the basic credentials.
    let scope = "repository:private/app:pull";
    assert_eq!(
        token_requests_since(&registry, before),
        [token_request(Some("alice"), scope, 200, &[scope])]
    );
    // The registry authorized the manifest and blob requests by their bearer token (it
    // accepts nothing else), and served them.
    let log = registry.log();
    for path in [
        "/v2/private/app/manifests/1",
        "/v2/private/app/blobs/sha256:",
    ] {
        assert!(
            log.lines().any(|l| l.contains("msg=\"authorized request\"")
                && l.contains("http.request.method=GET")
                // (logrus quotes values with a `:`)
                && (l.contains(&format!("http.request.uri={path}"))
                    || l.contains(&format!("http.request.uri=\"{path}")))),
            "no bearer-authorized GET {path} in\n{log}"
        );
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("\"GET {path}")) && l.contains("HTTP/1.1\" 200 ")),
            "no GET {path} served in\n{log}"
        );
    }
}

#[tokio::test]
async fn token_auth_with_a_wrong_password_fails_with_the_token_servers_reason() {
    let dir = tempfile::tempdir().unwrap();
    let Some((registry, _, store)) = token_registry(dir.path()).await else {
        return;
    };
    let before = registry.token_server().unwrap().requests().len();
    let name = normalize(&registry.reference("private/app", "1")).unwrap();
    let wrong = AuthConfig::basic(registry.host(), "alice", "wrong");
    let err = store.pull(&name, Some(&wrong)).await.unwrap_err();
    assert!(matches!(err, PullError::Registry { .. }), "{err:?}");
    // The token server's reason, not only the registry's "authentication required".
    assert!(
        err.to_string()
            .contains(&format!("getting a token: unauthorized: {TOKEN_REFUSAL}")),
        "{err}"
    );
    // Two token requests: oci-client's (refused, then ignored: it sends the manifest request
    // without a token and gets the registry's 401) and the store's, asking why.
    let asked = token_requests_since(&registry, before);
    assert_eq!(asked.len(), 2, "{asked:?}");
    let scope = "repository:private/app:pull";
    for request in asked {
        assert_eq!(request, token_request(Some("alice"), scope, 401, &[]));
    }
    assert!(store.list().is_empty());
}

#[tokio::test]
async fn token_auth_anonymous_pulls_get_public_repositories_only() {
    let dir = tempfile::tempdir().unwrap();
    let Some((registry, image, store)) = token_registry(dir.path()).await else {
        return;
    };
    // A private repository: the anonymous token grants nothing, the registry refuses it.
    let before = registry.token_server().unwrap().requests().len();
    let private = normalize(&registry.reference("private/app", "1")).unwrap();
    let err = store.pull(&private, None).await.unwrap_err();
    assert!(matches!(err, PullError::Registry { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("unauthorized: authentication required"),
        "{err}"
    );
    let asked = token_requests_since(&registry, before);
    assert!(!asked.is_empty());
    for request in &asked {
        assert_eq!(
            *request,
            token_request(None, "repository:private/app:pull", 200, &[])
        );
    }
    assert!(store.list().is_empty());

    // A public one: an anonymous token for it, and the pull works.
    let before = before + asked.len();
    let public = normalize(&registry.reference("public/app", "1")).unwrap();
    let pulled = store.pull(&public, None).await.unwrap();
    assert_eq!(pulled.id, image.id());
    let scope = "repository:public/app:pull";
    assert_eq!(
        token_requests_since(&registry, before),
        [token_request(None, scope, 200, &[scope])]
    );
}

#[tokio::test]
async fn a_blob_not_matching_its_digest_is_refused() {
    if !require_tool(crate::registry::REGISTRY_BIN) {
        return;
    }
    let registry = Registry::start();
    let image = TestImage::busybox(&[], &["/bin/sh"]);
    registry.push("bad", "1", &image).await;
    let layer = image.layers[0].digest();
    registry.corrupt_blob(&layer);
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let err = store
        .pull(&normalize(&registry.reference("bad", "1")).unwrap(), None)
        .await
        .unwrap_err();
    match &err {
        PullError::DigestMismatch { digest, actual, .. } => {
            assert_eq!(digest, &layer);
            assert_ne!(actual, &layer);
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert!(err.to_string().contains("failed verification"), "{err}");
    // Nothing of it is kept or named.
    assert!(store.list().is_empty());
    let blob = dir
        .path()
        .join("store/blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    assert!(!blob.exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("store/rootfs"))
            .unwrap()
            .count(),
        0
    );
    let left: Vec<_> = std::fs::read_dir(dir.path().join("store/tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_image_are_one_pull_and_whiteouts_apply() {
    if !require_tool(crate::registry::REGISTRY_BIN) {
        return;
    }
    let registry = Registry::start();
    let image = TestImage::big();
    assert!(image.size() >= 50 << 20, "{}", image.size());
    registry.push("big", "1", &image).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(store(dir.path()));
    let name = normalize(&registry.reference("big", "1")).unwrap();
    let pulls: Vec<_> = (0..10)
        .map(|_| {
            let (store, name) = (store.clone(), name.clone());
            tokio::spawn(async move { store.pull(&name, None).await })
        })
        .collect();
    let mut ids = Vec::new();
    for p in pulls {
        ids.push(p.await.unwrap().unwrap().id);
    }
    assert!(ids.iter().all(|i| *i == image.id()));
    assert_eq!(store.pulls(), 1);
    assert_eq!(registry.blob_gets(), image.layers.len() + 1);
    let rootfs = store.status(&image.id()).unwrap().rootfs;
    assert!(!rootfs.join("data/deleted.bin").exists());
    assert_eq!(
        std::fs::metadata(rootfs.join("data/kept.bin"))
            .unwrap()
            .len(),
        12 << 20
    );
    assert!(!rootfs.join("opaque/old.txt").exists());
    assert_eq!(
        std::fs::read_to_string(rootfs.join("opaque/new.txt")).unwrap(),
        "new\n"
    );
    assert!(rootfs.join("data/more.bin").is_file(), "zstd layer");
    assert!(rootfs.join("data/four.bin").is_file(), "plain layer");
}

#[tokio::test]
async fn mirrors_serve_docker_hub_names() {
    if !require_tool(crate::registry::REGISTRY_BIN) {
        return;
    }
    let registry = Registry::start();
    let image = TestImage::busybox(&[], &["/bin/sh"]);
    registry.push("library/busybox", "1.36", &image).await;
    let config = RegistryConfig::default()
        .mirror_flag(&format!("docker.io={}", registry.url()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path().join("s"), config).unwrap();
    let pulled = store
        .pull(&normalize("busybox:1.36").unwrap(), None)
        .await
        .unwrap();
    assert_eq!(pulled.repo_tags, ["docker.io/library/busybox:1.36"]);
    assert!(store.status("busybox:1.36").is_some());
    assert!(store.status("docker.io/library/busybox:1.36").is_some());
}

// ---- on runc: containers of pulled images ----

mod on_runc {
    use std::time::Duration;

    use kube_core::runtime::{ContainerConfig, ContainerState, LogOptions, Runtime, RuntimeError};
    use kube_node::OciRuntime;

    use crate::common::{eventually, require};
    use crate::registry::{Registry, TestImage, require_tool};

    const WAIT: Duration = Duration::from_secs(20);

    /// Runs `config` to completion: (exit code, log).
    async fn run(runtime: &OciRuntime, sandbox: &str, config: ContainerConfig) -> (i32, String) {
        let id = runtime
            .create_container(sandbox, &config)
            .await
            .expect("created");
        runtime.start_container(&id).await.expect("started");
        let status = eventually(WAIT, "the container to exit", || async {
            let s = runtime.container_status(&id).await.ok()?;
            (s.state == ContainerState::Exited).then_some(s)
        })
        .await;
        let log = runtime
            .container_logs(&id, &LogOptions::default())
            .await
            .expect("logs");
        runtime.remove_container(&id).await.expect("removed");
        (
            status.exit_code.unwrap_or(-1),
            String::from_utf8_lossy(&log).into_owned(),
        )
    }

    fn container(image: &str, command: &[&str], args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            name: "c".into(),
            image: image.into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..ContainerConfig::default()
        }
    }

    #[tokio::test]
    async fn runc_runs_pulled_images_as_the_kubelet_would() {
        if !require("runc") || !require_tool(crate::registry::REGISTRY_BIN) {
            return;
        }
        let registry = Registry::start();
        let mut image = TestImage::busybox(&["/bin/echo", "entry"], &["from-cmd"]);
        image.working_dir = Some("/home/app".into());
        image.user = Some("app".into());
        registry.push("app", "1", &image).await;
        let mut nothing = TestImage::busybox(&[], &[]);
        nothing.env.push("NOTHING=1".into());
        registry.push("nothing", "1", &nothing).await;
        let runtime = OciRuntime::builder().build().unwrap();
        let name = registry.reference("app", "1");
        assert!(runtime.image_status(&name).await.unwrap().is_none());
        let pulled = runtime.pull_image(&name, None, None).await.unwrap();
        assert_eq!(pulled.id, image.id());
        let status = runtime.image_status(&name).await.unwrap().unwrap();
        assert_eq!(status.user.as_deref(), Some("app"));
        assert_eq!(runtime.list_images().await.unwrap().len(), 1);
        assert!(runtime.image_fs_info().await.unwrap().used_bytes > 0);
        let sandbox = runtime.run_pod_sandbox(&Default::default()).await.unwrap();

        // The four cases.
        let cases = [
            (&["/bin/echo", "cmd"][..], &["arg"][..], "cmd arg\n"),
            (&["/bin/echo", "cmd"][..], &[][..], "cmd\n"),
            (&[][..], &["arg"][..], "entry arg\n"),
            (&[][..], &[][..], "entry from-cmd\n"),
        ];
        for (command, args, want) in cases {
            let (code, log) = run(&runtime, &sandbox, container(&name, command, args)).await;
            assert_eq!((code, log.as_str()), (0, want), "{command:?} {args:?}");
        }
        let nothing_name = registry.reference("nothing", "1");
        runtime.pull_image(&nothing_name, None, None).await.unwrap();
        let err = runtime
            .create_container(&sandbox, &container(&nothing_name, &[], &[]))
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidArgument(_)), "{err}");

        // Env (the container's wins), working directory and user from the image.
        let mut c = container(
            &name,
            &[
                "/bin/sh",
                "-c",
                "echo $IMAGE_VAR $MINE $PATH; pwd; id -u; id -g; id -G; touch /written 2>/dev/null && echo writable; true",
            ],
            &[],
        );
        c.env = vec![("MINE".into(), "mine".into())];
        let (code, log) = run(&runtime, &sandbox, c.clone()).await;
        assert_eq!(code, 0, "{log}");
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(
            lines[0],
            "from-image mine /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        );
        assert_eq!(lines[1], "/home/app");
        assert_eq!(&lines[2..4], ["1000", "1000"]);
        assert!(
            lines[4].split(' ').any(|g| g == "50"),
            "supplementary group staff: {log}"
        );
        // A user without write access to / cannot write it even on the overlay.
        assert!(!log.contains("writable"));

        c.env = vec![("IMAGE_VAR".into(), "overridden".into())];
        c.working_dir = Some("/tmp".into());
        c.run_as_user = Some(0);
        c.run_as_group = Some(50);
        c.command = vec![
            "/bin/sh".into(),
            "-c".into(),
            "echo $IMAGE_VAR; pwd; id -u; id -g; touch /written && echo writable".into(),
        ];
        let (code, log) = run(&runtime, &sandbox, c).await;
        assert_eq!(
            (code, log.as_str()),
            (0, "overridden\n/tmp\n0\n50\nwritable\n")
        );
        // Each container has its own upper layer: the file written above is gone.
        let (_, log) = run(
            &runtime,
            &sandbox,
            container(
                &name,
                &[
                    "/bin/sh",
                    "-c",
                    "test -e /written && echo leaked || echo clean",
                ],
                &[],
            ),
        )
        .await;
        assert_eq!(log, "clean\n");

        runtime.remove_pod_sandbox(&sandbox).await.unwrap();
        runtime.remove_image(&name).await.unwrap();
        assert!(runtime.image_status(&name).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn runc_a_file_deleted_in_an_upper_layer_is_absent_in_the_container() {
        if !require("runc") || !require_tool(crate::registry::REGISTRY_BIN) {
            return;
        }
        let registry = Registry::start();
        let image = TestImage::big();
        registry.push("big", "1", &image).await;
        let runtime = OciRuntime::builder().build().unwrap();
        let name = registry.reference("big", "1");
        runtime.pull_image(&name, None, None).await.unwrap();
        let sandbox = runtime.run_pod_sandbox(&Default::default()).await.unwrap();
        let script = "ls /data; ls /opaque; cat /etc/motd";
        let (code, log) = run(
            &runtime,
            &sandbox,
            container(&name, &["/bin/sh", "-c", script], &[]),
        )
        .await;
        assert_eq!(code, 0, "{log}");
        assert_eq!(
            log,
            "five.bin\nfour.bin\nkept.bin\nmore.bin\nnew.txt\nbig image\n"
        );
        runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    }

    #[tokio::test]
    async fn runc_registered_images_stay_present_and_are_never_pulled() {
        if !require("runc") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let rootfs = crate::common::busybox(dir.path());
        let runtime = OciRuntime::builder()
            .image("busybox", &rootfs)
            .build()
            .unwrap();
        for name in [
            "busybox",
            "busybox:latest",
            "docker.io/library/busybox:latest",
        ] {
            assert!(
                runtime.image_status(name).await.unwrap().is_some(),
                "{name}"
            );
            runtime.pull_image(name, None, None).await.unwrap();
        }
        assert_eq!(runtime.image_store().pulls(), 0);
        assert_eq!(runtime.list_images().await.unwrap().len(), 1);
        let sandbox = runtime.run_pod_sandbox(&Default::default()).await.unwrap();
        let err = runtime
            .create_container(&sandbox, &container("busybox", &[], &[]))
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidArgument(_)), "{err}");
        let (code, log) = run(
            &runtime,
            &sandbox,
            container("busybox", &["echo", "hi"], &[]),
        )
        .await;
        assert_eq!((code, log.as_str()), (0, "hi\n"));
        runtime.remove_pod_sandbox(&sandbox).await.unwrap();
    }
}

#[tokio::test]
async fn an_unreachable_mirror_falls_back_to_the_upstream_and_crashed_pulls_leave_nothing() {
    if !require_tool(crate::registry::REGISTRY_BIN) {
        return;
    }
    let registry = Registry::start();
    let image = TestImage::busybox(&[], &["/bin/sh"]);
    registry.push("fallback", "1", &image).await;
    // Nothing listens on a port just freed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = RegistryConfig::default()
        .mirror(&registry.host(), &format!("http://{closed}"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s");
    let store = ImageStore::open(&root, config.clone()).unwrap();
    let pulled = store
        .pull(
            &normalize(&registry.reference("fallback", "1")).unwrap(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(pulled.id, image.id());
    drop(store);

    // What a crash mid-pull leaves in tmp/ is discarded when the store opens again; the
    // image index and the complete image stay.
    std::fs::write(root.join("tmp/blob-partial"), b"half a layer").unwrap();
    std::fs::create_dir_all(root.join("tmp/rootfs-partial/bin")).unwrap();
    let reopened = ImageStore::open(&root, config).unwrap();
    assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    assert_eq!(reopened.list().len(), 1);
    assert!(
        reopened
            .status(&image.id())
            .unwrap()
            .rootfs
            .join("bin/busybox")
            .is_file()
    );
}

#[tokio::test]
async fn the_process_runtime_pulls_and_runs_an_image_entrypoint_on_the_host() {
    use kube_core::runtime::{ContainerConfig, ContainerState, LogOptions, Runtime};
    if !require_tool(crate::registry::REGISTRY_BIN) {
        return;
    }
    let registry = Registry::start();
    let image = TestImage::busybox(&["/bin/sh", "-c"], &["echo $IMAGE_VAR $MINE"]);
    registry.push("proc", "1", &image).await;
    let runtime = kube_node::ProcessRuntime::builder()
        .registries(RegistryConfig::default())
        .build()
        .unwrap();
    let name = registry.reference("proc", "1");
    assert!(runtime.image_status(&name).await.unwrap().is_none());
    let pulled = runtime.pull_image(&name, None, None).await.unwrap();
    assert_eq!(pulled.id, image.id());
    assert_eq!(runtime.list_images().await.unwrap().len(), 1);
    let sandbox = runtime.run_pod_sandbox(&Default::default()).await.unwrap();
    let config = ContainerConfig {
        name: "c".into(),
        image: name.clone(),
        env: vec![("MINE".into(), "mine".into())],
        ..ContainerConfig::default()
    };
    let id = runtime.create_container(&sandbox, &config).await.unwrap();
    runtime.start_container(&id).await.unwrap();
    crate::common::eventually(std::time::Duration::from_secs(10), "exit", || async {
        let s = runtime.container_status(&id).await.ok()?;
        (s.state == ContainerState::Exited).then_some(())
    })
    .await;
    let log = runtime
        .container_logs(&id, &LogOptions::default())
        .await
        .unwrap();
    assert_eq!(&log[..], b"from-image mine\n");
    runtime.remove_image(&name).await.unwrap();
    assert!(runtime.list_images().await.unwrap().is_empty());

    // Without a store, images are ignored as before: pulls do nothing and succeed.
    let plain = kube_node::ProcessRuntime::temp().unwrap();
    plain.pull_image("nginx", None, None).await.unwrap();
    assert!(plain.image_status("nginx").await.unwrap().is_none());
}

#[tokio::test]
async fn a_hosts_directory_configures_tls_by_ca_or_skip_verify() {
    if !require_tool(crate::registry::REGISTRY_BIN) {
        return;
    }
    let registry = Registry::builder().tls().start();
    let image = TestImage::busybox(&[], &["/bin/sh"]);
    registry.push("tls/app", "1", &image).await;
    let name = normalize(&registry.reference("tls/app", "1")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hosts = |body: &str| {
        let certs = dir.path().join(format!("certs-{}", body.len()));
        let host_dir = certs.join(registry.host());
        std::fs::create_dir_all(&host_dir).unwrap();
        std::fs::write(host_dir.join("ca.pem"), registry.ca_pem().unwrap()).unwrap();
        std::fs::write(host_dir.join("hosts.toml"), body).unwrap();
        RegistryConfig::default().load_hosts_dir(&certs).unwrap()
    };
    let server = format!("server = \"{}\"\n", registry.url());
    // Untrusted without either.
    let plain = ImageStore::open(dir.path().join("a"), hosts(&server)).unwrap();
    let err = plain.pull(&name, None).await.unwrap_err();
    assert!(matches!(err, PullError::Registry { .. }), "{err}");
    for body in [
        format!("{server}ca = \"ca.pem\"\n"),
        format!("{server}skip_verify = true\n"),
    ] {
        let store =
            ImageStore::open(dir.path().join(body.len().to_string()), hosts(&body)).unwrap();
        assert_eq!(
            store.pull(&name, None).await.unwrap().id,
            image.id(),
            "{body}"
        );
    }
}
