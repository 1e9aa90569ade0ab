//! VolumeBinding: a pod's PersistentVolumeClaims must be satisfiable on the node — a bound
//! claim's volume must allow the node (`nodeAffinity`), and an unbound claim of a
//! `WaitForFirstConsumer` class needs an Available volume the node can reach or a provisioner
//! that can make one there (Kubernetes' pkg/scheduler/framework/plugins/volumebinding).
//!
//! The decision is only half: once a node is chosen, [`plan`] says what to write before the
//! pod is bound — a static volume's `claimRef` (the PV controller finishes the binding) or
//! the claim's `volume.kubernetes.io/selected-node` annotation (its provisioner makes a volume
//! there) — and the scheduling loop writes it and waits for the claims to be bound, as
//! Kubernetes' PreBind does.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity as NodeAffinitySpec, PersistentVolume, PersistentVolumeClaim, Pod,
    PodSpec,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube_core::object::ObjectKey;
use kube_core::quantity::parse_bytes;
use kube_core::selector::Selector;

use super::NodeSelectorMatcher;
use crate::framework::{
    Cluster, CycleState, FilterPlugin, NodeInfo, Plugin, PodInfo, PreFilterPlugin, PreFilterResult,
    Status, Volumes,
};

/// Reason when no volume can be bound or provisioned for an unbound claim on the node.
pub const REASON_BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
/// Reason when a bound volume's node affinity excludes the node.
pub const REASON_NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// Reason when a claim of an `Immediate` class is not bound yet.
pub const REASON_UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
/// The claim annotation naming the node a volume is provisioned for.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

const STATE_KEY: &str = "VolumeBinding";

/// What to write for one of the pod's claims before the pod is bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeAction {
    /// Pre-bind this Available volume to the claim (`spec.claimRef`).
    Bind {
        /// The claim.
        claim: ObjectKey,
        /// The volume's name.
        volume: String,
    },
    /// Annotate the claim with the node, for its provisioner.
    Provision {
        /// The claim.
        claim: ObjectKey,
    },
}

/// A claim the pod waits for: the volumes that could take it, smallest first, and its class.
#[derive(Clone, Debug)]
struct Unbound {
    claim: ObjectKey,
    candidates: Vec<(Arc<PersistentVolume>, NodeSelectorMatcher)>,
    class: Option<Arc<StorageClass>>,
}

/// What PreFilter found for the pod.
#[derive(Clone, Debug, Default)]
struct PodVolumes {
    /// Node constraints of the bound claims' volumes.
    bound: Vec<NodeSelectorMatcher>,
    unbound: Vec<Unbound>,
}

