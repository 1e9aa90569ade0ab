//! Admission: the kubelet re-checks a bound pod against the node before running it (the
//! scheduler may have raced, or the pod was bound by hand): node selector, resources against
//! allocatable, host ports. A rejected pod fails with the kubelet's reason (`OutOfcpu`,
//! `NodeAffinity`, `NodePorts`, …) and nothing of it runs.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as WireQuantity;
use kube_core::object::{DynamicObject, ObjectKey};
use kube_core::resources::{Resources, pod_requests};

use super::Agent;
use crate::error::{Error, Result};

/// What an admitted pod holds on the node.
#[derive(Clone, Debug)]
pub(crate) struct Admitted {
    uid: String,
    requests: Resources,
    /// `(host IP, protocol, host port)`.
    ports: Vec<(String, String, i32)>,
}

/// Why a pod was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub(crate) reason: String,
    pub(crate) message: String,
}

fn host_ports(pod: &Pod) -> Vec<(String, String, i32)> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|h| *h > 0)?;
            let ip = p
                .host_ip
                .clone()
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into());
            Some((ip, p.protocol.clone().unwrap_or_else(|| "TCP".into()), port))
        })
        .collect()
}

fn ports_conflict(a: &(String, String, i32), b: &(String, String, i32)) -> bool {
    a.1 == b.1 && a.2 == b.2 && (a.0 == b.0 || a.0 == "0.0.0.0" || b.0 == "0.0.0.0")
}

impl Agent {
    fn allocatable(&self) -> Resources {
        let mut list: BTreeMap<String, WireQuantity> = self
            .config
            .capacity
            .iter()
            .map(|(k, v)| (k.clone(), WireQuantity(v.clone())))
            .collect();
        list.extend(
            self.config
                .allocatable
                .iter()
                .map(|(k, v)| (k.clone(), WireQuantity(v.clone()))),
        );
        // The builder validated every quantity.
        Resources::from_list(&list).unwrap_or_default()
    }

    /// Admits the pod (recording what it holds) or says why not. A pod already admitted
    /// (same UID), or one the runtime already runs (`running`), is admitted without checks.
    pub(crate) fn admit(&self, key: &ObjectKey, pod: &Pod, running: bool) -> Option<Rejection> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut admitted = self.admitted();
        if admitted.get(key).is_some_and(|a| a.uid == uid) {
            return None;
        }
        let requests = match pod.spec.as_ref().map(pod_requests) {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                return Some(Rejection {
                    reason: "UnexpectedAdmissionError".into(),
                    message: format!("Pod was rejected: bad resource quantity: {e}"),
                });
            }
            None => Resources::default(),
        };
        let ports = host_ports(pod);
        if !running {
            if let Some(r) = self.check(key, pod, &requests, &ports, &admitted) {
                return Some(r);
            }
        }
        admitted.insert(
            key.clone(),
            Admitted {
                uid,
                requests,
                ports,
            },
        );
        None
    }

    fn check(
        &self,
        key: &ObjectKey,
        pod: &Pod,
        requests: &Resources,
        ports: &[(String, String, i32)],
        admitted: &HashMap<ObjectKey, Admitted>,
    ) -> Option<Rejection> {
        let labels = self.node_labels();
        let selector = pod.spec.as_ref().and_then(|s| s.node_selector.as_ref());
        if selector
            .into_iter()
            .flatten()
            .any(|(k, v)| labels.get(k) != Some(v))
        {
            return Some(Rejection {
                reason: "NodeAffinity".into(),
                message: "Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector".into(),
            });
        }
        let others = admitted.iter().filter(|(k, _)| *k != key).map(|(_, a)| a);
        let mut used = Resources::default();
        let mut taken = Vec::new();
        for a in others {
            used.add(&a.requests);
            taken.extend(a.ports.iter().cloned());
        }
        let capacity = self.allocatable();
        if let Some(name) = requests.insufficient(&used, &capacity).first() {
            let pick = |r: &Resources| match name.as_str() {
                "cpu" => r.milli_cpu,
                "memory" => r.memory,
                "pods" => r.pods,
                "ephemeral-storage" => r.ephemeral_storage,
                other => r.scalar.get(other).copied().unwrap_or(0),
            };
            return Some(Rejection {
                reason: format!("OutOf{name}"),
                message: format!(
                    "Pod was rejected: Node didn't have enough resource: {name}, requested: {}, used: {}, capacity: {}",
                    pick(requests),
                    pick(&used),
                    pick(&capacity)
                ),
            });
        }
        if ports
            .iter()
            .any(|p| taken.iter().any(|t| ports_conflict(p, t)))
        {
            return Some(Rejection {
                reason: "NodePorts".into(),
                message: "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports".into(),
            });
        }
        None
    }

    /// Forgets what the pod held (it ended, or is gone).
    pub(crate) fn release(&self, key: &ObjectKey) {
        self.admitted().remove(key);
    }

    /// Marks the pod Failed with the rejection's reason (nothing of it ever ran).
    pub(crate) async fn reject(
        &self,
        key: &ObjectKey,
        object: &DynamicObject,
        rejection: &Rejection,
    ) -> Result<()> {
        tracing::info!(pod = %key, reason = %rejection.reason, "pod rejected at admission");
        let mut status: PodStatus = object
            .data
            .get("status")
            .map(|v| serde_json::from_value(v.clone()))
            .transpose()
            .map_err(|source| Error::Decode {
                what: format!("pod {key} status"),
                source,
            })?
            .unwrap_or_default();
        status.phase = Some("Failed".into());
        status.reason = Some(rejection.reason.clone());
        status.message = Some(rejection.message.clone());
        let mut next = object.clone();
        next.data.insert(
            "status".into(),
            serde_json::to_value(&status).map_err(|source| Error::Decode {
                what: format!("pod {key} status"),
                source,
            })?,
        );
        match self.store.update(next).await {
            Ok(_) => Ok(()),
            // A newer version will be synced (and checked) again.
            Err(e) if e.is_conflict() || e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
