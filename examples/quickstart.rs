//! The quickstart: an all-in-one cluster that kubectl can use.
//!
//! ```sh
//! cargo run --release --example quickstart
//! cargo run --release --example quickstart -- --listen 127.0.0.1:6443 --data-dir DIR --nodes 2 --runtime process|oci|docker|containerd|fake --store durable|memory
//! cargo run --release --features etcd --example quickstart -- --store etcd --etcd-endpoints http://127.0.0.1:2379
//! ```
//!
//! It starts the API server, the store (durable in `DIR/store`, or etcd), the scheduler, the
//! controllers, N node agents and the proxy; writes `DIR/kubeconfig`; and runs until Ctrl-C or
//! SIGTERM, then stops every pod and exits.
//!
//! The runtime defaults to `oci` (containers run by runc on images pulled from registries;
//! `busybox` and `busybox:1.36` run on the host's `/bin/busybox` unless a registry is
//! configured) when running as root with runc and busybox-static installed, else `process`
//! (commands as host processes); the first lines it prints say which and why. `--runtime
//! docker` runs pods through Docker (`--docker-socket PATH`, default `/var/run/docker.sock`),
//! `--runtime containerd` (or `cri`) through containerd's CRI (`--cri-socket PATH`, default
//! `/run/containerd/containerd.sock`); both pull images with their own registry settings.
//! `--registry-mirror docker.io=http://127.0.0.1:5000`
//! (repeatable) pulls through a mirror; `--registries-config DIR` reads containerd-style
//! `DIR/<host>/hosts.toml` files; `--credentials-file` is a Docker `config.json` for every
//! pull.

use std::path::PathBuf;

use anyhow::{Context, bail};
use examples::cluster::{ClusterConfig, LocalCluster, StoreKind};

// The store, the API server and the informers allocate and free small JSON maps at a high
// rate; mimalloc's thread-local pages serve that better than glibc's arenas (the benches
// measure the store and the API server with it too).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: quickstart [--listen ADDR:PORT] [--data-dir DIR] [--nodes N] [--runtime process|oci|docker|containerd|fake] [--store durable|memory|etcd] [--etcd-endpoints URL,...] [--registry-mirror HOST=URL]... [--registries-config DIR] [--credentials-file FILE] [--docker-socket PATH] [--cri-socket PATH]";

fn parse_args() -> anyhow::Result<ClusterConfig> {
    let mut config = ClusterConfig::default();
    let mut store = "durable".to_string();
    let mut etcd_endpoints = Vec::new();
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
            "--store" => store = value,
            "--etcd-endpoints" => {
                etcd_endpoints = value
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_string)
                    .collect()
            }
            other if config.images.flag(other, &value)? => {}
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }
    config.store = StoreKind::parse(&store, etcd_endpoints)?;
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let runtime_explicit = std::env::args().any(|a| a == "--runtime");
    let config = parse_args()?;
    // What this machine lets the cluster use, in one line each, before pods need it.
    if !runtime_explicit {
        println!("{}", examples::cluster::RuntimeKind::detect_with_reason().1);
    }
    if config.runtime == examples::cluster::RuntimeKind::Oci
        && !config.images.configured
        && std::path::Path::new("/bin/busybox").is_file()
    {
        println!(
            "images: pulled from their registries; busybox and busybox:1.36 run on the host's /bin/busybox (--registry-mirror or --registries-config pulls them too)"
        );
    }
    // Docker and containerd give pods their own network; the other runtimes use ours.
    let uses_our_network = matches!(
        config.runtime,
        examples::cluster::RuntimeKind::Process | examples::cluster::RuntimeKind::Oci
    );
    match examples::cluster::pod_network_unavailable() {
        Some(why) if uses_our_network => println!(
            "pod network: the host's (pods get no IP of their own; the userspace proxy serves NodePorts only, no ClusterIPs or cluster DNS): {why}"
        ),
        None if uses_our_network => println!(
            "pod network: {} routed per node (pod CIDRs from the node IPAM controller), ClusterIPs and NodePorts by nftables, DNS at {} (kube-dns)",
            config.cluster_cidr(),
            examples::network::KUBE_DNS_IP
        ),
        _ => {}
    }
    let nodes = config.nodes;
    let runtime = config.runtime;
    let cluster = LocalCluster::start(config).await?;
    let kubeconfig = cluster.kubeconfig.display();
    println!(
        "kube-parts cluster up: API server https://{}, {nodes} node(s), runtime {runtime:?}",
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
