//! The step-load scenario: how a tree behaves from half its capacity to four
//! times it.
//!
//! One number (a p99 at one rate) cannot show overload behaviour; the shape of
//! goodput and tail latency as offered load passes capacity can. A tree that
//! sheds well keeps goodput near its capacity C and the answers' p99 within
//! the budget however far the offered load goes past C; one that does not
//! sees goodput collapse. So [`run`] first measures C with a short closed
//! loop (as `searchtree bench --max` does), then offers open-loop load at
//! each factor × C in turn and records one [`Step`] per factor; [`svg`]
//! draws goodput and the answers' p99 against offered load.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::cpu::WARN_FRACTION;
use crate::limits::{MAX_FACTOR, MAX_RATE};
use crate::plot::{
    BOTTOM, COLOURS, HEIGHT, LEFT, TOP, WIDTH, escape, nice_ceiling, svg_start, trim,
};
use crate::record::REJECTED;
use crate::report::Report;
use crate::schedule::{Live, LoadConfig, closed_loop, open_loop};
use crate::target::Target;

/// The factors of capacity offered by default: below, at, and well past it.
pub const DEFAULT_FACTORS: [f64; 6] = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0];

/// Parses a list of factors of capacity such as `0.5,1,2,3,4` (an `x` after
/// a number is allowed: `0.5x,1x`), so that the command line and scripts can
/// choose the steps.
pub fn parse_factors(s: &str) -> Result<Vec<f64>, String> {
    let factors = s
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| {
            let n: f64 = f
                .trim_end_matches(['x', 'X'])
                .parse()
                .map_err(|_| format!("{f:?} is not a factor like 0.5 or 2"))?;
            if n > 0.0 && n <= MAX_FACTOR {
                Ok(n)
            } else {
                Err(format!(
                    "{f:?}: a factor must be above 0 and at most {MAX_FACTOR}"
                ))
            }
        })
        .collect::<Result<Vec<f64>, String>>()?;
    if factors.is_empty() {
        return Err("no factors given".into());
    }
    Ok(factors)
}

/// One step to run: a factor of capacity and the rate it comes to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Planned {
    /// Offered load as a multiple of capacity.
    pub factor: f64,
    /// Offered load, requests per second.
    pub rate: f64,
}

/// The steps to run for `capacity` requests per second: one per factor, in
/// the order given. Refuses a capacity that is not positive, since no load
/// could then be offered relative to it, and a step above the load
/// tester's [`MAX_RATE`], which it could not send.
pub fn plan(capacity: f64, factors: &[f64]) -> Result<Vec<Planned>, String> {
    if !capacity.is_finite() || capacity <= 0.0 {
        return Err(format!(
            "capacity {capacity}/s: the closed loop answered nothing, so there is no load to step from"
        ));
    }
    factors
        .iter()
        .map(|&factor| {
            let rate = factor * capacity;
            if rate > MAX_RATE {
                return Err(format!(
                    "step {}x of capacity {capacity}/s is {rate}/s: the load tester sends at most {MAX_RATE}/s (lower --step-factors or --capacity)",
                    trim(factor)
                ));
            }
            Ok(Planned { factor, rate })
        })
        .collect()
}

/// How the capacity was found, kept with the steps so that a reader can
/// judge it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CapacityRun {
    /// `closed_loop`, or `given` when it came from the caller.
    pub mode: String,
    /// Concurrent workers of the closed loop (0 when given).
    pub workers: usize,
    /// Measured span of the closed loop, seconds (0 when given).
    pub duration_s: f64,
    /// Requests finished per second: the capacity C.
    pub rate_achieved: f64,
    /// Complete answers within the budget per second, for comparison.
    pub goodput: f64,
    /// Errors of the closed loop by gRPC code: rejections here mean C counts
    /// fast refusals and overstates what the tree can answer.
    pub errors: BTreeMap<String, u64>,
    /// The load tester's CPU over the closed loop, fraction of one core.
    pub loadgen_cpu: Option<f64>,
}

