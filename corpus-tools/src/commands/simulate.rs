//! `searchtree simulate`: a tree of any shape and size, on virtual time,
//! with the inner-node code that serves (see [`crate::simulate`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::simulate::leaf::{Body, LeafModel};
use crate::simulate::tree::{TreeShape, inner_levels};
use crate::simulate::{
    MAX_BUDGET, MAX_LEAF_PROCESSES, MAX_PARALLEL, MAX_QUERIES, RATE_RANGE, SimConfig, SimReport,
    run as simulate,
};
use searchtree_bench::limits;
use searchtree_parent::child_k::DEFAULT_CHILD_K_PROBABILITY;
use searchtree_proto::MAX_TOP_K;

/// Simulate a tree far larger than this machine — the real fan-out,
/// deadlines, merge, replica groups and hedging over simulated leaves — on
/// tokio's paused clock, and report what its clients would see. Every value
/// is checked when the flags are parsed (and every run of a sweep before the
/// first starts), with the range it takes named.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Shards (one leaf each, times --replicas): 1 to 1000000, and at most
    /// 1000000 leaf processes (leaves × replicas).
    #[arg(long, default_value_t = 1000, value_parser = parse_leaves)]
    pub leaves: u32,
    /// Children per inner node; the levels follow: 2 to 1000000.
    #[arg(long, default_value_t = 32, value_parser = parse_fanout)]
    pub fanout: u32,
    /// Replicas of each leaf (a replica group when above 1): 1 to 1000000,
    /// and at most 1000000 leaf processes (leaves × replicas).
    #[arg(long, default_value_t = 1, value_parser = parse_replicas)]
    pub replicas: u32,
    /// Leaf latency: `lognormal:MEDIAN_MS[:SIGMA]` (MEDIAN_MS from 0.001 to
    /// 60000, SIGMA from 0 to 5, 0.5 if left out; a draw beyond a day is
    /// cut to a day), or a file of `VALUE_US COUNT` lines as `searchtree
    /// bench --save-latency` writes (values up to a day; bench a leaf's
    /// address to measure one).
    #[arg(long, default_value = "lognormal:2:0.5", value_parser = Body::parse)]
    pub leaf_latency: Body,
    /// The chance a leaf request meets a straggler: 0 to 1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    pub straggler_prob: f64,
    /// What a straggler adds, in milliseconds: 0 to 86400000 (a day).
    #[arg(long, default_value_t = 1000.0, value_parser = parse_ms)]
    pub straggler_ms: f64,
    /// A leaf that straggles stays slow this long, in milliseconds, 0 to
    /// 86400000 (correlated slowness, a slow machine); 0: request by
    /// request.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ms)]
    pub straggler_for_ms: f64,
    /// The chance a leaf request fails (unavailable): 0 to 1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    pub failure_prob: f64,
    /// The fraction of leaf processes that are dead (refusing everything):
    /// 0 to 1. A query no leaf answers is an error, as at the serving root.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub dead_fraction: f64,
    /// Each query's budget, in milliseconds: above 0 (and above
    /// --reserve-ms) and at most 86400000 (a day). Unset: a day, the cap on
    /// every simulated query — each waits for every leaf unless one takes
    /// longer than that (the output says so).
    #[arg(long, value_parser = parse_budget_ms)]
    pub budget_ms: Option<f64>,
    /// Time each inner node keeps back from its deadline for its merge and
    /// the hop up, in milliseconds: 0 to 86400000.
    #[arg(long, default_value_t = 1.0, value_parser = parse_ms)]
    pub reserve_ms: f64,
    /// One network hop's delay between inner nodes, each way, in
    /// milliseconds: 0 to 86400000.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ms)]
    pub hop_ms: f64,
    /// Hedged requests per request in each replica group, 0 to 1 (0: none).
    #[arg(long, default_value_t = 0.0, value_parser = parse_hedge_ratio)]
    pub hedge_ratio: f64,
    /// Each child is asked for its likely share of the top-k with this
    /// probability, and asked again when it might hold more, as in the
    /// serving tree; 1 asks every child for all k. Above 0, at most 1.
    #[arg(long, default_value_t = DEFAULT_CHILD_K_PROBABILITY, value_parser = parse_child_k_probability)]
    pub child_k_probability: f64,
    /// Queries per second, Poisson arrivals (open loop): 0.001 to 1000000.
    #[arg(long, default_value_t = 100.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Queries to send: 1 to 1000000000.
    #[arg(long, default_value_t = 1000, value_parser = parse_queries)]
    pub queries: u64,
    /// Hits asked for: 1 to 1000 (nodes refuse more).
    #[arg(long, default_value_t = 10, value_parser = parse_top_k)]
    pub top_k: u32,
    /// Seed of every draw: the same seed gives the same numbers.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Split the arrivals over N copies of the tree, each on a thread of
    /// its own (N times as fast on N cores), N from 1 to 256. Each copy's
    /// replica groups learn from 1/N of the traffic; the same seed and N
    /// give the same numbers.
    #[arg(long, default_value_t = 1, value_parser = parse_parallel)]
    pub parallel: u32,
    /// Run once per value of one parameter, as PARAM=V1,V2,... (fanout,
    /// replicas, leaves, hedge-ratio, child-k-probability, straggler-prob,
    /// budget-ms), and print a what-if table. Each value takes the range of
    /// its flag, and every run is checked before the first starts.
    #[arg(long, value_parser = Sweep::parse)]
    pub sweep: Option<Sweep>,
    /// Write the report (a list of reports with --sweep) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write latency by percentile as an SVG chart here (one line per
    /// value with --sweep).
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// The largest value of a millisecond flag: [`MAX_BUDGET`], a day.
const MAX_MILLIS: f64 = MAX_BUDGET.as_millis() as f64;

