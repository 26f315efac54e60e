//! The page `GET /metrics` serves: the node's typed counters, then the
//! histograms and labelled counters its role records ([`super::roles`]), in
//! the Prometheus text format.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::roles::{Role, registry};
use super::{CONTENT_TYPE, metrics};
use crate::counters::CounterSnapshot;

/// When the process started, for `searchtree_process_start_time_seconds`.
fn start() -> &'static (Instant, std::time::SystemTime) {
    static START: OnceLock<(Instant, std::time::SystemTime)> = OnceLock::new();
    START.get_or_init(|| (Instant::now(), std::time::SystemTime::now()))
}

/// Counters whose value is a level, not a count: exported as gauges.
const GAUGES: &[&str] = &[
    "admission_limit",
    "admission_floor",
    "load_pace_rate",
    "cache_bytes",
    "versions_held",
    "current_version",
    "disk_free_bytes",
    "disk_total_bytes",
    "disk_floor_bytes",
];

/// A node's typed counters, read at every scrape.
#[derive(Debug)]
struct CounterCollector {
    role: &'static str,
    values: Vec<(&'static str, &'static str, u64)>,
}

impl prometheus_client::collector::Collector for CounterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let info = ConstGauge::new(1i64);
        let mut e = encoder.encode_descriptor(
            "searchtree_node_info",
            "The node's role, as a label; always 1",
            None,
            MetricType::Gauge,
        )?;
        let labels = [("role", self.role)];
        info.encode(e.encode_family(&labels)?)?;
        let _ = &mut e;

        let (_, started) = start();
        let since = started
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        ConstGauge::new(since).encode(encoder.encode_descriptor(
            "searchtree_process_start_time_seconds",
            "When the node started, in seconds since the Unix epoch",
            None,
            MetricType::Gauge,
        )?)?;

        if crate::ops::otlp::enabled() {
            let (exported, dropped) = crate::ops::otlp::totals();
            for (name, help, value) in [
                (
                    "searchtree_otlp_spans_exported",
                    "Spans an OTLP collector accepted",
                    exported,
                ),
                (
                    "searchtree_otlp_spans_dropped",
                    "Spans dropped: the export queue was full or an export failed",
                    dropped,
                ),
            ] {
                ConstCounter::new(value).encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    MetricType::Counter,
                )?)?;
            }
        }

        ConstCounter::new(crate::panics::caught()).encode(encoder.encode_descriptor(
            "searchtree_panics",
            "Panics the node caught and kept serving through (a request's task, a search): \
             each is a defect, and its message is in the node's log",
            None,
            MetricType::Counter,
        )?)?;
        let mut e = encoder.encode_descriptor(
            "searchtree_connections_evicted",
            "Connections the node closed to make room for others, by reason: stalled_calls \
             (at the bound on live calls, the most calls stalled on their client), \
             connection_cap (at the gRPC port's cap, longest without a call), http_slots \
             (at the HTTP port's slots, longest waiting for a request)",
            None,
            MetricType::Counter,
        )?;
        for (reason, value) in crate::serving::connections::evictions() {
            let labels = [("reason", reason.label())];
            ConstCounter::new(value).encode(e.encode_family(&labels)?)?;
        }

        for &(name, help, value) in &self.values {
            let help = page_help(name, help, &self.values);
            let help = help.as_str();
            if GAUGES.contains(&name) {
                let name = format!("searchtree_{name}");
                ConstGauge::new(value as i64).encode(encoder.encode_descriptor(
                    &name,
                    help,
                    None,
                    MetricType::Gauge,
                )?)?;
            } else if let Some(base) = name.strip_suffix("_us_total") {
                let name = format!("searchtree_{base}_seconds");
                ConstCounter::new(value as f64 / 1e6).encode(encoder.encode_descriptor(
                    &name,
                    help,
                    None,
                    MetricType::Counter,
                )?)?;
            } else {
                let name = format!("searchtree_{name}");
                ConstCounter::new(value).encode(encoder.encode_descriptor(
                    &name,
                    help,
                    None,
                    MetricType::Counter,
                )?)?;
            }
        }
        Ok(())
    }
}