/// The node constraint of a volume (`spec.nodeAffinity.required`); empty when it has none.
fn volume_matcher(volume: &PersistentVolume) -> NodeSelectorMatcher {
    let required = volume
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.clone());
    let spec = PodSpec {
        affinity: required.map(|r| Affinity {
            node_affinity: Some(NodeAffinitySpec {
                required_during_scheduling_ignored_during_execution: Some(r),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    NodeSelectorMatcher::new(&spec)
}

fn storage(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> i64 {
    q.and_then(|q| parse_bytes(&q.0).ok()).unwrap_or(0)
}

/// Whether a volume could take the claim on some node: Kubernetes' `findMatchingVolume`
/// without the node (capacity, class, access modes, volume mode, selector, free or pre-bound
/// to this claim).
fn fits(
    volume: &PersistentVolume,
    claim: &PersistentVolumeClaim,
    selector: Option<&Selector>,
) -> bool {
    let (Some(vspec), Some(cspec)) = (volume.spec.as_ref(), claim.spec.as_ref()) else {
        return false;
    };
    let request = storage(
        cspec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage")),
    );
    let capacity = storage(vspec.capacity.as_ref().and_then(|c| c.get("storage")));
    let mode = |m: Option<&String>| m.map_or("Filesystem", String::as_str).to_string();
    if capacity < request
        || volume.metadata.deletion_timestamp.is_some()
        || mode(vspec.volume_mode.as_ref()) != mode(cspec.volume_mode.as_ref())
    {
        return false;
    }
    if let Some(r) = &vspec.claim_ref {
        return r.name == claim.metadata.name
            && r.namespace == claim.metadata.namespace
            && r.uid
                .as_deref()
                .is_none_or(|u| u.is_empty() || Some(u) == claim.metadata.uid.as_deref());
    }
    let phase = volume.status.as_ref().and_then(|s| s.phase.as_deref());
    let labels = volume.metadata.labels.clone().unwrap_or_default();
    let offered = vspec.access_modes.as_deref().unwrap_or(&[]);
    matches!(phase, None | Some("Available"))
        && selector.is_none_or(|s| s.matches(&labels))
        && vspec.storage_class_name.as_deref().unwrap_or("")
            == cspec.storage_class_name.as_deref().unwrap_or("")
        && cspec
            .access_modes
            .iter()
            .flatten()
            .all(|m| offered.contains(m))
}

/// Whether the class can provision on `node` (a provisioner, and `allowedTopologies`).
fn provisions_on(class: &StorageClass, node: &NodeInfo) -> bool {
    if class.provisioner.is_empty() || class.provisioner == "kubernetes.io/no-provisioner" {
        return false;
    }
    let Some(terms) = class.allowed_topologies.as_ref().filter(|t| !t.is_empty()) else {
        return true;
    };
    terms.iter().any(|t| {
        t.match_label_expressions.iter().flatten().all(|r| {
            node.labels()
                .get(&r.key)
                .is_some_and(|v| r.values.contains(v))
        })
    })
}

/// The pod's claims as the volume state sees them; `Ok(None)` when it has none.
fn pod_volumes(volumes: &Volumes, pod: &Pod) -> Result<Option<PodVolumes>, Status> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let names: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            v.persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str())
        })
        .collect();
    if names.is_empty() {
        return Ok(None);
    }
    let mut out = PodVolumes::default();
    let mut immediate = false;
    for name in names {
        let Some(claim) = volumes.claim(namespace, name) else {
            return Err(Status::unresolvable(format!(
                "persistentvolumeclaim \"{name}\" not found"
            )));
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(Status::unresolvable(format!(
                "persistentvolumeclaim \"{name}\" is being deleted"
            )));
        }
        let spec = claim.spec.clone().unwrap_or_default();
        let volume_name = spec.volume_name.unwrap_or_default();
        if !volume_name.is_empty() {
            let Some(volume) = volumes.volume(&volume_name) else {
                return Err(Status::unresolvable(format!(
                    "pvc {namespace}/{name} bound to non-existent pv {volume_name}"
                )));
            };
            out.bound.push(volume_matcher(volume));
            continue;
        }
        let class = spec
            .storage_class_name
            .as_deref()
            .and_then(|c| volumes.class(c))
            .cloned();
        let waits = class
            .as_ref()
            .and_then(|c| c.volume_binding_mode.as_deref())
            == Some("WaitForFirstConsumer");
        if !waits {
            immediate = true;
            continue;
        }
        let selector = match spec.selector.as_ref().map(Selector::from_label_selector) {
            Some(Ok(s)) => Some(s),
            Some(Err(_)) => None,
            None => None,
        };
        let mut candidates: Vec<_> = volumes
            .volumes()
            .filter(|v| fits(v, claim, selector.as_ref()))
            .map(|v| {
                let size = storage(
                    v.spec
                        .as_ref()
                        .and_then(|s| s.capacity.as_ref())
                        .and_then(|c| c.get("storage")),
                );
                (size, v.clone())
            })
            .collect();
        candidates.sort_by_key(|(size, _)| *size);
        out.unbound.push(Unbound {
            claim: ObjectKey::namespaced(namespace.to_string(), name.to_string()),
            candidates: candidates
                .into_iter()
                .map(|(_, v)| {
                    let m = volume_matcher(&v);
                    (v, m)
                })
                .collect(),
            class,
        });
    }
    if immediate {
        return Err(Status::unresolvable(REASON_UNBOUND_IMMEDIATE));
    }
    Ok(Some(out))
}

/// The writes for the unbound claims on `node`, or the reasons the node does not fit.
fn check(found: &PodVolumes, node: &NodeInfo) -> Result<Vec<VolumeAction>, Vec<&'static str>> {
    let mut reasons = Vec::new();
    if found.bound.iter().any(|m| !m.matches(node)) {
        reasons.push(REASON_NODE_CONFLICT);
    }
    let mut taken: HashSet<&str> = HashSet::new();
    let mut actions = Vec::new();
    let mut unfit = false;
    for claim in &found.unbound {
        let volume = claim.candidates.iter().find(|(v, m)| {
            let name = v.metadata.name.as_deref().unwrap_or_default();
            !taken.contains(name) && m.matches(node)
        });
        if let Some((v, _)) = volume {
            let name = v.metadata.name.as_deref().unwrap_or_default();
            taken.insert(name);
            actions.push(VolumeAction::Bind {
                claim: claim.claim.clone(),
                volume: name.to_string(),
            });
        } else if claim.class.as_ref().is_some_and(|c| provisions_on(c, node)) {
            actions.push(VolumeAction::Provision {
                claim: claim.claim.clone(),
            });
        } else {
            unfit = true;
        }
    }
    if unfit {
        reasons.push(REASON_BIND_CONFLICT);
    }
    if reasons.is_empty() {
        Ok(actions)
    } else {
        Err(reasons)
    }
}

/// What to write before binding `pod` to `node` (empty when nothing: no claims, or all bound),
/// or why the node does not fit the pod's volumes (Kubernetes' reasons).
pub fn plan(volumes: &Volumes, pod: &Pod, node: &NodeInfo) -> Result<Vec<VolumeAction>, String> {
    match pod_volumes(volumes, pod) {
        Ok(None) => Ok(Vec::new()),
        Ok(Some(found)) => check(&found, node).map_err(|r| r.join(", ")),
        Err(status) => Err(status.reasons().collect::<Vec<_>>().join(", ")),
    }
}

/// The VolumeBinding plugin.
#[derive(Clone, Copy, Debug, Default)]
pub struct VolumeBinding;

impl VolumeBinding {
    /// Registered name.
    pub const NAME: &'static str = "VolumeBinding";
}

impl Plugin for VolumeBinding {
    fn name(&self) -> &str {
        Self::NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for VolumeBinding {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        cluster: &Cluster,
    ) -> PreFilterResult {
        // A cluster that tracks no claims, volumes or classes (one built from a plain
        // `Snapshot`) cannot judge: the scheduling loop filters the snapshot's nodes itself.
        if cluster.volumes().is_empty() {
            return PreFilterResult::skip();
        }
        match pod_volumes(cluster.volumes(), &pod.pod) {
            Ok(None) => PreFilterResult::skip(),
            Ok(Some(found)) => {
                state.write(STATE_KEY, found);
                PreFilterResult::success()
            }
            Err(status) => status.into(),
        }
    }
}

impl FilterPlugin for VolumeBinding {
    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
        let Some(found) = state.read::<PodVolumes>(STATE_KEY) else {
            return Status::success();
        };
        match check(found, node) {
            Ok(_) => Status::success(),
            Err(reasons) => {
                let mut reasons = reasons.into_iter();
                let first = reasons.next().unwrap_or(REASON_BIND_CONFLICT);
                reasons.fold(Status::unresolvable(first), Status::with_reason)
            }
        }
    }
}
