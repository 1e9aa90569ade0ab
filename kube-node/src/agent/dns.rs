//! A pod's `/etc/resolv.conf` and `/etc/hosts`, formed as the kubelet forms them (its DNS
//! configurer, pkg/kubelet/network/dns/dns.go, and `managedHostsFileContent` in
//! pkg/kubelet/kubelet_pods.go), written under the pod's directory when its sandbox is made
//! and bind-mounted into each of its containers (see [`Agent::pod_files`]).
//!
//! `dnsPolicy`: `ClusterFirst` (the default) gives the cluster DNS servers, the search path
//! `<ns>.svc.<domain> svc.<domain> <domain>` then the node's, and `options ndots:5`; without
//! cluster DNS servers it falls back to `Default`, with a `MissingClusterDNS` warning.
//! `ClusterFirst` on a `hostNetwork` pod is `Default` too; `ClusterFirstWithHostNet` is
//! `ClusterFirst` for them. `Default` is the node's resolv.conf. `None` starts empty. The pod's
//! `dnsConfig` is then merged in, and the result cut to the resolver's limits (a
//! `DNSConfigForming` warning says what was left out).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{HostAlias, Node, Pod, PodDNSConfig};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_core::events::EventType;
use kube_core::runtime::Mount;

use super::Agent;

/// At most this many nameservers (glibc's `MAXNS`).
pub(crate) const MAX_NAMESERVERS: usize = 3;
/// At most this many search domains.
pub(crate) const MAX_SEARCH_PATHS: usize = 32;
/// At most this many characters in the search line.
pub(crate) const MAX_SEARCH_LIST_CHARS: usize = 2048;
/// Longer search domains are dropped (some resolvers abort on them).
const MAX_SEARCH_DOMAIN_CHARS: usize = 253;
/// Pod hostnames are cut to this length (a DNS label).
const MAX_HOSTNAME_CHARS: usize = 63;

/// Where the files appear in containers.
pub(crate) const RESOLV_CONF: &str = "/etc/resolv.conf";
/// See [`RESOLV_CONF`].
pub(crate) const HOSTS: &str = "/etc/hosts";
/// The node's hosts file, which `hostNetwork` pods see (with their `hostAliases`).
const NODE_HOSTS: &str = "/etc/hosts";

const MANAGED_HOSTS_HEADER: &str = "# Kubernetes-managed hosts file.\n";
const MANAGED_HOSTS_HEADER_HOST_NETWORK: &str = "# Kubernetes-managed hosts file (host network).\n";

/// What a resolv.conf holds: nameservers, search domains, options (`name` or `name:value`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DnsConfig {
    pub(crate) servers: Vec<String>,
    pub(crate) searches: Vec<String>,
    pub(crate) options: Vec<String>,
}

