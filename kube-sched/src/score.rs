//! Scoring constants and the "non-zero" requests scoring counts (see
//! [`NodeResourcesFit`](crate::plugins::NodeResourcesFit) for the strategies).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as WireQuantity;
use kube_core::quantity::Quantity;

pub use crate::framework::MAX_NODE_SCORE;

/// CPU counted for scoring when a container requests none (Kubernetes'
/// `DefaultMilliCPURequest`), so request-less pods still spread instead of piling onto one
/// node that looks empty forever.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;

/// Memory counted for scoring when a container requests none (Kubernetes'
/// `DefaultMemoryRequest`, 200Mi).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// CPU and memory requests as scoring counts them: containers without a request count the
/// defaults above.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NonZero {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
}

impl NonZero {
    fn add(&mut self, other: Self) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
    }

    fn max_with(&mut self, other: Self) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
    }
}

fn parse(list: Option<&BTreeMap<String, WireQuantity>>, name: &str) -> Option<Quantity> {
    Quantity::parse(&list?.get(name)?.0).ok()
}

/// A container's request of one resource, falling back to its limit (as the API server
/// defaults it), then to `default` when neither is set. An explicit zero stays zero, as in
/// Kubernetes. Unparsable quantities count the default: the filters reject such a pod anyway.
fn request_or(c: &Container, name: &str, default: i64, read: fn(&Quantity) -> Option<i64>) -> i64 {
    let resources = c.resources.as_ref();
    parse(resources.and_then(|r| r.requests.as_ref()), name)
        .or_else(|| parse(resources.and_then(|r| r.limits.as_ref()), name))
        .and_then(|q| read(&q))
        .unwrap_or(default)
}

fn container_non_zero(c: &Container) -> NonZero {
    NonZero {
        milli_cpu: request_or(c, "cpu", DEFAULT_MILLI_CPU_REQUEST, |q| {
            q.milli_value().ok()
        }),
        memory: request_or(c, "memory", DEFAULT_MEMORY_REQUEST, |q| q.value().ok()),
    }
}

/// The pod's non-zero CPU and memory requests, combined like `pod_requests` combines real
/// requests (containers summed, init containers as a peak, overhead added).
pub(crate) fn pod_non_zero(spec: &PodSpec) -> NonZero {
    let mut sum = NonZero::default();
    for c in &spec.containers {
        sum.add(container_non_zero(c));
    }
    let mut init_peak = NonZero::default();
    let mut sidecars = NonZero::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_non_zero(c);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(r);
            sum.add(r);
        } else {
            let mut during = r;
            during.add(sidecars);
            init_peak.max_with(during);
        }
    }
    sum.max_with(init_peak);
    if let Some(overhead) = &spec.overhead {
        let read = |name: &str, f: fn(&Quantity) -> Option<i64>| {
            parse(Some(overhead), name).and_then(|q| f(&q)).unwrap_or(0)
        };
        sum.add(NonZero {
            milli_cpu: read("cpu", |q| q.milli_value().ok()),
            memory: read("memory", |q| q.value().ok()),
        });
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_less_containers_count_the_defaults() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [
                {"name": "a"},
                {"name": "b", "resources": {"requests": {"cpu": "250m"}}},
                {"name": "c", "resources": {"limits": {"memory": "1Gi"}}}
            ]
        }))
        .unwrap();
        let nz = pod_non_zero(&spec);
        assert_eq!(nz.milli_cpu, 100 + 250 + 100);
        assert_eq!(nz.memory, 2 * DEFAULT_MEMORY_REQUEST + (1 << 30));
    }
}
