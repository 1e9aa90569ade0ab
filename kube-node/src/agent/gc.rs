//! Garbage collection of dead containers, by the kubelet's policy (`MinAge`,
//! `MaxPerPodContainer`, `MaxContainers`; pkg/kubelet/kuberuntime/kuberuntime_gc.go).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use kube_core::runtime::{ContainerFilter, ContainerState, ContainerStatus, RuntimeError};

use super::{Agent, error_chain, labels};

/// Which dead (exited) containers the node agent removes, as the kubelet's container GC
/// policy. An *evict unit* is one container of one pod (pod UID and container name); its
/// instances are its restarts.
///
/// The newest instance of every container is never removed, dead or not: the agent reads the
/// container's last state and restart count from it (the kubelet keeps those elsewhere).
/// It counts against the limits all the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerGcPolicy {
    /// Containers younger than this (since creation, as the kubelet counts) are not removed
    /// (default 0; the kubelet's `--minimum-container-ttl-duration`).
    pub min_age: Duration,
    /// Dead instances kept per container of a pod, newest first; `None` for no limit
    /// (default 1, which keeps the instance `previous` logs read; the kubelet's
    /// `--maximum-dead-containers-per-container`).
    pub max_per_pod_container: Option<usize>,
    /// Dead containers kept on the node; `None` for no limit (the default; the kubelet's
    /// `--maximum-dead-containers`). When over it, every container is first cut to an equal
    /// share (at least one), then the oldest go.
    pub max_containers: Option<usize>,
    /// How often the whole node is collected (default 1 min, the kubelet's). A container's
    /// own restart also collects its older instances at once.
    pub period: Duration,
}

impl Default for ContainerGcPolicy {
    fn default() -> Self {
        Self {
            min_age: Duration::ZERO,
            max_per_pod_container: Some(1),
            max_containers: None,
            period: Duration::from_secs(60),
        }
    }
}

/// One container's instances, newest first, and how many of its dead ones must stay.
#[derive(Debug)]
struct Unit {
    /// Removable instances, newest first.
    evictable: Vec<(SystemTime, String)>,
    /// Dead instances that cannot be removed (the newest instance, or too young).
    pinned: usize,
}

impl Unit {
    fn dead(&self) -> usize {
        self.evictable.len() + self.pinned
    }

    /// Cuts the unit to `keep` dead instances (as far as its evictable ones allow).
    fn cut_to(&mut self, keep: usize, out: &mut Vec<String>) {
        let allowed = keep.saturating_sub(self.pinned);
        while self.evictable.len() > allowed {
            if let Some((_, id)) = self.evictable.pop() {
                out.push(id);
            }
        }
    }
}

/// Which of `containers` to remove under `policy` at `now`, oldest first within each rule.
pub(crate) fn plan(
    policy: &ContainerGcPolicy,
    containers: &[ContainerStatus],
    now: SystemTime,
) -> Vec<String> {
    let mut grouped: BTreeMap<(String, String), Vec<&ContainerStatus>> = BTreeMap::new();
    for c in containers {
        let uid = c.labels.get(labels::POD_UID).cloned().unwrap_or_default();
        let name = c
            .labels
            .get(labels::CONTAINER_NAME)
            .cloned()
            .unwrap_or_else(|| c.name.clone());
        grouped.entry((uid, name)).or_default().push(c);
    }
    let young = |c: &ContainerStatus| {
        now.duration_since(c.created_at)
            .map_or(true, |age| age < policy.min_age)
    };
    let mut units: Vec<Unit> = grouped
        .into_values()
        .map(|mut instances| {
            instances.sort_by_key(|c| std::cmp::Reverse((c.attempt, c.created_at)));
            let mut unit = Unit {
                evictable: Vec::new(),
                pinned: 0,
            };
            for (i, c) in instances.iter().enumerate() {
                if !matches!(c.state, ContainerState::Exited | ContainerState::Unknown) {
                    continue;
                }
                if i == 0 || young(c) {
                    unit.pinned += 1;
                } else {
                    unit.evictable.push((c.created_at, c.id.clone()));
                }
            }
            unit
        })
        .filter(|u| u.dead() > 0)
        .collect();

    let mut remove = Vec::new();
    if let Some(max) = policy.max_per_pod_container {
        for unit in &mut units {
            unit.cut_to(max, &mut remove);
        }
    }
    if let Some(max) = policy.max_containers {
        let total = |units: &[Unit]| units.iter().map(Unit::dead).sum::<usize>();
        if total(&units) > max && !units.is_empty() {
            let share = (max / units.len()).max(1);
            for unit in &mut units {
                unit.cut_to(share, &mut remove);
            }
            let excess = total(&units).saturating_sub(max);
            let mut rest: Vec<(SystemTime, String)> =
                units.into_iter().flat_map(|u| u.evictable).collect();
            rest.sort();
            remove.extend(rest.into_iter().take(excess).map(|(_, id)| id));
        }
    }
    remove
}

