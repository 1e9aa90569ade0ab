//! The preinstalled kubectl against the quickstart cluster (API server, durable store,
//! scheduler, controllers, two ProcessRuntime nodes, the proxy), as a user drives it:
//! apply with validation on, get -o wide, get -w, describe, logs, scale, rollout status,
//! get all, HTTP through the Service's NodePort, delete.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use examples::cluster::{ClusterConfig, LocalCluster, RuntimeKind, StoreKind};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// kubectl, or `None` to skip; under `CI=true` a missing kubectl fails the test.
pub(crate) fn kubectl_binary() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin/kubectl");
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "kubectl is required under CI=true (expected /usr/bin/kubectl)"
    );
    eprintln!("skipping: kubectl not installed");
    None
}

/// A cluster on the machine's default runtime over a memory store in `dir`, listening on
/// `listen`, with `nodes` nodes whose pod networks start at `pod_network_base` (distinct per
/// test, as tests run side by side).
pub(crate) fn memory_cluster(
    dir: &std::path::Path,
    listen: &str,
    nodes: usize,
    pod_network_base: usize,
) -> ClusterConfig {
    ClusterConfig {
        listen: listen.parse().expect("a socket address"),
        data_dir: dir.to_path_buf(),
        nodes,
        runtime: RuntimeKind::detect(),
        store: StoreKind::Memory,
        pod_network_base,
        ..ClusterConfig::default()
    }
}

/// Whether the quickstart runs runc containers here (root, runc and overlayfs, as
/// [`RuntimeKind::detect_with_reason`] decides); under `CI=true` their absence fails the test.
pub(crate) fn runc_or_skip() -> bool {
    let (kind, why) = RuntimeKind::detect_with_reason();
    if kind == RuntimeKind::Oci {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: this test needs runc containers; {why}"
    );
    eprintln!("skipping: {why}");
    false
}

pub(crate) fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests")
}

/// kubectl with a kubeconfig.
pub(crate) struct Kubectl {
    pub(crate) binary: PathBuf,
    pub(crate) kubeconfig: PathBuf,
}

