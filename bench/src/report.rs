//! A load test's report: as text for people, JSON for scripts, and
//! HdrHistogram's percentile-distribution text (`.hgrm`) for its plotters.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cpu::WARN_FRACTION;
use crate::record::{REJECTED, Recorder};

/// Latency percentiles, µs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

/// The machine-readable report (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was measured.
    pub target: String,
    /// `open_loop` or `closed_loop`.
    pub mode: String,
    /// Requests per second asked for (open loop).
    pub rate_target: Option<f64>,
    /// Requests completed or failed per second over the measured span.
    pub rate_achieved: f64,
    /// Measured span, seconds.
    pub duration_s: f64,
    /// Requests sent after the warm-up.
    pub sent: u64,
    /// Requests answered with a response.
    pub completed: u64,
    /// Requests answered with an error, by gRPC code name.
    pub errors: BTreeMap<String, u64>,
    /// Fraction of completed responses marked partial.
    pub partial_fraction: f64,
    /// Mean shard coverage of completed responses (1.0 = every shard).
    pub coverage_mean: f64,
    /// Lowest shard coverage seen.
    pub coverage_min: f64,
    /// Latency from intended send time, µs.
    pub latency_us: Percentiles,
    /// Latencies beyond the histogram's range (recorded at its top).
    pub saturated: u64,
    /// The budget every request carried, ms (`None`: the root's default).
    pub budget_ms: Option<u64>,
    /// Answers that came back complete (not partial, every shard) and within
    /// the budget: what a user could use.
    pub good: u64,
    /// `good` per second over the measured span: the throughput that counts
    /// under overload, where `rate_achieved` also counts fast rejections.
    pub goodput: f64,
    /// Requests refused for overload (`RESOURCE_EXHAUSTED`, also counted in
    /// `errors`): shed on purpose, unlike the other errors.
    pub rejected: u64,
    /// Latency of the requests answered with a response alone, µs: errors and
    /// fast rejections left out, so that they cannot flatter the tail.
    pub latency_ok_us: Percentiles,
    /// The load tester's own CPU use over the measured window, as a fraction
    /// of one core (`None`: not measured). Near or above 1, the tester may
    /// have limited the run rather than the tree.
    pub loadgen_cpu: Option<f64>,
    /// Whether the searching ran in the load tester's own process (`--direct`),
    /// so that `loadgen_cpu` includes it.
    pub target_in_process: bool,
    /// The tester's scheduling priority, as [`crate::priority::Priority`]
    /// describes it (`None`: not set by the run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tester_priority: Option<String>,
    /// Where the requests at or above the p99 spent their time, when they
    /// were profiled (`--profile-tail`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tail: Option<crate::tail::TailReport>,
}

/// The percentiles of `h` (zeros when it is empty).
fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let q = |q: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(q)
        }
    };
    Percentiles {
        p50: q(0.50),
        p90: q(0.90),
        p99: q(0.99),
        p999: q(0.999),
        max: h.max(),
        mean: h.mean(),
    }
}

