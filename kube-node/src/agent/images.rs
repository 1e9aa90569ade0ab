//! Making sure a container's image is there before it is created, as the kubelet's image
//! manager does: `imagePullPolicy` (defaulted as Kubernetes does), pulls with the pod's
//! `imagePullSecrets`, serialized or bounded pulls, `ErrImagePull` then `ImagePullBackOff`
//! with back-off, `InvalidImageName`, `ErrImageNeverPull`, and the kubelet's Events
//! (`Pulling`, `Pulled` with size and duration, `Failed`, `BackOff`). The `runAsNonRoot`
//! check against the image's user is here too, since it needs the image's status.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube_core::events::EventType;
use kube_core::object::{GroupKind, ObjectKey};
use kube_core::runtime::{AuthConfig, Image, RuntimeError};

use super::backoff::CrashBackoff;
use super::pod_status::Waiting;
use super::spec::security;
use super::{Agent, error_chain};

use crate::pull::credentials::Keyring;
use crate::pull::reference::{self, ImageName};

/// `image` as containerd keys images (`nginx` → `docker.io/library/nginx:latest`); one that
/// does not parse stays as it is.
pub(crate) fn normalized(image: &str) -> String {
    reference::normalize(image).map_or_else(|_| image.to_string(), |n| n.to_string())
}

/// What a container's image pull state is between syncs.
#[derive(Debug, Default)]
pub(crate) struct PullMemory {
    backoff: CrashBackoff,
    /// When the last pull failed, and how it was shown.
    failed: Option<(Instant, Waiting)>,
    /// Whether the current back-off has had its `BackOff` Event.
    backoff_reported: bool,
}

/// `Always` for `:latest` or no tag (and no digest), else `IfNotPresent`: Kubernetes'
/// defaulting of `imagePullPolicy`, for pods that reached the agent without the API server's.
pub(crate) fn default_pull_policy(name: &ImageName) -> &'static str {
    if name.tag() == Some("latest") {
        "Always"
    } else {
        "IfNotPresent"
    }
}

/// The kubelet's `verifyRunAsNonRoot`: with `runAsNonRoot`, the user must be known not to be
/// root — from `runAsUser`, else from the image's numeric `User` (an image naming no user
/// runs as root).
pub(crate) fn verify_run_as_non_root(
    pod: &Pod,
    c: &Container,
    image: Option<&Image>,
) -> Result<(), String> {
    if security(pod, c, |s| s.run_as_non_root, |s| s.run_as_non_root) != Some(true) {
        return Ok(());
    }
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let name = &c.name;
    if let Some(uid) = security(pod, c, |s| s.run_as_user, |s| s.run_as_user) {
        return if uid == 0 {
            Err(format!(
                "container's runAsUser breaks non-root policy (pod: \"{pod_name}\", container: {name})"
            ))
        } else {
            Ok(())
        };
    }
    let user = image.and_then(|i| i.user.as_deref()).unwrap_or_default();
    // `uid` or `uid:gid`; a name cannot be checked without the image's /etc/passwd.
    let uid = user.split(':').next().unwrap_or_default();
    match uid.parse::<i64>() {
        _ if uid.is_empty() => Err(format!(
            "container has runAsNonRoot and image will run as root (pod: \"{pod_name}\", container: {name})"
        )),
        Ok(0) => Err(format!(
            "container has runAsNonRoot and image will run as root (pod: \"{pod_name}\", container: {name})"
        )),
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: \"{pod_name}\", container: {name})"
        )),
    }
}

/// Why a container cannot be created yet, for its `waiting` state.
pub(crate) enum NotReady {
    /// Shown as the container's waiting state; sync again after this long.
    Wait(Waiting, Duration),
}

fn waiting(reason: &str, message: String) -> Waiting {
    Waiting {
        reason: reason.into(),
        message,
    }
}

