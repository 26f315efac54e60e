//! `searchtree simulate`: a tree of any shape and size, on virtual time,
//! with the inner-node code that serves (see [`crate::simulate`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::simulate::leaf::{Body, LeafModel};
use crate::simulate::tree::{TreeShape, inner_levels};
use crate::simulate::{SimConfig, SimReport, run as simulate};
use searchtree_parent::child_k::DEFAULT_CHILD_K_PROBABILITY;

/// Simulate a tree far larger than this machine — the real fan-out,
/// deadlines, merge, replica groups and hedging over simulated leaves — on
/// tokio's paused clock, and report what its clients would see.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Shards (one leaf each, times --replicas).
    #[arg(long, default_value_t = 1000)]
    pub leaves: u32,
    /// Children per inner node; the levels follow.
    #[arg(long, default_value_t = 32)]
    pub fanout: u32,
    /// Replicas of each leaf (a replica group when above 1).
    #[arg(long, default_value_t = 1)]
    pub replicas: u32,
    /// Leaf latency: `lognormal:MEDIAN_MS[:SIGMA]`, or a file of `VALUE_US
    /// COUNT` lines as `searchtree bench --save-latency` writes (bench a
    /// leaf's address to measure one).
    #[arg(long, default_value = "lognormal:2:0.5")]
    pub leaf_latency: String,
    /// The chance a leaf request meets a straggler.
    #[arg(long, default_value_t = 0.0)]
    pub straggler_prob: f64,
    /// What a straggler adds, in milliseconds.
    #[arg(long, default_value_t = 1000.0)]
    pub straggler_ms: f64,
    /// A leaf that straggles stays slow this long, in milliseconds
    /// (correlated slowness, a slow machine); 0: request by request.
    #[arg(long, default_value_t = 0.0)]
    pub straggler_for_ms: f64,
    /// The chance a leaf request fails (unavailable).
    #[arg(long, default_value_t = 0.0)]
    pub failure_prob: f64,
    /// The fraction of leaf processes that are dead (refusing everything).
    #[arg(long, default_value_t = 0.0)]
    pub dead_fraction: f64,
    /// Each query's budget, in milliseconds (unset: none, every query
    /// waits for every leaf).
    #[arg(long)]
    pub budget_ms: Option<f64>,
    /// Time each inner node keeps back from its deadline for its merge and
    /// the hop up, in milliseconds.
    #[arg(long, default_value_t = 1.0)]
    pub reserve_ms: f64,
    /// One network hop's delay between inner nodes, each way, in
    /// milliseconds.
    #[arg(long, default_value_t = 0.0)]
    pub hop_ms: f64,
    /// Hedged requests per request in each replica group (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub hedge_ratio: f64,
    /// Each child is asked for its likely share of the top-k with this
    /// probability, and asked again when it might hold more, as in the
    /// serving tree; 1 asks every child for all k.
    #[arg(long, default_value_t = DEFAULT_CHILD_K_PROBABILITY)]
    pub child_k_probability: f64,
    /// Queries per second, Poisson arrivals (open loop).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Queries to send.
    #[arg(long, default_value_t = 1000)]
    pub queries: u64,
    /// Hits asked for.
    #[arg(long, default_value_t = 10)]
    pub top_k: u32,
    /// Seed of every draw: the same seed gives the same numbers.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Split the arrivals over N copies of the tree, each on a thread of
    /// its own (N times as fast on N cores). Each copy's replica groups
    /// learn from 1/N of the traffic; the same seed and N give the same
    /// numbers.
    #[arg(long, default_value_t = 1)]
    pub parallel: u32,
    /// Run once per value of one parameter, as PARAM=V1,V2,... (fanout,
    /// replicas, hedge-ratio, child-k-probability, budget-ms, straggler-prob,
    /// leaves), and print
    /// a what-if table.
    #[arg(long)]
    pub sweep: Option<String>,
    /// Write the report (a list of reports with --sweep) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write latency by percentile as an SVG chart here (one line per
    /// value with --sweep).
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

impl SimulateArgs {
    fn config(&self) -> anyhow::Result<SimConfig> {
        let unit = |name: &str, p: f64| {
            anyhow::ensure!((0.0..=1.0).contains(&p), "--{name} {p} must be within 0..1");
            Ok(())
        };
        unit("straggler-prob", self.straggler_prob)?;
        unit("failure-prob", self.failure_prob)?;
        unit("dead-fraction", self.dead_fraction)?;
        unit("hedge-ratio", self.hedge_ratio)?;
        anyhow::ensure!(
            self.child_k_probability > 0.0 && self.child_k_probability <= 1.0,
            "--child-k-probability {} must be above 0 and at most 1",
            self.child_k_probability
        );
        let ms = |name: &str, v: f64| millis(name, v);
        Ok(SimConfig {
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
                body: Body::parse(&self.leaf_latency).map_err(anyhow::Error::msg)?,
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
        })
    }
}

