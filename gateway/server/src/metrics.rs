//! Prometheus counters and histograms, written by hand: a few labelled
//! families behind one mutex, rendered as the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Families {
    counters: BTreeMap<&'static str, BTreeMap<Labels, u64>>,
    histograms: BTreeMap<&'static str, BTreeMap<Labels, Histogram>>,
}

/// The gateway's metrics.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Families>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

const HELP: &[(&str, &str)] = &[
    (
        "gateway_retention_removed_total",
        "What retention removed, by kind: timeline entries, customers archived, archived customers erased",
    ),
    (
        "gateway_customers_erased_total",
        "Customers erased through DELETE /admin/v1/customers/{id}",
    ),
    (
        "gateway_http_requests_total",
        "HTTP requests by route and status",
    ),
    (
        "gateway_verification_failures_total",
        "Inbound requests refused by verification, by channel and reason",
    ),
    (
        "gateway_plugin_call_seconds",
        "Plugin call latency, fresh instance included",
    ),
    (
        "gateway_plugin_failures_total",
        "Plugin calls that trapped, timed out or hit the memory cap",
    ),
    (
        "gateway_inbound_events_total",
        "Normalized events accepted, by channel and kind",
    ),
    (
        "gateway_dedup_hits_total",
        "Inbound messages dropped as redeliveries, by channel",
    ),
    (
        "gateway_replays_refused_total",
        "Inbound messages refused as older than the dedup retention, by channel",
    ),
    (
        "gateway_connections_refused_total",
        "Connections over server.max_connections, by answer (503, or none when even those are spent)",
    ),
    (
        "gateway_accept_errors_total",
        "Failed accepts of new connections (out of file descriptors and the like)",
    ),
    (
        "gateway_widget_sessions_total",
        "Widget WebSocket sessions opened (upgrades)",
    ),
    (
        "gateway_overloaded_total",
        "Requests answered 503 overloaded, by the limit reached",
    ),
];

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        self.add(name, labels, 1);
    }

    /// Adds `n` to a counter.
    pub fn add(&self, name: &'static str, labels: &[(&'static str, &str)], n: u64) {
        let labels = own(labels);
        let mut f = self.lock();
        *f.counters
            .entry(name)
            .or_default()
            .entry(labels)
            .or_default() += n;
    }

    /// Records one observation in a histogram.
    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], d: Duration) {
        let labels = own(labels);
        let secs = d.as_secs_f64();
        let mut f = self.lock();
        let h = f
            .histograms
            .entry(name)
            .or_default()
            .entry(labels)
            .or_default();
        if h.counts.is_empty() {
            h.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// The current value of a counter (for tests and readiness).
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        let labels = own(labels);
        self.lock()
            .counters
            .get(name)
            .and_then(|m| m.get(&labels))
            .copied()
            .unwrap_or(0)
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        let f = self.lock();
        let mut out = String::new();
        let help = |out: &mut String, name: &str, kind: &str| {
            let text = HELP
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, h)| *h)
                .unwrap_or("");
            let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} {kind}");
        };
        for (name, series) in &f.counters {
            help(&mut out, name, "counter");
            for (labels, v) in series {
                let _ = writeln!(out, "{name}{} {v}", fmt_labels(labels, None));
            }
        }
        for (name, series) in &f.histograms {
            help(&mut out, name, "histogram");
            for (labels, h) in series {
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {}",
                        fmt_labels(labels, Some(&b.to_string())),
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    fmt_labels(labels, Some("+Inf")),
                    h.count
                );
                let _ = writeln!(out, "{name}_sum{} {}", fmt_labels(labels, None), h.sum);
                let _ = writeln!(out, "{name}_count{} {}", fmt_labels(labels, None), h.count);
            }
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Families> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn own(labels: &[(&'static str, &str)]) -> Labels {
    labels.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn fmt_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_as_prometheus_text() {
        let m = Metrics::default();
        m.inc(
            "gateway_verification_failures_total",
            &[("channel", "whatsapp"), ("reason", "bad_signature")],
        );
        m.inc(
            "gateway_verification_failures_total",
            &[("channel", "whatsapp"), ("reason", "bad_signature")],
        );
        m.observe(
            "gateway_plugin_call_seconds",
            &[("plugin", "whatsapp")],
            Duration::from_micros(30),
        );
        let text = m.render();
        assert!(text.contains("gateway_verification_failures_total{channel=\"whatsapp\",reason=\"bad_signature\"} 2\n"), "{text}");
        assert!(
            text.contains(
                "gateway_plugin_call_seconds_bucket{plugin=\"whatsapp\",le=\"0.00005\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("gateway_plugin_call_seconds_count{plugin=\"whatsapp\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE gateway_plugin_call_seconds histogram"),
            "{text}"
        );
    }
}