impl Kubectl {
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .kill_on_drop(true);
        command
    }

    /// Runs kubectl; returns stdout, failing with stderr on a non-zero exit.
    pub(crate) async fn run(&self, args: &[&str]) -> String {
        let output = tokio::time::timeout(Duration::from_secs(120), self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub(crate) async fn fail(&self, args: &[&str]) -> String {
        let output = self.command(args).output().await.unwrap();
        assert!(!output.status.success(), "kubectl {args:?} should fail");
        String::from_utf8_lossy(&output.stderr).to_string()
    }

    pub(crate) async fn wait_for(
        &self,
        what: &str,
        args: &[&str],
        done: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.run(args).await;
            if done(&out) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last output:\n{out}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

/// A kubeconfig for an API server without authentication (plain HTTP).
pub(crate) fn plain_kubeconfig(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {url}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: default\ncurrent-context: c\n"
        ),
    )
    .unwrap();
    path
}

/// Starts a `LocalCluster` with `config` and a kubectl for it, once its nodes are Ready.
pub(crate) async fn cluster_with_kubectl(
    binary: PathBuf,
    config: ClusterConfig,
) -> (LocalCluster, Kubectl) {
    let nodes = config.nodes;
    let cluster = LocalCluster::start(config).await.unwrap();
    let k = Kubectl {
        binary,
        kubeconfig: cluster.kubeconfig.clone(),
    };
    k.wait_for("every node Ready", &["get", "nodes"], |out| {
        out.matches(" Ready ").count() == nodes
    })
    .await;
    (cluster, k)
}

async fn http_get(addr: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_drives_the_quickstart_cluster() {
    let Some(binary) = kubectl_binary() else {
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        // Two replicas serving :8080 need a network namespace each.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "this test runs as root under CI=true"
        );
        eprintln!("skipping: needs root for pod networking");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A loopback address of its own, so NodePort 30080 cannot collide with a cluster a
    // developer runs on 127.0.0.1.
    let (cluster, k) = cluster_with_kubectl(
        binary,
        ClusterConfig {
            listen: "127.0.0.7:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            nodes: 2,
            runtime: RuntimeKind::Process,
            store: StoreKind::Durable,
            pod_network_base: 12,
            ..ClusterConfig::default()
        },
    )
    .await;

    // Validation is on by default: an unknown field is refused by the server.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\ndata:\n  a: b\nbogus: 1\n",
    )
    .unwrap();
    let err = k.fail(&["apply", "-f", bad.to_str().unwrap()]).await;
    assert!(
        err.contains("unknown field") && err.contains("bogus"),
        "{err}"
    );

    let web = manifests().join("web.yaml");
    let out = k.run(&["apply", "-f", web.to_str().unwrap()]).await;
    assert!(
        out.contains("deployment.apps/web created") && out.contains("service/web created"),
        "{out}"
    );
    k.run(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .await;

    let wide = k.run(&["get", "pods", "-o", "wide"]).await;
    assert!(wide.contains("NOMINATED NODE"), "{wide}");
    assert_eq!(wide.matches("Running").count(), 2, "{wide}");
    assert!(
        wide.contains("10.233."),
        "pods have addresses from the cluster CIDR: {wide}"
    );

    let all = k.run(&["get", "all"]).await;
    for expected in [
        "pod/web-",
        "service/web",
        "deployment.apps/web",
        "replicaset.apps/web-",
    ] {
        assert!(all.contains(expected), "get all lacks {expected}: {all}");
    }

    // HTTP through the NodePort reaches both pods.
    let node_port = format!("{}:30080", cluster.addr.ip());
    let mut answered = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "NodePort answers from both pods: {answered:?}"
        );
        let response = http_get(&node_port).await.unwrap_or_default();
        if let Some(line) = response.lines().find(|l| l.starts_with("hello from ")) {
            answered.insert(line.to_string());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let pod = wide
        .lines()
        .find(|l| l.starts_with("web-"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let described = k.run(&["describe", "pod", &pod]).await;
    assert!(
        described.contains("Successfully assigned default/"),
        "{described}"
    );
    assert!(
        described
            .lines()
            .any(|l| l.starts_with("Status:") && l.ends_with("Running")),
        "{described}"
    );
    let logs = k
        .wait_for("httpd's access log", &["logs", &pod], |out| {
            out.contains("response:200")
        })
        .await;
    assert!(
        logs.contains("GET") || logs.contains("response:200"),
        "{logs}"
    );
    // `kubectl exec` (WebSocket): the output, and the command's exit code as kubectl's own.
    let said = k
        .run(&["exec", &pod, "--", "echo", "hello from exec"])
        .await;
    assert_eq!(said.trim(), "hello from exec");
    let output = k
        .command(&[
            "exec",
            &pod,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "out\n",
        "{output:?}"
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("err"),
        "{output:?}"
    );
    let interactive = k.fail(&["exec", "-i", &pod, "--", "sh"]).await;
    assert!(interactive.contains("interactive exec"), "{interactive}");

    // The logs came through the node's kubelet server, which answers only callers the API
    // server vouches for: asked directly, without a token, it refuses.
    let node = k
        .run(&["get", "pod", &pod, "-o", "jsonpath={.spec.nodeName}"])
        .await;
    let kubelet = k
        .run(&[
            "get",
            "node",
            node.trim(),
            "-o",
            "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}:{.status.daemonEndpoints.kubeletEndpoint.Port}",
        ])
        .await;
    let mut stream = tokio::net::TcpStream::connect(kubelet.trim())
        .await
        .unwrap();
    let container = k
        .run(&[
            "get",
            "pod",
            &pod,
            "-o",
            "jsonpath={.spec.containers[0].name}",
        ])
        .await;
    stream
        .write_all(
            format!(
                "GET /containerLogs/default/{pod}/{} HTTP/1.0\r\nHost: kubelet\r\n\r\n",
                container.trim()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 401") || answer.starts_with("HTTP/1.1 401"),
        "{answer}"
    );

    // Watch while scaling: the new pod appears on the watch.
    let mut watch = k
        .command(&["get", "pods", "-w", "--no-headers"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    k.run(&["scale", "deployment", "web", "--replicas=3"]).await;
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        let mut names = std::collections::BTreeSet::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(name) = line.split_whitespace().next() {
                names.insert(name.to_string());
            }
            if names.len() >= 3 {
                break;
            }
        }
        names
    })
    .await
    .expect("get -w shows the third pod");
    assert_eq!(seen.len(), 3, "{seen:?}");
    let _ = watch.kill().await;
    k.run(&["rollout", "status", "deployment/web", "--timeout=90s"])
        .await;
    let scaled = k.run(&["get", "deployment", "web"]).await;
    assert!(scaled.contains("3/3"), "{scaled}");

    // Over TLS with the generated kubeconfig; `auth can-i` and a ServiceAccount token made
    // by `kubectl create token`.
    assert_eq!(
        k.run(&["auth", "can-i", "delete", "nodes"]).await.trim(),
        "yes"
    );
    // (`kubectl create serviceaccount/rolebinding` send protobuf, which the server does not
    // decode; apply sends JSON.)
    let robot = dir.path().join("robot.yaml");
    std::fs::write(
        &robot,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: robot\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: robot-view\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: view\nsubjects:\n- kind: ServiceAccount\n  name: robot\n  namespace: default\n",
    )
    .unwrap();
    k.run(&["apply", "-f", robot.to_str().unwrap()]).await;
    let token = k
        .run(&["create", "token", "robot"])
        .await
        .trim()
        .to_string();
    let as_robot = |verb: &'static str| {
        let token = format!("--token={token}");
        let k = &k;
        async move {
            let output = k
                .command(&[&token, "auth", "can-i", verb, "pods"])
                .output()
                .await
                .unwrap();
            String::from_utf8_lossy(&output.stdout).trim().to_string()
        }
    };
    assert_eq!(as_robot("list").await, "yes");
    assert_eq!(as_robot("delete").await, "no");
    let denied = k.fail(&["--token", &token, "delete", "pod", &pod]).await;
    assert!(
        denied.contains("forbidden") && denied.contains("system:serviceaccount:default:robot"),
        "{denied}"
    );
    // The admin acting as the robot (`--as`, impersonation): the robot's rights, not the admin's.
    let robot_user = "--as=system:serviceaccount:default:robot";
    let can_i_as_robot = |verb: &'static str| {
        let k = &k;
        async move {
            let output = k
                .command(&[robot_user, "auth", "can-i", verb, "pods"])
                .output()
                .await
                .unwrap();
            String::from_utf8_lossy(&output.stdout).trim().to_string()
        }
    };
    assert_eq!(can_i_as_robot("list").await, "yes");
    assert_eq!(can_i_as_robot("delete").await, "no");
    k.run(&[robot_user, "get", "pods"]).await;
    let no_exec = k.fail(&[robot_user, "exec", &pod, "--", "true"]).await;
    assert!(
        no_exec.contains("forbidden") && no_exec.contains("pods/exec"),
        "{no_exec}"
    );
    // `kubectl auth whoami` (SelfSubjectReview), plain and impersonating.
    let me = k.run(&["auth", "whoami"]).await;
    assert!(
        me.contains("kubernetes-admin") && me.contains("system:masters"),
        "{me}"
    );
    let robot_me = k.run(&[robot_user, "auth", "whoami"]).await;
    assert!(
        robot_me.contains("system:serviceaccount:default:robot")
            && robot_me.contains("system:serviceaccounts:default"),
        "{robot_me}"
    );
    let denied = k.fail(&[robot_user, "delete", "pod", &pod]).await;
    assert!(
        denied.contains("forbidden") && denied.contains("system:serviceaccount:default:robot"),
        "{denied}"
    );

    let out = k.run(&["delete", "-f", web.to_str().unwrap()]).await;
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    k.wait_for("the pods to go", &["get", "pods", "--no-headers"], |out| {
        out.trim().is_empty()
    })
    .await;
    cluster.shutdown().await.unwrap();
}

/// Every preinstalled kubectl minor version (1.27 to 1.33) applies, reads and server-side
/// applies the web manifest against the API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kubectl_version_applies_and_reads() {
    let Some(_) = kubectl_binary() else {
        return;
    };
    let dir = Path::new("/usr/lib/google-cloud-sdk/bin");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("kubectl.1."))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    if versions.is_empty() {
        // Under CI the versions are part of what is tested: their absence fails the test.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: no versioned kubectl binaries in {}",
            dir.display()
        );
        eprintln!(
            "no versioned kubectl binaries in {}; /usr/bin/kubectl covers the default",
            dir.display()
        );
        return;
    }
    let store: std::sync::Arc<dyn kube_core::store::Store> =
        std::sync::Arc::new(kube_store::MemStore::new());
    let ns = serde_json::from_value(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}))
        .unwrap();
    store.create(ns).await.unwrap();
    let server = kube_apiserver::ApiServer::new(store)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let kubeconfig = plain_kubeconfig(config_dir.path(), &server.url());
    let web = manifests().join("web.yaml");
    let web = web.to_str().unwrap();
    for binary in versions {
        let k = Kubectl {
            binary: binary.clone(),
            kubeconfig: kubeconfig.clone(),
        };
        let out = k.run(&["apply", "-f", web]).await;
        assert!(
            out.contains("deployment.apps/web created"),
            "{binary:?}: {out}"
        );
        let again = k.run(&["apply", "-f", web]).await;
        assert!(
            again.contains("deployment.apps/web unchanged"),
            "{binary:?}: {again}"
        );
        let out = k.run(&["apply", "--server-side", "-f", web]).await;
        assert!(out.contains("serverside-applied"), "{binary:?}: {out}");
        let got = k.run(&["get", "deployments,services", "-o", "wide"]).await;
        assert!(
            got.contains("deployment.apps/web") && got.contains("service/web"),
            "{binary:?}: {got}"
        );
        k.run(&["delete", "-f", web, "--wait=false"]).await;
    }
}