/// The longest duration a millisecond flag takes: a day of simulated time.
const MAX_MILLIS: f64 = 86_400_000.0;

/// `--name`'s value `v`, in milliseconds, as a duration: a number within
/// 0..=[`MAX_MILLIS`] (NaN, infinities and negative values are refused, not
/// read as 0 or left to panic).
fn millis(name: &str, v: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        (0.0..=MAX_MILLIS).contains(&v),
        "--{name} {v} must be a number of milliseconds within 0..{MAX_MILLIS}"
    );
    Ok(Duration::from_secs_f64(v / 1000.0))
}

/// Sets `param` to `value` in `config`.
fn set(config: &mut SimConfig, param: &str, value: &str) -> anyhow::Result<()> {
    let num = || -> anyhow::Result<f64> {
        value
            .parse::<f64>()
            .map_err(|_| anyhow::anyhow!("--sweep {param}: {value:?} is not a number"))
    };
    match param {
        "fanout" => config.shape.fanout = num()? as u32,
        "replicas" => config.shape.replicas = num()? as u32,
        "leaves" => config.shape.leaves = num()? as u32,
        "hedge-ratio" => config.shape.hedge_ratio = num()?,
        "child-k-probability" => config.shape.child_k_probability = num()?,
        "straggler-prob" => config.model.straggler_prob = num()?,
        "budget-ms" => config.budget = Some(millis("sweep budget-ms", num()?)?),
        other => anyhow::bail!(
            "--sweep {other}: one of fanout, replicas, leaves, hedge-ratio, child-k-probability, straggler-prob, budget-ms"
        ),
    }
    Ok(())
}

fn summary(label: &str, config: &SimConfig, r: &SimReport) -> String {
    let q = |p: f64| r.latency.value_at_quantile(p) as f64 / 1000.0;
    format!(
        "{label:<16} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.4} {:>8.4} {:>8.1} {:>8.2}",
        inner_levels(config.shape.leaves, config.shape.fanout.max(2)),
        q(0.5),
        q(0.99),
        q(0.999),
        r.latency.max() as f64 / 1000.0,
        r.coverage_mean,
        r.partial_fraction,
        r.leaf_requests as f64 / r.sent.max(1) as f64,
        r.wall.as_secs_f64(),
    )
}

const HEADER: &str = "setting          levels   p50 ms   p99 ms p99.9 ms   max ms  coverage  partial leaf/q   wall s";

/// Runs the simulation(s) and prints what they measured.
pub fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    let base = args.config()?;
    let runs: Vec<(String, SimConfig)> = match &args.sweep {
        None => vec![("run".to_string(), base)],
        Some(sweep) => {
            let (param, values) = sweep
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--sweep takes PARAM=V1,V2,..."))?;
            values
                .split(',')
                .map(|v| {
                    let mut c = base.clone();
                    set(&mut c, param, v.trim())?;
                    Ok((format!("{param}={}", v.trim()), c))
                })
                .collect::<anyhow::Result<_>>()?
        }
    };
    println!("{HEADER}");
    let mut reports = Vec::new();
    for (label, config) in &runs {
        let report = simulate(config)?;
        println!("{}", summary(label, config, &report));
        reports.push((label.clone(), report));
    }
    let first = &reports[0].1;
    println!(
        "\n{} leaf requests in {:.1} s of wall time: {:.0} per second; {:.1} s simulated",
        first.leaf_requests,
        first.wall.as_secs_f64(),
        first.leaf_requests as f64 / first.wall.as_secs_f64().max(1e-9),
        first.simulated.as_secs_f64()
    );
    if let Some(path) = &args.json {
        let json = if args.sweep.is_some() {
            serde_json::Value::Array(
                reports
                    .iter()
                    .map(|(label, r)| {
                        let mut j = r.json();
                        j["setting"] = label.clone().into();
                        j
                    })
                    .collect(),
            )
        } else {
            first.json()
        };
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    if let Some(path) = &args.plot {
        let series: Vec<(&str, &hdrhistogram::Histogram<u64>)> = reports
            .iter()
            .map(|(l, r)| (l.as_str(), &r.latency))
            .collect();
        let title = format!(
            "simulated: {} leaves, fan-out {}, {} replica(s)",
            args.leaves, args.fanout, args.replicas
        );
        std::fs::write(path, searchtree_bench::plot::svg(&title, &series))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