/// The name counter `name` is exported under: `searchtree_<name>_total`,
/// a gauge's without the suffix, a microsecond total in seconds.
fn exported_name(name: &str) -> String {
    if GAUGES.contains(&name) {
        format!("searchtree_{name}")
    } else if let Some(base) = name.strip_suffix("_us_total") {
        format!("searchtree_{base}_seconds_total")
    } else {
        format!("searchtree_{name}_total")
    }
}

/// A counter's doc comment as the HELP of its metric: on one line, a
/// microsecond total said to be in seconds (as it is exported), and the
/// node's other counters it names (`` `queue_waits` ``) by the names they
/// have on the page.
fn page_help(name: &str, help: &str, counters: &[(&str, &str, u64)]) -> String {
    let mut help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    if name.ends_with("_us_total") {
        help = help.replace("in microseconds", "in seconds");
    }
    for &(other, _, _) in counters {
        help = help.replace(&format!("`{other}`"), &exported_name(other));
    }
    help
}

/// The page `GET /metrics` serves: the node's counters, then the
/// histograms and labelled counters of its role, in the Prometheus text
/// format.
pub fn render(counters: &dyn CounterSnapshot) -> String {
    let collector = CounterCollector {
        role: counters.role(),
        values: counters.described(),
    };
    let mut counters_registry = Registry::default();
    counters_registry.register_collector(Box::new(collector));
    let mut out = String::with_capacity(16 * 1024);
    // Neither registry's `# EOF` (an OpenMetrics marker) is written: the
    // page is plain Prometheus text.
    let _ = prometheus_client::encoding::text::encode_registry(&mut out, &counters_registry);
    let role = Role::from_name(counters.role());
    let _ =
        prometheus_client::encoding::text::encode_registry(&mut out, &registry(role, metrics()));
    let _ = writeln!(out);
    openmetrics_to_prometheus(&out)
}