/// The Job and DaemonSet manifests applied with kubectl against the quickstart cluster: the
/// Job runs its three pods to completion, the DaemonSet puts one pod on each node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_runs_the_job_and_daemonset_manifests() {
    let Some(binary) = kubectl_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Neither manifest binds a port, so this runs as any user, on the quickstart's default
    // runtime: runc as root (with runc and busybox-static installed), else host processes.
    // Pod networks of its own (`kp11`, `kp12`) as root, apart from the other tests'.
    let (cluster, k) = cluster_with_kubectl(
        binary,
        ClusterConfig {
            listen: "127.0.0.8:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            nodes: 2,
            runtime: RuntimeKind::detect(),
            store: StoreKind::Durable,
            pod_network_base: 11,
            ..ClusterConfig::default()
        },
    )
    .await;

    let job = manifests().join("job.yaml");
    let out = k.run(&["apply", "-f", job.to_str().unwrap()]).await;
    assert!(out.contains("job.batch/sums created"), "{out}");
    let daemonset = manifests().join("daemonset.yaml");
    let out = k.run(&["apply", "-f", daemonset.to_str().unwrap()]).await;
    assert!(
        out.contains("daemonset.apps/node-reporter created"),
        "{out}"
    );

    k.run(&[
        "wait",
        "--for=condition=Complete",
        "job/sums",
        "--timeout=90s",
    ])
    .await;
    let succeeded = k
        .run(&["get", "job", "sums", "-o", "jsonpath={.status.succeeded}"])
        .await;
    assert_eq!(succeeded, "3");
    let pods = k
        .run(&["get", "pods", "-l", "app=sums", "--no-headers"])
        .await;
    assert_eq!(pods.matches("Completed").count(), 3, "{pods}");
    // (`kubectl logs job/sums` would pick a pod by the Job's `spec.selector`, which the API
    // server does not default yet; the label selects the Job's pods.)
    let logs = k.run(&["logs", "-l", "app=sums"]).await;
    assert_eq!(logs.matches("sum 1..1000 = 500500").count(), 3, "{logs}");

    k.run(&[
        "rollout",
        "status",
        "daemonset/node-reporter",
        "--timeout=90s",
    ])
    .await;
    let placed = k
        .wait_for(
            "a running reporter on each node",
            &[
                "get",
                "pods",
                "-l",
                "app=node-reporter",
                "-o",
                "jsonpath={range .items[*]}{.spec.nodeName} {.status.phase}{\"\\n\"}{end}",
            ],
            |out| out.matches("Running").count() == 2,
        )
        .await;
    let mut nodes: Vec<&str> = placed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["node-1", "node-2"], "{placed}");
    let reports = k
        .wait_for(
            "the reporters' logs",
            &["logs", "-l", "app=node-reporter", "--prefix"],
            |out| out.contains("reporting from node-1") && out.contains("reporting from node-2"),
        )
        .await;
    assert!(reports.contains("reporting from"), "{reports}");

    k.run(&["delete", "-f", job.to_str().unwrap()]).await;
    k.run(&["delete", "-f", daemonset.to_str().unwrap()]).await;
    k.wait_for("the pods to go", &["get", "pods", "--no-headers"], |out| {
        out.trim().is_empty()
    })
    .await;
    cluster.shutdown().await.unwrap();
}

