//! Incremental updates: when a new ruleset differs from the applied one only in map and set
//! elements (the common case: endpoints come and go, services are added), send just those
//! element changes, still as one transaction, instead of rewriting 100,000 elements.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

/// A rendered script split into its structure and its elements.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    /// Everything but element lists and size hints: equal skeletons mean the same tables,
    /// chains and rules.
    skeleton: String,
    /// Map or set name → (its size hint, its element list as written: `a, b, c`). Kept as
    /// text: comparing two lists is one `memcmp`, and only lists that differ are split.
    elements: BTreeMap<String, (usize, String)>,
}

/// Splits a script made by `render`.
pub(crate) fn parse(script: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let mut current: Option<String> = None;
    for line in script.lines() {
        if let Some(rest) = line
            .strip_prefix("  map ")
            .or_else(|| line.strip_prefix("  set "))
        {
            let name = rest.trim_end_matches(" {").to_string();
            parsed
                .elements
                .insert(name.clone(), (usize::MAX, String::new()));
            current = Some(name);
        } else if let Some(size) = line.strip_prefix("    size ") {
            if let Some(entry) = current.as_ref().and_then(|n| parsed.elements.get_mut(n)) {
                entry.0 = size.trim_end_matches(';').parse().unwrap_or(usize::MAX);
            }
            continue;
        } else if let Some(list) = line.strip_prefix("    elements = { ") {
            if let Some(entry) = current.as_ref().and_then(|n| parsed.elements.get_mut(n)) {
                entry.1 = list.trim_end_matches(" }").to_owned();
            }
            continue;
        } else if line.starts_with("  chain ") || line == "}" {
            current = None;
        }
        parsed.skeleton.push_str(line);
        parsed.skeleton.push('\n');
    }
    parsed
}

/// The elements of a list as written by `render`.
fn split(list: &str) -> Vec<&str> {
    if list.is_empty() {
        Vec::new()
    } else {
        list.split(", ").collect()
    }
}

/// The elements only in `before` and only in `after`, each sorted. Lists are rendered in
/// service order, so a change usually leaves a long common head and tail: only the elements
/// between them are hashed.
fn changes<'a>(before: &[&'a str], after: &[&'a str]) -> (Vec<&'a str>, Vec<&'a str>) {
    let head = before.iter().zip(after).take_while(|(a, b)| a == b).count();
    let tail = before[head..]
        .iter()
        .rev()
        .zip(after[head..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let before: HashSet<&str> = before[head..before.len() - tail].iter().copied().collect();
    let after: HashSet<&str> = after[head..after.len() - tail].iter().copied().collect();
    let mut removed: Vec<&str> = before.difference(&after).copied().collect();
    let mut added: Vec<&str> = after.difference(&before).copied().collect();
    removed.sort_unstable();
    added.sort_unstable();
    (removed, added)
}

/// The element changes from `old` to `new` in table `table` as one `nft -f` script, or `None`
/// when they differ in structure or a map would outgrow its size (then: rewrite everything).
/// `Some("")` means nothing changed.
pub(crate) fn script(table: &str, old: &Parsed, new: &Parsed) -> Option<String> {
    if old.skeleton != new.skeleton {
        return None;
    }
    let mut out = String::new();
    for (name, (_, after)) in &new.elements {
        let (size, before) = old.elements.get(name)?;
        if before == after {
            continue;
        }
        let (before, after) = (split(before), split(after));
        if after.len() > *size {
            return None;
        }
        let (removed, added) = changes(&before, &after);
        // Maps are keyed: delete by key.
        let removed: Vec<&str> = removed
            .into_iter()
            .map(|e| e.split(" : ").next().unwrap_or(e))
            .collect();
        if !removed.is_empty() {
            let _ = writeln!(
                out,
                "delete element inet {table} {name} {{ {} }}",
                removed.join(", ")
            );
        }
        if !added.is_empty() {
            let _ = writeln!(
                out,
                "add element inet {table} {name} {{ {} }}",
                added.join(", ")
            );
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "table ip t {\n  map m {\n    type x : y;\n    size 64;\n    elements = { a : 1, b : 2 }\n  }\n  set s {\n    type x;\n    size 64;\n  }\n  chain c {\n    jump d\n  }\n}\n";

    #[test]
    fn element_changes_become_one_small_script() {
        let new = OLD.replace("a : 1, b : 2", "b : 3, c : 4").replace(
            "    size 64;\n  }\n  chain",
            "    size 64;\n    elements = { z }\n  }\n  chain",
        );
        let script = script("t", &parse(OLD), &parse(&new)).unwrap();
        assert_eq!(
            script,
            "delete element inet t m { a, b }\nadd element inet t m { b : 3, c : 4 }\nadd element inet t s { z }\n"
        );
        assert_eq!(script_same(OLD), Some(String::new()));
        let restructured = OLD.replace("jump d", "jump e");
        assert_eq!(super::script("t", &parse(OLD), &parse(&restructured)), None);
    }

    #[test]
    fn only_elements_that_changed_are_sent_wherever_they_are_in_the_list() {
        let old = OLD.replace("a : 1, b : 2", "a : 1, b : 2, c : 3, d : 4, e : 5");
        let new = OLD.replace("a : 1, b : 2", "a : 1, x : 2, c : 3, e : 5, d : 4, f : 6");
        assert_eq!(
            script("t", &parse(&old), &parse(&new)).unwrap(),
            "delete element inet t m { b }\nadd element inet t m { f : 6, x : 2 }\n"
        );
        // Growing past the size hint needs a rewrite.
        let many: Vec<String> = (0..65).map(|i| format!("k{i} : {i}")).collect();
        let big = OLD.replace("a : 1, b : 2", &many.join(", "));
        assert_eq!(script("t", &parse(OLD), &parse(&big)), None);
    }

    fn script_same(s: &str) -> Option<String> {
        script("t", &parse(s), &parse(s))
    }
}
