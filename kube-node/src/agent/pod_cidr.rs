//! Tells the runtime the node's pod CIDR (CRI's `UpdateRuntimeConfig`), as the kubelet does:
//! whenever the agent's Node shows a `spec.podCIDR` first, or a changed one.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube_core::informer::{Informer, InformerEvent};
use kube_core::object::GroupKind;
use kube_core::runtime::{RuntimeConfig, RuntimeError};
use kube_core::selector::FieldSelector;
use kube_core::store::ListOptions;
use tokio_util::sync::CancellationToken;

use super::Agent;

/// How soon a failed runtime update is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// The node's pod CIDR: `spec.podCIDR`, else the first of `spec.podCIDRs`.
fn pod_cidr(node: &Node) -> Option<String> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidr
        .clone()
        .or_else(|| spec.pod_cidrs.as_ref()?.first().cloned())
        .filter(|c| !c.is_empty())
}

impl Agent {
    /// Watches the agent's own Node (an informer on `metadata.name`, so the CIDR the node
    /// IPAM controller writes arrives at once) and passes each new pod CIDR to the runtime,
    /// retrying every second while the runtime refuses it.
    pub(super) async fn pod_cidr_loop(self: Arc<Self>) {
        let filter = ListOptions::default().fields(FieldSelector::equals(
            "metadata.name",
            self.config.node_name.clone(),
        ));
        let nodes = Informer::with_filter(self.store.clone(), GroupKind::NODE, None, filter);
        // The informer's task goes with this loop (aborted with the agent's tasks).
        let stop = CancellationToken::new();
        let _stop = stop.clone().drop_guard();
        nodes.start(stop);
        let mut events = nodes.subscribe();
        let mut applied: Option<String> = None;
        let mut wanted: Option<String> = None;
        loop {
            let pending = wanted.is_some() && wanted != applied;
            tokio::select! {
                event = events.recv() => match event {
                    None => return,
                    Some(InformerEvent::Applied(object)) => {
                        if let Some(cidr) = object.to_typed::<Node>().ok().as_ref().and_then(pod_cidr) {
                            wanted = Some(cidr);
                        }
                    }
                    Some(InformerEvent::Deleted(_)) => {}
                },
                // A refused update is tried again.
                () = tokio::time::sleep(RETRY), if pending => {}
            }
            let Some(cidr) = wanted.clone().filter(|w| Some(w) != applied.as_ref()) else {
                continue;
            };
            match self
                .runtime
                .update_runtime_config(&RuntimeConfig::with_pod_cidr(cidr.clone()))
                .await
            {
                Ok(()) => {
                    tracing::info!(node = %self.config.node_name, pod_cidr = %cidr, "runtime given the node's pod CIDR");
                    applied = Some(cidr);
                }
                // A CIDR the runtime cannot use (IPv6 only, say) will not become usable.
                Err(e @ RuntimeError::InvalidArgument(_)) => {
                    tracing::warn!(node = %self.config.node_name, pod_cidr = %cidr, error = %e, "the runtime cannot use the node's pod CIDR");
                    applied = Some(cidr);
                }
                Err(e) => {
                    tracing::warn!(node = %self.config.node_name, pod_cidr = %cidr, error = %super::error_chain(&e), "updating the runtime's pod CIDR failed; retrying");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cidr_comes_from_pod_cidr_then_pod_cidrs() {
        let node = |spec: serde_json::Value| -> Node {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n"}, "spec": spec}))
                .expect("node")
        };
        assert_eq!(
            pod_cidr(&node(serde_json::json!({"podCIDR": "10.244.1.0/24"}))).as_deref(),
            Some("10.244.1.0/24")
        );
        assert_eq!(
            pod_cidr(&node(
                serde_json::json!({"podCIDRs": ["10.244.2.0/24", "fd00::/64"]})
            ))
            .as_deref(),
            Some("10.244.2.0/24")
        );
        assert_eq!(pod_cidr(&node(serde_json::json!({}))), None);
        assert_eq!(pod_cidr(&node(serde_json::json!({"podCIDR": ""}))), None);
    }
}
