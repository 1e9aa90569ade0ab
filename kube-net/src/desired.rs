//! The desired service table, read from the shared Service and Endpoints informers, and the
//! increments that take an applied table there.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube_core::informer::Informer;
use kube_core::object::ObjectKey;
use kube_core::proxy::{ServiceEntry, ServiceTable, TableChange};

/// Where the desired state comes from.
#[derive(Clone, Debug)]
pub(crate) struct Sources {
    pub(crate) services: Informer,
    pub(crate) endpoints: Informer,
}

impl Sources {
    /// The entry the service at `key` should have (`None` if there is no such service). A
    /// Service or Endpoints that does not decode is logged and treated as absent: there is
    /// nothing sensible to program for it.
    fn entry(&self, key: &ObjectKey) -> Option<ServiceEntry> {
        let service = self.services.get(key)?;
        let service: Service = match service.to_typed() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(service = %key, error = %e, "service does not decode; skipping it");
                return None;
            }
        };
        let endpoints: Option<Endpoints> = self.endpoints.get(key).and_then(|e| {
            e.to_typed()
                .map_err(|err| {
                    tracing::warn!(service = %key, error = %err, "endpoints do not decode; ignoring them");
                })
                .ok()
        });
        Some(ServiceEntry::from_objects(&service, endpoints.as_ref()))
    }

    /// The whole desired table.
    pub(crate) fn table(&self) -> ServiceTable {
        let services = self
            .services
            .list()
            .iter()
            .map(|s| s.key())
            .filter_map(|key| Some((key.clone(), self.entry(&key)?)))
            .collect();
        ServiceTable { services }
    }

    /// The changes that bring the services at `keys` from `applied` to their desired state;
    /// services whose entry is unchanged are left out.
    pub(crate) fn changes(
        &self,
        keys: &BTreeSet<ObjectKey>,
        applied: &BTreeMap<ObjectKey, ServiceEntry>,
    ) -> Vec<TableChange> {
        keys.iter()
            .filter_map(|key| match (self.entry(key), applied.get(key)) {
                (Some(want), Some(have)) if want == *have => None,
                (Some(want), _) => Some(TableChange::Upsert(key.clone(), want)),
                (None, Some(_)) => Some(TableChange::Remove(key.clone())),
                (None, None) => None,
            })
            .collect()
    }
}
