//! The resource records one Service (with its EndpointSlices) stands for, as the Kubernetes DNS
//! specification lists them (kubernetes/dns docs/specification.md, sections 2.3 to 2.5).

use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SRV};
use hickory_proto::rr::{Name, RData, Record};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The annotation that, before `publishNotReadyAddresses`, made every endpoint count as ready.
const TOLERATE_UNREADY: &str = "service.alpha.kubernetes.io/tolerate-unready-endpoints";

/// How one Service shows in DNS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// Has cluster IPs: `<svc>` resolves to them.
    ClusterIp,
    /// `clusterIP: None` (or none allocated): `<svc>` resolves to the ready endpoints.
    Headless,
    /// `type: ExternalName`: `<svc>` is a CNAME.
    ExternalName,
}

/// A ready endpoint of a headless service, with the name it gets under the service.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Ready<'a> {
    ip: IpAddr,
    hostname: String,
    /// `(name, protocol, port)` of the named ports of the endpoint's slice.
    ports: Vec<(&'a str, &'a str, u16)>,
}

/// `<service>.<namespace>.svc.<zone>`, where `zone` is the cluster domain as an FQDN.
pub(crate) fn service_name(service: &str, namespace: &str, zone: &Name) -> Option<Name> {
    fqdn(&format!("{service}.{namespace}.svc"), zone)
}

/// `relative` under `zone`, lower case; `None` when `relative` is not a valid name.
pub(crate) fn fqdn(relative: &str, zone: &Name) -> Option<Name> {
    Name::from_ascii(relative)
        .ok()?
        .append_domain(zone)
        .ok()
        .map(|n| n.to_lowercase())
}

/// Every record `service` and its `slices` stand for, each `ttl` seconds.
pub(crate) fn service_records(
    service: &Service,
    slices: &[&EndpointSlice],
    zone: &Name,
    ttl: u32,
) -> Vec<Record> {
    let (Some(name), Some(namespace)) = (
        service.metadata.name.as_deref(),
        service.metadata.namespace.as_deref(),
    ) else {
        return Vec::new();
    };
    let Some(owner) = service_name(name, namespace, zone) else {
        return Vec::new();
    };
    let spec = service.spec.clone().unwrap_or_default();
    let cluster_ips: Vec<IpAddr> = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
        _ => spec
            .cluster_ip
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect(),
    };
    let shape = match spec.type_.as_deref() {
        Some("ExternalName") => Shape::ExternalName,
        _ if cluster_ips.is_empty() => Shape::Headless,
        _ => Shape::ClusterIp,
    };
    let record = |name: &Name, data: RData| Record::from_rdata(name.clone(), ttl, data);
    let mut out = Vec::new();
    match shape {
        Shape::ExternalName => {
            let target = spec
                .external_name
                .as_deref()
                .and_then(|n| Name::from_ascii(n.trim_end_matches('.')).ok())
                .map(|mut n| {
                    n.set_fqdn(true);
                    n
                });
            if let Some(target) = target {
                out.push(record(&owner, RData::CNAME(CNAME(target))));
            }
        }
        Shape::ClusterIp => {
            for ip in &cluster_ips {
                out.push(record(&owner, address(*ip)));
                out.push(record(&reverse(*ip), RData::PTR(PTR(owner.clone()))));
            }
            for port in spec.ports.iter().flatten() {
                let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) else {
                    // Unnamed ports have no SRV record.
                    continue;
                };
                let Ok(number) = u16::try_from(port.port) else {
                    continue;
                };
                let protocol = port.protocol.as_deref().unwrap_or("TCP");
                if let Some(srv) = srv_name(port_name, protocol, &owner) {
                    out.push(record(
                        &srv,
                        RData::SRV(SRV::new(0, 100, number, owner.clone())),
                    ));
                }
            }
        }
        Shape::Headless => {
            let publish_all = spec.publish_not_ready_addresses == Some(true)
                || service
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(TOLERATE_UNREADY))
                    .is_some_and(|v| v == "true");
            for endpoint in ready_endpoints(slices, publish_all) {
                let Some(host) = Name::from_ascii(&endpoint.hostname)
                    .ok()
                    .and_then(|h| h.append_domain(&owner).ok())
                    .map(|h| h.to_lowercase())
                else {
                    continue;
                };
                out.push(record(&owner, address(endpoint.ip)));
                out.push(record(&host, address(endpoint.ip)));
                out.push(record(&reverse(endpoint.ip), RData::PTR(PTR(host.clone()))));
                for (port_name, protocol, number) in &endpoint.ports {
                    if let Some(srv) = srv_name(port_name, protocol, &owner) {
                        out.push(record(
                            &srv,
                            RData::SRV(SRV::new(0, 100, *number, host.clone())),
                        ));
                    }
                }
            }
        }
    }
    spread_srv_weights(&mut out);
    out.dedup();
    out
}

/// The ready endpoints of `slices` (every serving one too when `publish_all`), one per address,
/// sorted; an endpoint without `hostname` is named after its address (`10-244-0-7`), the
/// "system-assigned identifier" of the specification, as CoreDNS does.
fn ready_endpoints<'a>(slices: &[&'a EndpointSlice], publish_all: bool) -> Vec<Ready<'a>> {
    let mut out: Vec<Ready<'a>> = Vec::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let ports: Vec<(&str, &str, u16)> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let name = p.name.as_deref().filter(|n| !n.is_empty())?;
                let number = u16::try_from(p.port?).ok()?;
                Some((name, p.protocol.as_deref().unwrap_or("TCP"), number))
            })
            .collect();
        for endpoint in &slice.endpoints {
            // Kubernetes: a missing condition means ready.
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !(ready || publish_all) {
                continue;
            }
            // Kubernetes uses the first address; the others are the same pod's.
            let Some(ip) = endpoint.addresses.first().and_then(|a| a.parse().ok()) else {
                continue;
            };
            let hostname = endpoint
                .hostname
                .as_deref()
                .filter(|h| !h.is_empty())
                .map_or_else(|| dashed(ip), str::to_ascii_lowercase);
            out.push(Ready {
                ip,
                hostname,
                ports: ports.clone(),
            });
        }
    }
    out.sort();
    // While endpoints move between slices one address can be listed twice.
    out.dedup_by(|a, b| a.ip == b.ip && a.hostname == b.hostname);
    out
}

