//! The scaling arithmetic of Deployment strategies, as pure functions (Kubernetes'
//! `deployment/rolling.go` and `util/deployment_util.go`).

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// What the strategies need to know about one ReplicaSet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RsCounts {
    /// `spec.replicas`.
    pub(crate) desired: i32,
    /// `status.availableReplicas`.
    pub(crate) available: i32,
}

/// Resolves an absolute number or a percentage of `total` (rounding up or down).
pub(crate) fn scaled(
    value: Option<&IntOrString>,
    default: &str,
    total: i32,
    round_up: bool,
) -> i32 {
    let percent = |s: &str| -> Option<i32> {
        let p: i64 = s.strip_suffix('%')?.trim().parse().ok()?;
        let product = p.saturating_mul(i64::from(total));
        let v = if round_up {
            (product + 99).div_euclid(100)
        } else {
            product.div_euclid(100)
        };
        i32::try_from(v).ok()
    };
    match value {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => percent(s).unwrap_or(0),
        None => percent(default).unwrap_or(0),
    }
    .max(0)
}

/// `(maxSurge, maxUnavailable)` for `replicas`: surge rounds up, unavailability down, and if
/// both come to zero one pod may be unavailable, or the rollout could never move.
pub(crate) fn surge_and_unavailable(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    replicas: i32,
) -> (i32, i32) {
    let surge = scaled(max_surge, "25%", replicas, true);
    let unavailable = scaled(max_unavailable, "25%", replicas, false).min(replicas);
    if surge == 0 && unavailable == 0 {
        return (0, 1);
    }
    (surge, unavailable)
}

/// The new ReplicaSet's next `spec.replicas` in a rolling update: up towards `replicas`
/// without the total of all ReplicaSets exceeding `replicas + max_surge`.
pub(crate) fn new_rs_replicas(replicas: i32, max_surge: i32, all_desired: i32, new: i32) -> i32 {
    if new >= replicas {
        return replicas;
    }
    let room = (replicas + max_surge - all_desired).max(0);
    new + room.min(replicas - new)
}

/// Old ReplicaSets' next `spec.replicas` in a rolling update (same order as `olds`, oldest
/// first): first drop unavailable old pods, then available ones, never taking the available
/// total below `replicas - max_unavailable`.
pub(crate) fn old_rs_replicas(
    replicas: i32,
    max_unavailable: i32,
    new: &RsCounts,
    olds: &[RsCounts],
) -> Vec<i32> {
    let mut next: Vec<i32> = olds.iter().map(|o| o.desired).collect();
    let old_total: i32 = olds.iter().map(|o| o.desired).sum();
    if old_total == 0 {
        return next;
    }
    let min_available = replicas - max_unavailable;
    let all_desired = old_total + new.desired;
    let new_unavailable = (new.desired - new.available).max(0);
    let mut budget = all_desired - min_available - new_unavailable;
    if budget <= 0 {
        return next;
    }
    // Unhealthy old pods go first: removing them costs no availability.
    for (i, old) in olds.iter().enumerate() {
        let unhealthy = (old.desired - old.available).max(0).min(budget);
        next[i] -= unhealthy;
        budget -= unhealthy;
    }
    let available: i32 = olds.iter().map(|o| o.available).sum::<i32>() + new.available;
    let mut room = available - min_available;
    for (i, old) in olds.iter().enumerate() {
        if room <= 0 {
            break;
        }
        // Only available pods are left in this ReplicaSet's count now.
        let down = next[i].min(room).min(old.available);
        next[i] -= down;
        room -= down;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_like_kubernetes() {
        let p = |s: &str| IntOrString::String(s.into());
        assert_eq!(surge_and_unavailable(None, None, 10), (3, 2));
        assert_eq!(
            surge_and_unavailable(Some(&p("0%")), Some(&p("0%")), 4),
            (0, 1)
        );
        assert_eq!(
            surge_and_unavailable(Some(&IntOrString::Int(2)), Some(&p("50%")), 3),
            (2, 1)
        );
    }

    #[test]
    fn surge_bounds_the_new_replica_set() {
        assert_eq!(new_rs_replicas(3, 1, 3, 0), 1);
        assert_eq!(new_rs_replicas(3, 1, 4, 1), 1);
        assert_eq!(new_rs_replicas(3, 0, 2, 0), 1);
        assert_eq!(new_rs_replicas(3, 1, 0, 0), 3);
        assert_eq!(new_rs_replicas(3, 1, 5, 4), 3);
    }

    #[test]
    fn old_scale_down_keeps_the_minimum_available() {
        let rs = |desired, available| RsCounts { desired, available };
        // 3 old available, 1 new not yet available, maxUnavailable 1: one old may go.
        assert_eq!(old_rs_replicas(3, 1, &rs(1, 0), &[rs(3, 3)]), vec![2]);
        // Already at the minimum: nothing.
        assert_eq!(old_rs_replicas(3, 1, &rs(1, 0), &[rs(2, 2)]), vec![2]);
        // Unhealthy old pods go first, across sets.
        assert_eq!(
            old_rs_replicas(3, 0, &rs(3, 3), &[rs(1, 0), rs(1, 1)]),
            vec![0, 0]
        );
    }
}
