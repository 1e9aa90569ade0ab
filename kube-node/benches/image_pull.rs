//! Image pulls against a registry on loopback (`tests/it/registry.rs`), in one run:
//!
//! * a cold pull of a ≥ 50 MB, 6-layer image (gzip, zstd and plain layers, whiteouts) into an
//!   empty [`ImageStore`], to unpacked and ready, against `skopeo copy docker://… oci:…` of
//!   the same image (which only copies and verifies, and does not unpack): median of 3 each;
//! * a warm start: pod sandbox + create + start of a container of a present image on
//!   [`OciRuntime`] (root and runc), p99 over 50 runs;
//! * 20 concurrent pulls of one uncached image (as 20 pods of it starting at once): how many
//!   pulls reached the registry.
//!
//! ```sh
//! cargo bench -p kube-node --bench image_pull
//! ```
//!
//! Final line: `pull_ratio=<ours/skopeo> cold_pull_ms=<x> warm_start_p99_ms=<x> pulls_for_20_pods=<n>`
//! (`nan` for a figure whose tool is missing).

#[path = "../tests/it/registry.rs"]
mod registry;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use kube_core::runtime::{ContainerConfig, Runtime};
use kube_node::OciRuntime;
use kube_node::pull::reference::normalize;
use kube_node::pull::{ImageStore, RegistryConfig};
use registry::{Registry, TestImage};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn runs(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

async fn cold_pull(reference: &str) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let store = ImageStore::open(dir.path().join("store"), RegistryConfig::default())?;
    let name = normalize(reference)?;
    let start = Instant::now();
    let image = store.pull(&name, None).await?;
    let took = ms(start.elapsed());
    anyhow::ensure!(image.rootfs.join("data/kept.bin").is_file(), "unpacked");
    Ok(took)
}

fn skopeo_copy(reference: &str) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let start = Instant::now();
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:bench", dir.path().join("layout").display()))
        .output()
        .context("running skopeo")?;
    let took = ms(start.elapsed());
    anyhow::ensure!(
        out.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(took)
}

async fn warm_starts(registry: &Registry) -> anyhow::Result<Option<f64>> {
    if !(is_root() && runs("runc")) {
        eprintln!("warm start: skipped (needs root and runc)");
        return Ok(None);
    }
    let image = TestImage::busybox(&["/bin/sleep"], &["3600"]);
    registry.push("bench/warm", "1", &image).await;
    let reference = registry.reference("bench/warm", "1");
    let runtime = OciRuntime::builder().build()?;
    runtime.pull_image(&reference, None, None).await?;
    let config = ContainerConfig {
        name: "c".into(),
        image: reference.clone(),
        ..ContainerConfig::default()
    };
    let mut samples = Vec::new();
    for i in 0..51 {
        let start = Instant::now();
        // As the node agent does for a present image under IfNotPresent.
        anyhow::ensure!(runtime.image_status(&reference).await?.is_some());
        let sandbox = runtime.run_pod_sandbox(&Default::default()).await?;
        let id = runtime.create_container(&sandbox, &config).await?;
        runtime.start_container(&id).await?;
        let took = ms(start.elapsed());
        // The first start pays one-time costs (the cgroup parent, page cache).
        if i > 0 {
            samples.push(took);
        }
        runtime.stop_container(&id, Duration::ZERO).await?;
        runtime.remove_container(&id).await?;
        runtime.remove_pod_sandbox(&sandbox).await?;
    }
    eprintln!(
        "warm start: p50 {:.1} ms, p99 {:.1} ms over {} runs",
        percentile(samples.clone(), 50.0),
        percentile(samples.clone(), 99.0),
        samples.len()
    );
    Ok(Some(percentile(samples, 99.0)))
}

async fn twenty_at_once(registry: &Registry) -> anyhow::Result<usize> {
    let image = TestImage::busybox(&["/bin/true"], &[]);
    registry.push("bench/twenty", "1", &image).await;
    let reference = registry.reference("bench/twenty", "1");
    let dir = tempfile::tempdir()?;
    let store = Arc::new(ImageStore::open(
        dir.path().join("store"),
        RegistryConfig::default(),
    )?);
    let name = normalize(&reference)?;
    let before = registry.blob_gets();
    let pulls: Vec<_> = (0..20)
        .map(|_| {
            let (store, name) = (store.clone(), name.clone());
            tokio::spawn(async move { store.pull(&name, None).await })
        })
        .collect();
    for p in pulls {
        p.await??;
    }
    eprintln!(
        "20 concurrent pulls: {} pull(s), {} blob downloads from the registry",
        store.pulls(),
        registry.blob_gets() - before
    );
    Ok(store.pulls())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    registry::install_crypto();
    if !runs(registry::REGISTRY_BIN) {
        eprintln!("docker-registry is not installed (apt-get install -y docker-registry skopeo)");
        println!("pull_ratio=nan cold_pull_ms=nan warm_start_p99_ms=nan pulls_for_20_pods=nan");
        return Ok(());
    }
    let registry = Registry::start();
    let image = TestImage::big();
    registry.push("bench/big", "1", &image).await;
    let reference = registry.reference("bench/big", "1");
    eprintln!(
        "image: {} layers, {:.1} MB compressed",
        image.layers.len(),
        image.size() as f64 / 1e6
    );

    let have_skopeo = runs("skopeo");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        ours.push(cold_pull(&reference).await?);
        if have_skopeo {
            theirs.push(skopeo_copy(&reference)?);
        }
    }
    let cold = median(ours.clone());
    eprintln!("cold pull (ours, to unpacked): {ours:.1?} ms");
    let ratio = if have_skopeo {
        eprintln!("skopeo copy (to an OCI layout): {theirs:.1?} ms");
        format!("{:.2}", cold / median(theirs))
    } else {
        eprintln!("skopeo is not installed: no ratio");
        "nan".into()
    };
    let warm = warm_starts(&registry)
        .await?
        .map_or_else(|| "nan".to_string(), |p| format!("{p:.1}"));
    let pulls = twenty_at_once(&registry).await?;
    println!(
        "pull_ratio={ratio} cold_pull_ms={cold:.1} warm_start_p99_ms={warm} pulls_for_20_pods={pulls}"
    );
    Ok(())
}