impl CapacityRun {
    /// The capacity run summarised from a closed loop's report.
    pub fn from_report(workers: usize, r: &Report) -> Self {
        CapacityRun {
            mode: r.mode.clone(),
            workers,
            duration_s: r.duration_s,
            rate_achieved: r.rate_achieved,
            goodput: r.goodput,
            errors: r.errors.clone(),
            loadgen_cpu: r.loadgen_cpu,
        }
    }

    /// A capacity given by the caller rather than measured (to compare runs
    /// against the same C).
    pub fn given(capacity: f64) -> Self {
        CapacityRun {
            mode: "given".into(),
            workers: 0,
            duration_s: 0.0,
            rate_achieved: capacity,
            goodput: 0.0,
            errors: BTreeMap::new(),
            loadgen_cpu: None,
        }
    }
}

/// What one step measured: the figures the overload work is judged by.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Step {
    /// Offered load as a multiple of capacity.
    pub factor: f64,
    /// Offered load, requests per second (the open loop's scheduled rate).
    pub offered: f64,
    /// Requests sent in the measured window.
    pub sent: u64,
    /// Requests finished (answered or refused) per second.
    pub achieved: f64,
    /// Complete answers within the budget per second.
    pub goodput: f64,
    /// Complete answers within the budget.
    pub good: u64,
    /// Requests refused for overload (`RESOURCE_EXHAUSTED`).
    pub rejected: u64,
    /// Errors other than rejections (deadlines, gave up, unavailable, ...).
    pub other_errors: u64,
    /// Every error by gRPC code, rejections included.
    pub errors: BTreeMap<String, u64>,
    /// Fraction of answers marked partial.
    pub partial_fraction: f64,
    /// p99 latency of all requests, µs (rejections and errors included).
    pub p99_us: u64,
    /// p99 latency of answers alone, µs (`latency_ok_us.p99`).
    pub p99_ok_us: u64,
    /// The load tester's CPU over the step, fraction of one core.
    pub loadgen_cpu: Option<f64>,
}

impl Step {
    /// The step's figures from its open-loop report.
    pub fn from_report(factor: f64, r: &Report) -> Self {
        let errors_total: u64 = r.errors.values().sum();
        Step {
            factor,
            offered: r.rate_target.unwrap_or(r.rate_achieved),
            sent: r.sent,
            achieved: r.rate_achieved,
            goodput: r.goodput,
            good: r.good,
            rejected: r.rejected,
            other_errors: errors_total - r.rejected,
            errors: r.errors.clone(),
            partial_fraction: r.partial_fraction,
            p99_us: r.latency_us.p99,
            p99_ok_us: r.latency_ok_us.p99,
            loadgen_cpu: r.loadgen_cpu,
        }
    }
}

/// The scenario's result (`--json`): the capacity and one entry per step.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepReport {
    /// What was measured.
    pub target: String,
    /// Capacity C, requests per second, that the factors multiply.
    pub capacity: f64,
    /// How C was found.
    pub capacity_run: CapacityRun,
    /// The budget every request carried, ms (`None`: the root's default).
    pub budget_ms: Option<u64>,
    /// Measured seconds of each step.
    pub step_duration_s: f64,
    /// Whether the searching ran in the load tester's process, so that its
    /// CPU figures include the search.
    pub target_in_process: bool,
    /// One per factor, in the order run.
    pub steps: Vec<Step>,
}

