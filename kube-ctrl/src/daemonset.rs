//! [`DaemonSetController`]: one pod of a DaemonSet's template on every eligible node.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube_core::controller::{Action, Controller, ControllerContext, ReconcileError, Watches};
use kube_core::object::{
    DynamicObject, GroupKind, ObjectKey, controller_owner_ref, controller_ref,
};
use kube_core::store::Preconditions;
use kube_core::typed::Api;

use crate::deployment::pod_template_hash;
use crate::index::OwnerIndex;
use crate::node_lifecycle::taints::tolerates;
use crate::pods::{is_active, is_ready};
use crate::statefulset::history;

/// The label carrying the template hash of a DaemonSet pod (what a rolling update compares).
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// Tolerations Kubernetes adds to every DaemonSet pod, so daemons keep running on nodes that
/// are unhealthy or under pressure.
fn default_tolerations() -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Toleration::default()
    };
    vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
}

/// Reconciles DaemonSets (apps/v1): a pod on every node that matches the template's
/// `nodeSelector` and whose NoSchedule/NoExecute taints the pod tolerates (with the tolerations
/// Kubernetes adds to daemons), none elsewhere; `RollingUpdate` replaces pods of an old
/// template at most `maxUnavailable` nodes at a time (`OnDelete` waits for the user); status
/// counts as Kubernetes reports them. Pods are bound directly (`spec.nodeName`).
///
/// Each template is recorded as a ControllerRevision `<ds>-<hash>` (the hash is the pods'
/// `controller-revision-hash`), trimmed to `revisionHistoryLimit`, so `kubectl rollout
/// history` and `kubectl rollout undo` work as with Kubernetes.
#[derive(Debug, Clone)]
pub struct DaemonSetController {
    revisions: Arc<OwnerIndex>,
}

impl Default for DaemonSetController {
    fn default() -> Self {
        Self::new()
    }
}

impl DaemonSetController {
    /// A DaemonSet controller.
    pub fn new() -> Self {
        Self {
            revisions: Arc::new(OwnerIndex::new(history::kind())),
        }
    }
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

fn eligible(node: &Node, template: &Pod) -> bool {
    let spec = template.spec.clone().unwrap_or_default();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selected = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let tolerations = spec.tolerations.unwrap_or_default();
    let tolerated = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|taint| tolerations.iter().any(|t| tolerates(t, taint)));
    selected && tolerated
}

async fn delete_pod(pods: &Api<Pod>, pod: &Pod) -> Result<(), ReconcileError> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let pre = Preconditions::uid(pod.metadata.uid.clone().unwrap_or_default());
    match pods.delete(&name, &pre).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[async_trait::async_trait]
impl Controller for DaemonSetController {
    fn name(&self) -> &str {
        "daemonset"
    }

    fn watches(&self) -> Watches {
        Watches::primary(GroupKind::of::<DaemonSet>())
            .owns(GroupKind::POD)
            .owns(history::kind())
            .related(GroupKind::NODE)
    }

    fn map_related(
        &self,
        _kind: &GroupKind,
        _node: &DynamicObject,
        ctx: &ControllerContext,
    ) -> Vec<ObjectKey> {
        // Any node change can change where every DaemonSet belongs.
        ctx.informers
            .informer(&GroupKind::of::<DaemonSet>())
            .list()
            .iter()
            .map(|d| d.key())
            .collect()
    }

