//! The node's Lease (`coordination.k8s.io/v1`, namespace `kube-node-lease`): the cheap
//! heartbeat the node lifecycle controller watches, renewed every heartbeat interval, as the
//! kubelet does alongside (less frequent) Node status updates.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};

use super::Agent;
use crate::error::{Error, Result};

/// Where node leases live, as in Kubernetes.
pub(crate) const LEASE_NAMESPACE: &str = "kube-node-lease";

/// How many times a conflicting renewal is retried.
const CONFLICT_RETRIES: usize = 5;

fn micro_now() -> MicroTime {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let micros = i64::try_from(now.as_micros()).unwrap_or(i64::MAX);
    MicroTime(k8s_openapi::jiff::Timestamp::from_microsecond(micros).unwrap_or_default())
}

impl Agent {
    /// How long the lease is valid: four heartbeats (the kubelet: 40 s for a 10 s renewal).
    fn lease_duration_seconds(&self) -> i32 {
        let secs = self
            .config
            .heartbeat_interval
            .as_secs()
            .saturating_mul(4)
            .max(1);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }

    fn decode(&self, what: &str, source: serde_json::Error) -> Error {
        Error::Decode {
            what: format!("{what} {}", self.config.node_name),
            source,
        }
    }

    /// Creates or renews the node's Lease.
    pub(super) async fn renew_lease(&self) -> Result<()> {
        let kind = GroupKind::of::<Lease>();
        let key = ObjectKey::namespaced(LEASE_NAMESPACE, self.config.node_name.clone());
        for _ in 0..CONFLICT_RETRIES {
            let result = match self.store.get(&kind, &key).await {
                Ok(current) => {
                    let mut lease: Lease =
                        current.to_typed().map_err(|e| self.decode("lease", e))?;
                    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                    spec.holder_identity = Some(self.config.node_name.clone());
                    spec.lease_duration_seconds = Some(self.lease_duration_seconds());
                    spec.renew_time = Some(micro_now());
                    let object =
                        DynamicObject::from_typed(&lease).map_err(|e| self.decode("lease", e))?;
                    self.store.update(object).await
                }
                Err(e) if e.is_not_found() => {
                    let object = DynamicObject::from_typed(&self.new_lease().await)
                        .map_err(|e| self.decode("lease", e))?;
                    self.store.create(object).await
                }
                Err(e) => return Err(e.into()),
            };
            match result {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() || e.is_already_exists() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// A fresh Lease, owned by the Node (so it goes when the Node does).
    async fn new_lease(&self) -> Lease {
        let node_key = ObjectKey::cluster(self.config.node_name.clone());
        let owner = self
            .store
            .get(&GroupKind::NODE, &node_key)
            .await
            .ok()
            .and_then(|node| node.metadata.uid.clone())
            .map(|uid| OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: self.config.node_name.clone(),
                uid,
                ..Default::default()
            });
        let now = micro_now();
        Lease {
            metadata: ObjectMeta {
                name: Some(self.config.node_name.clone()),
                namespace: Some(LEASE_NAMESPACE.into()),
                owner_references: owner.map(|o| vec![o]),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.node_name.clone()),
                lease_duration_seconds: Some(self.lease_duration_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..Default::default()
            }),
        }
    }
}
