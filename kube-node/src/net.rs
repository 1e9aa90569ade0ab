//! Pod networking: a network namespace per pod (`ip netns`), and an IP in it from CNI plugins
//! (Debian's `containernetworking-plugins`: bridge + host-local IPAM) or from the built-in
//! routed network ([`crate::podnet`]).

use std::path::{Path, PathBuf};

use kube_core::runtime::RuntimeError;
use serde_json::json;
use tokio::process::Command;

use crate::podnet::RoutedConfig;

/// How a runtime networks its pods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum PodNetwork {
    /// Pods share the host's network (and report the node's IP).
    Host,
    /// Each pod gets its own network namespace with only loopback up: isolated, no IP.
    #[default]
    Isolated,
    /// Each pod gets its own network namespace and an IP from the CNI bridge plugin, so pods
    /// on one node reach each other (needs root).
    Cni(CniConfig),
    /// Each pod gets its own network namespace, wired to the node by a routed veth pair set
    /// up over netlink, with an IP from the node's pod CIDR; hostPorts and egress
    /// masquerading through nftables. No CNI binary (needs root and `nft`). See
    /// [`RoutedConfig`].
    Routed(RoutedConfig),
}

/// The CNI network a runtime attaches pods to: bridge + host-local IPAM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniConfig {
    /// Where the plugin executables are (default `/usr/lib/cni`).
    pub bin_dir: PathBuf,
    /// The host bridge (default `kn0`), created on first use.
    pub bridge: String,
    /// The pod subnet (default `10.88.0.0/16`); the bridge takes its first address.
    pub subnet: String,
    /// The network's name, also host-local's allocation directory name (default `kube-node`).
    pub name: String,
}

impl Default for CniConfig {
    fn default() -> Self {
        Self {
            bin_dir: PathBuf::from("/usr/lib/cni"),
            bridge: "kn0".into(),
            subnet: "10.88.0.0/16".into(),
            name: "kube-node".into(),
        }
    }
}

impl CniConfig {
    /// The plugin config given to `bridge` on stdin; host-local keeps its leases under
    /// `ipam_dir` (the runtime's own directory, so nothing leaks between runtimes).
    fn plugin_config(&self, ipam_dir: &Path) -> serde_json::Value {
        json!({
            "cniVersion": "0.4.0",
            "name": self.name,
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.subnet}]],
                "dataDir": ipam_dir,
            }
        })
    }
}

fn failed(operation: &'static str, message: String) -> RuntimeError {
    RuntimeError::Failed { operation, message }
}

async fn run(operation: &'static str, program: &str, args: &[&str]) -> Result<(), RuntimeError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| failed(operation, format!("running {program}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(
            operation,
            format!(
                "{program} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}

/// The path of a named network namespace.
pub(crate) fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Creates a named network namespace with loopback up.
pub(crate) async fn create_netns(name: &str) -> Result<PathBuf, RuntimeError> {
    run("run_pod_sandbox", "ip", &["netns", "add", name]).await?;
    if let Err(e) = run(
        "run_pod_sandbox",
        "ip",
        &["-n", name, "link", "set", "lo", "up"],
    )
    .await
    {
        let _ = delete_netns(name).await;
        return Err(e);
    }
    Ok(netns_path(name))
}

/// Creates a named network namespace and nothing in it (its links are set up over netlink).
pub(crate) async fn add_netns(name: &str) -> Result<PathBuf, RuntimeError> {
    run("run_pod_sandbox", "ip", &["netns", "add", name]).await?;
    Ok(netns_path(name))
}

/// Deletes a named network namespace (fine if it is gone).
pub(crate) async fn delete_netns(name: &str) -> Result<(), RuntimeError> {
    // `ip netns` (un)mounts under /run/netns; concurrent calls occasionally fail, so retry.
    let mut result = Ok(());
    for _ in 0..5 {
        if !netns_path(name).exists() {
            return Ok(());
        }
        result = run("remove_pod_sandbox", "ip", &["netns", "del", name]).await;
        if result.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    result
}

/// Same as [`delete_netns`], for `Drop` (no runtime to await on).
pub(crate) fn delete_netns_blocking(name: &str) {
    for _ in 0..5 {
        if !netns_path(name).exists() {
            return;
        }
        let out = std::process::Command::new("ip")
            .args(["netns", "del", name])
            .output();
        match out {
            Ok(o) if o.status.success() => return,
            Ok(o) => {
                tracing::debug!(netns = name, stderr = %String::from_utf8_lossy(&o.stderr).trim(), "ip netns del failed")
            }
            Err(e) => tracing::debug!(netns = name, error = %e, "ip netns del failed"),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs the CNI bridge plugin for `container_id` in `netns`; returns the pod's IP.
pub(crate) async fn cni_add(
    config: &CniConfig,
    ipam_dir: &Path,
    container_id: &str,
    netns: &Path,
) -> Result<String, RuntimeError> {
    let out = cni(config, ipam_dir, "ADD", container_id, netns).await?;
    let result: serde_json::Value = serde_json::from_slice(&out).map_err(|e| {
        failed(
            "run_pod_sandbox",
            format!("CNI result does not decode: {e}"),
        )
    })?;
    let ip = result["ips"]
        .as_array()
        .and_then(|ips| ips.first())
        .and_then(|ip| ip["address"].as_str())
        .and_then(|cidr| cidr.split('/').next())
        .ok_or_else(|| failed("run_pod_sandbox", format!("CNI result has no IP: {result}")))?;
    Ok(ip.to_string())
}

/// Releases the pod's IP and veth (fine if they are gone).
pub(crate) async fn cni_del(
    config: &CniConfig,
    ipam_dir: &Path,
    container_id: &str,
    netns: &Path,
) -> Result<(), RuntimeError> {
    cni(config, ipam_dir, "DEL", container_id, netns)
        .await
        .map(|_| ())
}

async fn cni(
    config: &CniConfig,
    ipam_dir: &Path,
    command: &str,
    container_id: &str,
    netns: &Path,
) -> Result<Vec<u8>, RuntimeError> {
    use tokio::io::AsyncWriteExt;
    let operation = if command == "ADD" {
        "run_pod_sandbox"
    } else {
        "stop_pod_sandbox"
    };
    let plugin = config.bin_dir.join("bridge");
    let mut child = Command::new(&plugin)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &config.bin_dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| failed(operation, format!("running {}: {e}", plugin.display())))?;
    let input = config.plugin_config(ipam_dir).to_string();
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(failed(
            operation,
            format!(
                "CNI {command}: {}{}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ))
    }
}

/// Deletes the host bridge (when the last runtime using it goes).
pub(crate) fn delete_bridge_blocking(bridge: &str) {
    let _ = std::process::Command::new("ip")
        .args(["link", "del", bridge])
        .output();
}
