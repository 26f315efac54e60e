//! Prometheus metrics: what every node measures, and `GET /metrics` in the
//! text exposition format.
//!
//! Two sources feed one page ([`page`]). The node's typed counters
//! ([`crate::counters`]) are exported as they are read, each under
//! `searchtree_<name>` — counters with `_total`, the few gauges without,
//! microsecond totals as seconds — so no counter a role keeps is ever
//! missing from the page. Beside them, the distributions a counter cannot
//! tell (request latency per method, round trip per child, coverage, a
//! leaf's search time and queue wait) are histograms kept here, in one
//! set per process, recorded on the hot path with atomics; each role's
//! page shows only those that mean something for it ([`roles`]).
//!
//! Labels stay low-cardinality: a gRPC method, a child's shard range, an
//! outcome — never a query or a request id.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

mod page;
mod roles;

pub use page::{render, routes};
pub use roles::Role;

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
/// record what applies to them, and their pages show only that
/// (see `roles`).
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
    /// Leaves: time a search waited in the queue before a searcher took it.
    pub leaf_queue_wait: Histogram,
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

        Metrics {
            requests,
            child_round_trip,
            child_calls,
            answers,
            coverage,
            leaf_search,
            leaf_queue_wait,
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
