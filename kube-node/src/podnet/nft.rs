//! The runtime's own nftables table (`inet kube-node-<prefix>`): hostPort DNAT and egress
//! masquerading for the pod network. Rewritten whole, in one `nft -f -` transaction, whenever
//! a pod's ports or the pod ranges change: the table is small (a few rules per hostPort).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use super::cidr::Ipv4Net;

/// The packet mark bit that flags hostPort connections from pods for masquerading (hairpin:
/// a pod reaching itself through its node's hostPort must see replies come back through the
/// node). Chosen clear of kube-proxy's 0x4000 (masquerade) and 0x8000 (drop).
pub(crate) const HAIRPIN_MARK: u32 = 0x2000;

/// A published port: traffic to `host_ip:host_port` (any local address when `host_ip` is
/// `None`) goes to `pod_ip:container_port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostPort {
    /// `tcp`, `udp` or `sctp`.
    pub(crate) protocol: &'static str,
    pub(crate) host_ip: Option<Ipv4Addr>,
    pub(crate) host_port: u16,
    pub(crate) pod_ip: Ipv4Addr,
    pub(crate) container_port: u16,
}

/// What the table holds.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rules {
    /// The pod ranges of this node: egress from them is masqueraded.
    pub(crate) pod_cidrs: Vec<Ipv4Net>,
    /// Destinations reached without masquerading: the pod ranges, the cluster CIDR, the
    /// service CIDR.
    pub(crate) no_masquerade: Vec<Ipv4Net>,
    /// Whether egress is masqueraded at all.
    pub(crate) masquerade: bool,
    pub(crate) host_ports: Vec<HostPort>,
}

/// The nftables name of a CRI protocol (`TCP`, `UDP`, `SCTP`), `None` for others.
pub(crate) fn protocol(name: &str) -> Option<&'static str> {
    match name.to_ascii_uppercase().as_str() {
        "" | "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        "SCTP" => Some("sctp"),
        _ => None,
    }
}

fn set(nets: &[Ipv4Net]) -> String {
    let items: Vec<String> = nets.iter().map(ToString::to_string).collect();
    format!("{{ {} }}", items.join(", "))
}

/// The script replacing `table` (family `inet`) with `rules`, atomically: creating the table
/// first makes the delete succeed when it does not exist yet.
pub(crate) fn render(table: &str, link_prefix: &str, rules: &Rules) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "table inet {table} {{}}");
    let _ = writeln!(s, "delete table inet {table}");
    let _ = writeln!(s, "table inet {table} {{");
    // hostPorts: from outside and from pods (prerouting), and from the node itself
    // (output), for every local address or the one asked for, as kube's hostport plugin.
    s.push_str("  chain hostports {\n");
    for hp in &rules.host_ports {
        let daddr = hp
            .host_ip
            .map(|ip| format!("ip daddr {ip} "))
            .unwrap_or_default();
        let matched = format!(
            "{daddr}meta l4proto {} th dport {}",
            hp.protocol, hp.host_port
        );
        let to = format!("dnat ip to {}:{}", hp.pod_ip, hp.container_port);
        if !rules.pod_cidrs.is_empty() {
            let _ = writeln!(
                s,
                "    {matched} ip saddr {} meta mark set meta mark | {HAIRPIN_MARK:#x} {to}",
                set(&rules.pod_cidrs)
            );
        }
        let _ = writeln!(s, "    {matched} {to}");
    }
    s.push_str("  }\n");
    s.push_str("  chain prerouting {\n");
    s.push_str("    type nat hook prerouting priority dstnat; policy accept;\n");
    s.push_str("    fib daddr type local jump hostports\n");
    s.push_str("  }\n");
    s.push_str("  chain output {\n");
    s.push_str("    type nat hook output priority -100; policy accept;\n");
    s.push_str("    fib daddr type local jump hostports\n");
    s.push_str("  }\n");
    s.push_str("  chain postrouting {\n");
    s.push_str("    type nat hook postrouting priority srcnat; policy accept;\n");
    let _ = writeln!(
        s,
        "    meta mark & {HAIRPIN_MARK:#x} == {HAIRPIN_MARK:#x} meta mark set meta mark ^ {HAIRPIN_MARK:#x} masquerade"
    );
    // A hostPort reached on 127.0.0.1 from the node: the pod cannot answer a loopback
    // source, so it sees the node's address on its veth.
    let _ = writeln!(
        s,
        "    ip saddr 127.0.0.0/8 oifname \"{link_prefix}*\" masquerade"
    );
    if rules.masquerade && !rules.pod_cidrs.is_empty() {
        let _ = write!(s, "    ip saddr {} ", set(&rules.pod_cidrs));
        if !rules.no_masquerade.is_empty() {
            let _ = write!(s, "ip daddr != {} ", set(&rules.no_masquerade));
        }
        s.push_str("masquerade\n");
    }
    s.push_str("  }\n");
    s.push_str("}\n");
    s
}

/// The script deleting `table` (fine if it does not exist).
pub(crate) fn delete_script(table: &str) -> String {
    format!("table inet {table} {{}}\ndelete table inet {table}\n")
}

/// Runs `nft -f -` with `script`.
pub(crate) async fn apply(script: &str) -> Result<(), String> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("running nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("running nft: {e}"))?;
    check(&out)
}

/// [`apply`] for `Drop` and builders (no runtime to await on).
pub(crate) fn apply_blocking(script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running nft: {e}"))?;
    check(&out)
}

fn check(out: &std::process::Output) -> Result<(), String> {
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft -f -: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("valid CIDR")
    }

    #[test]
    fn renders_hostports_and_masquerade() {
        let rules = Rules {
            pod_cidrs: vec![net("10.244.1.0/24")],
            no_masquerade: vec![net("10.96.0.0/12"), net("10.244.0.0/16")],
            masquerade: true,
            host_ports: vec![
                HostPort {
                    protocol: "tcp",
                    host_ip: None,
                    host_port: 8080,
                    pod_ip: Ipv4Addr::new(10, 244, 1, 2),
                    container_port: 80,
                },
                HostPort {
                    protocol: "udp",
                    host_ip: Some(Ipv4Addr::new(192, 0, 2, 2)),
                    host_port: 53,
                    pod_ip: Ipv4Addr::new(10, 244, 1, 3),
                    container_port: 5353,
                },
            ],
        };
        let script = render("kube-node-kn", "kn", &rules);
        assert!(script.starts_with("table inet kube-node-kn {}\ndelete table inet kube-node-kn\n"));
        assert!(script.contains(
            "    meta l4proto tcp th dport 8080 ip saddr { 10.244.1.0/24 } meta mark set meta mark | 0x2000 dnat ip to 10.244.1.2:80\n"
        ));
        assert!(script.contains("    meta l4proto tcp th dport 8080 dnat ip to 10.244.1.2:80\n"));
        assert!(script.contains(
            "    ip daddr 192.0.2.2 meta l4proto udp th dport 53 dnat ip to 10.244.1.3:5353\n"
        ));
        assert!(script.contains(
            "    ip saddr { 10.244.1.0/24 } ip daddr != { 10.96.0.0/12, 10.244.0.0/16 } masquerade\n"
        ));
        assert!(script.contains("oifname \"kn*\" masquerade"));
    }

    #[test]
    fn no_pod_ranges_no_masquerade() {
        let script = render("t", "kn", &Rules::default());
        assert!(!script.contains("ip saddr {"));
        assert_eq!(protocol("SCTP"), Some("sctp"));
        assert_eq!(protocol("ICMP"), None);
    }
}