impl Agent {
    /// Makes sure the image of `c` is present, pulling it as its policy says. Returns the
    /// image's status when the runtime reports one.
    pub(crate) async fn ensure_image(
        &self,
        pod: &Pod,
        c: &Container,
        memory: &mut PullMemory,
    ) -> Result<Option<Image>, NotReady> {
        let (base, max) = (
            self.config.crash_backoff_base,
            self.config.crash_backoff_max,
        );
        let image = c.image.as_deref().unwrap_or_default();
        let name = match reference::normalize(image) {
            Ok(name) => name,
            Err(e) => {
                let message = e.to_string();
                self.event(pod, EventType::Warning, "InspectFailed", message.clone());
                self.event(
                    pod,
                    EventType::Warning,
                    "Failed",
                    "Error: InvalidImageName".into(),
                );
                return Err(NotReady::Wait(waiting("InvalidImageName", message), max));
            }
        };
        let policy = c
            .image_pull_policy
            .as_deref()
            .unwrap_or_else(|| default_pull_policy(&name));
        let present = match self.runtime.image_status(image).await {
            Ok(status) => status,
            Err(e) => {
                let message = format!("Failed to inspect image \"{image}\": {}", error_chain(&e));
                self.event(pod, EventType::Warning, "InspectFailed", message.clone());
                return Err(NotReady::Wait(waiting("ImageInspectError", message), base));
            }
        };
        match (policy, present) {
            ("Never", None) => {
                let message =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                self.event(
                    pod,
                    EventType::Warning,
                    "ErrImageNeverPull",
                    message.clone(),
                );
                return Err(NotReady::Wait(waiting("ErrImageNeverPull", message), base));
            }
            ("Never" | "IfNotPresent", Some(status)) => {
                self.event(
                    pod,
                    EventType::Normal,
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                );
                return Ok(Some(status));
            }
            _ => {}
        }
        if let Some(left) = memory.backoff.remaining_since_step(max) {
            // A failure shows as `ErrImagePull` for a while (the kubelet's pod worker syncs
            // again only after its own back-off; ours syncs at once on its status write),
            // then as `ImagePullBackOff` for the rest of the wait.
            if let Some((at, shown)) = &memory.failed
                && at.elapsed() < base
            {
                let until = base.saturating_sub(at.elapsed()).min(left);
                return Err(NotReady::Wait(shown.clone(), until));
            }
            let message = format!("Back-off pulling image \"{image}\"");
            if !memory.backoff_reported {
                memory.backoff_reported = true;
                self.event(pod, EventType::Normal, "BackOff", message.clone());
                self.event(
                    pod,
                    EventType::Warning,
                    "Failed",
                    "Error: ImagePullBackOff".into(),
                );
            }
            return Err(NotReady::Wait(waiting("ImagePullBackOff", message), left));
        }
        self.event(
            pod,
            EventType::Normal,
            "Pulling",
            format!("Pulling image \"{image}\""),
        );
        let asked = Instant::now();
        let auth = self.pull_credentials(pod, &name).await;
        let result = {
            // At most `max_parallel_image_pulls` at once (one: serialized, the kubelet's
            // default), so a node starting many pods does not split its link many ways.
            let _permit = self.pull_slots.acquire().await;
            let started = Instant::now();
            self.pull_with(image, &auth)
                .await
                .map(|pulled| (pulled, started.elapsed()))
        };
        match result {
            Ok((pulled, took)) => {
                memory.backoff = CrashBackoff::default();
                memory.backoff_reported = false;
                memory.failed = None;
                self.event(
                    pod,
                    EventType::Normal,
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {} ({} including waiting). Image size: {} bytes.",
                        go_duration(took),
                        go_duration(asked.elapsed()),
                        pulled.size_bytes
                    ),
                );
                Ok(self.runtime.image_status(image).await.ok().flatten())
            }
            Err(e) => {
                memory.backoff.step(base, max);
                memory.backoff_reported = false;
                let message = format!("Failed to pull image \"{image}\": {}", error_chain(&e));
                tracing::info!(image, error = %message, "image pull failed");
                self.event(pod, EventType::Warning, "Failed", message.clone());
                self.event(
                    pod,
                    EventType::Warning,
                    "Failed",
                    "Error: ErrImagePull".into(),
                );
                let shown = waiting("ErrImagePull", message);
                memory.failed = Some((Instant::now(), shown.clone()));
                Err(NotReady::Wait(shown, memory.backoff.delay(max).min(base)))
            }
        }
    }

    /// Pulls with each of the credentials that match the registry in turn (the kubelet tries
    /// every matching one), then without any if none match.
    async fn pull_with(
        &self,
        image: &str,
        auth: &[AuthConfig],
    ) -> Result<kube_core::runtime::PulledImage, RuntimeError> {
        let mut last = None;
        for a in auth {
            match self.runtime.pull_image(image, Some(a), None).await {
                Ok(pulled) => return Ok(pulled),
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) => Err(e),
            None => self.runtime.pull_image(image, None, None).await,
        }
    }

    /// Credentials for `name`'s registry: the pod's `imagePullSecrets` (which the API
    /// server's ServiceAccount admission fills from the pod's account), then the node's
    /// credentials file.
    async fn pull_credentials(&self, pod: &Pod, name: &ImageName) -> Vec<AuthConfig> {
        let mut keyring = Keyring::new();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let secrets = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.as_ref());
        for r in secrets.into_iter().flatten() {
            let key = ObjectKey::namespaced(ns.clone(), r.name.clone());
            let secret = match self.store.get(&GroupKind::of::<Secret>(), &key).await {
                Ok(o) => o.to_typed::<Secret>().ok(),
                // A missing pull secret is not an error to the kubelet: the pull goes on.
                Err(_) => None,
            };
            if let Some(secret) = secret {
                // `stringData` too, for secrets written to the store without the API
                // server (which folds it into `data`).
                let data = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .chain(
                        secret
                            .string_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes())),
                    )
                    .collect();
                let typ = secret.type_.as_deref().unwrap_or_default();
                if let Err(e) = keyring.add_secret(typ, &data) {
                    tracing::info!(secret = %r.name, error = %e, "unusable image pull secret");
                }
            }
        }
        let mut auth = keyring.lookup(name);
        if let Some(node) = &self.node_keyring {
            auth.extend(node.lookup(name));
        }
        auth
    }
}

