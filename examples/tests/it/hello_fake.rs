use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kube_core::runtime::{Runtime, RuntimeConfig};
use kube_node::FakeRuntime;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_cluster_flow_runs_on_fake_runtime() {
    let fakes = [Arc::new(FakeRuntime::new()), Arc::new(FakeRuntime::new())];
    let runtimes: Vec<Arc<dyn Runtime>> = fakes
        .iter()
        .map(|f| f.clone() as Arc<dyn Runtime>)
        .collect();
    // Each node's pods get addresses from a CIDR of its own, as with a node IPAM controller.
    for (i, fake) in fakes.iter().enumerate() {
        fake.update_runtime_config(&RuntimeConfig::with_pod_cidr(format!(
            "10.88.{}.0/24",
            i + 1
        )))
        .await
        .expect("pod CIDR");
    }
    let report = examples::hello::run(runtimes, examples::hello::reported_running)
        .await
        .unwrap();
    assert_eq!(report.placed.len(), 3);
    let nodes: BTreeSet<_> = report.placed.iter().map(|(_, n)| n.clone()).collect();
    assert_eq!(
        nodes.len(),
        2,
        "3 request-less pods spread over both nodes: {:?}",
        report.placed
    );
    assert_eq!(report.backends, 3, "each fake pod has its own IP");
    assert!(report.elapsed < Duration::from_secs(30));
    for fake in &fakes {
        assert_eq!(fake.running_count(), 0);
        assert_eq!(fake.sandbox_count(), 0, "sandboxes removed with their pods");
    }
}
