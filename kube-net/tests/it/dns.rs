//! `DnsServer` answering Service names over real UDP.

use std::net::Ipv4Addr;
use std::time::Duration;

use kube_core::orchestrator::Orchestrator;
use kube_net::{DnsConfig, DnsServer};
use serde_json::json;
use tokio::net::UdpSocket;

use crate::support::{Cluster, endpoints, eventually, service_spec};

fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut out = id.to_be_bytes().to_vec();
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out
}

/// (rcode, A addresses) of the answer to an A query for `name`.
async fn resolve(server: &str, name: &str) -> (u8, Vec<Ipv4Addr>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let q = query(7, name, 1);
    socket.send_to(&q, server).await.unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let reply = &buf[..n];
    assert_eq!(&reply[0..2], &[0, 7], "id echoed");
    let rcode = reply[3] & 0x0f;
    let count = u16::from_be_bytes([reply[6], reply[7]]) as usize;
    // Each answer: pointer(2) type(2) class(2) ttl(4) len(2) ip(4) after the echoed question.
    let answers_start = q.len();
    let addresses = (0..count)
        .map(|i| {
            let at = answers_start + i * 16 + 12;
            Ipv4Addr::new(reply[at], reply[at + 1], reply[at + 2], reply[at + 3])
        })
        .collect();
    (rcode, addresses)
}

#[tokio::test]
async fn dns_answers_service_names_from_the_store() {
    let cluster = Cluster::new();
    let server = "127.26.0.53:5353";
    let running = Orchestrator::builder()
        .store(cluster.store.clone())
        .component(DnsServer::new(DnsConfig {
            listen: server.parse().unwrap(),
            ..DnsConfig::default()
        }))
        .build()
        .unwrap()
        .start();
    cluster
        .services
        .create(&service_spec(
            "web",
            json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}),
        ))
        .await
        .unwrap();
    cluster
        .services
        .create(&service_spec(
            "db",
            json!({"clusterIP": "None", "ports": [{"port": 5432}]}),
        ))
        .await
        .unwrap();
    cluster
        .endpoints
        .create(&endpoints(
            "db",
            &[["10.244.0.7", "n1"], ["10.244.0.8", "n2"]],
            &[["10.244.0.9", "n1"]],
        ))
        .await
        .unwrap();
    eventually("web resolves", || async {
        resolve(server, "web.default.svc.cluster.local").await
            == (0, vec![Ipv4Addr::new(10, 96, 0, 10)])
    })
    .await;
    eventually("headless db resolves to ready endpoints", || async {
        resolve(server, "DB.default.svc.cluster.local").await
            == (
                0,
                vec![Ipv4Addr::new(10, 244, 0, 7), Ipv4Addr::new(10, 244, 0, 8)],
            )
    })
    .await;
    assert_eq!(
        resolve(server, "nope.default.svc.cluster.local").await,
        (3, vec![]),
        "NXDOMAIN"
    );
    assert_eq!(resolve(server, "example.com").await.0, 4, "no recursion");
    running.shutdown().await.unwrap();
}