    async fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ControllerContext,
    ) -> Result<Action, ReconcileError> {
        let Some(namespace) = key.namespace.as_deref() else {
            return Ok(Action::await_change());
        };
        let sets: Api<DaemonSet> = Api::namespaced(ctx.store.clone(), namespace);
        let pods: Api<Pod> = Api::namespaced(ctx.store.clone(), namespace);
        let Some(ds) = sets.get_opt(&key.name).await? else {
            return Ok(Action::await_change());
        };
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(Action::await_change());
        }
        let invalid = |m: &str| ReconcileError::Invalid(format!("DaemonSet {key}: {m}"));
        let spec = ds.spec.clone().ok_or_else(|| invalid("spec is required"))?;
        let owner = controller_owner_ref(&ds).ok_or_else(|| invalid("has no name or uid"))?;
        let old = ds.status.clone().unwrap_or_default();

        // The template's revision: its hash labels the pods.
        let revisions_api: Api<ControllerRevision> = Api::namespaced(ctx.store.clone(), namespace);
        let mut revisions = history::owned(&self.revisions.view(&ctx.informers), &owner.uid);
        let mut collision_count = old.collision_count;
        let hashed = spec.template.clone();
        let hash_template = move |count: Option<i32>| pod_template_hash(&hashed, count);
        let wanted = history::Wanted {
            parent: &key.name,
            owner: owner.clone(),
            labels: spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default(),
            data: history::template_patch(&spec.template),
            hash: &hash_template,
        };
        let current = history::record(
            &revisions_api,
            &mut revisions,
            &wanted,
            &mut collision_count,
        )
        .await?;
        let revision_hash = |r: &ControllerRevision| {
            r.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_HASH_LABEL))
                .cloned()
        };
        let hash = revision_hash(&current)
            .unwrap_or_else(|| pod_template_hash(&spec.template, collision_count));

        // The pod every node should run.
        let meta = spec.template.metadata.clone().unwrap_or_default();
        let mut template = Pod {
            spec: spec.template.spec.clone(),
            ..Pod::default()
        };
        let mut labels = meta.labels.unwrap_or_default();
        labels.insert(REVISION_HASH_LABEL.into(), hash.clone());
        template.metadata.labels = Some(labels);
        template.metadata.annotations = meta.annotations;
        template.metadata.generate_name = Some(format!("{}-", key.name));
        template.metadata.owner_references = Some(vec![owner.clone()]);
        let pod_spec = template.spec.get_or_insert_with(Default::default);
        let tolerations = pod_spec.tolerations.get_or_insert_with(Vec::new);
        for t in default_tolerations() {
            if !tolerations.contains(&t) {
                tolerations.push(t);
            }
        }

        let nodes: Vec<Node> = ctx.informers.informer(&GroupKind::NODE).list_typed();
        let mut by_node: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
        for pod in ctx
            .informers
            .informer(&GroupKind::POD)
            .list_namespace(namespace)
            .iter()
            .filter(|p| controller_ref(&p.metadata).is_some_and(|o| o.uid == owner.uid))
            .filter_map(|p| p.to_typed::<Pod>().ok())
            .filter(is_active)
        {
            by_node
                .entry(node_name(&pod).unwrap_or("").to_string())
                .or_default()
                .push(pod);
        }

        let mut live_hashes: HashSet<String> = by_node
            .values()
            .flatten()
            .filter_map(|p| {
                p.metadata
                    .labels
                    .as_ref()?
                    .get(REVISION_HASH_LABEL)
                    .cloned()
            })
            .collect();
        live_hashes.insert(hash.clone());

        let mut desired = 0;
        let mut scheduled = 0;
        let mut misscheduled = 0;
        let mut ready = 0;
        let mut updated = 0;
        let mut unavailable = 0;
        let mut outdated: Vec<Pod> = Vec::new();
        let is_current = |p: &Pod| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_HASH_LABEL))
                == Some(&hash)
        };
        for node in &nodes {
            let name = node.metadata.name.clone().unwrap_or_default();
            let mut here = by_node.remove(&name).unwrap_or_default();
            if !eligible(node, &template) {
                misscheduled += here.len();
                for pod in &here {
                    delete_pod(&pods, pod).await?;
                }
                continue;
            }
            desired += 1;
            if here.is_empty() {
                let mut pod = template.clone();
                pod.spec.get_or_insert_with(Default::default).node_name = Some(name.clone());
                pods.create(&pod).await?;
                unavailable += 1;
                continue;
            }
            // Keep one: a current one if any, else the oldest.
            here.sort_by_key(|p| (!is_current(p), p.metadata.creation_timestamp.clone()));
            for extra in here.drain(1..) {
                delete_pod(&pods, &extra).await?;
            }
            let pod = here.remove(0);
            scheduled += 1;
            if is_ready(&pod) {
                ready += 1;
            } else {
                unavailable += 1;
            }
            if is_current(&pod) {
                updated += 1;
            } else {
                outdated.push(pod);
            }
        }
        // Revisions no pod runs are history, trimmed to the limit.
        let live: HashSet<String> = revisions
            .iter()
            .filter(|r| revision_hash(r).is_some_and(|h| live_hashes.contains(&h)))
            .filter_map(|r| r.metadata.name.clone())
            .chain(current.metadata.name.clone())
            .collect();
        let limit = usize::try_from(spec.revision_history_limit.unwrap_or(10)).unwrap_or(0);
        history::truncate(&revisions_api, &revisions, &live, limit).await?;

        // Pods on nodes that no longer exist.
        for pod in by_node.values().flatten() {
            delete_pod(&pods, pod).await?;
        }

        let strategy = spec.update_strategy.clone().unwrap_or_default();
        if strategy.type_.as_deref() != Some("OnDelete") {
            let max_unavailable = match strategy.rolling_update.and_then(|r| r.max_unavailable) {
                Some(IntOrString::Int(n)) => usize::try_from(n).unwrap_or(1),
                Some(IntOrString::String(p)) => {
                    let pct: usize = p.trim_end_matches('%').parse().unwrap_or(0);
                    (desired * pct / 100).max(1)
                }
                None => 1,
            };
            // Unready outdated pods first: replacing them costs no availability.
            outdated.sort_by_key(is_ready);
            let mut budget = max_unavailable.saturating_sub(unavailable);
            for pod in &outdated {
                let unready = !is_ready(pod);
                if !unready && budget == 0 {
                    break;
                }
                delete_pod(&pods, pod).await?;
                if !unready {
                    budget -= 1;
                }
            }
        }

        let as_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let status = DaemonSetStatus {
            desired_number_scheduled: as_i32(desired),
            current_number_scheduled: as_i32(scheduled),
            number_ready: as_i32(ready),
            number_available: Some(as_i32(ready)),
            number_unavailable: Some(as_i32(desired.saturating_sub(ready))),
            updated_number_scheduled: Some(as_i32(updated)),
            number_misscheduled: as_i32(misscheduled),
            observed_generation: ds.metadata.generation,
            collision_count,
            conditions: old.conditions.clone(),
        };
        if status != old {
            let mut next = ds.clone();
            next.status = Some(status);
            sets.replace(&next).await?;
        }
        Ok(Action::await_change())
    }
}