/// kubectl's `create <kind>` and `run` send protobuf bodies, not JSON. Each of them, against
/// the quickstart cluster, makes the object it was asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_and_run_send_protobuf_bodies() {
    let Some(binary) = kubectl_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_cluster, k) = cluster_with_kubectl(
        binary,
        ClusterConfig {
            listen: "127.0.0.14:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            nodes: 1,
            runtime: RuntimeKind::Fake,
            store: StoreKind::Memory,
            ..ClusterConfig::default()
        },
    )
    .await;
    let get = |what: &'static str, path: &'static str| {
        let k = &k;
        async move {
            k.run(&["get", "-n", "team", what, "-o", &format!("jsonpath={path}")])
                .await
        }
    };

    let out = k.run(&["create", "namespace", "team"]).await;
    assert!(out.contains("namespace/team created"), "{out}");
    let out = k
        .run(&[
            "create",
            "deployment",
            "web",
            "-n",
            "team",
            "--image=nginx:1.27",
            "--replicas=2",
            "--port=80",
        ])
        .await;
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let spec = get(
        "deployment/web",
        "{.spec.replicas}/{.spec.selector.matchLabels.app}/{.spec.template.spec.containers[0].image}/{.spec.template.spec.containers[0].ports[0].containerPort}",
    )
    .await;
    assert_eq!(spec, "2/web/nginx:1.27/80");
    k.wait_for(
        "the deployment's two pods ready",
        &[
            "get",
            "-n",
            "team",
            "deployment/web",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
        |out| out == "2",
    )
    .await;

    k.run(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "team",
        "--from-literal=mode=fast",
    ])
    .await;
    assert_eq!(get("configmap/settings", "{.data.mode}").await, "fast");
    k.run(&[
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        "team",
        "--from-literal=password=s3cret",
    ])
    .await;
    assert_eq!(get("secret/creds", "{.data.password}").await, "czNjcmV0");
    k.run(&["create", "serviceaccount", "robot", "-n", "team"])
        .await;
    assert_eq!(
        get("serviceaccount/robot", "{.metadata.name}").await,
        "robot"
    );
    k.run(&[
        "create",
        "service",
        "clusterip",
        "web",
        "-n",
        "team",
        "--tcp=80:8080",
    ])
    .await;
    assert_eq!(
        get(
            "service/web",
            "{.spec.ports[0].port}/{.spec.ports[0].targetPort}/{.spec.selector.app}"
        )
        .await,
        "80/8080/web"
    );
    let ip = get("service/web", "{.spec.clusterIP}").await;
    assert!(
        ip.parse::<std::net::IpAddr>().is_ok(),
        "an allocated ClusterIP: {ip:?}"
    );
    k.run(&[
        "run",
        "one",
        "-n",
        "team",
        "--image=busybox",
        "--restart=Never",
        "--",
        "sleep",
        "3600",
    ])
    .await;
    assert_eq!(
        get(
            "pod/one",
            "{.spec.restartPolicy}/{.spec.containers[0].args[0]}"
        )
        .await,
        "Never/sleep"
    );
    k.run(&[
        "create",
        "job",
        "hello",
        "-n",
        "team",
        "--image=busybox",
        "--",
        "echo",
        "hi",
    ])
    .await;
    assert_eq!(
        get(
            "job/hello",
            "{.spec.template.spec.containers[0].command[0]}"
        )
        .await,
        "echo"
    );
    k.run(&[
        "create",
        "role",
        "reader",
        "-n",
        "team",
        "--verb=get",
        "--verb=list",
        "--resource=pods",
    ])
    .await;
    assert_eq!(get("role/reader", "{.rules[0].verbs[1]}").await, "list");
    k.run(&[
        "create",
        "rolebinding",
        "reader",
        "-n",
        "team",
        "--role=reader",
        "--serviceaccount=team:robot",
    ])
    .await;
    assert_eq!(
        get(
            "rolebinding/reader",
            "{.roleRef.name}/{.subjects[0].kind}/{.subjects[0].name}"
        )
        .await,
        "reader/ServiceAccount/robot"
    );
    k.run(&[
        "create",
        "pdb",
        "web",
        "-n",
        "team",
        "--selector=app=web",
        "--min-available=1",
    ])
    .await;
    assert_eq!(get("pdb/web", "{.spec.minAvailable}").await, "1");
}