impl StepReport {
    /// The table for people: one line per step.
    pub fn text(&self) -> String {
        let ms = |us: u64| format!("{:.1}ms", us as f64 / 1000.0);
        let mut out = String::new();
        let _ = writeln!(out, "target:    {}", self.target);
        let c = &self.capacity_run;
        let how = if c.mode == "given" {
            "given".to_string()
        } else {
            format!(
                "closed loop, {} workers, {:.1}s; goodput {:.1}/s",
                c.workers, c.duration_s, c.goodput
            )
        };
        let _ = writeln!(out, "capacity:  C = {:.1}/s ({how})", self.capacity);
        if let Some(n) = c.errors.get(REJECTED) {
            let _ = writeln!(
                out,
                "warning:   the capacity run had {n} {REJECTED}: C counts fast refusals"
            );
        }
        let _ = writeln!(
            out,
            "steps:     {:.1}s each, budget {}",
            self.step_duration_s,
            self.budget_ms
                .map_or("the root's default".to_string(), |b| format!("{b}ms"))
        );
        let _ = writeln!(
            out,
            "{:>6} {:>9} {:>9} {:>9} {:>8} {:>9} {:>8} {:>10} {:>10} {:>8}",
            "load",
            "offered/s",
            "achieved",
            "goodput",
            "rejected",
            "other-err",
            "partial",
            "p99 all",
            "p99 ok",
            "loadgen"
        );
        for s in &self.steps {
            let _ = writeln!(
                out,
                "{:>6} {:>9.1} {:>9.1} {:>9.1} {:>8} {:>9} {:>7.1}% {:>10} {:>10} {:>8}",
                format!("{}x", trim(s.factor)),
                s.offered,
                s.achieved,
                s.goodput,
                s.rejected,
                s.other_errors,
                100.0 * s.partial_fraction,
                ms(s.p99_us),
                ms(s.p99_ok_us),
                s.loadgen_cpu.map_or("-".to_string(), |c| format!("{c:.2}"))
            );
        }
        if !self.target_in_process {
            let busy: Vec<String> = self
                .steps
                .iter()
                .filter(|s| s.loadgen_cpu.is_some_and(|c| c > WARN_FRACTION))
                .map(|s| format!("{}x", trim(s.factor)))
                .collect();
            if !busy.is_empty() {
                let _ = writeln!(
                    out,
                    "warning:   the load tester used more than {WARN_FRACTION} of a core at {}: the load tester, not the tree, may have limited those steps",
                    busy.join(", ")
                );
            }
        }
        out
    }
}

/// What the scenario runs: the closed loop that finds C, then the steps.
#[derive(Debug, Clone)]
pub struct StepConfig {
    /// The settings of every run: arrivals, warm-up, budget, timeout, top-k,
    /// in-flight limit; `duration` is each step's. `rate` is ignored.
    pub load: LoadConfig,
    /// Offered load of each step, as factors of C.
    pub factors: Vec<f64>,
    /// Workers of the closed loop that measures C.
    pub capacity_workers: usize,
    /// Measured span of that closed loop.
    pub capacity_duration: Duration,
    /// Use this C instead of measuring it.
    pub capacity: Option<f64>,
}

