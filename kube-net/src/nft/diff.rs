//! Incremental updates: when a new ruleset differs from the applied one only in map and set
//! elements (the common case: endpoints come and go, services are added), send just those
//! element changes, still as one transaction, instead of rewriting 100,000 elements.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// A rendered script split into its structure and its elements.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    /// Everything but element lists and size hints: equal skeletons mean the same tables,
    /// chains and rules.
    skeleton: String,
    /// Map or set name → (its size hint, its elements).
    elements: BTreeMap<String, (usize, BTreeSet<String>)>,
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
                .insert(name.clone(), (usize::MAX, BTreeSet::new()));
            current = Some(name);
        } else if let Some(size) = line.strip_prefix("    size ") {
            if let Some(entry) = current.as_ref().and_then(|n| parsed.elements.get_mut(n)) {
                entry.0 = size.trim_end_matches(';').parse().unwrap_or(usize::MAX);
            }
            continue;
        } else if let Some(list) = line.strip_prefix("    elements = { ") {
            if let Some(entry) = current.as_ref().and_then(|n| parsed.elements.get_mut(n)) {
                entry.1 = list
                    .trim_end_matches(" }")
                    .split(", ")
                    .map(str::to_owned)
                    .collect();
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
        if after.len() > *size {
            return None;
        }
        let is_map = |e: &str| e.contains(" : ");
        let removed: Vec<&str> = before
            .difference(after)
            .map(|e| {
                // Maps are keyed: delete by key.
                if is_map(e) {
                    e.split(" : ").next().unwrap_or(e)
                } else {
                    e.as_str()
                }
            })
            .collect();
        let added: Vec<&str> = after.difference(before).map(String::as_str).collect();
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

    fn script_same(s: &str) -> Option<String> {
        script("t", &parse(s), &parse(s))
    }
}