/// A ReplicationController keeps its replicas, `kubectl get rc` prints Kubernetes' columns and
/// `kubectl scale rc` scales it; `kubectl create cronjob` runs a Job on schedule (for real,
/// within 70 s) and `kubectl create job --from=cronjob/…` makes one at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_runs_replication_controllers_and_cron_jobs() {
    let Some(binary) = kubectl_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cluster, k) = cluster_with_kubectl(
        binary,
        ClusterConfig {
            listen: "127.0.0.19:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            nodes: 1,
            runtime: RuntimeKind::Fake,
            store: StoreKind::Memory,
            ..ClusterConfig::default()
        },
    )
    .await;

    let rc = dir.path().join("rc.yaml");
    std::fs::write(
        &rc,
        "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: web\n        image: busybox\n        command: [\"sleep\", \"3600\"]\n",
    )
    .unwrap();
    let out = k.run(&["apply", "-f", rc.to_str().unwrap()]).await;
    assert!(out.contains("replicationcontroller/web created"), "{out}");
    let table = k
        .wait_for("3 ready replicas", &["get", "rc", "web"], |out| {
            out.lines()
                .nth(1)
                .is_some_and(|l| l.split_whitespace().take(4).eq(["web", "3", "3", "3"]))
        })
        .await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        "{table}"
    );
    let wide = k.run(&["get", "rc", "web", "-o", "wide"]).await;
    assert!(
        wide.contains("SELECTOR") && wide.contains("app=web"),
        "{wide}"
    );
    let out = k.run(&["scale", "rc", "web", "--replicas=1"]).await;
    assert!(out.contains("replicationcontroller/web scaled"), "{out}");
    k.wait_for(
        "one pod left",
        &["get", "pods", "-l", "app=web", "--no-headers"],
        |out| out.lines().filter(|l| !l.contains("Terminating")).count() == 1,
    )
    .await;
    assert!(
        k.run(&["get", "all"])
            .await
            .contains("replicationcontroller/web")
    );

    let out = k
        .run(&[
            "create",
            "cronjob",
            "tick",
            "--image=busybox",
            "--schedule=*/1 * * * *",
            "--",
            "echo",
            "tick",
        ])
        .await;
    assert!(out.contains("cronjob.batch/tick created"), "{out}");
    let spec = k
        .run(&[
            "get",
            "cronjob",
            "tick",
            "-o",
            "jsonpath={.spec.schedule}/{.spec.concurrencyPolicy}/{.spec.successfulJobsHistoryLimit}/{.spec.jobTemplate.spec.template.spec.restartPolicy}",
        ])
        .await;
    assert_eq!(spec, "*/1 * * * */Allow/3/OnFailure");
    let out = k
        .run(&["create", "job", "manual", "--from=cronjob/tick"])
        .await;
    assert!(out.contains("job.batch/manual created"), "{out}");
    let manual = k
        .run(&[
            "get",
            "job",
            "manual",
            "-o",
            "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.annotations.cronjob\\.kubernetes\\.io/instantiate}/{.spec.template.spec.containers[0].command[1]}",
        ])
        .await;
    assert_eq!(manual, "CronJob/manual/tick");

    // The first scheduled run comes within 70 s, named after its minute.
    let deadline = Instant::now() + Duration::from_secs(70);
    let jobs = loop {
        let jobs = k
            .run(&["get", "jobs", "-o", "jsonpath={.items[*].metadata.name}"])
            .await;
        if jobs.split_whitespace().any(|n| n.starts_with("tick-")) {
            break jobs;
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled Job within 70 s: {jobs}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let scheduled = jobs
        .split_whitespace()
        .find(|n| n.starts_with("tick-"))
        .unwrap();
    let minute: i64 = scheduled.trim_start_matches("tick-").parse().unwrap();
    let stamp = k
        .run(&[
            "get",
            "job",
            scheduled,
            "-o",
            "jsonpath={.metadata.annotations.batch\\.kubernetes\\.io/cronjob-scheduled-timestamp}",
        ])
        .await;
    let at: k8s_openapi::jiff::Timestamp = stamp.parse().unwrap();
    assert_eq!(at.as_second(), minute * 60, "{stamp}");
    k.wait_for(
        "the CronJob's lastScheduleTime",
        &[
            "get",
            "cronjob",
            "tick",
            "-o",
            "jsonpath={.status.lastScheduleTime}",
        ],
        |out| !out.is_empty(),
    )
    .await;
    let table = k.run(&["get", "cronjob", "tick"]).await;
    assert!(table.contains("*/1 * * * *"), "{table}");
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"
        ],
        "{table}"
    );
    cluster.shutdown().await.unwrap();
}