/// The most leaves, replicas or children per node one flag may ask for
/// (their product is bounded by [`MAX_LEAF_PROCESSES`] too).
const MAX_COUNT: u32 = MAX_LEAF_PROCESSES as u32;

/// `--leaves`.
fn parse_leaves(s: &str) -> Result<u32, String> {
    limits::whole(s, 1, MAX_COUNT, "shards")
}

/// `--fanout`: a node of one child would make a tree of endless levels.
fn parse_fanout(s: &str) -> Result<u32, String> {
    limits::whole(s, 2, MAX_COUNT, "children per inner node")
}

/// `--replicas`.
fn parse_replicas(s: &str) -> Result<u32, String> {
    limits::whole(s, 1, MAX_COUNT, "replicas of each shard")
}

/// `--straggler-prob`, `--failure-prob`.
fn parse_probability(s: &str) -> Result<f64, String> {
    limits::within(s, 0.0, 1.0, "a probability")
}

/// `--dead-fraction`.
fn parse_fraction(s: &str) -> Result<f64, String> {
    limits::within(s, 0.0, 1.0, "a fraction of leaf processes")
}

/// `--hedge-ratio`.
fn parse_hedge_ratio(s: &str) -> Result<f64, String> {
    limits::within(s, 0.0, 1.0, "hedged requests per request")
}

/// `--child-k-probability`: 0 would ask children for nothing.
fn parse_child_k_probability(s: &str) -> Result<f64, String> {
    limits::positive(s, 1.0, "a probability")
}

/// The millisecond flags: no negative delay, none past a day.
fn parse_ms(s: &str) -> Result<f64, String> {
    limits::within(s, 0.0, MAX_MILLIS, "milliseconds; at most a day")
}

/// `--budget-ms`: 0 would answer every query at once, empty.
fn parse_budget_ms(s: &str) -> Result<f64, String> {
    limits::positive(
        s,
        MAX_MILLIS,
        "milliseconds; at most a day; leave it out for no budget",
    )
}

/// `--rate`: the gaps between arrivals must fit in a duration.
fn parse_rate(s: &str) -> Result<f64, String> {
    let (slowest, fastest) = RATE_RANGE;
    limits::within(s, slowest, fastest, "queries per second")
}

