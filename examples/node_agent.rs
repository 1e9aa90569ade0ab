//! A node agent that joins a cluster over the network: run the quickstart (or any control
//! plane serving the API) somewhere, then this on each node.
//!
//! ```sh
//! cargo run --release --example node_agent -- --server https://10.0.0.1:6443 --name node-7 \
//!     --ca pki/ca.crt --cert pki/node-7.crt --key pki/node-7.key \
//!     --node-ip 10.0.0.7 --root-dir /var/lib/kube-parts-node
//! ```
//!
//! `--runtime` defaults as the quickstart's does: `oci` (runc) when root with runc and
//! busybox-static installed, else `process`.
//!
//! The node's certificate names it `system:node:node-7` in group `system:nodes`, so the API
//! server's node authorizer lets it change only its own Node, Lease and pods;
//! `examples::cluster::credentials` issues one from the quickstart's data directory.
//!
//! ```text
//! ```

use std::path::PathBuf;

use anyhow::{Context, bail};
use examples::cluster::{NodeConfig, RemoteNode, RuntimeKind};
use kube_store::RemoteAuth;

const USAGE: &str = "usage: node_agent --server URL --name NAME --ca CA.crt (--cert NODE.crt --key NODE.key | --token TOKEN) [--node-ip IP] [--root-dir DIR] [--runtime process|oci|docker|containerd|fake] [--index N] [--cluster-cidr CIDR] [--cluster-dns IP] [--heartbeat-interval-ms MS] [--registry-mirror HOST=URL]... [--registries-config DIR] [--credentials-file FILE] [--docker-socket PATH] [--cri-socket PATH]";

fn parse_args() -> anyhow::Result<NodeConfig> {
    let mut server = None;
    let mut name = None;
    let mut config = NodeConfig {
        server: String::new(),
        auth: RemoteAuth::default(),
        name: String::new(),
        node_ip: "127.0.0.1".parse()?,
        root_dir: PathBuf::from("kube-parts-node"),
        // As the quickstart: runc containers when root with runc and busybox, else processes.
        runtime: RuntimeKind::detect(),
        index: 1,
        cluster_cidr: "10.244.0.0/16".into(),
        cluster_dns: None,
        heartbeat_interval: None,
        images: Default::default(),
    };
    let (mut cert, mut key) = (None, None);
    let read =
        |path: &str| std::fs::read_to_string(path).with_context(|| format!("reading {path}"));
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--server" => server = Some(value),
            "--name" => name = Some(value),
            "--node-ip" => {
                config.node_ip = value
                    .parse()
                    .with_context(|| format!("--node-ip {value}"))?
            }
            "--root-dir" => config.root_dir = PathBuf::from(value),
            "--runtime" => config.runtime = value.parse()?,
            "--heartbeat-interval-ms" => {
                let ms: u64 = value
                    .parse()
                    .with_context(|| format!("--heartbeat-interval-ms {value}"))?;
                config.heartbeat_interval = Some(std::time::Duration::from_millis(ms));
            }
            "--cluster-cidr" => config.cluster_cidr = value,
            "--cluster-dns" => {
                config.cluster_dns = Some(
                    value
                        .parse()
                        .with_context(|| format!("--cluster-dns {value}"))?,
                )
            }
            "--index" => {
                config.index = value.parse().with_context(|| format!("--index {value}"))?
            }
            "--ca" => config.auth.ca_pem = Some(read(&value)?),
            "--cert" => cert = Some(read(&value)?),
            "--key" => key = Some(read(&value)?),
            "--token" => config.auth.token = Some(value),
            other if config.images.flag(other, &value)? => {}
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    config.server = server.with_context(|| format!("--server is required\n{USAGE}"))?;
    if let (Some(cert), Some(key)) = (cert, key) {
        config.auth.client_cert = Some((cert, key));
    }
    config.name = name.with_context(|| format!("--name is required\n{USAGE}"))?;
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let config = parse_args()?;
    let name = config.name.clone();
    let server = config.server.clone();
    let node = RemoteNode::start(config).await?;
    println!("node {name} joined {server}");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    node.shutdown().await?;
    Ok(())
}
