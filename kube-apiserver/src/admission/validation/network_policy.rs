//! NetworkPolicy validation, with the rules and wording of Kubernetes'
//! `pkg/apis/networking/validation`: selectors are valid label selectors; ports have a
//! supported protocol, a valid number or name, and an `endPort` only after a numeric `port` and
//! not below it; a peer names at least one selector or an `ipBlock`, and an `ipBlock` alone;
//! an `ipBlock`'s `except` ranges lie strictly inside its `cidr`; `policyTypes` are `Ingress`
//! or `Egress`, at most two.

use std::net::IpAddr;

use kube_core::object::DynamicObject;
use kube_core::selector::{validate_key, validate_value};
use serde_json::Value;

use super::{not_supported, required_when};
use crate::encoding::status::Cause;

const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];
const POLICY_TYPES: [&str; 2] = ["Ingress", "Egress"];
const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";
const CIDR_EXAMPLE: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

/// Appends the causes a NetworkPolicy's spec gives.
pub(super) fn validate(object: &DynamicObject, causes: &mut Vec<Cause>) {
    // The typed form decoded already, so shapes are right; an absent spec is an empty one.
    let Some(spec) = object.data.get("spec") else {
        return;
    };
    if let Some(selector) = spec.get("podSelector") {
        label_selector("spec.podSelector", selector, causes);
    }
    for (direction, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in items(spec.get(direction)).iter().enumerate() {
            let at = format!("spec.{direction}[{i}]");
            for (j, port) in items(rule.get("ports")).iter().enumerate() {
                policy_port(&format!("{at}.ports[{j}]"), port, causes);
            }
            for (j, peer) in items(rule.get(peers)).iter().enumerate() {
                policy_peer(&format!("{at}.{peers}[{j}]"), peer, causes);
            }
        }
    }
    let types = items(spec.get("policyTypes"));
    if types.len() > POLICY_TYPES.len() {
        causes.push(Cause::invalid(
            "spec.policyTypes",
            &Value::Array(types.to_vec()).to_string(),
            "may not specify more than two policyTypes",
        ));
        return;
    }
    for (i, kind) in types.iter().enumerate() {
        let kind = kind.as_str().unwrap_or_default();
        if !POLICY_TYPES.contains(&kind) {
            causes.push(not_supported(
                format!("spec.policyTypes[{i}]"),
                kind,
                &POLICY_TYPES,
            ));
        }
    }
}

