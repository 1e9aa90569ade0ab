//! Pod status: from what the runtime reports to a `PodStatus`, written only when it changed.
//!
//! The phase follows the kubelet's `getPhase`; conditions and container states use the
//! kubelet's reasons, so clients see what they would see on a real cluster.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_core::object::{DynamicObject, GroupKind, ObjectKey};
use kube_core::runtime::{self, ContainerState as RtState};

use super::Agent;
use crate::error::{Error, Result};
use kube_core::object::{now, to_time};

/// How many times a conflicting status write is retried on the re-read pod.
const CONFLICT_RETRIES: usize = 5;

/// Phases after which nothing runs again.
pub(crate) fn is_terminal(phase: Option<&str>) -> bool {
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// Why a container is waiting, when the agent knows better than the runtime (back-off, an
/// error creating it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Waiting {
    pub(crate) reason: String,
    pub(crate) message: String,
}

/// What the agent observed about one pod, ready to merge into its stored status.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Observed {
    pub(crate) phase: &'static str,
    pub(crate) init_statuses: Option<Vec<ContainerStatus>>,
    pub(crate) statuses: Vec<ContainerStatus>,
    pub(crate) host_ip: String,
    pub(crate) pod_ip: Option<String>,
}

fn terminated(c: &runtime::ContainerStatus, container_id: &str) -> ContainerStateTerminated {
    ContainerStateTerminated {
        container_id: Some(container_id.to_string()),
        exit_code: c.exit_code.unwrap_or(-1),
        finished_at: c.finished_at.map(to_time),
        message: c.message.clone(),
        reason: c.reason.clone(),
        signal: None,
        started_at: c.started_at.map(to_time),
    }
}

fn waiting(reason: &str, message: Option<&str>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: message.map(str::to_string),
        }),
        ..Default::default()
    }
}

/// The status of one spec container from its runtime containers, newest first.
///
/// `idle_reason` is the waiting reason before any container exists (`ContainerCreating`, or
/// `PodInitializing` for app containers while init containers run).
pub(crate) fn container_status(
    name: &str,
    image: &str,
    history: &[runtime::ContainerStatus],
    override_waiting: Option<&Waiting>,
    idle_reason: &str,
    runtime_type: &str,
    init: bool,
) -> ContainerStatus {
    let mut status = ContainerStatus {
        name: name.to_string(),
        image: image.to_string(),
        started: Some(false),
        ..Default::default()
    };
    let Some(latest) = history.first() else {
        status.state = Some(match override_waiting {
            Some(w) => waiting(&w.reason, Some(&w.message)),
            None => waiting(idle_reason, None),
        });
        return status;
    };
    let id_of = |c: &runtime::ContainerStatus| format!("{runtime_type}://{}", c.id);
    let container_id = id_of(latest);
    let previous = history
        .iter()
        .skip(1)
        .find(|c| c.state == RtState::Exited)
        .map(|c| ContainerState {
            terminated: Some(terminated(c, &id_of(c))),
            ..Default::default()
        });
    status.container_id = Some(container_id.clone());
    status.image_id = latest.image.clone();
    status.restart_count = i32::try_from(latest.attempt).unwrap_or(i32::MAX);
    status.last_state = previous;
    match latest.state {
        RtState::Running => {
            status.state = Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: latest.started_at.map(to_time),
                }),
                ..Default::default()
            });
            // No probes yet: a running app container is ready.
            status.ready = !init;
            status.started = Some(true);
        }
        RtState::Created => {
            status.state = Some(match override_waiting {
                Some(w) => waiting(&w.reason, Some(&w.message)),
                None => waiting("ContainerCreating", None),
            });
        }
        RtState::Exited => match override_waiting {
            // Waiting to be restarted: the exit is history.
            Some(w) => {
                status.state = Some(waiting(&w.reason, Some(&w.message)));
                status.last_state = Some(ContainerState {
                    terminated: Some(terminated(latest, &container_id)),
                    ..Default::default()
                });
            }
            None => {
                status.state = Some(ContainerState {
                    terminated: Some(terminated(latest, &container_id)),
                    ..Default::default()
                });
                // An init container that succeeded counts as ready, as in the kubelet.
                status.ready = init && latest.exit_code == Some(0);
            }
        },
        RtState::Unknown => {
            status.state = Some(waiting(
                "ContainerStatusUnknown",
                Some("the container runtime lost track of the container"),
            ));
        }
    }
    status
}

