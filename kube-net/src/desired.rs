//! The desired service table, read from the shared Service, EndpointSlice and Endpoints
//! informers, and the increments that take an applied table there.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_core::informer::Informer;
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::proxy::{ServiceEntry, ServiceTable, TableChange};

use crate::slices;

/// Where the desired state comes from.
#[derive(Clone, Debug)]
pub(crate) struct Sources {
    pub(crate) services: Informer,
    pub(crate) endpoints: Informer,
    pub(crate) slices: Informer,
}

impl Sources {
    /// The service an informer event's object belongs to: Services and Endpoints share their
    /// service's key; EndpointSlices name it in a label.
    pub(crate) fn service_key(object: &DynamicObject) -> Option<ObjectKey> {
        if object.group_kind() == GroupKind::of::<EndpointSlice>() {
            slices::service_of(object)
        } else {
            Some(object.key())
        }
    }

    /// The entry the service at `key` should have (`None` if there is no such service). Its
    /// EndpointSlices are used when it has any, its Endpoints otherwise. An object that does not
    /// decode is logged and treated as absent: there is nothing sensible to program for it.
    fn entry(&self, key: &ObjectKey) -> Option<ServiceEntry> {
        let namespace = key.namespace.as_deref().unwrap_or_default();
        let own: Vec<Arc<DynamicObject>> = self
            .slices
            .list_namespace(namespace)
            .into_iter()
            .filter(|s| slices::service_of(s).as_ref() == Some(key))
            .collect();
        self.entry_with(key, &own)
    }

    /// [`Sources::entry`] with the service's slices already found.
    fn entry_with(&self, key: &ObjectKey, own: &[Arc<DynamicObject>]) -> Option<ServiceEntry> {
        let service = self.services.get(key)?;
        let service: Service = match service.to_typed() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(service = %key, error = %e, "service does not decode; skipping it");
                return None;
            }
        };
        let service_slices: Vec<EndpointSlice> = own
            .iter()
            .filter_map(|s| {
                s.to_typed()
                    .map_err(|err| {
                        tracing::warn!(service = %key, error = %err, "endpoint slice does not decode; ignoring it");
                    })
                    .ok()
            })
            .collect();
        if !service_slices.is_empty() {
            return Some(slices::entry(&service, &service_slices));
        }
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
        // Index slices by service once, rather than scanning them per service.
        let mut by_service: BTreeMap<ObjectKey, Vec<Arc<DynamicObject>>> = BTreeMap::new();
        for slice in self.slices.list() {
            if let Some(key) = slices::service_of(&slice) {
                by_service.entry(key).or_default().push(slice);
            }
        }
        let services = self
            .services
            .list()
            .iter()
            .map(|s| s.key())
            .filter_map(|key| {
                let own = by_service.get(&key).map(Vec::as_slice).unwrap_or_default();
                Some((key.clone(), self.entry_with(&key, own)?))
            })
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