fn items(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// Kubernetes prints integer values unquoted: `Invalid value: 70000: ...`.
fn invalid_int(field: String, value: i64, why: &str) -> Cause {
    Cause {
        message: format!("Invalid value: {value}: {why}"),
        ..Cause::invalid(field, "", why)
    }
}

/// A label selector, checked as Kubernetes' `ValidateLabelSelector` words it.
fn label_selector(field: &str, selector: &Value, causes: &mut Vec<Cause>) {
    if let Some(Value::Object(labels)) = selector.get("matchLabels") {
        let at = format!("{field}.matchLabels");
        for (key, value) in labels {
            if let Err(why) = validate_key(key) {
                causes.push(Cause::invalid(at.clone(), key, why));
            }
            let value = value.as_str().unwrap_or_default();
            if let Err(why) = validate_value(value) {
                causes.push(Cause::invalid(at.clone(), value, why));
            }
        }
    }
    for (i, requirement) in items(selector.get("matchExpressions")).iter().enumerate() {
        let at = format!("{field}.matchExpressions[{i}]");
        let operator = requirement
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let values = items(requirement.get("values"));
        match operator {
            "In" | "NotIn" if values.is_empty() => causes.push(required_when(
                format!("{at}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => causes.push(Cause::forbidden(
                format!("{at}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => causes.push(Cause::invalid(
                format!("{at}.operator"),
                other,
                "not a valid selector operator",
            )),
        }
        let key = requirement
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Err(why) = validate_key(key) {
            causes.push(Cause::invalid(format!("{at}.key"), key, why));
        }
        for (j, value) in values.iter().enumerate() {
            let value = value.as_str().unwrap_or_default();
            if let Err(why) = validate_value(value) {
                causes.push(Cause::invalid(format!("{at}.values[{j}]"), value, why));
            }
        }
    }
}

fn policy_port(at: &str, port: &Value, causes: &mut Vec<Cause>) {
    if let Some(protocol) = port.get("protocol").and_then(Value::as_str) {
        if !PROTOCOLS.contains(&protocol) {
            causes.push(not_supported(
                format!("{at}.protocol"),
                protocol,
                &PROTOCOLS,
            ));
        }
    }
    let end_port = port.get("endPort").and_then(Value::as_i64);
    match port.get("port") {
        Some(Value::Number(number)) => {
            let number = number.as_i64().unwrap_or(0);
            if !(1..=65535).contains(&number) {
                causes.push(invalid_int(format!("{at}.port"), number, PORT_RANGE));
            }
            if let Some(end) = end_port {
                if end < number {
                    causes.push(invalid_int(
                        format!("{at}.endPort"),
                        end,
                        "must be greater than or equal to `port`",
                    ));
                }
                if !(1..=65535).contains(&end) {
                    causes.push(invalid_int(format!("{at}.endPort"), end, PORT_RANGE));
                }
            }
        }
        Some(Value::String(name)) => {
            if let Some(end) = end_port {
                causes.push(invalid_int(
                    format!("{at}.endPort"),
                    end,
                    "may not be specified when `port` is non-numeric",
                ));
            }
            for why in port_name(name) {
                causes.push(Cause::invalid(format!("{at}.port"), name, why));
            }
        }
        _ => {
            if let Some(end) = end_port {
                causes.push(invalid_int(
                    format!("{at}.endPort"),
                    end,
                    "may not be specified when `port` is not specified",
                ));
            }
        }
    }
}

/// What is wrong with a port name (an IANA service name), in Kubernetes' words.
fn port_name(name: &str) -> Vec<&'static str> {
    let mut errors = Vec::new();
    if name.len() > 15 {
        errors.push("must be no more than 15 characters");
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        errors.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)");
    }
    if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        errors.push("must contain at least one letter (a-z)");
    }
    if name.contains("--") {
        errors.push("must not contain consecutive hyphens");
    }
    if name.starts_with('-') || name.ends_with('-') {
        errors.push("must not begin or end with a hyphen");
    }
    errors
}

fn policy_peer(at: &str, peer: &Value, causes: &mut Vec<Cause>) {
    let mut peers = 0;
    for selector in ["podSelector", "namespaceSelector"] {
        if let Some(value) = peer.get(selector).filter(|v| !v.is_null()) {
            peers += 1;
            label_selector(&format!("{at}.{selector}"), value, causes);
        }
    }
    let ip_block = peer.get("ipBlock").filter(|v| !v.is_null());
    if let Some(block) = ip_block {
        peers += 1;
        self::ip_block(&format!("{at}.ipBlock"), block, causes);
    }
    if peers == 0 {
        causes.push(required_when(at.to_string(), "must specify a peer"));
    } else if peers > 1 && ip_block.is_some() {
        causes.push(Cause::forbidden(
            at,
            "may not specify both ipBlock and another peer",
        ));
    }
}

/// A CIDR as Kubernetes' legacy fields take it: the network address and prefix length.
fn parse_cidr(value: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = value.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((addr, len))
}

