//! NetworkPolicy served to the real kubectl: create, get (the `netpol` short name and
//! Kubernetes' columns), describe, delete, defaults stored, and an invalid policy refused with
//! a 422 worded as Kubernetes words it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use kube_apiserver::ApiServer;
use kube_core::store::Store;
use kube_store::MemStore;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// kubectl, or `None` to skip; under `CI=true` a missing kubectl fails the test.
fn kubectl_binary() -> Option<PathBuf> {
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

struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// Runs kubectl with `stdin`; its exit status, stdout and stderr.
    async fn output(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut child = Command::new(&self.binary)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("kubectl starts");
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .await
                .expect("kubectl reads stdin");
        }
        let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("kubectl finishes")
            .expect("kubectl output");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out, err) = self.output(args, stdin).await;
        assert!(ok, "kubectl {args:?} failed: {err}{out}");
        out
    }
}

fn plain_kubeconfig(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {url}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: default\ncurrent-context: c\n"
        ),
    )
    .expect("kubeconfig written");
    path
}

const POLICY: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: db-from-api
spec:
  podSelector:
    matchLabels:
      app: db
  ingress:
  - from:
    - podSelector:
        matchLabels:
          role: api
    - ipBlock:
        cidr: 10.0.0.0/8
        except: [10.1.0.0/16]
    ports:
    - port: 5432
      endPort: 5440
  egress:
  - to:
    - namespaceSelector: {}
"#;

const INVALID: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: broken
spec:
  podSelector: {}
  ingress:
  - ports:
    - port: 80
      endPort: 79
    from:
    - ipBlock:
        cidr: 10.0.0.0/16
        except: [10.1.0.0/24]
  policyTypes: [Ingress, Sideways]
"#;

#[tokio::test]
async fn kubectl_creates_gets_describes_and_deletes_network_policies() {
    let Some(binary) = kubectl_binary() else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let ns = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}),
    )
    .unwrap();
    store.create(ns).await.unwrap();
    let server = ApiServer::new(store)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl {
        binary,
        kubeconfig: plain_kubeconfig(dir.path(), &server.url()),
    };

    let out = k.run(&["create", "-f", "-"], Some(POLICY)).await;
    assert!(
        out.contains("networkpolicy.networking.k8s.io/db-from-api created"),
        "{out}"
    );

    let table = k.run(&["get", "netpol"], None).await;
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "POD-SELECTOR", "AGE"]);
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..2], ["db-from-api", "app=db"]);

    // Kubernetes' defaults are stored: both policy types (it has egress rules), TCP ports.
    let stored: Value = serde_json::from_str(
        &k.run(&["get", "networkpolicy", "db-from-api", "-o", "json"], None)
            .await,
    )
    .unwrap();
    assert_eq!(stored["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(stored["spec"]["ingress"][0]["ports"][0]["protocol"], "TCP");

    let described = k.run(&["describe", "netpol", "db-from-api"], None).await;
    for expected in [
        "Name:         db-from-api",
        "PodSelector:     app=db",
        "To Port Range: 5432-5440/TCP",
        "From:\n      PodSelector: role=api",
        "IPBlock:\n        CIDR: 10.0.0.0/8\n        Except: 10.1.0.0/16",
        "Allowing egress traffic:",
        "NamespaceSelector: <none>",
        "Policy Types: Ingress, Egress",
    ] {
        assert!(
            described.contains(expected),
            "no {expected:?} in:\n{described}"
        );
    }

    let (ok, out, err) = k.output(&["apply", "-f", "-"], Some(INVALID)).await;
    assert!(!ok, "an invalid policy is refused: {out}");
    for expected in [
        r#"The NetworkPolicy "broken" is invalid"#,
        "spec.ingress[0].ports[0].endPort: Invalid value: 79: must be greater than or equal to `port`",
        r#"spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: "10.1.0.0/24": must be a strict subset of `cidr`"#,
        r#"spec.policyTypes[1]: Unsupported value: "Sideways": supported values: "Ingress", "Egress""#,
    ] {
        assert!(err.contains(expected), "no {expected:?} in:\n{err}");
    }

    let out = k.run(&["delete", "netpol", "db-from-api"], None).await;
    assert!(out.contains("deleted"), "{out}");
    let (_, out, err) = k.output(&["get", "netpol"], None).await;
    assert!(
        err.contains("No resources found in default namespace."),
        "{out}{err}"
    );
    server.shutdown().await;
}