impl DnsConfig {
    /// Parses a resolv.conf as the kubelet does: nameservers accumulate, the last `search`
    /// line wins (trailing dots dropped, `.` ignored), options accumulate with a later one
    /// replacing an earlier one of the same name; comments and other lines are ignored.
    pub(crate) fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("nameserver") => out.servers.extend(fields.next().map(str::to_string)),
                Some("search") => {
                    out.searches = fields
                        .filter(|s| *s != ".")
                        .map(|s| s.trim_end_matches('.').to_string())
                        .collect();
                }
                Some("options") => {
                    for option in fields {
                        set_option(&mut out.options, option_name(option), option.to_string());
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The file, as containerd writes it from a CRI `DNSConfig`: `search`, one `nameserver`
    /// line each, `options`.
    pub(crate) fn to_resolv_conf(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for server in &self.servers {
            out.push_str(&format!("nameserver {server}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

fn option_name(option: &str) -> &str {
    option.split_once(':').map_or(option, |(name, _)| name)
}

/// Sets `option` (named `name`) in place of one of the same name, else at the end.
fn set_option(options: &mut Vec<String>, name: &str, option: String) {
    match options.iter_mut().find(|o| option_name(o) == name) {
        Some(slot) => *slot = option,
        None => options.push(option),
    }
}

/// Appends what is not there yet.
fn append_unique(list: &mut Vec<String>, more: impl IntoIterator<Item = String>) {
    for item in more {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

/// A Warning Event about the pod the kubelet would record while forming its DNS config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Warning {
    pub(crate) reason: &'static str,
    pub(crate) message: String,
}

/// The node's DNS settings: the kubelet's `clusterDNS`, `clusterDomain` and `resolvConf`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NodeDns<'a> {
    pub(crate) cluster_dns: &'a [IpAddr],
    pub(crate) cluster_domain: &'a str,
    /// The node's resolv.conf, parsed; `None` when there is none to read (the kubelet's
    /// `resolvConf: ""`): `Default` then means the local machine's resolver.
    pub(crate) host: Option<&'a DnsConfig>,
    /// Whether the node's IP is IPv6 (the local resolver is then `::1`).
    pub(crate) node_ipv6: bool,
}

/// How a pod's DNS config starts, by `dnsPolicy` (the kubelet's `podDNSType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base {
    Cluster,
    Host,
    Empty,
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

fn base(pod: &Pod) -> Base {
    let policy = pod.spec.as_ref().and_then(|s| s.dns_policy.as_deref());
    match policy.unwrap_or("ClusterFirst") {
        "None" => Base::Empty,
        "ClusterFirstWithHostNet" => Base::Cluster,
        "ClusterFirst" if !host_network(pod) => Base::Cluster,
        "ClusterFirst" | "Default" => Base::Host,
        other => {
            // The API server rejects these; the kubelet falls back to ClusterFirst.
            tracing::warn!(policy = other, "invalid dnsPolicy; using ClusterFirst");
            Base::Cluster
        }
    }
}

/// The kubelet's `format.Pod`: `name_namespace(uid)`.
fn pod_ref(pod: &Pod) -> String {
    let m = &pod.metadata;
    format!(
        "{}_{}({})",
        m.name.as_deref().unwrap_or_default(),
        m.namespace.as_deref().unwrap_or_default(),
        m.uid.as_deref().unwrap_or_default()
    )
}

/// The message of the kubelet's `MissingClusterDNS` warning (about the node; the pod's
/// prefixes it with `pod: "<pod>". `).
pub(crate) const MISSING_CLUSTER_DNS: &str = "kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.";

/// The pod's DNS config, and the warnings forming it gave (the kubelet's `GetPodDNS`).
pub(crate) fn pod_dns(pod: &Pod, node: &NodeDns<'_>) -> (DnsConfig, Vec<Warning>) {
    let mut warnings = Vec::new();
    let host = node.host.cloned().unwrap_or_default();
    let mut config = match base(pod) {
        Base::Empty => DnsConfig::default(),
        Base::Cluster if !node.cluster_dns.is_empty() => {
            let mut searches = Vec::new();
            if !node.cluster_domain.is_empty() {
                let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
                let domain = node.cluster_domain;
                searches = vec![
                    format!("{ns}.svc.{domain}"),
                    format!("svc.{domain}"),
                    domain.to_string(),
                ];
            }
            append_unique(&mut searches, host.searches);
            DnsConfig {
                servers: node.cluster_dns.iter().map(IpAddr::to_string).collect(),
                searches,
                options: vec!["ndots:5".to_string()],
            }
        }
        which => {
            if which == Base::Cluster {
                warnings.push(Warning {
                    reason: "MissingClusterDNS",
                    message: format!("pod: \"{}\". {MISSING_CLUSTER_DNS}", pod_ref(pod)),
                });
            }
            match node.host {
                Some(_) => host,
                // No resolv.conf: the local machine's resolver, and no search.
                None => DnsConfig {
                    servers: vec![if node.node_ipv6 { "::1" } else { "127.0.0.1" }.to_string()],
                    searches: vec![".".to_string()],
                    options: Vec::new(),
                },
            }
        }
    };
    if let Some(extra) = pod.spec.as_ref().and_then(|s| s.dns_config.as_ref()) {
        merge(&mut config, extra);
    }
    fit_limits(&mut config, &mut warnings);
    (config, warnings)
}

/// Merges the pod's `dnsConfig` (the kubelet's `appendDNSConfig`): nameservers and searches
/// appended without duplicates, options set by name (a pod's option replaces the base's).
fn merge(config: &mut DnsConfig, extra: &PodDNSConfig) {
    append_unique(
        &mut config.servers,
        extra.nameservers.iter().flatten().cloned(),
    );
    append_unique(
        &mut config.searches,
        extra.searches.iter().flatten().cloned(),
    );
    for option in extra.options.iter().flatten() {
        let Some(name) = option.name.as_deref() else {
            continue;
        };
        let text = match option.value.as_deref().filter(|v| !v.is_empty()) {
            Some(value) => format!("{name}:{value}"),
            None => name.to_string(),
        };
        set_option(&mut config.options, name, text);
    }
}

/// Cuts the config to the resolver's limits, as the kubelet's `formDNSConfigFitsLimits`.
fn fit_limits(config: &mut DnsConfig, warnings: &mut Vec<Warning>) {
    if config.servers.len() > MAX_NAMESERVERS {
        config.servers.truncate(MAX_NAMESERVERS);
        warnings.push(Warning {
            reason: "DNSConfigForming",
            message: format!(
                "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: {}",
                config.servers.join(" ")
            ),
        });
    }
    let searches = &mut config.searches;
    let mut exceeded = false;
    if searches.len() > MAX_SEARCH_PATHS {
        searches.truncate(MAX_SEARCH_PATHS);
        exceeded = true;
    }
    let before = searches.len();
    searches.retain(|s| s.len() <= MAX_SEARCH_DOMAIN_CHARS);
    exceeded |= searches.len() != before;
    let line_len = |s: &[String]| {
        s.iter()
            .map(|d| d.len() + 1)
            .sum::<usize>()
            .saturating_sub(1)
    };
    if line_len(searches) > MAX_SEARCH_LIST_CHARS {
        while line_len(searches) > MAX_SEARCH_LIST_CHARS {
            searches.pop();
        }
        exceeded = true;
    }
    if exceeded {
        warnings.push(Warning {
            reason: "DNSConfigForming",
            message: format!(
                "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: {}",
                searches.join(" ")
            ),
        });
    }
}

/// The pod's hostname: `spec.hostname`, else its name, cut to 63 characters without a
/// trailing `-` or `.` (the kubelet's `GeneratePodHostNameAndDomain`).
pub(crate) fn hostname(pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    let name = spec
        .and_then(|s| s.hostname.as_deref())
        .filter(|h| !h.is_empty())
        .or(pod.metadata.name.as_deref())
        .unwrap_or_default();
    if name.len() <= MAX_HOSTNAME_CHARS {
        return name.to_string();
    }
    let mut cut = MAX_HOSTNAME_CHARS;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    name[..cut].trim_end_matches(['-', '.']).to_string()
}

/// `<subdomain>.<namespace>.svc.<cluster domain>` for a pod with a `subdomain`.
pub(crate) fn host_domain(pod: &Pod, cluster_domain: &str) -> Option<String> {
    let sub = pod
        .spec
        .as_ref()
        .and_then(|s| s.subdomain.as_deref())
        .filter(|s| !s.is_empty())?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    Some(format!("{sub}.{ns}.svc.{cluster_domain}"))
}

/// The `hostAliases` section of a hosts file (the kubelet's `hostsEntriesFromHostAliases`).
fn alias_entries(aliases: &[HostAlias]) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for alias in aliases {
        let names = alias.hostnames.as_deref().unwrap_or_default().join("\t");
        out.push_str(&format!("{}\t{names}\n", alias.ip));
    }
    out
}

/// The hosts file of a pod with its own network: localhost, the IPv6 names, the pod's
/// addresses with its name (fully qualified first when it has a domain), its `hostAliases`.
pub(crate) fn managed_hosts(
    pod_ips: &[&str],
    hostname: &str,
    domain: Option<&str>,
    aliases: &[HostAlias],
) -> String {
    let mut out = String::from(MANAGED_HOSTS_HEADER);
    out.push_str("127.0.0.1\tlocalhost\n");
    out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    out.push_str("fe00::0\tip6-localnet\n");
    out.push_str("fe00::0\tip6-mcastprefix\n");
    out.push_str("fe00::1\tip6-allnodes\n");
    out.push_str("fe00::2\tip6-allrouters\n");
    for ip in pod_ips {
        match domain {
            Some(domain) => out.push_str(&format!("{ip}\t{hostname}.{domain}\t{hostname}\n")),
            None => out.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    out.push_str(&alias_entries(aliases));
    out
}

/// The hosts file of a `hostNetwork` pod: the node's, then the pod's `hostAliases`.
pub(crate) fn node_hosts(node_hosts: &str, aliases: &[HostAlias]) -> String {
    let mut out = String::from(MANAGED_HOSTS_HEADER_HOST_NETWORK);
    out.push_str(node_hosts);
    out.push_str(&alias_entries(aliases));
    out
}

/// Writes `content` to `path` unless it already holds it.
fn write(path: &Path, content: &str) -> Result<(), String> {
    if std::fs::read(path).is_ok_and(|old| old == content.as_bytes()) {
        return Ok(());
    }
    std::fs::write(path, content).map_err(|e| format!("writing {}: {e}", path.display()))
}

impl Agent {
    /// The node's resolv.conf, parsed (`None` when none is configured). One that cannot be
    /// read counts as empty, with a warning (the kubelet refuses the pod instead).
    fn host_dns(&self) -> Option<DnsConfig> {
        let path = self.config.resolv_conf.as_ref()?;
        match std::fs::read_to_string(path) {
            Ok(text) => Some(DnsConfig::parse(&text)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "the node's resolv.conf cannot be read");
                Some(DnsConfig::default())
            }
        }
    }

    /// Writes the pod's `resolv.conf` and `etc-hosts` under `pod_dir` (when its sandbox is
    /// new, `fresh`, or a file is missing) and returns the mounts every container gets
    /// (those a container does not mount itself): `/etc/resolv.conf` always, `/etc/hosts`
    /// once the pod has an IP (or is `hostNetwork`), as the kubelet. Both are writable, as
    /// in Kubernetes: files the agent manages, rewritten with the next sandbox. `Err` says
    /// what could not be written.
    pub(super) fn pod_files(
        &self,
        pod: &Pod,
        pod_dir: &Path,
        pod_ip: Option<&str>,
        fresh: bool,
    ) -> Result<Vec<Mount>, String> {
        std::fs::create_dir_all(pod_dir).map_err(|e| format!("{}: {e}", pod_dir.display()))?;
        let mount = |host_path: PathBuf, container_path: &str| Mount {
            host_path,
            container_path: container_path.to_string(),
            read_only: false,
        };
        let mut mounts = Vec::new();
        let resolv = pod_dir.join("resolv.conf");
        if fresh || !resolv.exists() {
            let host = self.host_dns();
            let node_ipv6 = self
                .config
                .node_ip
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_ipv6());
            let node = NodeDns {
                cluster_dns: &self.config.cluster_dns,
                cluster_domain: &self.config.cluster_domain,
                host: host.as_ref(),
                node_ipv6,
            };
            let (config, warnings) = pod_dns(pod, &node);
            for w in warnings {
                if w.reason == "MissingClusterDNS" {
                    self.missing_cluster_dns();
                    // The pod's own Event is left out: it would come with every pod on a
                    // node without cluster DNS. The node's says it once.
                    tracing::debug!(pod = %pod_ref(pod), "{}", w.message);
                    continue;
                }
                tracing::warn!(pod = %pod_ref(pod), reason = w.reason, "{}", w.message);
                self.event(pod, EventType::Warning, w.reason, w.message);
            }
            write(&resolv, &config.to_resolv_conf())?;
        }
        mounts.push(mount(resolv, RESOLV_CONF));

        let host_network = host_network(pod);
        let pod_ips: Vec<&str> = pod_ip.into_iter().filter(|ip| !ip.is_empty()).collect();
        if host_network || !pod_ips.is_empty() {
            let hosts = pod_dir.join("etc-hosts");
            if fresh || !hosts.exists() {
                let aliases = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.host_aliases.as_deref())
                    .unwrap_or_default();
                let content = if host_network {
                    let node = std::fs::read_to_string(NODE_HOSTS)
                        .map_err(|e| format!("reading {NODE_HOSTS}: {e}"))?;
                    node_hosts(&node, aliases)
                } else {
                    let domain = host_domain(pod, &self.config.cluster_domain);
                    managed_hosts(&pod_ips, &hostname(pod), domain.as_deref(), aliases)
                };
                write(&hosts, &content)?;
            }
            mounts.push(mount(hosts, HOSTS));
        }
        Ok(mounts)
    }

    /// The kubelet's `MissingClusterDNS` warning about the node, once per agent.
    fn missing_cluster_dns(&self) {
        use std::sync::atomic::Ordering;
        if self.warned_no_cluster_dns.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::warn!("{MISSING_CLUSTER_DNS}");
        if let Some(events) = &self.events {
            let name = self.config.node_name.clone();
            let node = Node {
                metadata: ObjectMeta {
                    // The kubelet's node reference carries the name as its UID.
                    uid: Some(name.clone()),
                    name: Some(name),
                    ..ObjectMeta::default()
                },
                ..Node::default()
            };
            events.record_detached(
                &self.store,
                &node,
                EventType::Warning,
                "MissingClusterDNS",
                MISSING_CLUSTER_DNS,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = serde_json::json!([{"name": "c", "image": "busybox"}]);
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "shop", "uid": "u1"},
            "spec": spec,
        }))
        .expect("a pod")
    }

    fn config(servers: &[&str], searches: &[&str], options: &[&str]) -> DnsConfig {
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        DnsConfig {
            servers: own(servers),
            searches: own(searches),
            options: own(options),
        }
    }

    #[test]
    fn host_resolv_conf_is_parsed_like_the_kubelet() {
        let text = "# comment\n; also\nnameserver 10.0.0.2\nsearch old.example\n\
                    nameserver 10.0.0.3 ignored\nsearch corp.example. . lab.example\n\
                    options ndots:2 timeout:1\noptions ndots:3 rotate\ndomain x.example\n";
        assert_eq!(
            DnsConfig::parse(text),
            config(
                &["10.0.0.2", "10.0.0.3"],
                &["corp.example", "lab.example"],
                &["ndots:3", "timeout:1", "rotate"]
            )
        );
        let c = config(&["10.96.0.10"], &["a.b", "b"], &["ndots:5"]);
        assert_eq!(
            c.to_resolv_conf(),
            "search a.b b\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        assert_eq!(DnsConfig::parse(&c.to_resolv_conf()), c);
        assert_eq!(DnsConfig::default().to_resolv_conf(), "");
    }

    #[test]
    fn resolv_conf_per_dns_policy() {
        let host = config(
            &["192.168.1.1"],
            &["corp.example"],
            &["timeout:2", "ndots:1"],
        );
        let cluster: [IpAddr; 1] = ["10.96.0.10".parse().expect("ip")];
        let with_cluster = NodeDns {
            cluster_dns: &cluster,
            cluster_domain: "cluster.local",
            host: Some(&host),
            node_ipv6: false,
        };
        let without_cluster = NodeDns {
            cluster_dns: &[],
            ..with_cluster
        };
        let no_host_file = NodeDns {
            host: None,
            ..without_cluster
        };
        let clustered = config(
            &["10.96.0.10"],
            &[
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example",
            ],
            &["ndots:5"],
        );
        let dns_config = serde_json::json!({
            "nameservers": ["1.1.1.1", "10.96.0.10"],
            "searches": ["extra.example", "cluster.local"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}, {"name": "timeout", "value": ""}],
        });
        let missing = Warning {
            reason: "MissingClusterDNS",
            message: format!("pod: \"web-0_shop(u1)\". {MISSING_CLUSTER_DNS}"),
        };
        let table: Vec<(
            &str,
            serde_json::Value,
            NodeDns<'_>,
            DnsConfig,
            Vec<Warning>,
        )> = vec![
            (
                "ClusterFirst is the default",
                serde_json::json!({}),
                with_cluster,
                clustered.clone(),
                vec![],
            ),
            (
                "ClusterFirst",
                serde_json::json!({"dnsPolicy": "ClusterFirst"}),
                with_cluster,
                clustered.clone(),
                vec![],
            ),
            (
                "ClusterFirst without cluster DNS falls back to Default",
                serde_json::json!({"dnsPolicy": "ClusterFirst"}),
                without_cluster,
                host.clone(),
                vec![missing.clone()],
            ),
            (
                "ClusterFirst on the host network is Default",
                serde_json::json!({"dnsPolicy": "ClusterFirst", "hostNetwork": true}),
                with_cluster,
                host.clone(),
                vec![],
            ),
            (
                "ClusterFirstWithHostNet",
                serde_json::json!({"dnsPolicy": "ClusterFirstWithHostNet", "hostNetwork": true}),
                with_cluster,
                clustered.clone(),
                vec![],
            ),
            (
                "Default",
                serde_json::json!({"dnsPolicy": "Default"}),
                with_cluster,
                host.clone(),
                vec![],
            ),
            (
                "Default without a host file: the local resolver",
                serde_json::json!({"dnsPolicy": "Default"}),
                no_host_file,
                config(&["127.0.0.1"], &["."], &[]),
                vec![],
            ),
            (
                "None: only dnsConfig",
                serde_json::json!({"dnsPolicy": "None", "dnsConfig": dns_config.clone()}),
                with_cluster,
                config(
                    &["1.1.1.1", "10.96.0.10"],
                    &["extra.example", "cluster.local"],
                    &["ndots:2", "edns0", "timeout"],
                ),
                vec![],
            ),
            (
                "ClusterFirst with dnsConfig merged",
                serde_json::json!({"dnsConfig": dns_config}),
                with_cluster,
                config(
                    &["10.96.0.10", "1.1.1.1"],
                    &[
                        "shop.svc.cluster.local",
                        "svc.cluster.local",
                        "cluster.local",
                        "corp.example",
                        "extra.example",
                    ],
                    &["ndots:2", "edns0", "timeout"],
                ),
                vec![],
            ),
            (
                "Default with dnsConfig options replacing the host's",
                serde_json::json!({"dnsPolicy": "Default", "dnsConfig": {"options": [{"name": "ndots", "value": "4"}]}}),
                with_cluster,
                config(
                    &["192.168.1.1"],
                    &["corp.example"],
                    &["timeout:2", "ndots:4"],
                ),
                vec![],
            ),
        ];
        for (case, spec, node, want, want_warnings) in table {
            let (got, warnings) = pod_dns(&pod(spec), &node);
            assert_eq!(got, want, "{case}");
            assert_eq!(warnings, want_warnings, "{case}");
        }
    }

    #[test]
    fn limits_cut_the_config_with_a_dns_config_forming_warning() {
        let host = DnsConfig::default();
        let node = NodeDns {
            cluster_dns: &[],
            cluster_domain: "cluster.local",
            host: Some(&host),
            node_ipv6: false,
        };
        let servers: Vec<String> = (1..=5).map(|i| format!("10.0.0.{i}")).collect();
        let (got, warnings) = pod_dns(
            &pod(serde_json::json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": servers}})),
            &node,
        );
        assert_eq!(got.servers, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].reason, "DNSConfigForming");
        assert!(
            warnings[0]
                .message
                .ends_with("the applied nameserver line is: 10.0.0.1 10.0.0.2 10.0.0.3"),
            "{:?}",
            warnings[0]
        );

        // 40 domains: 32 are kept.
        let many: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        let (got, warnings) = pod_dns(
            &pod(
                serde_json::json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["10.0.0.1"], "searches": many}}),
            ),
            &node,
        );
        assert_eq!(got.searches.len(), MAX_SEARCH_PATHS);
        assert_eq!(got.searches[31], "d31.example");
        assert_eq!(warnings[0].reason, "DNSConfigForming");
        assert!(
            warnings[0]
                .message
                .contains("Search Line limits were exceeded")
        );

        // Ten 250-character domains make a 2509-character line: the last two go.
        let long: Vec<String> = (0..10)
            .map(|i| format!("{i}{}", "a".repeat(249)))
            .chain(["x".repeat(254)])
            .collect();
        let (got, warnings) = pod_dns(
            &pod(
                serde_json::json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["10.0.0.1"], "searches": long}}),
            ),
            &node,
        );
        assert_eq!(got.searches.len(), 8, "the too long domain and two more go");
        assert!(got.searches.join(" ").len() <= MAX_SEARCH_LIST_CHARS);
        assert_eq!(warnings.len(), 1);

        // Within the limits: no warning.
        let (_, warnings) = pod_dns(
            &pod(
                serde_json::json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["10.0.0.1", "10.0.0.2", "10.0.0.3"]}}),
            ),
            &node,
        );
        assert!(warnings.is_empty());
    }

    #[test]
    fn hosts_files_as_the_kubelet_writes_them() {
        let base = "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n\
                    ::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
                    fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n";
        let aliases: Vec<HostAlias> = serde_json::from_value(serde_json::json!([
            {"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]},
            {"ip": "10.1.2.4", "hostnames": ["baz"]},
        ]))
        .expect("aliases");
        let alias_lines =
            "\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n10.1.2.4\tbaz\n";
        let table: Vec<(&str, String, String)> = vec![
            (
                "name on the pod IP",
                managed_hosts(&["10.88.0.5"], "web-0", None, &[]),
                format!("{base}10.88.0.5\tweb-0\n"),
            ),
            (
                "with a subdomain",
                managed_hosts(
                    &["10.88.0.5"],
                    "web-0",
                    Some("nginx.shop.svc.cluster.local"),
                    &[],
                ),
                format!("{base}10.88.0.5\tweb-0.nginx.shop.svc.cluster.local\tweb-0\n"),
            ),
            (
                "with host aliases",
                managed_hosts(&["10.88.0.5"], "web-0", None, &aliases),
                format!("{base}10.88.0.5\tweb-0\n{alias_lines}"),
            ),
            (
                "host network",
                node_hosts("127.0.0.1 localhost\n", &aliases),
                format!(
                    "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n{alias_lines}"
                ),
            ),
        ];
        for (case, got, want) in table {
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn hostname_and_domain_come_from_the_spec() {
        let plain = pod(serde_json::json!({}));
        assert_eq!(hostname(&plain), "web-0");
        assert_eq!(host_domain(&plain, "cluster.local"), None);
        let named = pod(serde_json::json!({"hostname": "db", "subdomain": "nginx"}));
        assert_eq!(hostname(&named), "db");
        assert_eq!(
            host_domain(&named, "cluster.local").as_deref(),
            Some("nginx.shop.svc.cluster.local")
        );
        let mut long = plain.clone();
        long.metadata.name = Some(format!("{}-{}", "a".repeat(62), "b".repeat(10)));
        assert_eq!(
            hostname(&long),
            "a".repeat(62),
            "cut to 63, trailing '-' dropped"
        );
    }
}