impl Report {
    /// Summarises a run.
    pub fn new(
        target: String,
        mode: &str,
        rate_target: Option<f64>,
        r: &Recorder,
        span: Duration,
    ) -> Self {
        let finished = r.completed + r.error_count();
        let secs = span.as_secs_f64().max(1e-9);
        Report {
            target,
            mode: mode.into(),
            rate_target,
            rate_achieved: finished as f64 / secs,
            duration_s: span.as_secs_f64(),
            sent: r.sent,
            completed: r.completed,
            errors: r.errors.clone(),
            partial_fraction: ratio(r.partial, r.completed),
            coverage_mean: if r.completed == 0 {
                0.0
            } else {
                r.coverage_sum / r.completed as f64
            },
            coverage_min: if r.completed == 0 {
                0.0
            } else {
                r.coverage_min
            },
            latency_us: percentiles(&r.latency),
            saturated: r.saturated,
            budget_ms: r.budget.map(|b| b.as_millis() as u64),
            good: r.good,
            goodput: r.good as f64 / secs,
            rejected: r.rejected(),
            latency_ok_us: percentiles(&r.latency_ok),
            loadgen_cpu: r.loadgen_cpu,
            target_in_process: r.target_in_process,
            tester_priority: None,
            tail: (!r.slow_paths.is_empty())
                .then(|| crate::tail::report(&r.slow_paths, percentiles(&r.latency_ok).p99)),
        }
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let ms = |us: u64| format!("{:.2}ms", us as f64 / 1000.0);
        let l = &self.latency_us;
        let errors = if self.errors.is_empty() {
            "0".to_string()
        } else {
            self.errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = String::new();
        let _ = writeln!(out, "target:    {}", self.target);
        let _ = writeln!(
            out,
            "load:      {}{}, measured {:.1}s",
            self.mode.replace('_', " "),
            self.rate_target
                .map(|r| format!(" at {r}/s"))
                .unwrap_or_default(),
            self.duration_s
        );
        let _ = writeln!(
            out,
            "requests:  sent {}, completed {}, errors {}; achieved {:.1}/s",
            self.sent, self.completed, errors, self.rate_achieved
        );
        let _ = writeln!(
            out,
            "coverage:  partial {:.2}%, mean {:.2}%, min {:.2}%",
            100.0 * self.partial_fraction,
            100.0 * self.coverage_mean,
            100.0 * self.coverage_min
        );
        let _ = writeln!(
            out,
            "latency:   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {})",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            ms(l.mean as u64)
        );
        let _ = writeln!(
            out,
            "outcomes:  good {} (complete, {}), goodput {:.1}/s; rejected ({REJECTED}) {}, other errors {}",
            self.good,
            self.budget_ms
                .map_or("any latency".to_string(), |b| format!("within {b}ms")),
            self.goodput,
            self.rejected,
            self.errors.values().sum::<u64>() - self.rejected
        );
        let k = &self.latency_ok_us;
        let _ = writeln!(
            out,
            "latency ok: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {}; answers only)",
            ms(k.p50),
            ms(k.p90),
            ms(k.p99),
            ms(k.p999),
            ms(k.max),
            ms(k.mean as u64)
        );
        if let Some(cpu) = self.loadgen_cpu {
            let _ = writeln!(
                out,
                "loadgen:   CPU {cpu:.2} of one core{}",
                if self.target_in_process {
                    " (the index is searched in this process too)"
                } else {
                    ""
                }
            );
            if let Some(priority) = &self.tester_priority {
                let _ = writeln!(out, "           priority {priority}");
            }
            if cpu > WARN_FRACTION && !self.target_in_process {
                let _ = writeln!(
                    out,
                    "warning:   the load tester used {cpu:.2} of a core: the load tester, not the tree, may have limited this run"
                );
            }
        }
        if self.saturated > 0 {
            let _ = writeln!(
                out,
                "warning:   {} latencies beyond the histogram's range",
                self.saturated
            );
        }
        if let Some(tail) = &self.tail {
            out.push_str(&tail.text());
        }
        out
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// HdrHistogram's percentile distribution text, values in milliseconds, as
/// its `outputPercentileDistribution` writes and its plotters read.
pub fn hgrm(r: &Recorder) -> String {
    let h = &r.latency;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        let mut total = 0u64;
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let value = v.value_iterated_to() as f64 / 1000.0;
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:>12.3} {q:>14.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:>12.3} {q:>14.12} {total:>10}");
            }
        }
    }
    let _ = writeln!(
        out,
        "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        h.distinct_values()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use searchtree_proto::pb::{Coverage, SearchResponse};

    fn run() -> Recorder {
        let mut r = Recorder::default();
        for i in 1..=1000u64 {
            r.sent += 1;
            let response = SearchResponse {
                partial: i % 100 == 0,
                coverage: Some(Coverage {
                    shards_total: 4,
                    shards_ok: if i % 100 == 0 { 3 } else { 4 },
                    ..Default::default()
                }),
                ..Default::default()
            };
            r.record(Duration::from_micros(i * 10), "q", &Ok(response));
        }
        r.sent += 2;
        r.record(
            Duration::from_millis(50),
            "bad",
            &Err(tonic::Status::invalid_argument("x")),
        );
        r.record_abandoned(Duration::from_secs(30));
        r
    }

    #[test]
    fn report_fields_are_consistent() {
        let r = run();
        let report = Report::new(
            "t".into(),
            "open_loop",
            Some(100.0),
            &r,
            Duration::from_secs(10),
        );
        assert_eq!(report.sent, 1002);
        assert_eq!(
            report.completed + report.errors.values().sum::<u64>(),
            report.sent
        );
        assert_eq!(report.errors["INVALID_ARGUMENT"], 1);
        assert_eq!(report.errors["CLIENT_GAVE_UP"], 1);
        assert!((report.partial_fraction - 0.01).abs() < 1e-9);
        assert!((report.coverage_mean - 0.9975).abs() < 1e-9);
        assert_eq!(report.coverage_min, 0.75);
        let l = &report.latency_us;
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max);
        assert!((4_980..=5_020).contains(&l.p50), "{}", l.p50);
        assert!((30_000_000 - 30_000..=30_000_000 + 30_000).contains(&l.max));
        assert!((report.rate_achieved - 100.2).abs() < 1e-6);
        let json = serde_json::to_value(&report).unwrap();
        for key in [
            "sent",
            "completed",
            "errors",
            "partial_fraction",
            "coverage_mean",
            "rate_achieved",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
        for key in ["p50", "p90", "p99", "p999", "max"] {
            assert!(json["latency_us"].get(key).is_some(), "{key}");
            assert!(json["latency_ok_us"].get(key).is_some(), "{key}");
        }
        for key in ["goodput", "good", "rejected", "loadgen_cpu", "budget_ms"] {
            assert!(json.get(key).is_some(), "{key}");
        }
        // No budget: every complete answer is good (the 10 partial are not).
        assert_eq!(report.good, 990);
        assert!((report.goodput - 99.0).abs() < 1e-9);
        assert_eq!(report.rejected, 0);
        // The 30 s abandoned request is in the tail of all requests, not of
        // the answers.
        assert!(
            report.latency_ok_us.max <= 10_010,
            "{}",
            report.latency_ok_us.max
        );
    }

    /// Over 10 s with a 100 ms budget: 600 fast complete answers, 100
    /// partial ones, 100 complete but late (300 ms), 150 rejections in 1 ms
    /// and 50 other errors.
    fn overloaded() -> Recorder {
        let mut r = Recorder::with_budget(100);
        let answer = |partial: bool| {
            Ok(SearchResponse {
                partial,
                coverage: Some(Coverage {
                    shards_total: 4,
                    shards_ok: if partial { 2 } else { 4 },
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let ms = Duration::from_millis;
        for i in 0..600u64 {
            r.record(ms(20 + i % 50), "q", &answer(false));
        }
        for _ in 0..100 {
            r.record(ms(100), "q", &answer(true));
        }
        for _ in 0..100 {
            r.record(ms(300), "q", &answer(false));
        }
        for _ in 0..150 {
            r.record(ms(1), "q", &Err(tonic::Status::resource_exhausted("shed")));
        }
        for _ in 0..50 {
            r.record(ms(100), "q", &Err(tonic::Status::deadline_exceeded("late")));
        }
        r.sent = 1000;
        r
    }

    #[test]
    fn goodput_counts_complete_answers_in_budget_and_rejections_stand_apart() {
        let mut r = overloaded();
        r.loadgen_cpu = Some(0.25);
        let report = Report::new(
            "t".into(),
            "open_loop",
            Some(100.0),
            &r,
            Duration::from_secs(10),
        );
        assert_eq!(report.budget_ms, Some(100));
        assert_eq!(report.good, 600);
        assert!((report.goodput - 60.0).abs() < 1e-9);
        assert!((report.rate_achieved - 100.0).abs() < 1e-9);
        assert_eq!(report.rejected, 150);
        assert_eq!(report.errors["RESOURCE_EXHAUSTED"], 150);
        assert_eq!(report.errors["DEADLINE_EXCEEDED"], 50);
        // 800 answers: the p50 is a fast one; the p90 and up are the late
        // 300 ms ones. Over all requests, the 150 1-ms rejections pull the
        // median down; over answers alone they cannot.
        let ok = &report.latency_ok_us;
        assert!((20_000..=70_100).contains(&ok.p50), "{}", ok.p50);
        assert!((299_000..=301_000).contains(&ok.p99), "{}", ok.p99);
        assert!(report.latency_ok_us.mean > report.latency_us.mean);
        let text = report.text();
        assert!(
            text.contains("good 600 (complete, within 100ms), goodput 60.0/s; rejected (RESOURCE_EXHAUSTED) 150, other errors 50"),
            "{text}"
        );
        assert!(text.contains("latency ok: p50 "), "{text}");
        assert!(text.contains("loadgen:   CPU 0.25 of one core\n"), "{text}");
        assert!(!text.contains("may have limited"), "{text}");
        // The existing lines are all still there.
        for line in ["requests:  sent 1000", "coverage:  ", "latency:   p50 "] {
            assert!(text.contains(line), "{line}: {text}");
        }
    }

    #[test]
    fn a_busy_load_tester_is_called_out() {
        let mut r = overloaded();
        r.loadgen_cpu = Some(0.93);
        let report = Report::new(
            "t".into(),
            "open_loop",
            Some(100.0),
            &r,
            Duration::from_secs(10),
        );
        let text = report.text();
        assert!(
            text.contains("warning:   the load tester used 0.93 of a core: the load tester, not the tree, may have limited this run"),
            "{text}"
        );
        // In-process, the CPU is the index's too: no claim about the tester.
        r.target_in_process = true;
        let text = Report::new("t".into(), "open_loop", None, &r, Duration::from_secs(10)).text();
        assert!(!text.contains("may have limited"), "{text}");
        assert!(text.contains("searched in this process too"), "{text}");
    }

    #[test]
    fn hgrm_has_hdrhistograms_layout() {
        let text = hgrm(&run());
        let first = text.lines().next().unwrap();
        assert!(first.contains("Value") && first.contains("1/(1-Percentile)"));
        assert!(text.contains("#[Mean    ="));
        assert!(text.contains("Total count    =         1002]"));
        let last_row = text
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.trim().is_empty())
            .unwrap();
        assert!(last_row.contains("1.000000000000"), "{last_row}");
    }
}
