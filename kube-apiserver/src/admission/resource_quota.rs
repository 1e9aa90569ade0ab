//! Kubernetes' ResourceQuota admission plugin: a write that would take a namespace's usage
//! past a quota's `status.hard` is refused (403, `exceeded quota: …`), and an admitted one is
//! charged at once to the quota's `status.used` by an update conditional on the quota's
//! `resourceVersion`, so concurrent writers never both take the last unit: the loser
//! re-reads the quota and is checked again. The quota controller later recounts `used` from
//! what exists.

use std::time::Duration;

use kube_core::kind::KindInfo;
use kube_core::object::{DynamicObject, GroupKind};
use kube_core::quota::{self, Amount, ResourceList};
use kube_core::store::{ListOptions, Store, StoreError};
use rand::Rng;
use serde_json::Value;

use super::refused::Refused;

/// How often an admission re-reads quotas whose update lost a race. Every retry follows a
/// write that succeeded, so this bounds only how many writers may overtake one request.
const RETRIES: usize = 64;

/// What one quota is to be charged.
struct Charge {
    quota: DynamicObject,
    used: ResourceList,
}

/// Checks `object` (a create, or an update of `old`) against the quotas of its namespace and
/// charges them; with `dry_run`, checks only.
pub(crate) async fn admit(
    store: &dyn Store,
    info: &KindInfo,
    object: &DynamicObject,
    old: Option<&DynamicObject>,
    dry_run: bool,
) -> Result<(), Refused> {
    let (group, plural) = (info.group.as_str(), info.plural.as_str());
    if old.is_some() && !quota::charged_on_update(group, plural) {
        return Ok(());
    }
    let Some(namespace) = object
        .metadata
        .namespace
        .clone()
        .filter(|_| info.namespaced)
    else {
        return Ok(());
    };
    let kind = GroupKind::new("", "ResourceQuota");
    let mut charged: Vec<String> = Vec::new();
    let mut last_conflict = None;
    for attempt in 0..RETRIES {
        if attempt > 0 {
            let pause = rand::rng().random_range(0..=attempt.min(20) as u64);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        let quotas = store
            .list(&kind, Some(&namespace), &ListOptions::default())
            .await?;
        let pending: Vec<DynamicObject> = quotas
            .items
            .into_iter()
            .filter(|q| !charged.contains(&q.metadata.name.clone().unwrap_or_default()))
            .collect();
        let charges = check(&pending, group, plural, object, old)?;
        if dry_run || charges.is_empty() {
            return Ok(());
        }
        let mut lost = false;
        for charge in charges {
            let name = charge.quota.metadata.name.clone().unwrap_or_default();
            match store.update(with_used(charge.quota, &charge.used)).await {
                Ok(_) => charged.push(name),
                Err(e) if e.is_conflict() => {
                    lost = true;
                    last_conflict = Some(e);
                }
                // Deleted meanwhile: nothing to charge.
                Err(e) if e.is_not_found() => charged.push(name),
                Err(e) => return Err(e.into()),
            }
        }
        if !lost {
            return Ok(());
        }
    }
    Err(Refused::Store(last_conflict.unwrap_or_else(|| {
        StoreError::Invalid("quota charge kept conflicting".into())
    })))
}

fn with_used(mut quota: DynamicObject, used: &ResourceList) -> DynamicObject {
    let status = quota
        .data
        .entry("status".to_string())
        .or_insert_with(|| Value::Object(Default::default()));
    if let Value::Object(status) = status {
        let mut all = quota::parse_list(status.get("used"));
        all.extend(used.iter().map(|(k, v)| (k.clone(), *v)));
        status.insert("used".into(), quota::list_to_json(&all));
    }
    quota
}

/// The new usage of every quota the write changes, or why it is refused.
fn check(
    quotas: &[DynamicObject],
    group: &str,
    plural: &str,
    object: &DynamicObject,
    old: Option<&DynamicObject>,
) -> Result<Vec<Charge>, Refused> {
    let usage = quota::usage(group, plural, object);
    let previous = old.map(|o| quota::usage(group, plural, o));
    let mut charges = Vec::new();
    for q in quotas {
        let name = q.metadata.name.clone().unwrap_or_default();
        let status = q.data.get("status");
        let hard = quota::parse_list(status.and_then(|s| s.get("hard")));
        let restricted = quota::matching_resources(group, plural, hard.keys());
        let selectors = quota::scope_selectors(q);
        if restricted.is_empty() || !quota::matches_scopes(&selectors, group, plural, object) {
            continue;
        }
        if group.is_empty() && plural == "pods" {
            quota::pod_constraints(&restricted, object)
                .map_err(|why| Refused::Forbidden(format!("failed quota: {name}: {why}")))?;
        }
        let used = quota::parse_list(status.and_then(|s| s.get("used")));
        if restricted.iter().any(|r| !used.contains_key(r)) {
            let mut names = restricted.clone();
            names.sort();
            return Err(Refused::Forbidden(format!(
                "status unknown for quota: {name}, resources: {}",
                names.join(",")
            )));
        }
        // An update is charged what it adds to what the old object already held.
        let delta: ResourceList = match (&previous, old) {
            (Some(previous), Some(old))
                if quota::matches_scopes(&selectors, group, plural, old) =>
            {
                usage
                    .iter()
                    .map(|(k, v)| {
                        let before = previous.get(k).copied().unwrap_or(Amount::count(0));
                        let grown = v.minus(before);
                        (
                            k.clone(),
                            if grown.milli() < 0 {
                                Amount::count(0)
                            } else {
                                grown
                            },
                        )
                    })
                    .collect()
            }
            _ => usage.clone(),
        };
        let requested: ResourceList = quota::mask(&delta, hard.keys())
            .into_iter()
            .filter(|(_, v)| !v.is_zero())
            .collect();
        if requested.is_empty() {
            continue;
        }
        let new_used = quota::add(&used, &requested);
        let exceeded: Vec<String> = requested
            .keys()
            .filter(|k| match (new_used.get(*k), hard.get(*k)) {
                (Some(n), Some(h)) => n.milli() > h.milli(),
                _ => false,
            })
            .cloned()
            .collect();
        if !exceeded.is_empty() {
            return Err(Refused::Forbidden(format!(
                "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
                quota::pretty(&quota::mask(&requested, &exceeded)),
                quota::pretty(&quota::mask(&used, &exceeded)),
                quota::pretty(&quota::mask(&hard, &exceeded)),
            )));
        }
        charges.push(Charge {
            quota: q.clone(),
            used: quota::mask(&new_used, requested.keys()),
        });
    }
    Ok(charges)
}