/// Whether `addr` lies in `network/len`.
fn contains((network, len): (IpAddr, u8), addr: IpAddr) -> bool {
    match (network, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

fn ip_block(at: &str, block: &Value, causes: &mut Vec<Cause>) {
    let cidr = block
        .get("cidr")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if cidr.is_empty() {
        causes.push(Cause::required(format!("{at}.cidr")));
        return;
    }
    let Some(network) = parse_cidr(cidr) else {
        causes.push(Cause::invalid(format!("{at}.cidr"), cidr, CIDR_EXAMPLE));
        return;
    };
    for (i, except) in items(block.get("except")).iter().enumerate() {
        let field = format!("{at}.except[{i}]");
        let except = except.as_str().unwrap_or_default();
        let Some((addr, len)) = parse_cidr(except) else {
            causes.push(Cause::invalid(field, except, CIDR_EXAMPLE));
            continue;
        };
        if !contains(network, addr) || network.1 >= len {
            causes.push(Cause::invalid(
                field,
                except,
                "must be a strict subset of `cidr`",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(spec: Value) -> Vec<Cause> {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "default"}, "spec": spec,
        }))
        .expect("object");
        let mut causes = Vec::new();
        validate(&object, &mut causes);
        causes
    }

    fn messages(spec: Value) -> Vec<String> {
        check(spec)
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    #[test]
    fn a_default_deny_and_full_rules_are_valid() {
        assert!(check(json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})).is_empty());
        assert!(
            check(json!({"podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [
                {"podSelector": {"matchLabels": {"role": "api"}},
                 "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]}},
                {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
              "ports": [{"port": 5432, "endPort": 5440, "protocol": "TCP"}, {"port": "metrics"}]}],
            "egress": [{}]}))
            .is_empty()
        );
    }

    #[test]
    fn ports_follow_kubernetes_rules() {
        assert_eq!(
            messages(json!({"ingress": [{"ports": [
                {"port": 80, "endPort": 79},
                {"port": "http", "endPort": 90},
                {"endPort": 90},
                {"port": 70000, "protocol": "ICMP"},
                {"port": "Bad--"}]}]})),
            [
                "spec.ingress[0].ports[0].endPort: Invalid value: 79: must be greater than or equal to `port`",
                "spec.ingress[0].ports[1].endPort: Invalid value: 90: may not be specified when `port` is non-numeric",
                "spec.ingress[0].ports[2].endPort: Invalid value: 90: may not be specified when `port` is not specified",
                "spec.ingress[0].ports[3].protocol: Unsupported value: \"ICMP\": supported values: \"TCP\", \"UDP\", \"SCTP\"",
                "spec.ingress[0].ports[3].port: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.ingress[0].ports[4].port: Invalid value: \"Bad--\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
                "spec.ingress[0].ports[4].port: Invalid value: \"Bad--\": must not contain consecutive hyphens",
                "spec.ingress[0].ports[4].port: Invalid value: \"Bad--\": must not begin or end with a hyphen",
            ]
        );
    }

    #[test]
    fn peers_and_ip_blocks_follow_kubernetes_rules() {
        assert_eq!(
            messages(json!({"egress": [{"to": [
                {},
                {"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}},
                {"ipBlock": {"cidr": "10.0.0.0/33"}},
                {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24", "10.0.0.0/16", "10.0.1.0/24"]}},
                {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}}]}]})),
            [
                "spec.egress[0].to[0]: Required value: must specify a peer",
                "spec.egress[0].to[1]: Forbidden: may not specify both ipBlock and another peer",
                "spec.egress[0].to[2].ipBlock.cidr: Invalid value: \"10.0.0.0/33\": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                "spec.egress[0].to[3].ipBlock.except[0]: Invalid value: \"10.1.0.0/24\": must be a strict subset of `cidr`",
                "spec.egress[0].to[3].ipBlock.except[1]: Invalid value: \"10.0.0.0/16\": must be a strict subset of `cidr`",
                "spec.egress[0].to[4].podSelector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
            ]
        );
    }

    #[test]
    fn policy_types_are_ingress_or_egress() {
        assert_eq!(
            messages(json!({"policyTypes": ["Ingress", "Sideways"]})),
            [
                "spec.policyTypes[1]: Unsupported value: \"Sideways\": supported values: \"Ingress\", \"Egress\""
            ]
        );
        assert_eq!(
            check(json!({"policyTypes": ["Ingress", "Egress", "Ingress"]}))[0].message,
            r#"Invalid value: "["Ingress","Egress","Ingress"]": may not specify more than two policyTypes"#
        );
    }
}
