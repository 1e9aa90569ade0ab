//! `GET /metrics`: what the server has served, in Prometheus' text format and under
//! kube-apiserver's metric names, so dashboards and alerts written for Kubernetes read it:
//! `apiserver_request_total` (by verb, group, resource, subresource and code),
//! `apiserver_request_duration_seconds` (a histogram by verb, group, resource and subresource;
//! watches are long-running and left out, as Kubernetes does), `apiserver_current_inflight_requests`
//! and `apiserver_longrunning_requests`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use crate::authz::Attributes;

/// kube-apiserver's buckets for `apiserver_request_duration_seconds`.
const BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// What a request is counted under: verb (upper case, as Kubernetes labels it), group,
/// resource, subresource.
type Target = (String, String, String, String);

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    recorded: Mutex<Recorded>,
}

#[derive(Debug, Default)]
struct Recorded {
    totals: BTreeMap<(Target, u16), u64>,
    durations: BTreeMap<Target, Histogram>,
}

#[derive(Debug, Default)]
struct Histogram {
    /// Counts per bucket (not cumulative; summed when written).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// Counts a finished request (a watch when it is answered: its stream is long-running).
    pub(crate) fn record(&self, attrs: &Attributes, code: u16, took: Duration) {
        let verb = attrs.verb.to_ascii_uppercase();
        let target = (
            verb,
            attrs.api_group.clone(),
            attrs.resource.clone(),
            attrs.subresource.clone().unwrap_or_default(),
        );
        let Ok(mut recorded) = self.recorded.lock() else {
            return;
        };
        if target.0 != "WATCH" {
            let seconds = took.as_secs_f64();
            let histogram = recorded.durations.entry(target.clone()).or_default();
            if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
                histogram.buckets[i] += 1;
            }
            histogram.count += 1;
            histogram.sum += seconds;
        }
        *recorded.totals.entry((target, code)).or_default() += 1;
    }

    /// The text exposition, with the gauges the caller reads from the server's limits.
    pub(crate) fn render(&self, inflight: usize, watches: usize) -> String {
        let mut out = String::new();
        let labels = |(verb, group, resource, subresource): &Target| {
            format!(
                "group=\"{}\",resource=\"{}\",subresource=\"{}\",verb=\"{}\"",
                escape(group),
                escape(resource),
                escape(subresource),
                escape(verb)
            )
        };
        if let Ok(recorded) = self.recorded.lock() {
            out.push_str("# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, group, resource, subresource and HTTP response code.\n");
            out.push_str("# TYPE apiserver_request_total counter\n");
            for ((target, code), n) in &recorded.totals {
                let _ = writeln!(
                    out,
                    "apiserver_request_total{{code=\"{code}\",{}}} {n}",
                    labels(target)
                );
            }
            out.push_str("# HELP apiserver_request_duration_seconds Response latency distribution in seconds for each verb, group, resource and subresource.\n");
            out.push_str("# TYPE apiserver_request_duration_seconds histogram\n");
            for (target, histogram) in &recorded.durations {
                let labels = labels(target);
                let mut cumulative = 0;
                for (bound, n) in BUCKETS.iter().zip(histogram.buckets) {
                    cumulative += n;
                    let _ = writeln!(
                        out,
                        "apiserver_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                    );
                }
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    histogram.count
                );
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_sum{{{labels}}} {}",
                    histogram.sum
                );
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_count{{{labels}}} {}",
                    histogram.count
                );
            }
        }
        out.push_str("# HELP apiserver_current_inflight_requests Requests being served now.\n");
        out.push_str("# TYPE apiserver_current_inflight_requests gauge\n");
        let _ = writeln!(out, "apiserver_current_inflight_requests {inflight}");
        out.push_str(
            "# HELP apiserver_longrunning_requests Long-running requests (watches) open now.\n",
        );
        out.push_str("# TYPE apiserver_longrunning_requests gauge\n");
        let _ = writeln!(
            out,
            "apiserver_longrunning_requests{{verb=\"WATCH\"}} {watches}"
        );
        out
    }
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_and_timed_in_cumulative_buckets() {
        let metrics = Metrics::default();
        let create = Attributes {
            verb: "create".into(),
            resource: "pods".into(),
            ..Attributes::default()
        };
        metrics.record(&create, 201, Duration::from_millis(3));
        metrics.record(&create, 201, Duration::from_millis(30));
        metrics.record(&create, 409, Duration::from_millis(2));
        let watch = Attributes {
            verb: "watch".into(),
            resource: "pods".into(),
            ..Attributes::default()
        };
        metrics.record(&watch, 200, Duration::from_secs(300));
        let text = metrics.render(4, 1);
        let labels = "group=\"\",resource=\"pods\",subresource=\"\",verb=\"CREATE\"";
        assert!(text.contains(&format!(
            "apiserver_request_total{{code=\"201\",{labels}}} 2\n"
        )));
        assert!(text.contains(&format!(
            "apiserver_request_total{{code=\"409\",{labels}}} 1\n"
        )));
        assert!(text.contains(&format!(
            "apiserver_request_duration_seconds_bucket{{{labels},le=\"0.005\"}} 2\n"
        )));
        assert!(text.contains(&format!(
            "apiserver_request_duration_seconds_bucket{{{labels},le=\"0.05\"}} 3\n"
        )));
        assert!(text.contains(&format!(
            "apiserver_request_duration_seconds_count{{{labels}}} 3\n"
        )));
        assert!(text.contains("verb=\"WATCH\"} 1\n"), "{text}");
        assert!(!text.contains(
            "duration_seconds_count{group=\"\",resource=\"pods\",subresource=\"\",verb=\"WATCH\"}"
        ));
        assert!(text.contains("apiserver_current_inflight_requests 4\n"));
        assert!(text.contains("apiserver_longrunning_requests{verb=\"WATCH\"} 1\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
