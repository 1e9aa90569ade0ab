//! `DnsServer` over real UDP and TCP sockets on loopback, answering from a MemStore-backed
//! orchestrator as the Kubernetes DNS specification says, and forwarding to a fake upstream.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube_core::orchestrator::{Orchestrator, RunningOrchestrator};
use kube_core::typed::Api;
use kube_net::{DnsConfig, DnsServer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::support::{Cluster, eventually, service_spec};

/// A DNS server on 127.0.0.1 (a free port) over the cluster's store.
struct Dns {
    cluster: Cluster,
    slices: Api<EndpointSlice>,
    pods: Api<Pod>,
    addr: SocketAddr,
    running: RunningOrchestrator,
}

impl Dns {
    async fn start(upstream: Vec<SocketAddr>) -> Self {
        let cluster = Cluster::new();
        let server = DnsServer::bind(DnsConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ttl: 7,
            upstream,
            upstream_timeout: Duration::from_millis(300),
            ..DnsConfig::default()
        })
        .await
        .expect("bind");
        let addr = server.local_addr().expect("bound");
        let running = Orchestrator::builder()
            .store(cluster.store.clone())
            .component(server)
            .build()
            .expect("orchestrator")
            .start();
        Self {
            slices: Api::namespaced(cluster.store.clone(), "default"),
            pods: Api::namespaced(cluster.store.clone(), "default"),
            cluster,
            addr,
            running,
        }
    }

    async fn service(&self, name: &str, spec: Value) {
        self.cluster
            .services
            .create(&service_spec(name, spec))
            .await
            .expect("create service");
    }

    async fn udp(&self, name: &str, qtype: RecordType) -> Message {
        udp_query(self.addr, name, qtype, None).await
    }
}

fn request(name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_str(name).expect("name"), qtype));
    if let Some(payload) = edns {
        let mut edns = Edns::new();
        edns.set_max_payload(payload);
        message.set_edns(edns);
    }
    message
}

/// The answer to one query over UDP, checked to be a response to it with the question echoed
/// as asked.
async fn udp_query(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    edns: Option<u16>,
) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let query = request(name, qtype, edns);
    socket
        .send_to(&query.to_vec().expect("encode"), server)
        .await
        .expect("send");
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_secs(3), socket.recv(&mut buf))
        .await
        .expect("answer in time")
        .expect("recv");
    let answer = Message::from_vec(&buf[..n]).expect("decodable answer");
    assert_eq!(answer.metadata.id, query.metadata.id, "id echoed");
    assert_eq!(answer.metadata.message_type, MessageType::Response);
    assert_eq!(answer.queries, query.queries, "question echoed");
    assert_eq!(
        answer.queries[0].name().to_ascii(),
        query.queries[0].name().to_ascii(),
        "question echoed with its case"
    );
    if edns.is_none() {
        assert!(n <= 512, "{n} bytes over UDP without EDNS");
    }
    answer
}

/// The answers to several queries sent on one TCP connection.
async fn tcp_queries(server: SocketAddr, queries: &[(&str, RecordType)]) -> Vec<Message> {
    let mut stream = TcpStream::connect(server).await.expect("connect");
    let mut out = Vec::new();
    for (name, qtype) in queries {
        let query = request(name, *qtype, None).to_vec().expect("encode");
        let len = u16::try_from(query.len()).expect("short");
        stream.write_all(&len.to_be_bytes()).await.expect("write");
        stream.write_all(&query).await.expect("write");
        let len = tokio::time::timeout(Duration::from_secs(3), stream.read_u16())
            .await
            .expect("answer in time")
            .expect("length");
        let mut answer = vec![0u8; usize::from(len)];
        stream.read_exact(&mut answer).await.expect("answer");
        out.push(Message::from_vec(&answer).expect("decodable"));
    }
    out
}

/// The answer section as sorted `name ttl IN TYPE data` lines.
fn lines(records: &[Record]) -> Vec<String> {
    let mut out: Vec<String> = records.iter().map(ToString::to_string).collect();
    out.sort();
    out
}

fn addresses(message: &Message) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = list.iter().map(|s| s.parse().expect("ip")).collect();
    out.sort();
    out
}

/// An EndpointSlice of `service` with `(ip, hostname, ready)` endpoints behind a named `web`
/// port 8080.
fn slice(name: &str, service: &str, endpoints: &[(&str, Option<&str>, bool)]) -> EndpointSlice {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, hostname, ready)| {
            let mut e = json!({"addresses": [ip], "conditions": {"ready": ready}});
            if let Some(h) = hostname {
                e["hostname"] = json!(h);
            }
            e
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": service}
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "web", "port": 8080, "protocol": "TCP"}]
    }))
    .expect("slice")
}