/// `--queries`.
fn parse_queries(s: &str) -> Result<u64, String> {
    limits::whole(s, 1, MAX_QUERIES, "queries")
}

/// `--top-k`: what nodes accept.
fn parse_top_k(s: &str) -> Result<u32, String> {
    limits::whole(s, 1, MAX_TOP_K as u32, "hits; nodes refuse more")
}

/// `--parallel`.
fn parse_parallel(s: &str) -> Result<u32, String> {
    limits::whole(s, 1, MAX_PARALLEL, "copies of the tree")
}

/// A parameter `--sweep` varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepParam {
    /// `--fanout`.
    Fanout,
    /// `--replicas`.
    Replicas,
    /// `--leaves`.
    Leaves,
    /// `--hedge-ratio`.
    HedgeRatio,
    /// `--child-k-probability`.
    ChildKProbability,
    /// `--straggler-prob`.
    StragglerProb,
    /// `--budget-ms`.
    BudgetMs,
}

impl SweepParam {
    /// Every parameter, by the name `--sweep` takes.
    const ALL: [(&'static str, SweepParam); 7] = [
        ("fanout", SweepParam::Fanout),
        ("replicas", SweepParam::Replicas),
        ("leaves", SweepParam::Leaves),
        ("hedge-ratio", SweepParam::HedgeRatio),
        ("child-k-probability", SweepParam::ChildKProbability),
        ("straggler-prob", SweepParam::StragglerProb),
        ("budget-ms", SweepParam::BudgetMs),
    ];

    /// The parameter's name (its flag without the dashes).
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("?", |(name, _)| name)
    }

    /// `value` checked by the parser of the parameter's own flag, so that a
    /// sweep takes exactly what the flag takes.
    fn parse_value(self, value: &str) -> Result<f64, String> {
        match self {
            SweepParam::Fanout => parse_fanout(value).map(f64::from),
            SweepParam::Replicas => parse_replicas(value).map(f64::from),
            SweepParam::Leaves => parse_leaves(value).map(f64::from),
            SweepParam::HedgeRatio => parse_hedge_ratio(value),
            SweepParam::ChildKProbability => parse_child_k_probability(value),
            SweepParam::StragglerProb => parse_probability(value),
            SweepParam::BudgetMs => parse_budget_ms(value),
        }
    }

    /// Sets the parameter to `value` (as [`SweepParam::parse_value`]
    /// returned it) in `config`.
    fn apply(self, config: &mut SimConfig, value: f64) -> anyhow::Result<()> {
        match self {
            // Whole numbers within u32, as their parsers returned them.
            SweepParam::Fanout => config.shape.fanout = value as u32,
            SweepParam::Replicas => config.shape.replicas = value as u32,
            SweepParam::Leaves => config.shape.leaves = value as u32,
            SweepParam::HedgeRatio => config.shape.hedge_ratio = value,
            SweepParam::ChildKProbability => config.shape.child_k_probability = value,
            SweepParam::StragglerProb => config.model.straggler_prob = value,
            SweepParam::BudgetMs => config.budget = Some(millis("budget-ms", value)?),
        }
        Ok(())
    }
}

/// `--sweep PARAM=V1,V2,...`: the parameter and its values (as written, and
/// as checked by the parameter's own flag).
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// What is varied.
    pub param: SweepParam,
    /// Each value as written (the run's label) and as parsed.
    pub values: Vec<(String, f64)>,
}

