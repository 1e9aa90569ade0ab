//! Aggregated compute resources (CPU, memory, pods, extended resources) and the effective
//! requests of a pod, as the scheduler and node agents count them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as WireQuantity;

use crate::quantity::{Quantity, QuantityError};

/// Resource amounts in integer units: millicores, bytes, counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Number of pods.
    pub pods: i64,
    /// Extended and other resources (e.g. `example.com/gpu`, `hugepages-2Mi`) in whole units.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Reads a `ResourceList` (`{"cpu": "500m", "memory": "1Gi", ...}`).
    pub fn from_list(list: &BTreeMap<String, WireQuantity>) -> Result<Self, QuantityError> {
        let mut r = Self::default();
        for (name, q) in list {
            let q = Quantity::parse(&q.0)?;
            match name.as_str() {
                "cpu" => r.milli_cpu = q.milli_value()?,
                "memory" => r.memory = q.value()?,
                "ephemeral-storage" => r.ephemeral_storage = q.value()?,
                "pods" => r.pods = q.value()?,
                other => {
                    r.scalar.insert(other.to_string(), q.value()?);
                }
            }
        }
        Ok(r)
    }

    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Self) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.pods += other.pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    /// Subtracts `other` from `self`.
    pub fn sub(&mut self, other: &Self) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.pods -= other.pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Raises each amount of `self` to at least that of `other`.
    pub fn max_with(&mut self, other: &Self) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.pods = self.pods.max(other.pods);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    /// The names of the resources for which `requested + self > capacity` (what does not fit).
    pub fn insufficient(&self, requested: &Self, capacity: &Self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |name: &str, want: i64, used: i64, cap: i64| {
            if want > 0 && used + want > cap {
                out.push(name.to_string());
            }
        };
        check("pods", self.pods, requested.pods, capacity.pods);
        check(
            "cpu",
            self.milli_cpu,
            requested.milli_cpu,
            capacity.milli_cpu,
        );
        check("memory", self.memory, requested.memory, capacity.memory);
        check(
            "ephemeral-storage",
            self.ephemeral_storage,
            requested.ephemeral_storage,
            capacity.ephemeral_storage,
        );
        for (k, want) in &self.scalar {
            let used = requested.scalar.get(k).copied().unwrap_or(0);
            let cap = capacity.scalar.get(k).copied().unwrap_or(0);
            check(k, *want, used, cap);
        }
        out
    }
}

fn container_requests(c: &Container) -> Result<Resources, QuantityError> {
    let Some(resources) = &c.resources else {
        return Ok(Resources::default());
    };
    // A container that sets only limits gets requests equal to its limits.
    let mut r = match &resources.limits {
        Some(limits) => Resources::from_list(limits)?,
        None => Resources::default(),
    };
    if let Some(requests) = &resources.requests {
        let req = Resources::from_list(requests)?;
        for name in requests.keys() {
            match name.as_str() {
                "cpu" => r.milli_cpu = req.milli_cpu,
                "memory" => r.memory = req.memory,
                "ephemeral-storage" => r.ephemeral_storage = req.ephemeral_storage,
                other => {
                    r.scalar.insert(
                        other.to_string(),
                        req.scalar.get(other).copied().unwrap_or(0),
                    );
                }
            }
        }
    }
    Ok(r)
}

/// The effective requests of a pod: the larger of the sum over containers and the largest init
/// container (regular init containers run one at a time; restartable "sidecar" init containers
/// keep running and are added), plus pod overhead, plus one pod.
pub fn pod_requests(spec: &PodSpec) -> Result<Resources, QuantityError> {
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&container_requests(c)?);
    }
    let mut init_peak = Resources::default();
    let mut sidecars = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c)?;
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
            sum.add(&r);
        } else {
            let mut during = r;
            during.add(&sidecars);
            init_peak.max_with(&during);
        }
    }
    sum.max_with(&init_peak);
    if let Some(overhead) = &spec.overhead {
        sum.add(&Resources::from_list(overhead)?);
    }
    sum.pods = 1;
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_containers_take_the_max_and_overhead_adds() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "200m", "example.com/gpu": "1"}}}
            ],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1", "memory": "10Mi"}}}],
            "overhead": {"cpu": "10m"}
        }))
        .unwrap();
        let r = pod_requests(&spec).unwrap();
        assert_eq!(r.milli_cpu, 1010);
        assert_eq!(r.memory, 64 << 20);
        assert_eq!(r.pods, 1);
        assert_eq!(r.scalar["example.com/gpu"], 1);
    }
}