fn terminated_state(s: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    s.state.as_ref()?.terminated.as_ref()
}

fn last_terminated(s: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    s.last_state.as_ref()?.terminated.as_ref()
}

/// The pod phase, as the kubelet's `getPhase` computes it.
pub(crate) fn pod_phase(
    restart_policy: &str,
    init: &[ContainerStatus],
    app: &[ContainerStatus],
) -> &'static str {
    let (mut pending_init, mut failed_init) = (0, 0);
    for s in init {
        let state = s.state.as_ref();
        if state.is_some_and(|st| st.running.is_some()) {
            pending_init += 1;
        } else if let Some(t) = terminated_state(s) {
            if t.exit_code != 0 {
                failed_init += 1;
            }
        } else if state.is_some_and(|st| st.waiting.is_some()) {
            match last_terminated(s) {
                Some(t) if t.exit_code != 0 => failed_init += 1,
                Some(_) => {}
                None => pending_init += 1,
            }
        } else {
            pending_init += 1;
        }
    }
    let (mut running, mut waiting, mut stopped, mut succeeded, mut unknown) = (0, 0, 0, 0, 0);
    for s in app {
        let state = s.state.as_ref();
        if state.is_some_and(|st| st.running.is_some()) {
            running += 1;
        } else if let Some(t) = terminated_state(s) {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if state.is_some_and(|st| st.waiting.is_some()) {
            if last_terminated(s).is_some() {
                stopped += 1;
            } else {
                waiting += 1;
            }
        } else {
            unknown += 1;
        }
    }
    if failed_init > 0 && restart_policy == "Never" {
        return "Failed";
    }
    if pending_init > 0 || waiting > 0 {
        return "Pending";
    }
    if running > 0 && unknown == 0 {
        return "Running";
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        if restart_policy == "Always" {
            // About to be restarted.
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if restart_policy == "Never" {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

/// The conditions the agent owns: type, status, reason, message.
fn owned_conditions(
    observed: &Observed,
) -> Vec<(&'static str, bool, Option<String>, Option<String>)> {
    let completed = is_terminal(Some(observed.phase));
    let names = |statuses: &[ContainerStatus], pred: &dyn Fn(&ContainerStatus) -> bool| {
        statuses
            .iter()
            .filter(|s| !pred(s))
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let init = observed.init_statuses.as_deref().unwrap_or_default();
    let init_done = |s: &ContainerStatus| terminated_state(s).is_some_and(|t| t.exit_code == 0);
    let incomplete = names(init, &init_done);
    let initialized = if incomplete.is_empty() || observed.phase == "Succeeded" {
        (true, None, None)
    } else {
        (
            false,
            Some("ContainersNotInitialized".to_string()),
            Some(format!("containers with incomplete status: [{incomplete}]")),
        )
    };
    let unready = names(&observed.statuses, &|s| s.ready);
    let ready = if completed {
        (false, Some("PodCompleted".to_string()), None)
    } else if unready.is_empty() {
        (true, None, None)
    } else {
        (
            false,
            Some("ContainersNotReady".to_string()),
            Some(format!("containers with unready status: [{unready}]")),
        )
    };
    vec![
        ("Initialized", initialized.0, initialized.1, initialized.2),
        ("Ready", ready.0, ready.1.clone(), ready.2.clone()),
        ("ContainersReady", ready.0, ready.1, ready.2),
    ]
}

fn merge_conditions(
    old: Option<&[PodCondition]>,
    observed: &Observed,
    now: &Time,
) -> Vec<PodCondition> {
    let mut conditions: Vec<PodCondition> = old.unwrap_or_default().to_vec();
    let mut owned: Vec<_> = owned_conditions(observed)
        .into_iter()
        .map(|(type_, status, reason, message)| {
            (
                type_,
                if status { "True" } else { "False" },
                reason,
                message,
            )
        })
        .collect();
    // The scheduler normally sets PodScheduled; a pod bound by hand gets it here.
    if !conditions.iter().any(|c| c.type_ == "PodScheduled") {
        owned.push(("PodScheduled", "True", None, None));
    }
    for (type_, status, reason, message) in owned {
        let existing = conditions.iter_mut().find(|c| c.type_ == type_);
        let transition = match &existing {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => Some(now.clone()),
        };
        let fresh = PodCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason,
            message,
            last_transition_time: transition,
            last_probe_time: None,
            observed_generation: None,
        };
        match existing {
            Some(c) => *c = fresh,
            None => conditions.push(fresh),
        }
    }
    conditions
}

/// `old` with the observed state written over the fields the agent owns; everything else
/// (QoS class, nominated node, other conditions) is kept.
pub(crate) fn merge_status(old: &PodStatus, observed: &Observed, now: &Time) -> PodStatus {
    let mut status = old.clone();
    status.phase = Some(observed.phase.to_string());
    status.host_ip = Some(observed.host_ip.clone());
    status.host_ips = Some(vec![HostIP {
        ip: observed.host_ip.clone(),
    }]);
    if let Some(ip) = &observed.pod_ip {
        status.pod_ip = Some(ip.clone());
        status.pod_ips = Some(vec![PodIP { ip: ip.clone() }]);
    }
    if status.start_time.is_none() {
        status.start_time = Some(now.clone());
    }
    status.container_statuses = Some(observed.statuses.clone());
    if observed.init_statuses.is_some() {
        status.init_container_statuses = observed.init_statuses.clone();
    }
    status.conditions = Some(merge_conditions(old.conditions.as_deref(), observed, now));
    status
}

/// Groups a sandbox's containers by container name, newest attempt first.
pub(crate) fn by_name(
    containers: Vec<runtime::ContainerStatus>,
) -> HashMap<String, Vec<runtime::ContainerStatus>> {
    let mut map: HashMap<String, Vec<runtime::ContainerStatus>> = HashMap::new();
    for c in containers {
        map.entry(c.name.clone()).or_default().push(c);
    }
    for history in map.values_mut() {
        history.sort_by_key(|c| std::cmp::Reverse((c.attempt, c.created_at)));
    }
    map
}

impl Agent {
    /// Writes the observed status onto the latest pod, if it changes anything. Reads again and
    /// retries on conflict; a pod that is gone or was replaced (other UID) is left alone.
    pub(super) async fn write_pod_status(
        &self,
        key: &ObjectKey,
        uid: &str,
        cached: &DynamicObject,
        cached_status: Option<&PodStatus>,
        observed: &Observed,
    ) -> Result<()> {
        let decode = |source| Error::Decode {
            what: format!("pod {key} status"),
            source,
        };
        let mut current = cached.clone();
        // The caller decoded the cached pod already; only a re-read pod needs decoding.
        let mut decoded = Some(cached_status.cloned().unwrap_or_default());
        for _ in 0..CONFLICT_RETRIES {
            if current.metadata.uid.as_deref() != Some(uid) {
                return Ok(());
            }
            let old: PodStatus = match (decoded.take(), current.data.get("status")) {
                (Some(status), _) => status,
                (None, Some(v)) => serde_json::from_value(v.clone()).map_err(decode)?,
                (None, None) => PodStatus::default(),
            };
            let new = merge_status(&old, observed, &now());
            if new == old {
                return Ok(());
            }
            let mut next = current.clone();
            next.data
                .insert("status".into(), serde_json::to_value(&new).map_err(decode)?);
            // `next` carries the resourceVersion read: a concurrent write (even to the spec)
            // is a conflict, never overwritten.
            match self.store.update(next).await {
                Ok(_) => {
                    tracing::debug!(pod = %key, phase = observed.phase, "pod status written");
                    return Ok(());
                }
                Err(e) if e.is_conflict() => {}
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            current = match self.store.get(&GroupKind::POD, key).await {
                Ok(o) => o,
                Err(e) if e.is_not_found() => return Ok(()),
                Err(e) => return Err(e.into()),
            };
        }
        Err(Error::Store(kube_core::store::StoreError::Conflict {
            kind: GroupKind::POD,
            key: key.clone(),
            message: format!("pod status still conflicting after {CONFLICT_RETRIES} tries"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(json: serde_json::Value) -> ContainerStatus {
        serde_json::from_value(json).unwrap()
    }

    fn running() -> ContainerStatus {
        status(
            serde_json::json!({"name": "c", "image": "i", "imageID": "", "ready": true,
            "restartCount": 0, "state": {"running": {}}}),
        )
    }

    fn exited(code: i32) -> ContainerStatus {
        status(
            serde_json::json!({"name": "c", "image": "i", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": code}}}),
        )
    }

    fn waiting_fresh() -> ContainerStatus {
        status(
            serde_json::json!({"name": "c", "image": "i", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}),
        )
    }

    fn backing_off(code: i32) -> ContainerStatus {
        status(
            serde_json::json!({"name": "c", "image": "i", "imageID": "", "ready": false,
            "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": code}}}),
        )
    }

    #[test]
    fn phase_follows_the_kubelet() {
        assert_eq!(
            pod_phase("Always", &[], &[waiting_fresh(), running()]),
            "Pending"
        );
        assert_eq!(pod_phase("Always", &[], &[running(), exited(0)]), "Running");
        assert_eq!(pod_phase("Always", &[], &[exited(0)]), "Running");
        assert_eq!(pod_phase("Always", &[], &[backing_off(1)]), "Running");
        assert_eq!(
            pod_phase("Never", &[], &[exited(0), exited(0)]),
            "Succeeded"
        );
        assert_eq!(pod_phase("Never", &[], &[exited(0), exited(1)]), "Failed");
        assert_eq!(pod_phase("Never", &[], &[running(), exited(1)]), "Running");
        assert_eq!(pod_phase("OnFailure", &[], &[exited(0)]), "Succeeded");
        assert_eq!(pod_phase("OnFailure", &[], &[backing_off(1)]), "Running");
        assert_eq!(
            pod_phase("Never", &[running()], &[waiting_fresh()]),
            "Pending"
        );
        assert_eq!(
            pod_phase("Never", &[exited(2)], &[waiting_fresh()]),
            "Failed"
        );
        assert_eq!(
            pod_phase("OnFailure", &[backing_off(2)], &[waiting_fresh()]),
            "Pending"
        );
        assert_eq!(pod_phase("Always", &[exited(0)], &[running()]), "Running");
    }

    #[test]
    fn unchanged_observation_merges_to_an_equal_status() {
        let observed = Observed {
            phase: "Running",
            init_statuses: None,
            statuses: vec![running()],
            host_ip: "10.0.0.1".into(),
            pod_ip: Some("10.88.0.2".into()),
        };
        let t0 = to_time(std::time::UNIX_EPOCH);
        let first = merge_status(&PodStatus::default(), &observed, &t0);
        let later = merge_status(&first, &observed, &now());
        assert_eq!(first, later);
        let conditions = first.conditions.unwrap();
        let ready = conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        assert!(conditions.iter().any(|c| c.type_ == "PodScheduled"));
    }
}
