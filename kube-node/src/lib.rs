//! The node side of the orchestrator: [`NodeAgent`], the kubelet logic, over any
//! [`Runtime`](kube_core::runtime::Runtime), and four runtimes to drive.
//!
//! | type | what |
//! |---|---|
//! | [`NodeAgent`] | a [`Component`](kube_core::orchestrator::Component): registers a Node, runs the pods bound to it, reports their status |
//! | [`FakeRuntime`] | a simulated runtime: configurable exits, start failures, latency; records calls; cheap enough for thousands of pods |
//! | [`ProcessRuntime`] | containers as host processes (one process group each), logs in files; images ignored unless given registries (then pulled, and an image's Entrypoint runs from its root); volumes bind-mounted in a private mount namespace (or linked, unprivileged: [`VolumeMounts`]); optionally cgroup limits and a network namespace (CNI IP) per pod |
//! | [`CriRuntime`] | a CRI v1 client over a unix socket (containerd, CRI-O) |
//! | [`DockerRuntime`] | Docker Engine over its unix socket, as dockershim did: a pause-like sandbox container holding the pod's namespaces, containers joining it, images pulled by Docker |
//! | [`OciRuntime`] | real containers through `runc`: images pulled from registries ([`pull`]) on overlayfs, or local root filesystems; a network namespace per pod (CNI optional), cgroup limits, OOMKilled |
//!
//! # Running a node
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use kube_core::api::Pod;
//! use kube_core::orchestrator::Orchestrator;
//! use kube_core::runtime::Runtime;
//! use kube_core::store::Store;
//! use kube_core::typed::Api;
//! use kube_node::{FakeRuntime, NodeAgent};
//!
//! let store = Arc::new(kube_store::MemStore::new()) as Arc<dyn Store>;
//! let fake = FakeRuntime::new();
//! let runtime: Arc<dyn Runtime> = Arc::new(fake.clone());
//! let agent = NodeAgent::builder("node-1", runtime)
//!     .resync_interval(Duration::from_millis(50))
//!     .build()?;
//! let running = Orchestrator::builder().store(store.clone()).node(agent).build()?.start();
//!
//! // A pod bound to the node (no scheduler here) starts running.
//! let pods: Api<Pod> = Api::namespaced(store, "default");
//! pods.create(&serde_json::from_value(serde_json::json!({
//!     "metadata": {"name": "web"},
//!     "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "nginx"}]}
//! }))?).await?;
//! let phase = loop {
//!     let pod = pods.get("web").await?;
//!     match pod.status.and_then(|s| s.phase) {
//!         Some(p) if p == "Running" => break p,
//!         _ => tokio::time::sleep(Duration::from_millis(20)).await,
//!     }
//! };
//! assert_eq!(phase, "Running");
//! assert_eq!(fake.running_count(), 1);
//! running.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # What the agent does
//!
//! Node registration (capacity configured or [detected](NodeAgentBuilder::detect_capacity)),
//! a `coordination.k8s.io/v1` Lease renewed every heartbeat, admission of bound pods (node
//! selector, resources against allocatable, host ports), init then app containers,
//! `restartPolicy` with crash-loop back-off, startup/liveness/readiness probes (exec, httpGet,
//! tcpSocket), pod phase, conditions and container states with the kubelet's reasons,
//! graceful termination (preStop, SIGTERM, grace period, SIGKILL), env from literals,
//! ConfigMaps, Secrets, resource fields and the downward API, emptyDir/configMap/secret/
//! downwardAPI/hostPath volumes and projected volumes (configMap, secret, downwardAPI and
//! serviceAccountToken sources; tokens come from a [`TokenSource`] and are renewed after 80%
//! of their lifetime, as the kubelet does), logs by pod and container ([`pod_logs`], with `previous`;
//! [`follow_pod_logs`]), garbage collection of dead containers by the kubelet's policy
//! ([`ContainerGcPolicy`]: minimum age, dead instances per container, dead containers per
//! node), and adoption of running pods after an agent restart.
//!
//! # The kubelet HTTP server
//!
//! With [`NodeAgentBuilder::serve`] the agent serves the kubelet's
//! `GET /containerLogs/{namespace}/{pod}/{container}` (`follow`, `tailLines`, `previous`,
//! `limitBytes`; not `timestamps=true`: lines carry no times) and `GET /healthz` over plain
//! HTTP, and its Node carries `status.daemonEndpoints.kubeletEndpoint.Port` next to its
//! `InternalIP` address: the API server's `pods/log` connects to
//! `http://<InternalIP>:<Port>/containerLogs/...`. [`NodeAgent::kubelet_addr`] is the bound
//! address.
//!
//! Pod networking for [`OciRuntime`] and [`ProcessRuntime`] is chosen with [`PodNetwork`]:
//! with [`PodNetwork::Cni`] each pod gets a network namespace and an IP from the CNI bridge
//! plugin; with [`PodNetwork::Routed`] ([`RoutedConfig`]) an IP from the node's pod CIDR on a
//! routed veth set up over netlink, with hostPorts and egress masquerading, and no CNI
//! binary. `hostNetwork` pods share the node's network under any of them. Test images are built with [`image`] from the host's static busybox.
//!
//! # Agent restarts
//!
//! A new agent adopts the pods its runtime reports. [`OciRuntime`] and [`ProcessRuntime`]
//! record their sandboxes and containers under their root directory (small JSON files,
//! written atomically), so a runtime built over the same root in a new agent process —
//! with `keep_on_drop(true)` on the old one, or after it crashed — re-attaches to the
//! containers still running (by pid and process start time) and reports those that exited
//! meanwhile (with exit code 137, reason `ContainerStatusUnknown`, when nobody saw how).
//! CRI runtimes keep state themselves, so [`CriRuntime`] adopts too.
//!
//! # What it does not do (yet)
//!
//! No image signature checks or lazy pulls, no postStart hooks, no gRPC or HTTPS
//! probes, no `resourceFieldRef` in downwardAPI volume files, no restartable ("sidecar") init containers
//! (treated as ordinary init containers), no eviction or node-pressure conditions, no graceful
//! node shutdown. The kubelet server has no TLS or authentication and serves only logs and
//! health (no exec, attach, port-forward, `/pods` or stats). cgroup v2 (a host mounting the
//! unified hierarchy at `/sys/fs/cgroup`) is implemented but only tested on a fake cgroupfs:
//! the development host has v1 controllers.

