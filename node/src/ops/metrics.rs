//! Prometheus metrics: what every node measures, and `GET /metrics` in the
//! text exposition format.
//!
//! Two sources feed one page. The node's typed counters
//! ([`crate::counters`]) are exported as they are read, each under
//! `searchtree_<name>` — counters with `_total`, the few gauges without,
//! microsecond totals as seconds — so no counter a role keeps is ever
//! missing from the page. Beside them, the distributions a counter cannot
//! tell (request latency per method, round trip per child, coverage, a
//! leaf's search time and queue wait) are histograms kept here, in one
//! registry per process, recorded on the hot path with atomics.
//!
//! Labels stay low-cardinality: a gRPC method, a child's shard range, an
//! outcome — never a query or a request id.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::counters::CounterSnapshot;

/// The content type of `GET /metrics`: the Prometheus text format 0.0.4,
/// which Prometheus, `promtool` and every scraper read.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A gRPC method, as a label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// The method's name (`Search`, `Fetch`, `Load`, ...).
    pub method: &'static str,
    /// The gRPC status code name the call ended with (`OK`, `DEADLINE_EXCEEDED`, ...).
    pub code: &'static str,
}

/// A child of an inner node, as a label: the shards below it (`0-1`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChildLabels {
    /// The child's shard range.
    pub child: Arc<str>,
}

/// A child call's outcome, as labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChildOutcomeLabels {
    /// The child's shard range.
    pub child: Arc<str>,
    /// `ok`, `timed_out` or `failed`.
    pub outcome: &'static str,
}

/// How complete an inner node's answer was, as a label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CompletenessLabels {
    /// `complete`, `partial`, `failed` or `refused`.
    pub completeness: &'static str,
}

/// The histograms and labelled counters every node may record. Roles
/// record what applies to them; the rest stay empty and are not printed.
#[derive(Debug)]
pub struct Metrics {
    /// Every gRPC call the node served, by method and status, from the
    /// arrival of its headers to its response.
    pub requests: Family<MethodLabels, Histogram>,
    /// Inner nodes: each child call's round trip, by child.
    pub child_round_trip: Family<ChildLabels, Histogram>,
    /// Inner nodes: child calls by child and outcome.
    pub child_calls: Family<ChildOutcomeLabels, Counter>,
    /// Inner nodes: answers by completeness.
    pub answers: Family<CompletenessLabels, Counter>,
    /// Inner nodes: the share of the shards below that answered, per answer.
    pub coverage: Histogram,
    /// Leaves: time a search spent collecting and scoring.
    pub leaf_search: Histogram,
    /// Inner nodes: the sum of the answers' coverage, in millionths, and
    /// their number (for the status page's mean).
    coverage_sum: std::sync::atomic::AtomicU64,
    coverage_count: std::sync::atomic::AtomicU64,
    /// Leaves: time a search waited in the queue before a searcher took it.
    pub leaf_queue_wait: Histogram,
    registry: Registry,
}

/// Latency buckets from 100 µs to ~13 s, doubling: fine enough for the
/// sub-millisecond leaf searches and the seconds-long budgets alike.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// Coverage buckets: the interesting part is just below 1.
fn coverage_histogram() -> Histogram {
    Histogram::new([0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0])
}

impl Metrics {
    fn new() -> Self {
        let requests = Family::<MethodLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let child_round_trip = Family::<ChildLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let child_calls = Family::<ChildOutcomeLabels, Counter>::default();
        let answers = Family::<CompletenessLabels, Counter>::default();
        let coverage = coverage_histogram();
        let leaf_search = latency_histogram();
        let leaf_queue_wait = latency_histogram();

        let mut registry = Registry::with_prefix("searchtree");
        registry.register(
            "request_duration_seconds",
            "gRPC calls served, by method and status code: from the arrival of the headers to the response",
            requests.clone(),
        );
        registry.register(
            "child_round_trip_seconds",
            "Round trip of each call to a child, as the calling node saw it, by child (its shard range)",
            child_round_trip.clone(),
        );
        registry.register(
            "child_calls",
            "Calls to children by child and outcome (ok, timed_out, failed)",
            child_calls.clone(),
        );
        registry.register(
            "answers",
            "Answers by completeness: complete, partial (a shard missing or cut short); at the root also failed (refused after the fan-out) and refused (shed)",
            answers.clone(),
        );
        registry.register(
            "answer_coverage_ratio",
            "Share of the shards below the node that answered, per answer",
            coverage.clone(),
        );
        registry.register(
            "leaf_search_duration_seconds",
            "Time a leaf's search spent collecting and scoring",
            leaf_search.clone(),
        );
        registry.register(
            "leaf_queue_wait_seconds",
            "Time a leaf's search waited for a searcher",
            leaf_queue_wait.clone(),
        );
        Metrics {
            requests,
            child_round_trip,
            child_calls,
            answers,
            coverage,
            leaf_search,
            coverage_sum: Default::default(),
            coverage_count: Default::default(),
            leaf_queue_wait,
            registry,
        }
    }