/// What [`run`] is doing, for a progress display.
#[derive(Debug)]
pub enum Progress<'a> {
    /// Measuring C.
    Capacity,
    /// C is known.
    CapacityFound(&'a CapacityRun),
    /// Starting step `index` of `of`.
    StepStarted {
        /// 0-based.
        index: usize,
        /// Steps in all.
        of: usize,
        /// What it offers.
        planned: Planned,
    },
    /// A step finished.
    StepDone(&'a Step),
}

/// Runs the scenario against `target`: C from a closed loop (unless given),
/// then one open-loop run per factor, one after another (each waits for the
/// last one's answers, so a step does not inherit the previous one's
/// requests). `live` counts every request, for a progress line.
pub async fn run(
    target: Arc<dyn Target>,
    queries: Arc<Vec<String>>,
    config: &StepConfig,
    live: Arc<Live>,
    mut progress: impl FnMut(Progress<'_>),
) -> anyhow::Result<StepReport> {
    let capacity_run = match config.capacity {
        Some(c) => CapacityRun::given(c),
        None => {
            progress(Progress::Capacity);
            let load = LoadConfig {
                duration: config.capacity_duration,
                ..config.load.clone()
            };
            let (recorder, span) = closed_loop(
                Arc::clone(&target),
                Arc::clone(&queries),
                &load,
                config.capacity_workers,
                Arc::clone(&live),
            )
            .await;
            let report = Report::new(target.describe(), "closed_loop", None, &recorder, span);
            CapacityRun::from_report(config.capacity_workers.max(1), &report)
        }
    };
    progress(Progress::CapacityFound(&capacity_run));
    let capacity = capacity_run.rate_achieved;
    let planned = plan(capacity, &config.factors).map_err(anyhow::Error::msg)?;
    let mut steps = Vec::new();
    for (index, p) in planned.iter().enumerate() {
        progress(Progress::StepStarted {
            index,
            of: planned.len(),
            planned: *p,
        });
        let load = LoadConfig {
            rate: p.rate,
            seed: config.load.seed.wrapping_add(index as u64),
            ..config.load.clone()
        };
        let (recorder, span) = open_loop(
            Arc::clone(&target),
            Arc::clone(&queries),
            &load,
            Arc::clone(&live),
        )
        .await;
        let report = Report::new(
            target.describe(),
            "open_loop",
            Some(p.rate),
            &recorder,
            span,
        );
        let step = Step::from_report(p.factor, &report);
        progress(Progress::StepDone(&step));
        steps.push(step);
    }
    Ok(StepReport {
        target: target.describe(),
        capacity,
        capacity_run,
        budget_ms: (config.load.budget_ms > 0).then_some(u64::from(config.load.budget_ms)),
        step_duration_s: config.load.duration.as_secs_f64(),
        target_in_process: target.in_process(),
        steps,
    })
}

/// Space on the right for the latency axis.
const RIGHT_AXIS: f64 = 70.0;

/// Draws the scenario as an SVG chart in the style of [`crate::plot`]:
/// offered load across; goodput (left axis, q/s) and the p99 of answers
/// alone (right axis, ms) as lines, the p99 of all requests as a thinner
/// dashed line, and for reference the ideal goodput (= offered load up to
/// C), C itself, and the budget.
pub fn svg(title: &str, report: &StepReport) -> String {
    let steps = &report.steps;
    let plot_right = WIDTH - RIGHT_AXIS;
    let max_x = nice_ceiling(
        steps
            .iter()
            .map(|s| s.offered)
            .fold(report.capacity, f64::max)
            .max(1e-3),
    );
    let max_rate = nice_ceiling(
        steps
            .iter()
            .map(|s| s.goodput)
            .fold(report.capacity, f64::max)
            .max(1e-3),
    );
    let ms = |us: u64| us as f64 / 1000.0;
    let max_ms = nice_ceiling(
        steps
            .iter()
            .map(|s| ms(s.p99_ok_us).max(ms(s.p99_us)))
            .fold(report.budget_ms.map_or(0.0, |b| b as f64), f64::max)
            .max(1e-3),
    );
    let sx = |x: f64| LEFT + x / max_x * (plot_right - LEFT);
    let sy_rate = |y: f64| HEIGHT - BOTTOM - y / max_rate * (HEIGHT - TOP - BOTTOM);
    let sy_ms = |y: f64| HEIGHT - BOTTOM - y / max_ms * (HEIGHT - TOP - BOTTOM);
    let (goodput_colour, p99_colour) = (COLOURS[0], COLOURS[1]);

    let mut out = svg_start(title);
    // Grid: offered load across, both value axes on the same five lines.
    for i in 0..=5 {
        let v = max_x * f64::from(i) / 5.0;
        let x = sx(v);
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{TOP}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"##,
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 18.0,
            trim(v)
        );
    }
    for i in 0..=5 {
        let f = f64::from(i) / 5.0;
        let y = sy_rate(max_rate * f);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y}" x2="{plot_right}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end" fill="{goodput_colour}">{}</text><text x="{}" y="{}" text-anchor="start" fill="{p99_colour}">{}</text>"##,
            LEFT - 6.0,
            y + 4.0,
            trim(max_rate * f),
            plot_right + 6.0,
            y + 4.0,
            trim(max_ms * f)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">offered load (requests/s)</text><text x="16" y="{}" text-anchor="middle" fill="{goodput_colour}" transform="rotate(-90 16 {})">goodput (answers/s)</text><text x="{}" y="{}" text-anchor="middle" fill="{p99_colour}" transform="rotate(90 {} {})">p99 latency (ms)</text>"#,
        (LEFT + plot_right) / 2.0,
        HEIGHT - 10.0,
        HEIGHT / 2.0,
        HEIGHT / 2.0,
        WIDTH - 14.0,
        HEIGHT / 2.0,
        WIDTH - 14.0,
        HEIGHT / 2.0
    );
    // References: the ideal goodput (all offered load answered, up to C),
    // C, and the budget the answers' p99 should stay within.
    let c = report.capacity;
    let _ = writeln!(
        out,
        r##"<polyline fill="none" stroke="#999" stroke-dasharray="4 4" points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}"/>"##,
        sx(0.0),
        sy_rate(0.0),
        sx(c),
        sy_rate(c),
        sx(max_x),
        sy_rate(c)
    );
    let _ = writeln!(
        out,
        r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="#999" stroke-dasharray="2 3"/><text x="{:.1}" y="{}" fill="#666">C = {}/s</text>"##,
        HEIGHT - BOTTOM,
        sx(c) + 4.0,
        TOP + 12.0,
        trim((c * 10.0).round() / 10.0),
        x = sx(c)
    );
    if let Some(b) = report.budget_ms {
        let y = sy_ms(b as f64);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{plot_right}" y2="{y:.1}" stroke="{p99_colour}" stroke-opacity="0.4" stroke-dasharray="6 3"/><text x="{}" y="{:.1}" text-anchor="end" fill="{p99_colour}" fill-opacity="0.7">budget {b}ms</text>"##,
            plot_right - 4.0,
            y - 4.0
        );
    }
    // (label, colour, line style, points)
    type Series<'a> = (&'a str, &'a str, &'a str, Vec<(f64, f64)>);
    let series: [Series; 3] = [
        (
            "goodput (answers/s, left)",
            goodput_colour,
            r#"stroke-width="2""#,
            steps
                .iter()
                .map(|s| (sx(s.offered), sy_rate(s.goodput)))
                .collect(),
        ),
        (
            "p99 of answers (ms, right)",
            p99_colour,
            r#"stroke-width="2""#,
            steps
                .iter()
                .map(|s| (sx(s.offered), sy_ms(ms(s.p99_ok_us))))
                .collect(),
        ),
        (
            "p99 of all requests (ms, right)",
            p99_colour,
            r#"stroke-width="1" stroke-dasharray="3 3""#,
            steps
                .iter()
                .map(|s| (sx(s.offered), sy_ms(ms(s.p99_us))))
                .collect(),
        ),
    ];
    for (i, (label, colour, style, pts)) in series.iter().enumerate() {
        let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" {style} points="{}"/>"#,
            path.join(" ")
        );
        if i < 2 {
            for (x, y) in pts {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{colour}"/>"#
                );
            }
        }
        let ly = TOP + 16.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" {style}/><text x="{}" y="{}">{}</text>"#,
            LEFT + 10.0,
            LEFT + 30.0,
            LEFT + 36.0,
            ly + 4.0,
            escape(label)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::future::BoxFuture;
    use searchtree_proto::pb::{SearchRequest, SearchResponse};

    use super::*;
    use crate::record::Recorder;
    use crate::schedule::Arrival;

    #[test]
    fn factors_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_factors("0.5,1,2").unwrap(), [0.5, 1.0, 2.0]);
        assert_eq!(parse_factors(" 0.5x, 4X ,").unwrap(), [0.5, 4.0]);
        assert!(parse_factors("").is_err());
        assert!(
            parse_factors("1,0")
                .unwrap_err()
                .contains("above 0 and at most 100")
        );
        assert!(parse_factors("1,-2").is_err());
        assert!(parse_factors("1,fast").unwrap_err().contains("fast"));
        assert!(parse_factors("inf").is_err());
        assert!(parse_factors("NaN").is_err());
        // An infinite rate would send forever without pausing.
        assert!(parse_factors("1e300").unwrap_err().contains("at most 100"));
    }

    #[test]
    fn the_plan_multiplies_capacity_in_the_order_given() {
        let p = plan(400.0, &DEFAULT_FACTORS).unwrap();
        let rates: Vec<f64> = p.iter().map(|s| s.rate).collect();
        assert_eq!(rates, [200.0, 400.0, 600.0, 800.0, 1200.0, 1600.0]);
        assert_eq!(p[0].factor, 0.5);
        assert_eq!(plan(10.0, &[2.0, 1.0]).unwrap()[0].rate, 20.0);
        assert!(plan(0.0, &[1.0]).unwrap_err().contains("answered nothing"));
        assert!(plan(f64::NAN, &[1.0]).is_err());
        let err = plan(500_000.0, &[1.0, 4.0]).unwrap_err();
        assert!(
            err.contains("step 4x of capacity 500000/s is 2000000/s")
                && err.contains("at most 1000000/s"),
            "{err}"
        );
    }

    /// The report of a 10 s open-loop step at `rate` with a 100 ms budget:
    /// `good` fast complete answers, `late` complete ones at 300 ms, `shed`
    /// rejections in 1 ms and `failed` deadline errors.
    fn step_report(rate: f64, good: u64, late: u64, shed: u64, failed: u64) -> Report {
        let mut r = Recorder::with_budget(100);
        let ok = Ok(SearchResponse::default());
        let ms = Duration::from_millis;
        for i in 0..good {
            r.record(ms(10 + i % 20), "q", &ok);
        }
        for _ in 0..late {
            r.record(ms(300), "q", &ok);
        }
        for _ in 0..shed {
            r.record(ms(1), "q", &Err(tonic::Status::resource_exhausted("shed")));
        }
        for _ in 0..failed {
            r.record(ms(100), "q", &Err(tonic::Status::deadline_exceeded("late")));
        }
        r.sent = good + late + shed + failed;
        r.loadgen_cpu = Some(0.2);
        Report::new(
            "tree".into(),
            "open_loop",
            Some(rate),
            &r,
            Duration::from_secs(10),
        )
    }

    fn sample() -> StepReport {
        let capacity = Report::new(
            "tree".into(),
            "closed_loop",
            None,
            &{
                let mut r = Recorder::with_budget(100);
                for _ in 0..4000 {
                    r.record(
                        Duration::from_millis(15),
                        "q",
                        &Ok(SearchResponse::default()),
                    );
                }
                r.sent = 4000;
                r
            },
            Duration::from_secs(10),
        );
        let mut busy = step_report(1600.0, 3900, 0, 12000, 100);
        busy.loadgen_cpu = Some(0.95);
        StepReport {
            target: "tree".into(),
            capacity: capacity.rate_achieved,
            capacity_run: CapacityRun::from_report(8, &capacity),
            budget_ms: Some(100),
            step_duration_s: 10.0,
            target_in_process: false,
            steps: vec![
                Step::from_report(0.5, &step_report(200.0, 2000, 0, 0, 0)),
                Step::from_report(1.0, &step_report(400.0, 3950, 50, 0, 0)),
                Step::from_report(4.0, &busy),
            ],
        }
    }

    #[test]
    fn steps_carry_the_figures_of_their_reports() {
        let r = sample();
        assert_eq!(r.capacity, 400.0);
        let s = &r.steps[2];
        assert_eq!(s.factor, 4.0);
        assert_eq!(s.offered, 1600.0);
        assert_eq!(s.sent, 16_000);
        assert_eq!(s.achieved, 1600.0);
        assert_eq!(s.goodput, 390.0);
        assert_eq!(s.rejected, 12_000);
        assert_eq!(s.other_errors, 100);
        assert_eq!(s.errors["DEADLINE_EXCEEDED"], 100);
        // Over all requests the 1 ms rejections are most of them; the p99
        // of answers alone is an answer's.
        assert!(s.p99_ok_us >= 10_000 && s.p99_ok_us <= 30_100, "{s:?}");
        assert!(r.steps[1].p99_ok_us >= 299_000, "{:?}", r.steps[1]);

        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["capacity"], 400.0);
        assert_eq!(json["capacity_run"]["workers"], 8);
        let steps = json["steps"].as_array().unwrap();
        assert_eq!(steps.len(), 3);
        for key in [
            "factor",
            "offered",
            "achieved",
            "goodput",
            "rejected",
            "other_errors",
            "partial_fraction",
            "p99_us",
            "p99_ok_us",
            "loadgen_cpu",
        ] {
            assert!(steps[0].get(key).is_some(), "{key}");
        }
    }

    #[test]
    fn the_table_has_a_line_per_step_and_calls_out_a_busy_tester() {
        let text = sample().text();
        assert!(
            text.contains("capacity:  C = 400.0/s (closed loop, 8 workers"),
            "{text}"
        );
        assert!(text.contains("budget 100ms"), "{text}");
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            .collect();
        assert_eq!(rows.len(), 3, "{text}");
        assert!(rows[0].trim_start().starts_with("0.5x"), "{text}");
        assert!(
            rows[2].contains("12000") && rows[2].contains("0.95"),
            "{text}"
        );
        assert!(text.contains("at 4x: the load tester"), "{text}");
        assert!(!text.contains("capacity run had"), "{text}");
    }

    #[test]
    fn the_chart_has_goodput_and_p99_against_offered_load() {
        let text = svg("tree <4 shards>", &sample());
        assert!(text.starts_with("<svg") && text.ends_with("</svg>\n"));
        assert!(text.contains("goodput (answers/s, left)"));
        assert!(text.contains("p99 of answers (ms, right)"));
        assert!(text.contains("offered load (requests/s)"));
        assert!(text.contains("budget 100ms"));
        assert!(text.contains("C = 400/s"));
        assert!(text.contains("tree &lt;4 shards&gt;"));
        // Goodput, answers' p99, all requests' p99, and the ideal line.
        assert_eq!(text.matches("<polyline").count(), 4);
        // A point per step on each of the two main series.
        assert_eq!(text.matches("<circle").count(), 6);
        // Nothing measured still draws (an empty chart, not a panic).
        let mut empty = sample();
        empty.steps.clear();
        assert!(svg("t", &empty).contains("</svg>"));
    }

    /// Answers in 2 ms, whatever the load: C from the closed loop is then
    /// `workers / 2 ms`, and every step is answered in full.
    struct Fast;

    impl Target for Fast {
        fn search(
            &self,
            _: SearchRequest,
        ) -> BoxFuture<'static, Result<SearchResponse, tonic::Status>> {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(2)).await;
                Ok(SearchResponse::default())
            })
        }

        fn describe(&self) -> String {
            "fast".into()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn run_measures_capacity_then_steps_through_the_factors() {
        let config = StepConfig {
            load: LoadConfig {
                rate: 1.0,
                arrival: Arrival::Uniform,
                seed: 1,
                zipf: None,
                duration: Duration::from_secs(1),
                warmup: Duration::ZERO,
                max_in_flight: None,
                timeout: Duration::from_secs(5),
                top_k: 10,
                budget_ms: 100,
                profile: false,
                pacing: crate::schedule::Pacing::Timer,
            },
            factors: vec![0.5, 2.0],
            capacity_workers: 2,
            capacity_duration: Duration::from_secs(1),
            capacity: None,
        };
        let mut seen = Vec::new();
        let report = run(
            Arc::new(Fast),
            Arc::new(vec!["q".into()]),
            &config,
            Arc::new(Live::default()),
            |p| {
                seen.push(match p {
                    Progress::Capacity => "capacity".to_string(),
                    Progress::CapacityFound(_) => "found".into(),
                    Progress::StepStarted { index, .. } => format!("start {index}"),
                    Progress::StepDone(_) => "done".into(),
                })
            },
        )
        .await
        .unwrap();
        assert_eq!(
            seen,
            ["capacity", "found", "start 0", "done", "start 1", "done"]
        );
        assert!(
            (900.0..=1001.0).contains(&report.capacity),
            "{}",
            report.capacity
        );
        assert_eq!(report.steps.len(), 2);
        assert_eq!(report.steps[1].offered, 2.0 * report.capacity);
        for s in &report.steps {
            assert_eq!(s.good, s.sent, "{s:?}");
            assert!((s.goodput - s.offered).abs() <= 0.02 * s.offered, "{s:?}");
        }

        // A given C skips the closed loop.
        let given = StepConfig {
            capacity: Some(100.0),
            factors: vec![1.0],
            ..config
        };
        let report = run(
            Arc::new(Fast),
            Arc::new(vec!["q".into()]),
            &given,
            Arc::new(Live::default()),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(report.capacity_run.mode, "given");
        assert_eq!(report.steps[0].offered, 100.0);
    }
}
