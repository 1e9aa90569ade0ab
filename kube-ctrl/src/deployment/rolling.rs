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

/// What proportional scaling needs to know about one ReplicaSet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProportionalSize {
    /// `spec.replicas`.
    pub(crate) desired: i32,
    /// The `max-replicas` annotation: the Deployment's `replicas + maxSurge` when this set was
    /// last scaled.
    pub(crate) max_replicas: Option<i32>,
}

/// How many replicas of `to_add` (the rest being `to_add - added`) one ReplicaSet takes: its
/// share of the Deployment's new maximum size, as the fraction it held of the old one
/// (Kubernetes' `GetReplicaSetProportion`).
fn proportion(
    rs: &ProportionalSize,
    replicas: i32,
    max_surge: i32,
    status_replicas: i32,
    to_add: i32,
    added: i32,
) -> i32 {
    if rs.desired == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if replicas == 0 {
        -rs.desired
    } else {
        let max_now = i64::from(replicas) + i64::from(max_surge);
        let before = match rs.max_replicas {
            Some(m) if m != 0 => m,
            // Edited by hand: fall back to the Deployment's current size.
            _ => status_replicas,
        };
        if before == 0 {
            0
        } else {
            let size = (i64::from(rs.desired) * max_now) as f64 / f64::from(before);
            // Go's math.Round: halves away from zero, as `f64::round`.
            i32::try_from(size.round() as i64).unwrap_or(i32::MAX) - rs.desired
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// Proportional scaling of a rolling Deployment whose `replicas` changed while several
/// ReplicaSets have pods (Kubernetes' `scale` in `deployment/sync.go`): the difference between
/// `replicas + max_surge` and the sets' total is shared out in proportion to each set's size
/// (by the `max-replicas` annotation), larger sets first, leftovers to the largest. `sets` are
/// oldest first; the result is each set's next `spec.replicas`, in the same order. Ties go to
/// newer sets when growing and to older sets when shrinking.
pub(crate) fn proportional_sizes(
    replicas: i32,
    max_surge: i32,
    status_replicas: i32,
    sets: &[ProportionalSize],
) -> Vec<i32> {
    let mut next: Vec<i32> = sets.iter().map(|s| s.desired).collect();
    let mut active: Vec<usize> = (0..sets.len()).filter(|&i| sets[i].desired > 0).collect();
    let total: i32 = active.iter().map(|&i| sets[i].desired).sum();
    let allowed = if replicas > 0 {
        replicas.saturating_add(max_surge)
    } else {
        0
    };
    let to_add = allowed - total;
    if to_add == 0 || active.is_empty() {
        return next;
    }
    if to_add > 0 {
        active.sort_by_key(|&i| (std::cmp::Reverse(sets[i].desired), std::cmp::Reverse(i)));
    } else {
        active.sort_by_key(|&i| (std::cmp::Reverse(sets[i].desired), i));
    }
    let mut added = 0;
    for &i in &active {
        let p = proportion(
            &sets[i],
            replicas,
            max_surge,
            status_replicas,
            to_add,
            added,
        );
        next[i] += p;
        added += p;
    }
    let largest = active[0];
    next[largest] = (next[largest] + to_add - added).max(0);
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
    fn scaling_mid_rollout_is_proportional() {
        let rs = |desired, max| ProportionalSize {
            desired,
            max_replicas: Some(max),
        };
        // Kubernetes' documented example: 10 replicas, maxSurge 3, a stuck rollout with 8 old
        // and 5 new; scaled to 15 (maxSurge still 3), 3 go to the old set and 2 to the new.
        assert_eq!(
            proportional_sizes(15, 3, 13, &[rs(8, 13), rs(5, 13)]),
            vec![11, 7]
        );
        // And back down to 10: the same shares come off.
        assert_eq!(
            proportional_sizes(10, 3, 18, &[rs(11, 18), rs(7, 18)]),
            vec![8, 5]
        );
        // To zero: everything goes.
        assert_eq!(
            proportional_sizes(0, 0, 13, &[rs(8, 13), rs(5, 13)]),
            vec![0, 0]
        );
        // Idle sets stay idle; growing, a tie goes to the newer set.
        assert_eq!(
            proportional_sizes(4, 1, 4, &[rs(0, 4), rs(2, 4), rs(2, 4)]),
            vec![0, 2, 3]
        );
        // Without annotations the Deployment's current size is the base.
        let bare = |desired| ProportionalSize {
            desired,
            max_replicas: None,
        };
        assert_eq!(proportional_sizes(8, 0, 4, &[bare(2), bare(2)]), vec![4, 4]);
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