#![forbid(unsafe_code)]

mod agent;
mod cgroup;
mod cri;
mod docker;
mod error;
mod exec_output;
mod fake;
mod files;
pub mod image;
pub mod kubelet_auth;
mod logs;
mod mounts;
mod net;
mod oci;
mod persist;
mod podnet;
mod process;
pub mod pull;
pub mod tokens;

pub use agent::{
    ContainerGcPolicy, ImageGcPolicy, NodeAgent, NodeAgentBuilder, NodeAgentConfig, labels,
};
pub use cri::CriRuntime;
pub use docker::{DEFAULT_SANDBOX_IMAGE, DockerRuntime, DockerRuntimeBuilder};
pub use error::{Error, Result};
pub use fake::{FakeBehavior, FakeCall, FakeOp, FakePull, FakeRuntime};
pub use kubelet_auth::{KubeletAccess, KubeletAuth, KubeletRequest};
pub use logs::{follow_pod_logs, pod_logs};
pub use mounts::VolumeMounts;
pub use net::{CniConfig, PodNetwork};
pub use oci::{OciRuntime, OciRuntimeBuilder};
pub use podnet::{MAX_LINK_PREFIX, RoutedConfig};
pub use process::{ProcessRuntime, ProcessRuntimeBuilder};
pub use tokens::{ServiceAccountToken, TokenRequest, TokenSource};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<NodeAgent>();
        assert_send_sync::<FakeRuntime>();
        assert_send_sync::<ProcessRuntime>();
        assert_send_sync::<OciRuntime>();
        assert_send_sync::<CriRuntime>();
        assert_send_sync::<Error>();
    }
}