impl Agent {
    /// Collects the node's dead containers every [`ContainerGcPolicy::period`].
    pub(super) async fn gc_loop(self: std::sync::Arc<Self>) {
        let mut tick = tokio::time::interval(self.config.container_gc.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.collect_containers().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(removed = n, "dead containers collected"),
                Err(e) => tracing::warn!(error = %error_chain(&e), "container GC failed"),
            }
        }
    }

    /// Removes what [`plan`] says among this node's containers; returns how many went.
    pub(super) async fn collect_containers(&self) -> Result<usize, RuntimeError> {
        let mine: Vec<ContainerStatus> = self
            .runtime
            .list_containers(&ContainerFilter::default())
            .await?
            .into_iter()
            .filter(|c| c.labels.get(labels::NODE_NAME) == Some(&self.config.node_name))
            .collect();
        self.remove_planned(&mine).await
    }

    /// Removes what [`plan`] says among `containers` (e.g. one container's instances after
    /// its restart).
    pub(super) async fn remove_planned(
        &self,
        containers: &[ContainerStatus],
    ) -> Result<usize, RuntimeError> {
        let ids = plan(&self.config.container_gc, containers, SystemTime::now());
        let mut removed = HashSet::new();
        for id in ids {
            match self.runtime.remove_container(&id).await {
                Ok(()) | Err(RuntimeError::NotFound { .. }) => {
                    removed.insert(id);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(removed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Duration = Duration::from_secs(1_000_000);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + T0 + Duration::from_secs(secs)
    }

    /// Instance `attempt` of container `name` of pod `uid`, created at `secs`.
    fn c(uid: &str, name: &str, attempt: u32, secs: u64, state: ContainerState) -> ContainerStatus {
        ContainerStatus {
            id: format!("{uid}-{name}-{attempt}"),
            sandbox_id: "s".into(),
            name: name.into(),
            attempt,
            image: String::new(),
            state,
            created_at: at(secs),
            started_at: None,
            finished_at: None,
            exit_code: None,
            reason: None,
            message: None,
            labels: [
                (labels::POD_UID.to_string(), uid.to_string()),
                (labels::CONTAINER_NAME.to_string(), name.to_string()),
            ]
            .into_iter()
            .collect(),
            info: BTreeMap::new(),
        }
    }

    use ContainerState::{Exited, Running};

    fn sorted(mut ids: Vec<String>) -> Vec<String> {
        ids.sort();
        ids
    }

    #[test]
    fn keeps_the_newest_dead_instances_per_container() {
        let policy = ContainerGcPolicy::default();
        let pod = [
            c("a", "web", 0, 0, Exited),
            c("a", "web", 1, 10, Exited),
            c("a", "web", 2, 20, Exited),
            c("a", "web", 3, 30, Running),
            c("a", "side", 0, 0, Exited),
        ];
        // One dead `web` stays (attempt 2, for `previous`); `side`'s only instance stays.
        assert_eq!(sorted(plan(&policy, &pod, at(100))), ["a-web-0", "a-web-1"]);
        let two = ContainerGcPolicy {
            max_per_pod_container: Some(2),
            ..Default::default()
        };
        assert_eq!(plan(&two, &pod, at(100)), ["a-web-0"]);
        let none = ContainerGcPolicy {
            max_per_pod_container: Some(0),
            ..Default::default()
        };
        assert_eq!(
            sorted(plan(&none, &pod, at(100))),
            ["a-web-0", "a-web-1", "a-web-2"],
            "the newest instance of `side` is never removed"
        );
        let unlimited = ContainerGcPolicy {
            max_per_pod_container: None,
            ..Default::default()
        };
        assert!(plan(&unlimited, &pod, at(100)).is_empty());
    }

    #[test]
    fn young_containers_stay() {
        let policy = ContainerGcPolicy {
            min_age: Duration::from_secs(60),
            max_per_pod_container: Some(0),
            ..Default::default()
        };
        let pod = [
            c("a", "web", 0, 0, Exited),
            c("a", "web", 1, 50, Exited),
            c("a", "web", 2, 90, Running),
        ];
        assert_eq!(plan(&policy, &pod, at(100)), ["a-web-0"]);
        assert!(plan(&policy, &pod, at(30)).is_empty());
    }

    #[test]
    fn the_node_limit_shares_then_takes_the_oldest() {
        let policy = ContainerGcPolicy {
            max_per_pod_container: None,
            max_containers: Some(4),
            ..Default::default()
        };
        let mut node = Vec::new();
        for (uid, base) in [("a", 0), ("b", 100), ("c", 200)] {
            for attempt in 0..4 {
                node.push(c(uid, "x", attempt, base + u64::from(attempt), Exited));
            }
        }
        node.push(c("d", "x", 0, 500, Running));
        let removed = plan(&policy, &node, at(1000));
        // 12 dead in 3 units: each cut to 4 / 3 = 1 (its newest), then 3 <= 4.
        assert_eq!(removed.len(), 9);
        for uid in ["a", "b", "c"] {
            assert!(!removed.contains(&format!("{uid}-x-3")));
        }
        // With 5 units and a limit of 3, each keeps its pinned newest one: 5 dead stay.
        let policy = ContainerGcPolicy {
            max_containers: Some(3),
            max_per_pod_container: None,
            ..Default::default()
        };
        let many: Vec<_> = (0..5)
            .flat_map(|i| {
                let uid = format!("p{i}");
                [
                    c(&uid, "x", 0, i * 10, Exited),
                    c(&uid, "x", 1, i * 10 + 1, Exited),
                ]
            })
            .collect();
        let removed = plan(&policy, &many, at(1000));
        assert_eq!(removed.len(), 5, "{removed:?}");
        assert!(removed.iter().all(|id| id.ends_with("-x-0")));
    }

    #[test]
    fn the_oldest_go_first_across_pods() {
        let policy = ContainerGcPolicy {
            max_per_pod_container: None,
            max_containers: Some(5),
            ..Default::default()
        };
        let node = [
            c("a", "x", 0, 0, Exited),
            c("a", "x", 1, 5, Exited),
            c("a", "x", 2, 6, Exited),
            c("a", "x", 3, 7, Exited),
            c("b", "x", 0, 1, Exited),
            c("b", "x", 1, 2, Exited),
            c("b", "x", 2, 8, Exited),
        ];
        // 7 dead, 2 units: each cut to 5 / 2 = 2 (two of a's go, one of b's), then 4 <= 5.
        assert_eq!(
            sorted(plan(&policy, &node, at(100))),
            ["a-x-0", "a-x-1", "b-x-0"]
        );
    }
}
