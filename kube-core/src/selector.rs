//! Label selectors (`a=b,c!=d,e in (f,g),!h` and `LabelSelector` with `matchExpressions`) and
//! field selectors (`spec.nodeName=n1,status.phase!=Failed`), with matching.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::object::DynamicObject;

/// A selector that could not be parsed or converted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector {input:?}: {message}")]
pub struct SelectorError {
    /// The selector text (or a rendering of the structured selector).
    pub input: String,
    /// What is wrong and where.
    pub message: String,
}

/// The operator of one label requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operator {
    /// `key=value` / `key==value`.
    Equals(String),
    /// `key!=value` (also true when the label is absent).
    NotEquals(String),
    /// `key in (a,b)`.
    In(Vec<String>),
    /// `key notin (a,b)` (also true when the label is absent).
    NotIn(Vec<String>),
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>5`: the label is an integer greater than the value.
    GreaterThan(i64),
    /// `key<5`: the label is an integer less than the value.
    LessThan(i64),
}

/// One `key <op> values` requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// Label key.
    pub key: String,
    /// What the key's value must satisfy.
    pub operator: Operator,
}

impl Requirement {
    /// Whether a set of labels satisfies this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.operator {
            Operator::Equals(v) => value == Some(v),
            Operator::NotEquals(v) => value != Some(v),
            Operator::In(vs) => value.is_some_and(|x| vs.contains(x)),
            Operator::NotIn(vs) => value.is_none_or(|x| !vs.contains(x)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan(n) => value
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            Operator::LessThan(n) => value
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.key;
        match &self.operator {
            Operator::Equals(v) => write!(f, "{k}={v}"),
            Operator::NotEquals(v) => write!(f, "{k}!={v}"),
            Operator::In(vs) => write!(f, "{k} in ({})", vs.join(",")),
            Operator::NotIn(vs) => write!(f, "{k} notin ({})", vs.join(",")),
            Operator::Exists => write!(f, "{k}"),
            Operator::DoesNotExist => write!(f, "!{k}"),
            Operator::GreaterThan(n) => write!(f, "{k}>{n}"),
            Operator::LessThan(n) => write!(f, "{k}<{n}"),
        }
    }
}

/// A label selector: every requirement must hold. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// A selector from requirements (all must hold).
    pub fn from_requirements(requirements: Vec<Requirement>) -> Self {
        Self { requirements }
    }

    /// A selector requiring each `key=value`.
    pub fn from_labels<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        Self {
            requirements: labels
                .into_iter()
                .map(|(k, v)| Requirement {
                    key: k.clone(),
                    operator: Operator::Equals(v.clone()),
                })
                .collect(),
        }
    }

    /// Parses the string syntax: `a=b,c!=d,e in (f,g),f notin (h),g,!h`.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        Parser { input, pos: 0 }.parse()
    }

    /// Converts a structured `LabelSelector` (`matchLabels` and `matchExpressions`).
    pub fn from_label_selector(selector: &LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            validate_key(key)
                .and_then(|()| validate_value(value))
                .map_err(|m| SelectorError {
                    input: format!("matchLabels {key}={value}"),
                    message: m,
                })?;
            requirements.push(Requirement {
                key: key.clone(),
                operator: Operator::Equals(value.clone()),
            });
        }
        for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
            let err = |message: String| SelectorError {
                input: format!("matchExpressions[{i}] {} {}", expr.key, expr.operator),
                message,
            };
            validate_key(&expr.key).map_err(err)?;
            let values = expr.values.clone().unwrap_or_default();
            for v in &values {
                validate_value(v).map_err(err)?;
            }
            let operator = match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(err("operator In/NotIn needs at least one value".into()));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(err("operator Exists/DoesNotExist takes no values".into()));
                }
                "In" => Operator::In(values),
                "NotIn" => Operator::NotIn(values),
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => return Err(err(format!("unknown operator {other:?}"))),
            };
            requirements.push(Requirement {
                key: expr.key.clone(),
                operator,
            });
        }
        Ok(Self { requirements })
    }

    /// Whether a set of labels satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether an object's labels satisfy every requirement.
    pub fn matches_object(&self, object: &DynamicObject) -> bool {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.matches(object.metadata.labels.as_ref().unwrap_or(&EMPTY))
    }

    /// Whether this selector has no requirements (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl FromStr for Selector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn validate_name(name: &str, what: &str) -> Result<(), String> {
    if name.len() > 63 {
        return Err(format!("{what} {name:?} is longer than 63 characters"));
    }
    let ok_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok_ends || !name.chars().all(is_name_char) {
        return Err(format!(
            "{what} {name:?} must be alphanumeric characters, '-', '_' or '.', starting and ending with an alphanumeric character"
        ));
    }
    Ok(())
}

/// Checks a label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63 characters.
pub fn validate_key(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 {
                return Err(format!(
                    "label key prefix {prefix:?} must be 1 to 253 characters"
                ));
            }
            if !prefix.split('.').all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            }) {
                return Err(format!(
                    "label key prefix {prefix:?} must be a lower-case DNS subdomain"
                ));
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err("label key must not be empty".into());
    }
    validate_name(name, "label key name")
}

/// Checks a label value: empty, or at most 63 name characters.
pub fn validate_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    validate_name(value, "label value")
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> SelectorError {
        SelectorError {
            input: self.input.to_string(),
            message: format!("{} at position {}", message.into(), self.pos),
        }
    }

    fn rest(&self) -> &str {
        &self.input[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.input.len() - trimmed.len();
    }

    fn eat(&mut self, token: &str) -> bool {
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn word(&mut self) -> &str {
        let start = self.pos;
        let len = self
            .rest()
            .find(|c: char| c.is_whitespace() || "=!,()<>".contains(c))
            .unwrap_or(self.rest().len());
        self.pos += len;
        &self.input[start..self.pos]
    }

    fn keyword(&mut self, kw: &str) -> bool {
        let rest = self.rest();
        if rest.starts_with(kw)
            && rest[kw.len()..].starts_with(|c: char| c.is_whitespace() || c == '(')
        {
            self.pos += kw.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<String, SelectorError> {
        self.skip_ws();
        let v = self.word().to_string();
        validate_value(&v).map_err(|m| self.error(m))?;
        Ok(v)
    }

    fn set(&mut self) -> Result<Vec<String>, SelectorError> {
        self.skip_ws();
        if !self.eat("(") {
            return Err(self.error("expected '(' to open a set of values"));
        }
        let mut values = Vec::new();
        loop {
            values.push(self.value()?);
            self.skip_ws();
            if self.eat(")") {
                break;
            }
            if !self.eat(",") {
                return Err(self.error("expected ',' or ')' in a set of values"));
            }
        }
        if values.iter().all(String::is_empty) {
            return Err(self.error("a set of values must not be empty"));
        }
        Ok(values)
    }

    fn integer(&mut self) -> Result<i64, SelectorError> {
        self.skip_ws();
        let w = self.word().to_string();
        w.parse()
            .map_err(|_| self.error(format!("{w:?} is not an integer")))
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        self.skip_ws();
        let negated = self.eat("!");
        self.skip_ws();
        let key = self.word().to_string();
        if key.is_empty() {
            return Err(self.error("expected a label key"));
        }
        validate_key(&key).map_err(|m| self.error(m))?;
        self.skip_ws();
        let at_end = self.rest().is_empty() || self.rest().starts_with(',');
        if negated {
            if !at_end {
                return Err(self.error("'!key' takes no operator"));
            }
            return Ok(Requirement {
                key,
                operator: Operator::DoesNotExist,
            });
        }
        let operator = if at_end {
            Operator::Exists
        } else if self.eat("==") || self.eat("=") {
            Operator::Equals(self.value()?)
        } else if self.eat("!=") {
            Operator::NotEquals(self.value()?)
        } else if self.eat(">") {
            Operator::GreaterThan(self.integer()?)
        } else if self.eat("<") {
            Operator::LessThan(self.integer()?)
        } else if self.keyword("notin") {
            Operator::NotIn(self.set()?)
        } else if self.keyword("in") {
            Operator::In(self.set()?)
        } else {
            return Err(self.error(format!(
                "expected one of =, ==, !=, in, notin, >, < after key {key:?}"
            )));
        };
        Ok(Requirement { key, operator })
    }

    fn parse(mut self) -> Result<Selector, SelectorError> {
        let mut requirements = Vec::new();
        self.skip_ws();
        if self.rest().is_empty() {
            return Ok(Selector::everything());
        }
        loop {
            requirements.push(self.requirement()?);
            self.skip_ws();
            if self.rest().is_empty() {
                break;
            }
            if !self.eat(",") {
                return Err(self.error("expected ',' between requirements"));
            }
        }
        Ok(Selector { requirements })
    }
}

/// One `path=value` or `path!=value` term of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Dotted field path, e.g. `spec.nodeName`.
    pub path: String,
    /// The value compared against (a missing field reads as the empty string).
    pub value: String,
    /// `true` for `!=`.
    pub negated: bool,
}

/// A field selector: every term must hold. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// A selector requiring `path == value`.
    pub fn equals(path: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            requirements: vec![FieldRequirement {
                path: path.into(),
                value: value.into(),
                negated: false,
            }],
        }
    }

    /// The value a positive term (`path=value`) requires of `path`, if the selector has one:
    /// what a store indexes its watches by (e.g. `spec.nodeName`).
    pub fn required(&self, path: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.path == path && !r.negated)
            .map(|r| r.value.as_str())
    }

    /// Adds a term.
    pub fn and(mut self, requirement: FieldRequirement) -> Self {
        self.requirements.push(requirement);
        self
    }

    /// Parses `a=b,c==d,e!=f`.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if input.trim().is_empty() {
            return Ok(Self::default());
        }
        for term in input.split(',') {
            let (path, value, negated) = if let Some((p, v)) = term.split_once("!=") {
                (p, v, true)
            } else if let Some((p, v)) = term.split_once("==") {
                (p, v, false)
            } else if let Some((p, v)) = term.split_once('=') {
                (p, v, false)
            } else {
                return Err(SelectorError {
                    input: input.to_string(),
                    message: format!("term {term:?} needs =, == or !="),
                });
            };
            let path = path.trim();
            if path.is_empty() {
                return Err(SelectorError {
                    input: input.to_string(),
                    message: format!("term {term:?} has no field path"),
                });
            }
            requirements.push(FieldRequirement {
                path: path.to_string(),
                value: value.trim().to_string(),
                negated,
            });
        }
        Ok(Self { requirements })
    }

    /// Whether an object satisfies every term.
    pub fn matches(&self, object: &DynamicObject) -> bool {
        self.requirements.iter().all(|r| {
            let actual = match object.field(&r.path) {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(s)) => s,
                Some(other) => other.to_string(),
            };
            (actual == r.value) != r.negated
        })
    }

    /// Whether this selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The terms.
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }
}

impl FromStr for FieldSelector {
    type Err = SelectorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = if r.negated { "!=" } else { "=" };
            write!(f, "{}{op}{}", r.path, r.value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn string_syntax_parses_and_matches() {
        let s = Selector::parse("a=b,c!=d, e in (f, g),!h,i notin (j),k,l==m").unwrap();
        assert_eq!(s.requirements().len(), 7);
        let good = labels(&[("a", "b"), ("e", "g"), ("k", ""), ("l", "m")]);
        assert!(s.matches(&good));
        let mut bad = good.clone();
        bad.insert("h".into(), "x".into());
        assert!(!s.matches(&bad));
        let mut bad = good.clone();
        bad.insert("e".into(), "z".into());
        assert!(!s.matches(&bad));
        assert_eq!(s.to_string(), "a=b,c!=d,e in (f,g),!h,i notin (j),k,l=m");
        assert_eq!(Selector::parse(&s.to_string()).unwrap(), s);
        assert!(Selector::parse("").unwrap().matches(&labels(&[])));
        let gt = Selector::parse("n>3,m<10").unwrap();
        assert!(gt.matches(&labels(&[("n", "4"), ("m", "9")])));
        assert!(!gt.matches(&labels(&[("n", "x"), ("m", "9")])));
    }

    #[test]
    fn bad_selectors_name_the_problem() {
        for bad in [
            "a=b,", "a in b", "a in ()", "=b", "a=b c", "a==(b)", "!a=b", "-a=b", "a b",
        ] {
            let err = Selector::parse(bad).unwrap_err();
            assert_eq!(err.input, bad);
            assert!(err.message.contains("position"), "{err}");
        }
        let err = Selector::parse("app=web,tier in (a,b").unwrap_err();
        assert!(err.message.contains("expected ',' or ')'"), "{err}");
    }

    #[test]
    fn label_selector_expressions() {
        let ls = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["front".into(), "back".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        let s = Selector::from_label_selector(&ls).unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "front")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("canary", "1")
        ])));
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "Near".into(),
                values: None,
            }]),
            ..Default::default()
        };
        let err = Selector::from_label_selector(&bad).unwrap_err();
        assert!(err.message.contains("unknown operator \"Near\""), "{err}");
    }

    #[test]
    fn field_selectors_read_object_fields() {
        let pod: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}
        }))
        .unwrap();
        assert!(
            FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed")
                .unwrap()
                .matches(&pod)
        );
        assert!(
            !FieldSelector::parse("metadata.name==q")
                .unwrap()
                .matches(&pod)
        );
        assert!(
            FieldSelector::parse("spec.schedulerName=")
                .unwrap()
                .matches(&pod)
        );
        assert!(FieldSelector::parse("spec.nodeName").is_err());
    }
}