/// Waits until `name` answers `qtype` with NOERROR and some answer.
async fn resolves(dns: &Dns, name: &str, qtype: RecordType) -> Message {
    eventually(name, || async {
        let m = dns.udp(name, qtype).await;
        m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty()
    })
    .await;
    dns.udp(name, qtype).await
}

#[tokio::test]
async fn dns_cluster_ip_service_a_aaaa_srv_ptr() {
    let dns = Dns::start(Vec::new()).await;
    dns.service(
        "web",
        json!({"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00::10"],
               "ports": [{"name": "http", "port": 80}, {"port": 81}]}),
    )
    .await;

    let a = resolves(&dns, "Web.Default.svc.Cluster.Local.", RecordType::A).await;
    assert!(
        a.metadata.authoritative,
        "cluster answers are authoritative"
    );
    assert_eq!(
        lines(&a.answers),
        ["web.default.svc.cluster.local. 7 IN A 10.96.0.10"],
        "case-insensitive, with the configured TTL"
    );
    let aaaa = dns
        .udp("web.default.svc.cluster.local.", RecordType::AAAA)
        .await;
    assert_eq!(
        lines(&aaaa.answers),
        ["web.default.svc.cluster.local. 7 IN AAAA fd00::10"]
    );

    let srv = dns
        .udp("_http._tcp.web.default.svc.cluster.local.", RecordType::SRV)
        .await;
    assert_eq!(
        lines(&srv.answers),
        [
            "_http._tcp.web.default.svc.cluster.local. 7 IN SRV 0 100 80 web.default.svc.cluster.local."
        ]
    );
    assert_eq!(
        lines(&srv.additionals),
        [
            "web.default.svc.cluster.local. 7 IN A 10.96.0.10",
            "web.default.svc.cluster.local. 7 IN AAAA fd00::10",
        ],
        "the SRV target's addresses ride along"
    );
    let unnamed = dns
        .udp("_81._tcp.web.default.svc.cluster.local.", RecordType::SRV)
        .await;
    assert_eq!(
        unnamed.metadata.response_code,
        ResponseCode::NXDomain,
        "unnamed ports have no SRV"
    );

    let ptr = dns.udp("10.0.96.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(
        lines(&ptr.answers),
        ["10.0.96.10.in-addr.arpa. 7 IN PTR web.default.svc.cluster.local."]
    );
    let ptr6 = dns
        .udp(
            &Name::from(IpAddr::from_str("fd00::10").expect("ip")).to_ascii(),
            RecordType::PTR,
        )
        .await;
    assert_eq!(ptr6.answers.len(), 1, "ip6.arpa PTR: {ptr6}");

    let version = dns.udp("dns-version.cluster.local.", RecordType::TXT).await;
    assert_eq!(
        lines(&version.answers),
        ["dns-version.cluster.local. 7 IN TXT 1.0.1"]
    );
    dns.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn dns_headless_service_endpoints_hostnames_srv_and_updates() {
    let dns = Dns::start(Vec::new()).await;
    dns.service("empty", json!({"clusterIP": "None"})).await;
    dns.service(
        "nginx",
        json!({"clusterIP": "None", "ports": [{"name": "web", "port": 80}]}),
    )
    .await;
    dns.slices
        .create(&slice(
            "nginx-1",
            "nginx",
            &[
                ("10.244.0.10", Some("web-0"), true),
                ("10.244.0.11", Some("web-1"), true),
                ("10.244.0.12", Some("web-2"), false),
            ],
        ))
        .await
        .expect("slice");

    let a = resolves(&dns, "nginx.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        addresses(&a),
        ips(&["10.244.0.10", "10.244.0.11"]),
        "ready endpoints only"
    );
    let pet = dns
        .udp("web-0.nginx.default.svc.cluster.local.", RecordType::A)
        .await;
    assert_eq!(
        lines(&pet.answers),
        ["web-0.nginx.default.svc.cluster.local. 7 IN A 10.244.0.10"],
        "a StatefulSet pod by hostname.subdomain"
    );
    let not_ready = dns
        .udp("web-2.nginx.default.svc.cluster.local.", RecordType::A)
        .await;
    assert_eq!(not_ready.metadata.response_code, ResponseCode::NXDomain);

    let srv = dns
        .udp(
            "_web._tcp.nginx.default.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
    assert_eq!(
        lines(&srv.answers),
        [
            "_web._tcp.nginx.default.svc.cluster.local. 7 IN SRV 0 50 8080 web-0.nginx.default.svc.cluster.local.",
            "_web._tcp.nginx.default.svc.cluster.local. 7 IN SRV 0 50 8080 web-1.nginx.default.svc.cluster.local.",
        ]
    );
    assert_eq!(
        lines(&srv.additionals),
        [
            "web-0.nginx.default.svc.cluster.local. 7 IN A 10.244.0.10",
            "web-1.nginx.default.svc.cluster.local. 7 IN A 10.244.0.11",
        ]
    );
    let ptr = dns.udp("11.0.244.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(
        lines(&ptr.answers),
        ["11.0.244.10.in-addr.arpa. 7 IN PTR web-1.nginx.default.svc.cluster.local."]
    );

    // web-2 becomes ready: the running server answers with it, no restart.
    let mut updated = dns.slices.get("nginx-1").await.expect("slice");
    for endpoint in &mut updated.endpoints {
        if let Some(conditions) = endpoint.conditions.as_mut() {
            conditions.ready = Some(true);
        }
    }
    dns.slices.replace(&updated).await.expect("update");
    eventually("web-2 joins the answer", || async {
        addresses(
            &dns.udp("nginx.default.svc.cluster.local.", RecordType::A)
                .await,
        ) == ips(&["10.244.0.10", "10.244.0.11", "10.244.0.12"])
    })
    .await;
    let pet = dns
        .udp("web-2.nginx.default.svc.cluster.local.", RecordType::A)
        .await;
    assert_eq!(addresses(&pet), ips(&["10.244.0.12"]));

    // A headless service without ready endpoints does not resolve (the specification's
    // NXDOMAIN); it was created before nginx, so it is in the zone by now.
    let empty = dns
        .udp("empty.default.svc.cluster.local.", RecordType::A)
        .await;
    assert_eq!(empty.metadata.response_code, ResponseCode::NXDomain);
    dns.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn dns_pod_names_resolve_for_existing_pods() {
    let dns = Dns::start(Vec::new()).await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]}
    }))
    .expect("pod");
    dns.pods.create(&pod).await.expect("pod");
    let a = resolves(&dns, "10-244-1-5.default.pod.cluster.local.", RecordType::A).await;
    assert_eq!(
        lines(&a.answers),
        ["10-244-1-5.default.pod.cluster.local. 7 IN A 10.244.1.5"]
    );
    let elsewhere = dns
        .udp("10-244-1-5.other.pod.cluster.local.", RecordType::A)
        .await;
    assert_eq!(elsewhere.metadata.response_code, ResponseCode::NXDomain);
    let unknown = dns
        .udp("10-244-1-6.default.pod.cluster.local.", RecordType::A)
        .await;
    assert_eq!(unknown.metadata.response_code, ResponseCode::NXDomain);
    dns.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn dns_nxdomain_versus_nodata_with_soa() {
    let dns = Dns::start(Vec::new()).await;
    dns.service("web", json!({"clusterIP": "10.96.0.10"})).await;
    resolves(&dns, "web.default.svc.cluster.local.", RecordType::A).await;

    let soa_of = |m: &Message| -> Vec<String> {
        m.authorities
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .map(|r| r.name.to_ascii())
            .collect()
    };
    for name in [
        "nope.default.svc.cluster.local.",
        "nope.svc.cluster.local.",
        "a.b.web.default.svc.cluster.local.",
    ] {
        let m = dns.udp(name, RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(m.metadata.authoritative);
        assert_eq!(soa_of(&m), ["cluster.local."], "{name}: SOA in authority");
    }
    for (name, qtype) in [
        ("web.default.svc.cluster.local.", RecordType::AAAA),
        ("web.default.svc.cluster.local.", RecordType::TXT),
        ("default.svc.cluster.local.", RecordType::A),
        ("svc.cluster.local.", RecordType::A),
    ] {
        let m = dns.udp(name, qtype).await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "{name} {qtype}"
        );
        assert!(m.answers.is_empty(), "{name} {qtype}: NODATA");
        assert_eq!(soa_of(&m), ["cluster.local."], "{name}: SOA in authority");
    }
    let soa = dns.udp("cluster.local.", RecordType::SOA).await;
    assert_eq!(soa.answers.len(), 1, "the zone's SOA");
    assert_eq!(soa.answers[0].record_type(), RecordType::SOA);

    // Outside the domain without an upstream: refused.
    let outside = dns.udp("example.com.", RecordType::A).await;
    assert_eq!(outside.metadata.response_code, ResponseCode::Refused);
    dns.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn dns_truncates_over_udp_and_answers_in_full_over_tcp() {
    let dns = Dns::start(Vec::new()).await;
    dns.service("big", json!({"clusterIP": "None"})).await;
    let endpoints: Vec<String> = (0..60).map(|i| format!("10.244.2.{i}")).collect();
    let list: Vec<(&str, Option<&str>, bool)> = endpoints
        .iter()
        .map(|ip| (ip.as_str(), None, true))
        .collect();
    dns.slices
        .create(&slice("big-1", "big", &list))
        .await
        .expect("slice");
    let name = "big.default.svc.cluster.local.";
    eventually("big resolves", || async {
        let m = dns.udp(name, RecordType::A).await;
        m.metadata.truncation || m.answers.len() == 60
    })
    .await;

    // 60 A records do not fit in 512 bytes: TC set.
    let udp = dns.udp(name, RecordType::A).await;
    assert!(udp.metadata.truncation, "TC over UDP");
    // With EDNS room they fit over UDP.
    let edns = udp_query(dns.addr, name, RecordType::A, Some(4096)).await;
    assert!(!edns.metadata.truncation);
    assert_eq!(edns.answers.len(), 60);
    assert!(edns.edns.is_some(), "OPT answered with OPT");
    // EDNS with a small payload still truncates.
    let small = udp_query(dns.addr, name, RecordType::A, Some(600)).await;
    assert!(small.metadata.truncation);

    // Over TCP: the whole answer, and several queries on one connection.
    let tcp = tcp_queries(
        dns.addr,
        &[
            (name, RecordType::A),
            ("nope.default.svc.cluster.local.", RecordType::A),
        ],
    )
    .await;
    assert!(!tcp[0].metadata.truncation);
    assert_eq!(addresses(&tcp[0]), {
        let refs: Vec<&str> = endpoints.iter().map(String::as_str).collect();
        ips(&refs)
    });
    assert_eq!(tcp[1].metadata.response_code, ResponseCode::NXDomain);
    dns.running.shutdown().await.expect("shutdown");
}

/// A fake upstream on loopback UDP: answers every A query with 192.0.2.1 (and counts
/// nothing else); `www.example.com` too, for the ExternalName test.
async fn fake_upstream() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
            reply.metadata.recursion_available = true;
            reply.add_queries(query.queries.iter().cloned());
            for q in &query.queries {
                if q.query_type() == RecordType::A {
                    reply.add_answer(Record::from_rdata(
                        q.name().clone(),
                        60,
                        RData::A(A::new(192, 0, 2, 1)),
                    ));
                }
            }
            let _ = socket.send_to(&reply.to_vec().expect("encode"), from).await;
        }
    });
    addr
}