/// An Indexed Job through the API server and real node agents: each pod sees its index in
/// `JOB_COMPLETION_INDEX`, `status.completedIndexes` lists them all, the tracking finalizer
/// is gone from the finished pods, and `ttlSecondsAfterFinished` deletes the Job after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_runs_an_indexed_job_that_expires() {
    let Some(binary) = kubectl_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cluster, k) =
        cluster_with_kubectl(binary, memory_cluster(dir.path(), "127.0.0.20:0", 1, 16)).await;
    let job = dir.path().join("indexed.yaml");
    std::fs::write(
        &job,
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: shards\nspec:\n  completionMode: Indexed\n  completions: 3\n  parallelism: 3\n  ttlSecondsAfterFinished: 3\n  template:\n    metadata:\n      labels:\n        app: shards\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: shard\n        image: busybox\n        command: [\"sh\", \"-c\", \"echo shard $JOB_COMPLETION_INDEX\"]\n",
    )
    .unwrap();
    let out = k.run(&["apply", "-f", job.to_str().unwrap()]).await;
    assert!(out.contains("job.batch/shards created"), "{out}");
    k.run(&[
        "wait",
        "--for=condition=Complete",
        "job/shards",
        "--timeout=90s",
    ])
    .await;
    let status = k
        .run(&[
            "get",
            "job",
            "shards",
            "-o",
            "jsonpath={.status.completedIndexes}/{.status.succeeded}",
        ])
        .await;
    assert_eq!(status, "0-2/3");
    let pods = k
        .run(&[
            "get",
            "pods",
            "-l",
            "app=shards",
            "-o",
            "jsonpath={range .items[*]}{.metadata.annotations.batch\\.kubernetes\\.io/job-completion-index}:{.metadata.finalizers}{\"\\n\"}{end}",
        ])
        .await;
    let mut lines: Vec<&str> = pods.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["0:", "1:", "2:"], "{pods}");
    let logs = k.run(&["logs", "-l", "app=shards"]).await;
    for i in 0..3 {
        assert!(logs.contains(&format!("shard {i}")), "{logs}");
    }
    k.wait_for(
        "the Job deleted after its TTL",
        &["get", "jobs", "-o", "name"],
        |out| !out.contains("job.batch/shards"),
    )
    .await;
    k.wait_for(
        "its pods collected",
        &["get", "pods", "-l", "app=shards", "-o", "name"],
        |out| out.trim().is_empty(),
    )
    .await;
    cluster.shutdown().await.unwrap();
}

