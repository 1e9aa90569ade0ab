//! Keeps the [`Zone`] in step with the shared Service, EndpointSlice and Pod informers: each
//! event rebuilds the records of the one Service (or pod) it touches.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_core::informer::{Informer, InformerEvent};
use kube_core::object::ObjectKey;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::records;
use super::zone::Zone;
use crate::slices::service_of;

/// The informers the zone follows (`pods` only when pod names are verified).
pub(crate) struct Sources {
    pub(crate) services: Informer,
    pub(crate) slices: Informer,
    pub(crate) pods: Option<Informer>,
}

/// The objects the records are built from.
#[derive(Default)]
struct Feed {
    services: HashMap<ObjectKey, Service>,
    slices: HashMap<ObjectKey, (ObjectKey, EndpointSlice)>,
    slices_of: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
}

/// Follows `sources` into `zone` until `shutdown`; `ready` fires once the first lists are in.
pub(crate) async fn run(
    sources: Sources,
    zone: Arc<RwLock<Zone>>,
    ready: oneshot::Sender<()>,
    shutdown: CancellationToken,
) {
    let mut services = sources.services.subscribe();
    let mut slices = sources.slices.subscribe();
    let mut pods = sources.pods.as_ref().map(Informer::subscribe);
    let mut feed = Feed::default();
    let synced = async {
        sources.services.wait_until_synced().await;
        sources.slices.wait_until_synced().await;
        if let Some(pods) = &sources.pods {
            pods.wait_until_synced().await;
        }
    };
    tokio::select! {
        () = shutdown.cancelled() => return,
        () = synced => {}
    }
    // Informers queue their first list before they report synced: take it all in before
    // answering, so a restart never answers NXDOMAIN for a name that exists.
    drain(&mut services, |e| feed.service(&zone, e));
    drain(&mut slices, |e| feed.slice(&zone, e));
    if let Some(pods) = &mut pods {
        drain(pods, |e| pod(&zone, e));
    }
    let _ = ready.send(());
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some(event) = services.recv() => feed.service(&zone, event),
            Some(event) = slices.recv() => feed.slice(&zone, event),
            Some(event) = next(&mut pods) => pod(&zone, event),
            else => return,
        }
    }
}

fn drain(events: &mut UnboundedReceiver<InformerEvent>, mut apply: impl FnMut(InformerEvent)) {
    loop {
        match events.try_recv() {
            Ok(event) => apply(event),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => return,
        }
    }
}

async fn next(events: &mut Option<UnboundedReceiver<InformerEvent>>) -> Option<InformerEvent> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

fn write(zone: &RwLock<Zone>) -> std::sync::RwLockWriteGuard<'_, Zone> {
    zone.write().unwrap_or_else(|p| p.into_inner())
}

impl Feed {
    fn service(&mut self, zone: &RwLock<Zone>, event: InformerEvent) {
        let key = event.object().key();
        match &event {
            InformerEvent::Applied(object) => match object.to_typed::<Service>() {
                Ok(service) => {
                    self.services.insert(key.clone(), service);
                }
                Err(e) => {
                    tracing::debug!(%key, error = %e, "undecodable service");
                    self.services.remove(&key);
                }
            },
            InformerEvent::Deleted(_) => {
                self.services.remove(&key);
            }
        }
        self.rebuild(zone, &key);
    }

    fn slice(&mut self, zone: &RwLock<Zone>, event: InformerEvent) {
        let key = event.object().key();
        let previous = self.slices.remove(&key).map(|(service, _)| service);
        if let Some(service) = &previous {
            if let Some(set) = self.slices_of.get_mut(service) {
                set.remove(&key);
                if set.is_empty() {
                    self.slices_of.remove(service);
                }
            }
        }
        let mut current = None;
        if let InformerEvent::Applied(object) = &event {
            let decoded = object.to_typed::<EndpointSlice>();
            if let (Some(service), Ok(slice)) = (service_of(object), decoded) {
                self.slices_of
                    .entry(service.clone())
                    .or_default()
                    .insert(key.clone());
                self.slices.insert(key, (service.clone(), slice));
                current = Some(service);
            }
        }
        if let Some(service) = &previous {
            if current.as_ref() != Some(service) {
                self.rebuild(zone, service);
            }
        }
        if let Some(service) = &current {
            self.rebuild(zone, service);
        }
    }

    /// Recomputes the records of the Service `key` from it and its slices.
    fn rebuild(&self, zone: &RwLock<Zone>, key: &ObjectKey) {
        let records = match self.services.get(key) {
            None => Vec::new(),
            Some(service) => {
                let slices: Vec<&EndpointSlice> = self
                    .slices_of
                    .get(key)
                    .into_iter()
                    .flatten()
                    .filter_map(|k| self.slices.get(k).map(|(_, s)| s))
                    .collect();
                let zone = zone.read().unwrap_or_else(|p| p.into_inner());
                let (apex, ttl) = (zone.apex().clone(), zone.ttl());
                drop(zone);
                records::service_records(service, &slices, &apex, ttl)
            }
        };
        write(zone).set_service(key, records);
    }
}

/// A pod's addresses while it runs (a finished pod's address goes back to the pool).
fn pod(zone: &RwLock<Zone>, event: InformerEvent) {
    let object = event.object();
    let key = object.key();
    let Some(namespace) = object.metadata.namespace.clone() else {
        return;
    };
    let ips: Vec<IpAddr> = match &event {
        InformerEvent::Deleted(_) => Vec::new(),
        InformerEvent::Applied(object) => match object.to_typed::<Pod>() {
            Err(_) => Vec::new(),
            Ok(pod) => {
                let status = pod.status.unwrap_or_default();
                let finished = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
                let mut ips: Vec<IpAddr> = status
                    .pod_ips
                    .iter()
                    .flatten()
                    .filter_map(|ip| ip.ip.parse().ok())
                    .chain(status.pod_ip.iter().filter_map(|ip| ip.parse().ok()))
                    .collect();
                ips.sort();
                ips.dedup();
                if finished { Vec::new() } else { ips }
            }
        },
    };
    write(zone).set_pod(&key, &namespace, ips);
}
