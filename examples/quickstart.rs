//! The quickstart: an all-in-one cluster that kubectl can use.
//!
//! ```sh
//! cargo run --release --example quickstart
//! cargo run --release --example quickstart -- --listen 127.0.0.1:6443 --data-dir DIR --nodes 2 --runtime process|fake --store durable|memory
//! ```
//!
//! It starts the API server, the store (durable in `DIR/store`), the scheduler, the
//! controllers, N node agents and the proxy; writes `DIR/kubeconfig`; and runs until Ctrl-C or
//! SIGTERM, then stops every pod and exits.

use std::path::PathBuf;

use anyhow::{Context, bail};
use examples::cluster::{ClusterConfig, LocalCluster, StoreKind};

const USAGE: &str = "usage: quickstart [--listen ADDR:PORT] [--data-dir DIR] [--nodes N] [--runtime process|fake] [--store durable|memory]";

fn parse_args() -> anyhow::Result<ClusterConfig> {
    let mut config = ClusterConfig::default();
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
            "--listen" => {
                config.listen = value.parse().with_context(|| format!("--listen {value}"))?
            }
            "--data-dir" => config.data_dir = PathBuf::from(value),
            "--nodes" => {
                config.nodes = value.parse().with_context(|| format!("--nodes {value}"))?
            }
            "--runtime" => config.runtime = value.parse()?,
            "--store" => {
                config.store = match value.as_str() {
                    "durable" => StoreKind::Durable,
                    "memory" => StoreKind::Memory,
                    other => bail!("unknown store {other:?} (expected durable or memory)"),
                }
            }
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
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
    let nodes = config.nodes;
    let cluster = LocalCluster::start(config).await?;
    let kubeconfig = cluster.kubeconfig.display();
    println!(
        "kube-parts cluster up: API server http://{}, {nodes} node(s)",
        cluster.addr
    );
    println!("  export KUBECONFIG={kubeconfig}");
    println!("  kubectl get nodes");
    println!("  kubectl apply -f examples/manifests/web.yaml");
    println!("Ctrl-C stops the cluster (its state stays in the data directory).");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("stopping...");
    cluster.shutdown().await?;
    println!("stopped");
    Ok(())
}