/// A duration as the kubelet writes it in events: Go's `Duration.String` of the duration
/// truncated to milliseconds (`0s`, `87ms`, `1.234s`, `2m3.5s`).
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (minutes, ms) = (ms / 60_000, ms % 60_000);
    let seconds = format!("{}.{:03}", ms / 1000, ms % 1000);
    let seconds = seconds.trim_end_matches('0').trim_end_matches('.');
    match minutes {
        0 => format!("{seconds}s"),
        m if m < 60 => format!("{m}m{seconds}s"),
        m => format!("{}h{}m{seconds}s", m / 60, m % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_go_prints_them() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(Duration::from_micros(300)), "0s");
        assert_eq!(go_duration(ms(87)), "87ms");
        assert_eq!(go_duration(ms(1234)), "1.234s");
        assert_eq!(go_duration(ms(2000)), "2s");
        assert_eq!(go_duration(ms(123_500)), "2m3.5s");
        assert_eq!(go_duration(ms(3_600_000)), "1h0m0s");
    }

    #[test]
    fn latest_and_untagged_images_are_pulled_always() {
        let policy = |image: &str| default_pull_policy(&reference::normalize(image).unwrap());
        assert_eq!(policy("nginx"), "Always");
        assert_eq!(policy("nginx:latest"), "Always");
        assert_eq!(policy("nginx:1.27"), "IfNotPresent");
        assert_eq!(
            policy("nginx@sha256:0000000000000000000000000000000000000000000000000000000000000000"),
            "IfNotPresent"
        );
        assert_eq!(policy("127.0.0.1:5000/web:v2"), "IfNotPresent");
    }
}
