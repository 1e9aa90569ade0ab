//! A linearizability checker for one register with read, write and compare-and-swap, after
//! Wing & Gong with memoization: search for an order of the operations that respects real time
//! (an operation that returned before another was invoked comes first) and the register's
//! sequential semantics.

use std::collections::HashSet;
use std::time::Instant;

/// What a client did to the register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Read and saw this value (`None`: absent).
    Read(Option<String>),
    /// Compare-and-swap from `expected` to `new`; `ok` says whether it took effect.
    Cas {
        expected: String,
        new: String,
        ok: bool,
    },
    /// Create with this value; `ok` false means it already existed.
    Create { value: String, ok: bool },
}

/// One completed operation with its invocation and response times.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) call: Instant,
    pub(crate) ret: Instant,
    pub(crate) op: Op,
}

fn step(state: &Option<String>, op: &Op) -> Option<Option<String>> {
    match op {
        Op::Read(seen) => (seen == state).then(|| state.clone()),
        Op::Cas { expected, new, ok } => {
            let matches = state.as_deref() == Some(expected.as_str());
            match (matches, ok) {
                (true, true) => Some(Some(new.clone())),
                (false, false) => Some(state.clone()),
                _ => None,
            }
        }
        Op::Create { value, ok } => match (state.is_none(), ok) {
            (true, true) => Some(Some(value.clone())),
            (false, false) => Some(state.clone()),
            _ => None,
        },
    }
}

/// Whether `history` (at most 64 operations) is linearizable from an absent register.
pub(crate) fn check(history: &[Entry]) -> bool {
    assert!(history.len() <= 64, "checker handles at most 64 operations");
    let mut seen = HashSet::new();
    search(history, 0, &None, &mut seen)
}

fn search(
    history: &[Entry],
    done: u64,
    state: &Option<String>,
    seen: &mut HashSet<(u64, Option<String>)>,
) -> bool {
    if done.count_ones() as usize == history.len() {
        return true;
    }
    if !seen.insert((done, state.clone())) {
        return false;
    }
    // Only operations invoked before every pending operation returned can go next.
    let earliest_return = history
        .iter()
        .enumerate()
        .filter(|(i, _)| done & (1 << i) == 0)
        .map(|(_, e)| e.ret)
        .min();
    for (i, entry) in history.iter().enumerate() {
        if done & (1 << i) != 0 || earliest_return.is_some_and(|r| entry.call > r) {
            continue;
        }
        if let Some(next) = step(state, &entry.op) {
            if search(history, done | (1 << i), &next, seen) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(base: Instant, from: u64, to: u64, op: Op) -> Entry {
        Entry {
            call: base + Duration::from_millis(from),
            ret: base + Duration::from_millis(to),
            op,
        }
    }

    #[test]
    fn accepts_linearizable_and_rejects_stale_reads() {
        let t = Instant::now();
        let create = |v: &str| Op::Create {
            value: v.into(),
            ok: true,
        };
        let good = vec![
            at(t, 0, 10, create("a")),
            at(t, 5, 20, Op::Read(None)), // overlaps the create: may precede it
            at(
                t,
                30,
                40,
                Op::Cas {
                    expected: "a".into(),
                    new: "b".into(),
                    ok: true,
                },
            ),
            at(t, 35, 45, Op::Read(Some("a".into()))), // overlaps the CAS
        ];
        assert!(check(&good));
        let stale = vec![
            at(t, 0, 10, create("a")),
            at(
                t,
                20,
                30,
                Op::Cas {
                    expected: "a".into(),
                    new: "b".into(),
                    ok: true,
                },
            ),
            at(t, 40, 50, Op::Read(Some("a".into()))), // after the CAS returned: must see b
        ];
        assert!(!check(&stale));
    }
}