#[tokio::test]
async fn dns_forwards_other_names_and_follows_external_names() {
    let upstream = fake_upstream().await;
    let dns = Dns::start(vec![upstream]).await;
    let forwarded = dns.udp("Example.COM.", RecordType::A).await;
    assert_eq!(forwarded.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        addresses(&forwarded),
        ips(&["192.0.2.1"]),
        "upstream's answer"
    );
    assert!(forwarded.metadata.recursion_available);
    // Reverse names of addresses that are not the cluster's go upstream too.
    let reverse = dns.udp("1.2.0.192.in-addr.arpa.", RecordType::A).await;
    assert_eq!(addresses(&reverse), ips(&["192.0.2.1"]));

    dns.service(
        "ext",
        json!({"type": "ExternalName", "externalName": "www.example.com"}),
    )
    .await;
    let cname = resolves(&dns, "ext.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        lines(&cname.answers),
        [
            "ext.default.svc.cluster.local. 7 IN CNAME www.example.com.",
            "www.example.com. 60 IN A 192.0.2.1",
        ],
        "the CNAME, then its target from upstream"
    );
    let only = dns
        .udp("ext.default.svc.cluster.local.", RecordType::CNAME)
        .await;
    assert_eq!(
        lines(&only.answers),
        ["ext.default.svc.cluster.local. 7 IN CNAME www.example.com."]
    );
    // TCP clients are forwarded over TCP; the fake listens on UDP only, so: SERVFAIL.
    let tcp = tcp_queries(dns.addr, &[("example.com.", RecordType::A)]).await;
    assert_eq!(tcp[0].metadata.response_code, ResponseCode::ServFail);
    dns.running.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn dns_answers_servfail_when_upstream_is_dead() {
    // One upstream that never answers (a bound socket nobody reads), one that refuses (a
    // closed port): both fail within the timeout.
    let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let closed = {
        let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        s.local_addr().expect("addr")
    };
    let dns = Dns::start(vec![silent.local_addr().expect("addr"), closed]).await;
    let started = std::time::Instant::now();
    let m = dns.udp("example.com.", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    dns.running.shutdown().await.expect("shutdown");
}

#[test]
fn dns_config_defaults() {
    let config = DnsConfig::default();
    assert_eq!(config.domain, "cluster.local");
    assert_eq!(config.ttl, 5);
    assert_eq!(config.listen.port(), 53);
}
