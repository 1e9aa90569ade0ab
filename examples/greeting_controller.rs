//! A controller for your own kind: `Greeting` (`greetings.example.com/v1`) is registered with
//! the API server at run time, and a controller written here (`examples::greeting`) gives each
//! Greeting a ConfigMap holding its text and writes its status.
//!
//! ```sh
//! cargo run --example greeting_controller                 # runs the demo against itself, exits
//! cargo run --example greeting_controller -- --serve 127.0.0.1:8001   # serves until Ctrl-C
//! kubectl --server http://127.0.0.1:8001 apply -f examples/manifests/greeting.yaml
//! kubectl --server http://127.0.0.1:8001 get greetings
//! kubectl --server http://127.0.0.1:8001 get configmap greeting-world -o yaml
//! ```
//!
//! The API server here is plain HTTP without authentication (every request acts as an
//! administrator), on loopback: an example, not a deployment. The demo talks to it over HTTP
//! through `RemoteStore`, as any client would.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use examples::greeting::{self, GreetingServer};

const USAGE: &str = "usage: greeting_controller [--serve ADDR:PORT]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let mut serve: Option<SocketAddr> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--serve" => {
                let value = args
                    .next()
                    .with_context(|| format!("--serve needs ADDR:PORT\n{USAGE}"))?;
                serve = Some(value.parse().with_context(|| format!("--serve {value}"))?);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown flag {other}\n{USAGE}"),
        }
    }

    let listen = serve.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let server = GreetingServer::start(listen).await?;
    let url = server.url.clone();

    if serve.is_some() {
        println!("API server with the Greeting kind on {url}");
        println!("  kubectl --server {url} apply -f examples/manifests/greeting.yaml");
        println!("  kubectl --server {url} get greetings");
        println!("Ctrl-C stops it.");
        tokio::signal::ctrl_c().await?;
    } else {
        greeting::demo(server.client()?).await?;
        println!("greeting_controller: ok");
    }
    server.shutdown().await?;
    Ok(())
}