/// Everyday commands that behave as against Kubernetes: `delete namespace --all` leaves the
/// immortal namespaces, `create role` (a protobuf body) keeps `apiGroups: [""]`, and
/// `delete rs --cascade=orphan` completes and leaves the pods without the owner reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_namespaces_roles_and_orphan_deletion_as_kubernetes() {
    let Some(binary) = kubectl_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (cluster, k) =
        cluster_with_kubectl(binary, memory_cluster(dir.path(), "127.0.0.22:0", 1, 17)).await;

    k.run(&["create", "namespace", "scratch"]).await;
    let out = k
        .command(&["delete", "namespace", "--all", "--wait=false"])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        stderr.contains("namespaces \"default\" is forbidden: this namespace may not be deleted"),
        "{stderr}"
    );
    let names = k
        .run(&[
            "get",
            "namespaces",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .await;
    for name in ["default", "kube-system", "kube-public"] {
        assert!(names.split(' ').any(|n| n == name), "{name}: {names}");
    }
    let phase = k
        .run(&[
            "get",
            "namespace",
            "default",
            "-o",
            "jsonpath={.status.phase}",
        ])
        .await;
    assert_eq!(phase, "Active");

    let out = k
        .run(&["create", "role", "r", "--verb=get,list", "--resource=pods"])
        .await;
    assert!(
        out.contains("role.rbac.authorization.k8s.io/r created"),
        "{out}"
    );
    let groups = k
        .run(&["get", "role", "r", "-o", "jsonpath={.rules[0].apiGroups}"])
        .await;
    assert_eq!(groups, "[\"\"]");

    let rs = dir.path().join("rs.yaml");
    std::fs::write(
        &rs,
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: keep\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: keep\n  template:\n    metadata:\n      labels:\n        app: keep\n    spec:\n      containers:\n      - name: c\n        image: busybox\n        command: [\"sleep\", \"3600\"]\n",
    )
    .unwrap();
    k.run(&["apply", "-f", rs.to_str().unwrap()]).await;
    k.wait_for(
        "2 pods of the ReplicaSet",
        &["get", "pods", "-l", "app=keep", "-o", "name"],
        |out| out.lines().count() == 2,
    )
    .await;
    let out = k
        .run(&["delete", "rs", "keep", "--cascade=orphan", "--timeout=60s"])
        .await;
    assert!(out.contains("replicaset.apps \"keep\" deleted"), "{out}");
    let left = k.run(&["get", "rs", "-o", "name"]).await;
    assert!(!left.contains("keep"), "{left}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let owners = k
        .run(&[
            "get",
            "pods",
            "-l",
            "app=keep",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}:{.metadata.ownerReferences}{\"\\n\"}{end}",
        ])
        .await;
    let lines: Vec<&str> = owners.lines().collect();
    assert_eq!(lines.len(), 2, "orphans kept: {owners}");
    assert!(lines.iter().all(|l| l.ends_with(':')), "{owners}");
    cluster.shutdown().await.unwrap();
}