impl Sweep {
    /// Parses `PARAM=V1,V2,...`, checking every value as the parameter's
    /// flag would, so that a bad value is refused before any run.
    pub fn parse(s: &str) -> Result<Sweep, String> {
        let names = || {
            SweepParam::ALL
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (name, values) = s
            .split_once('=')
            .ok_or_else(|| format!("give PARAM=V1,V2,... with PARAM one of {}", names()))?;
        let param = SweepParam::ALL
            .iter()
            .find(|(n, _)| *n == name.trim())
            .map(|(_, p)| *p)
            .ok_or_else(|| format!("{name:?} is not one of {}", names()))?;
        let values = values
            .split(',')
            .map(str::trim)
            .map(|v| {
                param
                    .parse_value(v)
                    .map(|parsed| (v.to_string(), parsed))
                    .map_err(|e| format!("{}={v}: {e}", param.name()))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Sweep { param, values })
    }
}

impl SimulateArgs {
    fn config(&self) -> anyhow::Result<SimConfig> {
        let ms = |name: &str, v: f64| millis(name, v);
        let config = SimConfig {
            shape: TreeShape {
                leaves: self.leaves,
                fanout: self.fanout,
                replicas: self.replicas,
                dead_fraction: self.dead_fraction,
                hedge_ratio: self.hedge_ratio,
                child_k_probability: self.child_k_probability,
                reserve: ms("reserve-ms", self.reserve_ms)?,
                hop: ms("hop-ms", self.hop_ms)?,
                seed: self.seed,
            },
            model: LeafModel {
                body: self.leaf_latency.clone(),
                straggler_prob: self.straggler_prob,
                straggler: ms("straggler-ms", self.straggler_ms)?,
                straggler_for: Some(ms("straggler-for-ms", self.straggler_for_ms)?)
                    .filter(|d| !d.is_zero()),
                failure_prob: self.failure_prob,
            },
            queries: self.queries,
            rate: self.rate,
            budget: self.budget_ms.map(|b| ms("budget-ms", b)).transpose()?,
            top_k: self.top_k,
            parallel: self.parallel,
        };
        config.check()?;
        Ok(config)
    }

    /// Every run to make, labelled, each checked as a whole (leaves ×
    /// replicas, the budget against the reserve, ...) before any runs.
    fn runs(&self) -> anyhow::Result<Vec<(String, SimConfig)>> {
        let base = self.config()?;
        let Some(sweep) = &self.sweep else {
            return Ok(vec![("run".to_string(), base)]);
        };
        sweep
            .values
            .iter()
            .map(|(written, value)| {
                let label = format!("{}={written}", sweep.param.name());
                let mut c = base.clone();
                sweep
                    .param
                    .apply(&mut c, *value)
                    .and_then(|()| c.check())
                    .map_err(|e| anyhow::anyhow!("--sweep {label}: {e}"))?;
                Ok((label, c))
            })
            .collect()
    }
}

/// `--name`'s value `v`, in milliseconds, as a duration: a number within
/// 0..=[`MAX_MILLIS`] (NaN, infinities and negative values are refused, not
/// read as 0 or left to panic).
fn millis(name: &str, v: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        (0.0..=MAX_MILLIS).contains(&v),
        "--{name} {} must be a number of milliseconds from 0 to {MAX_MILLIS} (a day)",
        limits::show(v)
    );
    Ok(Duration::from_secs_f64(v / 1000.0))
}

fn summary(label: &str, config: &SimConfig, r: &SimReport) -> String {
    let q = |p: f64| r.latency.value_at_quantile(p) as f64 / 1000.0;
    let failed: u64 = r.errors.values().sum();
    format!(
        "{label:<16} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.4} {:>8.4} {:>8.4} {:>8.1} {:>8.2}",
        inner_levels(config.shape.leaves, config.shape.fanout.max(2)),
        q(0.5),
        q(0.99),
        q(0.999),
        r.latency.max() as f64 / 1000.0,
        r.coverage_mean,
        r.partial_fraction,
        failed as f64 / r.sent.max(1) as f64,
        r.leaf_requests as f64 / r.sent.max(1) as f64,
        r.wall.as_secs_f64(),
    )
}

const HEADER: &str = "setting          levels   p50 ms   p99 ms p99.9 ms   max ms  coverage  partial   errors leaf/q   wall s";

/// The line that says what budget the queries had: the one given, the cap
/// that stands in for none, or (`swept`) each run's, as its label says.
fn budget_line(runs: &[(String, SimConfig)], swept: bool) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    match runs.first().map(|(_, c)| c.budget) {
        _ if swept => "budget:  each run's, as its setting says".to_string(),
        Some(Some(b)) => format!("budget:  {} ms per query", ms(b)),
        _ => format!(
            "budget:  none given: each query waits for every leaf, up to the cap of {} ms (a day) of simulated time",
            ms(MAX_BUDGET)
        ),
    }
}