    /// Records a served call of `method` that took `elapsed`.
    pub fn observe_request(&self, method: &'static str, code: &'static str, elapsed: Duration) {
        self.requests
            .get_or_create(&MethodLabels { method, code })
            .observe(elapsed.as_secs_f64());
    }

    /// The series of the child labelled `child` (its shard range), looked
    /// up once, so that recording a call takes no lock and no hashing.
    /// After [`without_child_series`], a handle that records nothing.
    pub fn child(&self, child: &str) -> ChildMetrics {
        if CHILD_SERIES_OFF.load(Ordering::Relaxed) {
            return ChildMetrics(None);
        }
        let child: Arc<str> = child.into();
        let calls = |outcome: &'static str| {
            self.child_calls
                .get_or_create(&ChildOutcomeLabels {
                    child: Arc::clone(&child),
                    outcome,
                })
                .clone()
        };
        ChildMetrics(Some(ChildSeries {
            round_trip: self
                .child_round_trip
                .get_or_create(&ChildLabels {
                    child: Arc::clone(&child),
                })
                .clone(),
            ok: calls("ok"),
            timed_out: calls("timed_out"),
            failed: calls("failed"),
        }))
    }

    /// Records an inner node's answer: complete or partial, and its coverage
    /// (shards that answered over shards below).
    pub fn observe_answer(&self, partial: bool, coverage: f64) {
        let completeness = if partial { "partial" } else { "complete" };
        self.answers
            .get_or_create(&CompletenessLabels { completeness })
            .inc();
        self.coverage.observe(coverage);
        self.coverage_sum
            .fetch_add((coverage * 1e6) as u64, Ordering::Relaxed);
        self.coverage_count.fetch_add(1, Ordering::Relaxed);
    }

    /// The mean coverage of the answers since start (1 before any).
    pub fn coverage_mean(&self) -> f64 {
        let n = self.coverage_count.load(Ordering::Relaxed);
        if n == 0 {
            return 1.0;
        }
        self.coverage_sum.load(Ordering::Relaxed) as f64 / 1e6 / n as f64
    }

    /// Records a root's query that got no answer: `failed` (refused after
    /// the fan-out: no shard answered, or fewer than its `min_coverage`) or
    /// `refused` (shed by admission control before any work).
    pub fn observe_unanswered(&self, completeness: &'static str) {
        self.answers
            .get_or_create(&CompletenessLabels { completeness })
            .inc();
    }
}

/// One child's series (see [`Metrics::child`]), or nothing once child
/// series are off.
#[derive(Debug, Clone)]
pub struct ChildMetrics(Option<ChildSeries>);

#[derive(Debug, Clone)]
struct ChildSeries {
    round_trip: Histogram,
    ok: Counter,
    timed_out: Counter,
    failed: Counter,
}

impl ChildMetrics {
    /// Records a call that answered after `round_trip`.
    pub fn answered(&self, round_trip: Duration) {
        if let Some(s) = &self.0 {
            s.round_trip.observe(round_trip.as_secs_f64());
            s.ok.inc();
        }
    }

    /// Records a call that did not answer: timed out, or failed.
    pub fn missed(&self, timed_out: bool) {
        if let Some(s) = &self.0 {
            if timed_out {
                s.timed_out.inc();
            } else {
                s.failed.inc();
            }
        }
    }
}

static CHILD_SERIES_OFF: AtomicBool = AtomicBool::new(false);

/// From now on, children get no series of their own: for a process that
/// runs thousands of simulated nodes (`searchtree simulate`), where a
/// series per child would be meaningless, hold memory per child and cost a
/// lock per answer. Nodes that serve never call it.
pub fn without_child_series() {
    CHILD_SERIES_OFF.store(true, Ordering::Relaxed);
}

/// The process's metrics, created on first use.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// When the process started, for `searchtree_process_start_time_seconds`.
fn start() -> &'static (Instant, std::time::SystemTime) {
    static START: OnceLock<(Instant, std::time::SystemTime)> = OnceLock::new();
    START.get_or_init(|| (Instant::now(), std::time::SystemTime::now()))
}

/// Counters whose value is a level, not a count: exported as gauges.
const GAUGES: &[&str] = &[
    "admission_limit",
    "admission_floor",
    "cache_bytes",
    "versions_held",
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

        for &(name, help, value) in &self.values {
            let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
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

/// The page `GET /metrics` serves: the node's counters, then the process's
/// histograms, in the Prometheus text format.
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
    let _ = prometheus_client::encoding::text::encode_registry(&mut out, &metrics().registry);
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
    use super::*;
    use crate::counters::Counters;

    crate::counter_set! {
        /// Test counters.
        enum Test {
            /// Requests received.
            Requests = "requests",
            /// Bytes held by the cache.
            CacheBytes = "cache_bytes",
            /// Time waited, in microseconds.
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
}