/// Turns the OpenMetrics text the encoder writes into the Prometheus text
/// format: a counter's `# TYPE`/`# HELP` lines name its `_total` samples
/// (OpenMetrics names the family without the suffix), and `# UNIT` lines,
/// which the Prometheus format lacks, are dropped.
fn openmetrics_to_prometheus(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut counters = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name.to_string());
        }
    }
    for line in text.lines() {
        if line.starts_with("# UNIT ") || line.trim().is_empty() {
            continue;
        }
        let rewritten = ["# TYPE ", "# HELP "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            (counters.contains(name) && !name.ends_with("_total"))
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The route every node's HTTP port serves: `GET /metrics`.
pub fn routes(counters: Arc<dyn CounterSnapshot>) -> axum::Router {
    let _ = start();
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let counters = Arc::clone(&counters);
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    render(counters.as_ref()),
                )
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::counters::Counters;

    crate::counter_set! {
        /// Test counters.
        enum Test {
            /// Requests received.
            Requests = "requests",
            /// Bytes held by the cache.
            CacheBytes = "cache_bytes",
            /// Time waited, in microseconds (divided by `requests`, the
            /// mean).
            QueueWaitUsTotal = "queue_wait_us_total",
        }
    }

    #[test]
    fn counters_gauges_and_histograms_are_named_as_prometheus_expects() {
        let c = Counters::<Test>::new("leaf");
        c.add(Test::Requests, 3);
        c.set(Test::CacheBytes, 1024);
        c.add(Test::QueueWaitUsTotal, 1_500_000);
        metrics().observe_request("Search", "OK", Duration::from_millis(2));
        let page = render(c.as_ref());
        assert!(
            page.contains("# TYPE searchtree_requests_total counter\n"),
            "{page}"
        );
        assert!(page.contains("searchtree_requests_total 3\n"), "{page}");
        assert!(
            page.contains("# HELP searchtree_requests_total Requests received.\n"),
            "{page}"
        );
        assert!(
            page.contains("# TYPE searchtree_cache_bytes gauge\nsearchtree_cache_bytes 1024\n"),
            "{page}"
        );
        assert!(
            page.contains("searchtree_queue_wait_seconds_total 1.5\n"),
            "{page}"
        );
        assert!(
            page.contains(
                "# HELP searchtree_queue_wait_seconds_total Time waited, in seconds \
                 (divided by searchtree_requests_total, the mean).\n"
            ),
            "{page}"
        );
        assert!(
            page.contains("searchtree_node_info{role=\"leaf\"} 1\n"),
            "{page}"
        );
        assert!(
            page.contains(
                "searchtree_request_duration_seconds_count{method=\"Search\",code=\"OK\"} 1\n"
            ),
            "{page}"
        );
        assert!(!page.contains("# EOF"), "{page}");
        assert!(!page.contains("# UNIT"), "{page}");
    }

    /// The families a page declares (`# TYPE` lines), by name.
    fn families(page: &str) -> std::collections::BTreeSet<&str> {
        page.lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
            .collect()
    }

    /// Families only leaves record.
    const LEAF_ONLY: [&str; 2] = [
        "searchtree_leaf_search_duration_seconds",
        "searchtree_leaf_queue_wait_seconds",
    ];
    /// Families only inner nodes (parents and the root) record.
    const INNER_ONLY: [&str; 4] = [
        "searchtree_child_round_trip_seconds",
        "searchtree_child_calls_total",
        "searchtree_answers_total",
        "searchtree_answer_coverage_ratio",
    ];

    #[test]
    fn each_role_shows_only_the_families_it_records() {
        // One process records for every role here: the page must still
        // show a role only its own.
        metrics().leaf_search.observe(0.001);
        metrics().leaf_queue_wait.observe(0.001);
        metrics().child("0-1").answered(Duration::from_millis(3));
        metrics().observe_answer(true, 0.5);

        let leaf = render(Counters::<Test>::new("leaf").as_ref());
        let leaf_families = families(&leaf);
        for name in LEAF_ONLY {
            assert!(leaf_families.contains(name), "leaf: no {name}:\n{leaf}");
        }
        for name in INNER_ONLY {
            assert!(!leaf_families.contains(name), "leaf shows {name}:\n{leaf}");
        }

        for role in ["parent", "root"] {
            let page = render(Counters::<Test>::new(role).as_ref());
            let inner = families(&page);
            for name in INNER_ONLY {
                assert!(inner.contains(name), "{role}: no {name}:\n{page}");
            }
            for name in LEAF_ONLY {
                assert!(!inner.contains(name), "{role} shows {name}:\n{page}");
            }
            // Nothing above recorded these: they are there at zero.
            for series in [
                "searchtree_answers_total{completeness=\"complete\"} 0\n",
                "searchtree_request_duration_seconds_count{method=\"Fetch\",code=\"OK\"} 0\n",
            ] {
                assert!(page.contains(series), "{role}: no {series}:\n{page}");
            }
            // Only the root refuses whole searches.
            let refusals = [
                "searchtree_answers_total{completeness=\"failed\"} 0\n",
                "searchtree_answers_total{completeness=\"refused\"} 0\n",
            ];
            for series in refusals {
                assert_eq!(page.contains(series), role == "root", "{role}:\n{page}");
            }
            assert!(
                page.contains("# HELP searchtree_answers_total Searches the root")
                    == (role == "root"),
                "{role}:\n{page}"
            );
        }
        // A role the page does not know shows what every node records.
        let other = render(Counters::<Test>::new("other").as_ref());
        let other_families = families(&other);
        assert!(other_families.contains("searchtree_request_duration_seconds"));
        for name in LEAF_ONLY.iter().chain(&INNER_ONLY) {
            assert!(!other_families.contains(name), "{other}");
        }
    }
}