/// `_<port>._<proto>.<owner>`.
fn srv_name(port: &str, protocol: &str, owner: &Name) -> Option<Name> {
    let relative = format!(
        "_{}._{}",
        port.to_ascii_lowercase(),
        protocol.to_ascii_lowercase()
    );
    Name::from_ascii(relative)
        .ok()?
        .append_domain(owner)
        .ok()
        .map(|n| n.to_lowercase())
}

/// CoreDNS spreads weight 100 over the SRV records of one name, so clients pick evenly.
fn spread_srv_weights(records: &mut [Record]) {
    let counts: Vec<usize> = records
        .iter()
        .map(|r| {
            if !matches!(r.data, RData::SRV(_)) {
                return 0;
            }
            records
                .iter()
                .filter(|o| matches!(o.data, RData::SRV(_)) && o.name == r.name)
                .count()
        })
        .collect();
    for (record, count) in records.iter_mut().zip(counts) {
        if let RData::SRV(srv) = &record.data {
            let weight = u16::try_from(100 / count.max(1)).unwrap_or(100).max(1);
            record.data = RData::SRV(SRV::new(srv.priority, weight, srv.port, srv.target.clone()));
        }
    }
}

/// An A or AAAA record's data.
pub(crate) fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// `d.c.b.a.in-addr.arpa.` or the nibbles under `ip6.arpa.`.
pub(crate) fn reverse(ip: IpAddr) -> Name {
    Name::from(ip)
}

/// `10-244-0-7` for 10.244.0.7, `fd00--7` for fd00::7: an address as one DNS label.
pub(crate) fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The address a pod label (`10-244-0-7`, `fd00--7`) stands for.
pub(crate) fn undashed(label: &str) -> Option<IpAddr> {
    if label.split('-').count() == 4 && !label.contains("--") {
        if let Ok(v4) = label.replace('-', ".").parse() {
            return Some(IpAddr::V4(v4));
        }
    }
    label.replace('-', ":").parse().ok().map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn zone() -> Name {
        Name::from_ascii("cluster.local.").expect("valid")
    }

    fn texts(records: &[Record]) -> Vec<String> {
        let mut out: Vec<String> = records.iter().map(ToString::to_string).collect();
        out.sort();
        out
    }

    #[test]
    fn cluster_ip_service_has_a_aaaa_srv_and_ptr() {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "Web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::10"],
                     "ports": [{"name": "http", "port": 80}, {"port": 81}]}
        }))
        .expect("service");
        let records = service_records(&service, &[], &zone(), 5);
        assert_eq!(
            texts(&records),
            [
                "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa. 5 IN PTR web.default.svc.cluster.local.",
                "10.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local.",
                "_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local.",
                "web.default.svc.cluster.local. 5 IN A 10.96.0.10",
                "web.default.svc.cluster.local. 5 IN AAAA fd00::10",
            ]
        );
    }

    #[test]
    fn headless_service_names_ready_endpoints() {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "nginx", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"name": "web", "port": 80}]}
        }))
        .expect("service");
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "nginx-1", "namespace": "default"},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.0.7"], "hostname": "web-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.0.8"]},
                {"addresses": ["10.244.0.9"], "hostname": "web-2", "conditions": {"ready": false}}
            ],
            "ports": [{"name": "web", "port": 8080, "protocol": "TCP"}]
        }))
        .expect("slice");
        let records = service_records(&service, &[&slice], &zone(), 5);
        assert_eq!(
            texts(&records),
            [
                "10-244-0-8.nginx.default.svc.cluster.local. 5 IN A 10.244.0.8",
                "7.0.244.10.in-addr.arpa. 5 IN PTR web-0.nginx.default.svc.cluster.local.",
                "8.0.244.10.in-addr.arpa. 5 IN PTR 10-244-0-8.nginx.default.svc.cluster.local.",
                "_web._tcp.nginx.default.svc.cluster.local. 5 IN SRV 0 50 8080 10-244-0-8.nginx.default.svc.cluster.local.",
                "_web._tcp.nginx.default.svc.cluster.local. 5 IN SRV 0 50 8080 web-0.nginx.default.svc.cluster.local.",
                "nginx.default.svc.cluster.local. 5 IN A 10.244.0.7",
                "nginx.default.svc.cluster.local. 5 IN A 10.244.0.8",
                "web-0.nginx.default.svc.cluster.local. 5 IN A 10.244.0.7",
            ]
        );
    }

    #[test]
    fn external_name_is_a_cname() {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "www.example.com"}
        }))
        .expect("service");
        assert_eq!(
            texts(&service_records(&service, &[], &zone(), 5)),
            ["ext.default.svc.cluster.local. 5 IN CNAME www.example.com."]
        );
    }

    #[test]
    fn pod_labels_round_trip() {
        for ip in ["10.244.0.7", "fd00::7", "2001:db8:0:1::a"] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(undashed(&dashed(ip)), Some(ip));
        }
        assert_eq!(
            undashed("2001-db8-0-1-0-0-0-a"),
            "2001:db8:0:1::a".parse().ok()
        );
        assert_eq!(undashed("web-0"), None);
        assert_eq!(undashed("1-2-3"), None);
    }
}