/// Failed queries of a run, by error, when there were any: the table's
/// `errors` column says how many, this line what they were.
fn errors_line(label: &str, r: &SimReport) -> Option<String> {
    if r.errors.is_empty() {
        return None;
    }
    let kinds: Vec<String> = r.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let what = if r.completed == 0 {
        "no query was answered"
    } else {
        "queries not answered"
    };
    Some(format!(
        "{label}: {what}: {} of {} sent",
        kinds.join(", "),
        r.sent
    ))
}

/// The closing line: what every run together cost (not just the first).
fn closing_line(reports: &[(String, SimReport)]) -> String {
    let leaf_requests: u64 = reports.iter().map(|(_, r)| r.leaf_requests).sum();
    let wall: f64 = reports.iter().map(|(_, r)| r.wall.as_secs_f64()).sum();
    let simulated: f64 = reports.iter().map(|(_, r)| r.simulated.as_secs_f64()).sum();
    let runs = match reports.len() {
        1 => String::new(),
        n => format!("{n} runs: "),
    };
    format!(
        "{runs}{leaf_requests} leaf requests in {wall:.1} s of wall time: {:.0} per second; {simulated:.1} s simulated",
        leaf_requests as f64 / wall.max(1e-9),
    )
}

/// Runs the simulation(s) and prints what they measured.
pub fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    let runs = args.runs()?;
    let budget_swept = args
        .sweep
        .as_ref()
        .is_some_and(|s| s.param == SweepParam::BudgetMs);
    println!("{}", budget_line(&runs, budget_swept));
    println!("{HEADER}");
    let mut reports = Vec::new();
    for (label, config) in &runs {
        let report = simulate(config)?;
        println!("{}", summary(label, config, &report));
        reports.push((label.clone(), report));
    }
    for (label, r) in &reports {
        if let Some(line) = errors_line(label, r) {
            println!("{line}");
        }
    }
    println!("\n{}", closing_line(&reports));
    if let Some(path) = &args.json {
        let with_settings = |config: &SimConfig, r: &SimReport| {
            let mut j = r.json();
            j["budget_ms"] = (config.budget_or_cap().as_secs_f64() * 1000.0).into();
            j["budget_given"] = config.budget.is_some().into();
            j
        };
        let json = if args.sweep.is_some() {
            serde_json::Value::Array(
                runs.iter()
                    .zip(&reports)
                    .map(|((label, config), (_, r))| {
                        let mut j = with_settings(config, r);
                        j["setting"] = label.clone().into();
                        j
                    })
                    .collect(),
            )
        } else {
            with_settings(&runs[0].1, &reports[0].1)
        };
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    if let Some(path) = &args.plot {
        let series: Vec<(&str, &hdrhistogram::Histogram<u64>)> = reports
            .iter()
            .map(|(l, r)| (l.as_str(), &r.latency))
            .collect();
        let swept = args.sweep.as_ref().map(|s| s.param);
        let shown = |param: SweepParam, value: String| {
            if swept == Some(param) {
                "swept".to_string()
            } else {
                value
            }
        };
        let title = format!(
            "simulated: {} leaves, fan-out {}, {} replica(s)",
            shown(SweepParam::Leaves, args.leaves.to_string()),
            shown(SweepParam::Fanout, args.fanout.to_string()),
            shown(SweepParam::Replicas, args.replicas.to_string()),
        );
        std::fs::write(path, searchtree_bench::plot::svg(&title, &series))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        simulate: SimulateArgs,
    }

    /// `searchtree simulate ARGS` as parsed, or clap's message.
    fn parse(args: &[&str]) -> Result<SimulateArgs, String> {
        use clap::Parser;
        Cli::try_parse_from(["simulate"].iter().chain(args))
            .map(|c| c.simulate)
            .map_err(|e| e.to_string())
    }

    /// Asserts that `args` are refused when parsed, with a message naming
    /// the flag, the value and `range`.
    fn refused(args: &[&str], flag: &str, value: &str, range: &str) {
        crate::commands::test_support::assert_refused(parse(args), args, flag, value, range);
    }

    #[test]
    fn the_defaults_are_within_range() {
        let args = parse(&[]).unwrap();
        let runs = args.runs().unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].1.budget, None);
    }

    #[test]
    fn every_float_flag_is_refused_out_of_range_when_parsed() {
        // Once a panic: the first gap between arrivals overflowed a Duration.
        let rate = "from 0.001 to 1000000 (queries per second)";
        for bad in ["1e-300", "0", "-1", "NaN", "inf", "1e7"] {
            refused(&[&format!("--rate={bad}")], "--rate", bad, rate);
        }
        for flag in [
            "--straggler-prob",
            "--failure-prob",
            "--dead-fraction",
            "--hedge-ratio",
        ] {
            for bad in ["-0.1", "1.5", "NaN", "inf"] {
                refused(&[&format!("{flag}={bad}")], flag, bad, "from 0 to 1");
            }
        }
        for bad in ["0", "-0.5", "1.01", "NaN"] {
            refused(
                &[&format!("--child-k-probability={bad}")],
                "--child-k-probability",
                bad,
                "above 0 and at most 1",
            );
        }
        for flag in [
            "--straggler-ms",
            "--straggler-for-ms",
            "--reserve-ms",
            "--hop-ms",
        ] {
            for bad in ["-1", "NaN", "inf", "1e300", "86400001"] {
                refused(
                    &[&format!("{flag}={bad}")],
                    flag,
                    bad,
                    "from 0 to 86400000 (milliseconds; at most a day)",
                );
            }
        }
        for bad in ["0", "-5", "NaN", "1e300"] {
            refused(
                &[&format!("--budget-ms={bad}")],
                "--budget-ms",
                bad,
                "above 0 and at most 86400000 (milliseconds; at most a day; leave it out for no budget)",
            );
        }
        refused(
            &["--leaf-latency", "lognormal:1e12"],
            "--leaf-latency",
            "lognormal:1e12",
            "the median 1000000000000 ms is out of range (MEDIAN_MS from 0.001 to 60000, SIGMA from 0 to 5)",
        );
        refused(
            &["--leaf-latency", "lognormal:2:9"],
            "--leaf-latency",
            "lognormal:2:9",
            "σ 9 is out of range",
        );
        refused(&["--fanout", "1"], "--fanout", "1", "from 2 to 1000000");
        refused(&["--leaves", "0"], "--leaves", "0", "from 1 to 1000000");
        refused(
            &["--queries", "0"],
            "--queries",
            "0",
            "from 1 to 1000000000",
        );
        refused(
            &["--top-k", "100000"],
            "--top-k",
            "100000",
            "from 1 to 1000",
        );
        refused(&["--parallel", "0"], "--parallel", "0", "from 1 to 256");
    }

    #[test]
    fn every_sweep_value_is_checked_as_its_flag_is_before_any_run() {
        // Each value by the flag's own parser, when the flags are parsed.
        for (sweep, what) in [
            (
                "fanout=4,1",
                "fanout=1: 1 is out of range: give a whole number from 2 to 1000000",
            ),
            (
                "fanout=4,2.5",
                "fanout=2.5: \"2.5\" is not a whole number from 2",
            ),
            (
                "replicas=1,-1",
                "replicas=-1: \"-1\" is not a whole number from 1",
            ),
            ("leaves=10,0", "leaves=0: 0 is out of range"),
            (
                "hedge-ratio=0,1.5",
                "hedge-ratio=1.5: 1.5 is out of range: give a number from 0 to 1",
            ),
            (
                "child-k-probability=0.9,0",
                "child-k-probability=0: 0 is out of range",
            ),
            (
                "straggler-prob=0.1,NaN",
                "straggler-prob=NaN: NaN is out of range",
            ),
            (
                "budget-ms=50,0",
                "budget-ms=0: 0 is out of range: give a number above 0",
            ),
            (
                "budget-ms=50,1e300",
                "budget-ms=1e300: 1e300 is out of range",
            ),
            ("speed=1,2", "\"speed\" is not one of fanout, replicas"),
            ("fanout", "give PARAM=V1,V2,..."),
        ] {
            refused(&["--sweep", sweep], "--sweep", sweep, what);
        }
        // What only a whole run can tell is checked for every run before
        // the first starts.
        let args = parse(&["--replicas", "2", "--sweep", "leaves=10,900000"]).unwrap();
        let err = args.runs().unwrap_err().to_string();
        assert!(
            err.starts_with("--sweep leaves=900000: --leaves 900000 times --replicas 2 is 1800000 leaf processes"),
            "{err}"
        );
        let args = parse(&["--reserve-ms", "5", "--sweep", "budget-ms=50,5"]).unwrap();
        let err = args.runs().unwrap_err().to_string();
        assert!(
            err.starts_with("--sweep budget-ms=5: --budget-ms 5 must be above --reserve-ms 5"),
            "{err}"
        );
        let runs = parse(&["--sweep", "fanout=2, 8"]).unwrap().runs().unwrap();
        let fanouts: Vec<(&str, u32)> = runs
            .iter()
            .map(|(label, c)| (label.as_str(), c.shape.fanout))
            .collect();
        assert_eq!(fanouts, [("fanout=2", 2), ("fanout=8", 8)]);
    }

    #[test]
    fn the_closing_line_counts_every_run_of_a_sweep() {
        let args = parse(&[
            "--leaves",
            "8",
            "--fanout",
            "2",
            "--queries",
            "20",
            "--sweep",
            "leaves=4,8",
        ])
        .unwrap();
        let reports: Vec<(String, SimReport)> = args
            .runs()
            .unwrap()
            .iter()
            .map(|(label, c)| (label.clone(), simulate(c).unwrap()))
            .collect();
        assert_eq!(reports[0].1.leaf_requests, 4 * 20);
        assert_eq!(reports[1].1.leaf_requests, 8 * 20);
        let line = closing_line(&reports);
        assert!(line.starts_with("2 runs: 240 leaf requests in "), "{line}");
        let one = closing_line(&reports[..1]);
        assert!(one.starts_with("80 leaf requests in "), "{one}");
    }

    #[test]
    fn the_cap_that_stands_in_for_no_budget_is_said() {
        let runs = parse(&[]).unwrap().runs().unwrap();
        let line = budget_line(&runs, false);
        assert!(
            line.contains("none given") && line.contains("cap of 86400000 ms (a day)"),
            "{line}"
        );
        let runs = parse(&["--budget-ms", "50"]).unwrap().runs().unwrap();
        assert_eq!(budget_line(&runs, false), "budget:  50 ms per query");
    }

    #[test]
    fn failed_queries_are_listed_by_error() {
        let args = parse(&[
            "--leaves",
            "4",
            "--fanout",
            "2",
            "--queries",
            "10",
            "--dead-fraction",
            "1",
        ])
        .unwrap();
        let runs = args.runs().unwrap();
        let r = simulate(&runs[0].1).unwrap();
        let row = summary("run", &runs[0].1, &r);
        // The errors column: every query.
        assert!(row.contains(" 1.0000 "), "{row}");
        assert_eq!(
            errors_line("run", &r).unwrap(),
            "run: no query was answered: UNAVAILABLE 10 of 10 sent"
        );
    }

    #[test]
    fn milliseconds_that_are_not_durations_are_refused() {
        assert_eq!(millis("x", 50.0).unwrap(), Duration::from_millis(50));
        assert_eq!(millis("x", 0.0).unwrap(), Duration::ZERO);
        for bad in [f64::NAN, f64::INFINITY, -1.0, 1e300] {
            let err = millis("budget-ms", bad).unwrap_err().to_string();
            assert!(err.starts_with("--budget-ms"), "{bad}: {err}");
        }
    }
}
