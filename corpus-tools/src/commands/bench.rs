//! `searchtree bench`: measure a tree (or one index) under load.
//!
//! The load tester itself is the `searchtree-bench` library; this module
//! turns flags into its [`LoadConfig`], shows progress, runs sweeps (and the
//! library's step-load scenario) and writes the report files.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use searchtree_proto::pb::SearchRequest;
use searchtree_proto::{MAX_TOP_K, SearchParams};

use searchtree_bench::limits;
use searchtree_bench::plot;
use searchtree_bench::priority::Priority;
use searchtree_bench::record::Recorder;
use searchtree_bench::report::{Report, hgrm};
use searchtree_bench::schedule::{Arrival, Live, LoadConfig, Pacing, closed_loop, open_loop};
use searchtree_bench::steps::{self, Progress, StepConfig};
use searchtree_bench::target::{DirectTarget, GrpcTarget, PingTarget, Target};

use crate::bundled;

/// Load-test a tree's root (or one index in-process) and report tail latency
/// measured without coordinated omission.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The root to load, HOST:PORT.
    #[arg(long, required_unless_present_any = ["direct", "ping"], conflicts_with_all = ["direct", "ping"])]
    pub root: Option<String>,
    /// Instead of a tree, search this shard directory in-process (e.g. the
    /// `shards/shard-000` of a `build --shards 1`): the floor of what the
    /// tree adds.
    #[arg(long, conflicts_with = "ping")]
    pub direct: Option<PathBuf>,
    /// Instead of searching, send gRPC health checks to this node (any node,
    /// HOST:PORT) at the same rate: the round trip of gRPC itself on this
    /// machine and network, the floor under every hop of a tree.
    #[arg(long)]
    pub ping: Option<String>,
    /// Queries, one per line (default: the bundled queries).
    #[arg(long)]
    pub queries: Option<PathBuf>,
    /// Requests per second (open loop; the first rate of a sweep): above 0
    /// and at most 1000000.
    #[arg(long, default_value_t = 100.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Measured duration, e.g. 30s, 2m, 500ms: above 0 and at most a day
    /// (1440m).
    #[arg(long, default_value = "10s", value_parser = parse_run)]
    pub duration: Duration,
    /// Warm-up before measuring (sent, not recorded): 0 to a day (1440m).
    #[arg(long, default_value = "2s", value_parser = parse_warmup)]
    pub warmup: Duration,
    /// How arrivals are spaced.
    #[arg(long, value_enum, default_value_t = ArrivalFlag::Poisson)]
    pub arrival: ArrivalFlag,
    /// Seed of the Poisson arrivals and of the Zipf draws.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Draw each request's query from the list by Zipf's law with this
    /// exponent S > 0 (the i-th query with probability ∝ 1/i^S, seeded), so
    /// that queries repeat as in a real log, e.g. 1.0 (default: the list in
    /// order, each query as often as any other); at most 100.
    #[arg(long, value_parser = parse_zipf)]
    pub zipf: Option<f64>,
    /// gRPC connections to the root (requests are spread over them); in
    /// `--max` mode, the number of concurrent workers: 1 to 1024.
    #[arg(long, default_value_t = 4, value_parser = parse_connections)]
    pub connections: usize,
    /// Limit requests in flight, 1 to 1000000 (default: no limit — an open
    /// loop does not wait for the server).
    #[arg(long, value_parser = parse_max_in_flight)]
    pub max_in_flight: Option<usize>,
    /// Hits per request: 1 to 1000 (nodes refuse more).
    #[arg(long, default_value_t = 10, value_parser = parse_top_k)]
    pub top_k: u32,
    /// budget_ms of every request, 0 to 300000 (0: the root's default).
    /// `goodput` counts the complete answers that came back within it (with
    /// 0, any complete answer).
    #[arg(long, default_value_t = 0, value_parser = parse_budget_ms)]
    pub budget_ms: u32,
    /// Send every request with `profile` set, and report which level and
    /// which leaf (shard, replica) the requests at or above the p99 spent
    /// their time in. Profiled searches skip the result caches.
    #[arg(long)]
    pub profile_tail: bool,
    /// The tester's own scheduling priority in open-loop runs against a
    /// node: real-time, so that its wait for a core on a shared machine is
    /// not reported as the tree's latency (needs root or CAP_SYS_NICE;
    /// otherwise the report says it ran at normal priority). Closed-loop
    /// runs, `--step-load` and `--direct` always run at normal priority.
    #[arg(long, value_enum, default_value_t = PriorityFlag::Realtime)]
    pub tester_priority: PriorityFlag,
    /// Give up on a request after this long (counted as CLIENT_GAVE_UP):
    /// above 0 and at most 5m, the top of the latency histograms.
    #[arg(long, default_value = "30s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Closed loop: `--connections` workers send back to back, to find peak
    /// throughput (latency then hides queueing; use it for throughput only).
    #[arg(long, conflicts_with_all = ["sweep", "step_load"])]
    pub max: bool,
    /// Step the rate up from `--rate` by `--step` until p99 exceeds
    /// `--slo-p99-ms` (or `--max-rate`), and report the highest rate within
    /// it; at most 1000 runs.
    #[arg(long, conflicts_with = "step_load")]
    pub sweep: bool,
    /// Rate increment of a sweep, requests per second: above 0 and at most
    /// 1000000.
    #[arg(long, default_value_t = 100.0, value_parser = parse_rate)]
    pub step: f64,
    /// Highest rate a sweep tries: at least `--rate`, at most 1000000.
    #[arg(long, default_value_t = 5000.0, value_parser = parse_rate)]
    pub max_rate: f64,
    /// The p99 a sweep must stay under, in milliseconds: above 0 and at
    /// most 300000.
    #[arg(long, default_value_t = 50.0, value_parser = parse_slo_ms)]
    pub slo_p99_ms: f64,
    /// The step-load scenario: capacity C from a closed loop
    /// (`--capacity-workers` for `--capacity-duration`), then open loop at
    /// each of `--step-factors` × C for `--duration`; prints a table, and
    /// `--json` / `--plot` write the steps and goodput and p99 against
    /// offered load.
    #[arg(long, conflicts_with = "hgrm")]
    pub step_load: bool,
    /// Offered load of each step, as factors of C, e.g. 0.5,1,2,3,4: each
    /// above 0 and at most 100.
    #[arg(long, default_value = "0.5,1,1.5,2,3,4", value_parser = parse_step_factors)]
    pub step_factors: StepFactors,
    /// Concurrent workers of the closed loop that measures C: 1 to 1024.
    #[arg(long, default_value_t = 8, value_parser = parse_workers)]
    pub capacity_workers: usize,
    /// Measured duration of the closed loop that measures C: above 0 and
    /// at most a day (1440m).
    #[arg(long, default_value = "5s", value_parser = parse_run)]
    pub capacity_duration: Duration,
    /// Use this capacity (requests/s, above 0 and at most 1000000) instead
    /// of measuring it, to step several runs from the same C.
    #[arg(long, value_parser = parse_rate)]
    pub capacity: Option<f64>,
    /// Write the report (the last one, for a sweep: all of them; for
    /// `--step-load`, the capacity and the steps) as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write HdrHistogram's percentile distribution (.hgrm).
    #[arg(long)]
    pub hgrm: Option<PathBuf>,
    /// Write a latency-by-percentile chart (SVG).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Write every latency recorded, as `VALUE_US COUNT` lines: what
    /// `searchtree simulate --leaf-latency FILE` draws from (bench a leaf's
    /// own address to measure one).
    #[arg(long)]
    pub save_latency: Option<PathBuf>,
    /// A label for the plot's line and title.
    #[arg(long)]
    pub label: Option<String>,
}

/// `--arrival`: the load tester's [`Arrival`] as a flag value, so that the
/// library does not depend on the command-line parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArrivalFlag {
    /// Exactly 1/rate apart.
    Uniform,
    /// Exponentially distributed gaps with mean 1/rate (a Poisson process),
    /// as independent users would arrive.
    Poisson,
}

/// `--tester-priority`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PriorityFlag {
    /// `SCHED_FIFO`: the tester takes a core as soon as an answer arrives,
    /// as a client on another machine would not wait for the tree's cores.
    Realtime,
    /// The scheduler's default, shared with everything else on the machine.
    Normal,
}

impl From<ArrivalFlag> for Arrival {
    fn from(flag: ArrivalFlag) -> Arrival {
        match flag {
            ArrivalFlag::Uniform => Arrival::Uniform,
            ArrivalFlag::Poisson => Arrival::Poisson,
        }
    }
}

/// `--step-factors`: the offered load of each step as factors of capacity,
/// checked when the flags are parsed (see [`steps::parse_factors`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StepFactors(pub Vec<f64>);

/// Parses `500ms`, `30s`, `2m` or a bare number of seconds; a value too
/// large for a duration is refused, not left to panic.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 30s or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is too long a duration"))
}

/// `max` as the flags write it: whole minutes as `Nm`, else seconds.
fn show_duration(max: Duration) -> String {
    match max.as_secs() {
        s if s % 60 == 0 && max.subsec_nanos() == 0 => format!("{}m", s / 60),
        _ => format!("{}s", max.as_secs_f64()),
    }
}

/// A duration within `0..=max` (above 0 unless `zero` is allowed), with
/// the range named when it is not.
fn duration_within(s: &str, zero: bool, max: Duration) -> Result<Duration, String> {
    let range = format!(
        "a duration {} and at most {} (e.g. 500ms, 30s, 2m)",
        if zero { "from 0" } else { "above 0" },
        show_duration(max)
    );
    match parse_duration(s) {
        Ok(d) if (zero || !d.is_zero()) && d <= max => Ok(d),
        Ok(_) => Err(format!("{} is out of range: give {range}", s.trim())),
        Err(e) => Err(format!("{e}: give {range}")),
    }
}

/// `--duration` and `--capacity-duration`: above 0, at most a day.
fn parse_run(s: &str) -> Result<Duration, String> {
    duration_within(s, false, limits::MAX_RUN)
}

/// `--warmup`: 0 to a day.
fn parse_warmup(s: &str) -> Result<Duration, String> {
    duration_within(s, true, limits::MAX_RUN)
}

/// `--timeout`: above 0, at most the top of the latency histograms.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    duration_within(s, false, limits::MAX_TIMEOUT)
}

/// `--rate`, `--step`, `--max-rate`, `--capacity`: requests per second.
fn parse_rate(s: &str) -> Result<f64, String> {
    limits::positive(s, limits::MAX_RATE, "requests per second")
}

/// `--slo-p99-ms`.
fn parse_slo_ms(s: &str) -> Result<f64, String> {
    limits::positive(s, limits::MAX_SLO_MS, "milliseconds")
}

/// `--connections`.
fn parse_connections(s: &str) -> Result<usize, String> {
    limits::whole(s, 1, limits::MAX_CONNECTIONS, "connections")
}

/// `--capacity-workers`.
fn parse_workers(s: &str) -> Result<usize, String> {
    limits::whole(s, 1, limits::MAX_CONNECTIONS, "workers")
}

/// `--max-in-flight`: 0 would never send a request.
fn parse_max_in_flight(s: &str) -> Result<usize, String> {
    limits::whole(s, 1, limits::MAX_IN_FLIGHT, "requests")
}

/// `--top-k`: what nodes accept.
fn parse_top_k(s: &str) -> Result<u32, String> {
    limits::whole(s, 1, MAX_TOP_K as u32, "hits; nodes refuse more")
}

/// `--budget-ms`.
fn parse_budget_ms(s: &str) -> Result<u32, String> {
    limits::whole(
        s,
        0,
        limits::MAX_BUDGET_MS,
        "milliseconds; 0: the root's default",
    )
}

/// `--step-factors`.
fn parse_step_factors(s: &str) -> Result<StepFactors, String> {
    steps::parse_factors(s).map(StepFactors)
}

impl BenchArgs {
    /// Checks what no single flag's parser can, before anything is
    /// connected or sent: a sweep's number of runs, `--max-rate` against
    /// `--rate`, the step-load rates a given `--capacity` comes to, and
    /// every run's settings (the load tester's own check).
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.sweep {
            limits::sweep_runs(self.rate, self.step, self.max_rate).map_err(anyhow::Error::msg)?;
        }
        if self.step_load
            && let Some(c) = self.capacity
        {
            steps::plan(c, &self.step_factors.0).map_err(anyhow::Error::msg)?;
        }
        load_config(self, self.rate)
            .check()
            .map_err(anyhow::Error::msg)?;
        Ok(())
    }
}

/// Reads a query file: one query per line; blank lines and `#` comments are
/// skipped; a line no node would accept is reported with its number.
pub fn load_queries(path: Option<&std::path::Path>) -> anyhow::Result<Vec<String>> {
    let (name, text) = match path {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        ),
        None => ("bundled queries".to_string(), bundled::QUERIES.to_string()),
    };
    let mut queries = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let q = line.trim();
        if q.is_empty() || q.starts_with('#') {
            continue;
        }
        let request = SearchRequest {
            query: q.to_string(),
            ..Default::default()
        };
        match SearchParams::try_from(&request) {
            Ok(_) => queries.push(q.to_string()),
            Err(e) => bad.push(format!("{name}:{}: {e}", i + 1)),
        }
    }
    if !bad.is_empty() {
        bail!("{} bad queries:\n  {}", bad.len(), bad.join("\n  "));
    }
    if queries.is_empty() {
        bail!("{name}: no queries");
    }
    Ok(queries)
}

/// Sets the tester's priority for this run (see
/// [`searchtree_bench::priority`]); `None` where the run keeps the
/// scheduler's default without being asked to (closed loop, step load,
/// in-process searches).
fn tester_priority(args: &BenchArgs) -> Option<Priority> {
    if args.max || args.step_load || args.direct.is_some() {
        return None;
    }
    Some(match args.tester_priority {
        PriorityFlag::Normal => Priority::Normal,
        PriorityFlag::Realtime => searchtree_bench::priority::try_realtime(),
    })
}

/// Runs the load test.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    args.validate()?;
    let queries = Arc::new(load_queries(args.queries.as_deref())?);
    let target: Arc<dyn Target> = match (&args.root, &args.direct, &args.ping) {
        (Some(root), _, _) => Arc::new(GrpcTarget::connect(root, args.connections).await?),
        (None, Some(dir), _) => Arc::new(DirectTarget::open(dir)?),
        (None, None, Some(node)) => Arc::new(PingTarget::connect(node, args.connections).await?),
        (None, None, None) => {
            bail!("give --root HOST:PORT, --direct INDEX_DIR or --ping HOST:PORT")
        }
    };
    eprintln!("{} queries against {}", queries.len(), target.describe());
    let priority = tester_priority(args);
    if args.step_load {
        return step_load(args, target, queries).await;
    }

    let mut reports = Vec::new();
    let mut last: Option<Recorder>;
    let mut rate = args.rate;
    loop {
        let config = load_config(args, rate);
        let (recorder, mut report) = one_run(args, &target, &queries, &config).await;
        report.tester_priority = priority.as_ref().map(Priority::describe);
        print!("{}", report.text());
        let p99_ms = report.latency_us.p99 as f64 / 1000.0;
        reports.push(report);
        last = Some(recorder);
        if !args.sweep {
            break;
        }
        let within =
            p99_ms <= args.slo_p99_ms && reports.last().is_some_and(|r| r.errors.is_empty());
        println!(
            "sweep:     {rate}/s -> p99 {p99_ms:.2}ms {} the {}ms SLO\n",
            if within { "within" } else { "OVER" },
            args.slo_p99_ms
        );
        if !within || rate + args.step > args.max_rate {
            break;
        }
        rate += args.step;
    }
    if args.sweep {
        let best = reports
            .iter()
            .filter(|r| r.latency_us.p99 as f64 / 1000.0 <= args.slo_p99_ms && r.errors.is_empty())
            .filter_map(|r| r.rate_target)
            .fold(None, |acc: Option<f64>, r| {
                Some(acc.map_or(r, |a| a.max(r)))
            });
        match best {
            Some(r) => println!(
                "sweep result: highest rate with p99 <= {}ms: {r}/s",
                args.slo_p99_ms
            ),
            None => println!(
                "sweep result: no rate tried kept p99 <= {}ms",
                args.slo_p99_ms
            ),
        }
    }

    let recorder = last.expect("at least one run");
    if let Some(path) = &args.json {
        let value = if args.sweep {
            serde_json::to_value(&reports)?
        } else {
            serde_json::to_value(reports.last().expect("one report"))?
        };
        std::fs::write(path, serde_json::to_string_pretty(&value)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.hgrm {
        std::fs::write(path, hgrm(&recorder))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.save_latency {
        std::fs::write(path, latency_counts(&recorder.latency_ok))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let label = args.label.clone().unwrap_or_else(|| target.describe());
        let title = format!("{label}: latency by percentile");
        std::fs::write(path, plot::svg(&title, &[(&label, &recorder.latency)]))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The settings every run shares, at `rate`.
fn load_config(args: &BenchArgs, rate: f64) -> LoadConfig {
    LoadConfig {
        rate,
        arrival: args.arrival.into(),
        seed: args.seed,
        zipf: args.zipf,
        duration: args.duration,
        warmup: args.warmup,
        max_in_flight: args.max_in_flight,
        timeout: args.timeout,
        top_k: args.top_k,
        budget_ms: args.budget_ms,
        profile: args.profile_tail,
        pacing: Pacing::Thread,
    }
}

/// `--step-load`: runs the scenario in the load tester's library with a
/// progress line, then prints its table and writes its files.
async fn step_load(
    args: &BenchArgs,
    target: Arc<dyn Target>,
    queries: Arc<Vec<String>>,
) -> anyhow::Result<()> {
    let config = StepConfig {
        load: load_config(args, args.rate),
        factors: args.step_factors.0.clone(),
        capacity_workers: args.capacity_workers,
        capacity_duration: args.capacity_duration,
        capacity: args.capacity,
    };
    let live = Arc::new(Live::default());
    let phase = Arc::new(std::sync::Mutex::new(String::from("starting")));
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("template"));
    let ticker = {
        let (bar, live, phase) = (bar.clone(), Arc::clone(&live), Arc::clone(&phase));
        tokio::spawn(async move {
            loop {
                let sent = live.sent.load(Ordering::Relaxed);
                let done = live.done.load(Ordering::Relaxed);
                let phase = phase.lock().expect("phase").clone();
                bar.set_message(format!(
                    "{phase}: sent {sent}, done {done}, in flight {}",
                    sent - done
                ));
                bar.tick();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let report = steps::run(target, queries, &config, live, |p| {
        let mut phase = phase.lock().expect("phase");
        match p {
            Progress::Capacity => *phase = "measuring capacity (closed loop)".into(),
            Progress::CapacityFound(c) => {
                bar.suspend(|| eprintln!("capacity C = {:.1}/s", c.rate_achieved));
            }
            Progress::StepStarted { index, of, planned } => {
                *phase = format!(
                    "step {}/{of}: {}x C = {:.1}/s",
                    index + 1,
                    planned.factor,
                    planned.rate
                );
            }
            Progress::StepDone(s) => bar.suspend(|| {
                eprintln!(
                    "  {}x: offered {:.1}/s, goodput {:.1}/s, rejected {}, p99 of answers {:.1}ms",
                    s.factor,
                    s.offered,
                    s.goodput,
                    s.rejected,
                    s.p99_ok_us as f64 / 1000.0
                )
            }),
        }
    })
    .await;
    ticker.abort();
    bar.finish_and_clear();
    let report = report?;
    print!("{}", report.text());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let label = args.label.clone().unwrap_or_else(|| report.target.clone());
        let title = format!("{label}: goodput and p99 against offered load");
        std::fs::write(path, steps::svg(&title, &report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn one_run(
    args: &BenchArgs,
    target: &Arc<dyn Target>,
    queries: &Arc<Vec<String>>,
    config: &LoadConfig,
) -> (Recorder, Report) {
    let live = Arc::new(Live::default());
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("template"));
    let ticker = {
        let (bar, live) = (bar.clone(), Arc::clone(&live));
        let warmup = config.warmup;
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            loop {
                let sent = live.sent.load(Ordering::Relaxed);
                let done = live.done.load(Ordering::Relaxed);
                let phase = if started.elapsed() < warmup {
                    "warm-up"
                } else {
                    "measuring"
                };
                bar.set_message(format!(
                    "{phase}: sent {sent}, done {done}, in flight {}",
                    sent - done
                ));
                bar.tick();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let (recorder, span, mode, rate) = if args.max {
        let (r, s) = closed_loop(
            Arc::clone(target),
            Arc::clone(queries),
            config,
            args.connections,
            live,
        )
        .await;
        (r, s, "closed_loop", None)
    } else {
        let (r, s) = open_loop(Arc::clone(target), Arc::clone(queries), config, live).await;
        (r, s, "open_loop", Some(config.rate))
    };
    ticker.abort();
    bar.finish_and_clear();
    for (query, message) in &recorder.invalid_queries {
        eprintln!("refused as invalid: {query:?}: {message}");
    }
    let report = Report::new(target.describe(), mode, rate, &recorder, span);
    (recorder, report)
}

/// `--zipf`: an exponent above 0 and at most [`limits::MAX_ZIPF`].
fn parse_zipf(s: &str) -> Result<f64, String> {
    limits::positive(s, limits::MAX_ZIPF, "Zipf exponent")
}

/// Every value a histogram recorded (µs) with its count, one per line.
fn latency_counts(h: &hdrhistogram::Histogram<u64>) -> String {
    let mut out = String::from("# value_us count (searchtree bench --save-latency)\n");
    for v in h.iter_recorded() {
        out.push_str(&format!(
            "{} {}\n",
            v.value_iterated_to(),
            v.count_at_value()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    /// `searchtree bench --root HOST:PORT ARGS` as parsed, or clap's message.
    fn parse(args: &[&str]) -> Result<BenchArgs, String> {
        use clap::Parser;
        let argv = ["bench", "--root", "127.0.0.1:1"].iter().chain(args);
        Cli::try_parse_from(argv)
            .map(|c| c.bench)
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
        args.validate().unwrap();
        assert_eq!(args.step_factors.0, steps::DEFAULT_FACTORS);
        let args = parse(&["--sweep", "--step-load"]);
        assert!(args.is_err(), "conflicting modes");
    }

    #[test]
    fn numbers_that_would_hang_panic_or_mislead_are_refused_when_parsed() {
        // A sweep that stays at one rate forever, or steps to a negative one.
        let rate = "above 0 and at most 1000000 (requests per second)";
        refused(&["--sweep", "--step", "0"], "--step", "0", rate);
        refused(&["--sweep", "--step=-60"], "--step", "-60", rate);
        refused(&["--step", "NaN"], "--step", "NaN", rate);
        // Waits for ever for its first permit.
        refused(
            &["--max-in-flight", "0"],
            "--max-in-flight",
            "0",
            "from 1 to 1000000 (requests)",
        );
        // Every request would be refused by the root.
        refused(
            &["--top-k", "100000"],
            "--top-k",
            "100000",
            "from 1 to 1000 (hits; nodes refuse more)",
        );
        refused(&["--top-k", "0"], "--top-k", "0", "from 1 to 1000");
        for bad in ["0", "-5", "inf", "NaN", "1e300"] {
            refused(&[&format!("--rate={bad}")], "--rate", bad, rate);
            refused(&[&format!("--max-rate={bad}")], "--max-rate", bad, rate);
            refused(&[&format!("--capacity={bad}")], "--capacity", bad, rate);
            refused(
                &[&format!("--slo-p99-ms={bad}")],
                "--slo-p99-ms",
                bad,
                "above 0 and at most 300000 (milliseconds)",
            );
            refused(
                &[&format!("--zipf={bad}")],
                "--zipf",
                bad,
                "above 0 and at most 100 (Zipf exponent)",
            );
        }
        for flag in ["--connections", "--capacity-workers"] {
            refused(&[flag, "0"], flag, "0", "from 1 to 1024");
            refused(&[flag, "100000"], flag, "100000", "from 1 to 1024");
        }
        refused(
            &["--budget-ms", "4000000000"],
            "--budget-ms",
            "4000000000",
            "from 0 to 300000 (milliseconds; 0: the root's default)",
        );
        let run = "above 0 and at most 1440m";
        refused(&["--duration", "0s"], "--duration", "0s", run);
        refused(&["--duration", "1e30"], "--duration", "1e30", run);
        // Once a panic in Duration::from_secs_f64.
        let huge = "99999999999999999999999";
        refused(&["--duration", huge], "--duration", huge, run);
        refused(
            &["--warmup", huge],
            "--warmup",
            huge,
            "from 0 and at most 1440m",
        );
        refused(
            &["--capacity-duration", "0"],
            "--capacity-duration",
            "0",
            run,
        );
        refused(
            &["--timeout", "0ms"],
            "--timeout",
            "0ms",
            "above 0 and at most 5m",
        );
        refused(
            &["--timeout", "10m"],
            "--timeout",
            "10m",
            "above 0 and at most 5m",
        );
        refused(
            &["--step-factors", "1,1e300"],
            "--step-factors",
            "1,1e300",
            "above 0 and at most 100",
        );
        // Within range: accepted.
        let ok = parse(&[
            "--rate",
            "0.5",
            "--max-in-flight",
            "1",
            "--top-k",
            "1000",
            "--warmup",
            "0s",
            "--timeout",
            "5m",
            "--duration",
            "1440m",
        ])
        .unwrap();
        ok.validate().unwrap();
    }

    #[test]
    fn flags_that_do_not_fit_together_are_refused_before_anything_runs() {
        let err = |args: &[&str]| parse(args).unwrap().validate().unwrap_err().to_string();
        let e = err(&["--sweep", "--step", "0.001"]);
        assert!(
            e.starts_with("a sweep from --rate 100 to --max-rate 5000 by --step 0.001 is ")
                && e.ends_with("runs: at most 1000 (raise --step or lower --max-rate)"),
            "{e}"
        );
        let e = err(&["--sweep", "--rate", "500", "--max-rate", "100"]);
        assert!(e.contains("--max-rate 100 is below --rate 500"), "{e}");
        let e = err(&[
            "--step-load",
            "--capacity",
            "900000",
            "--step-factors",
            "1,2",
        ]);
        assert!(
            e.contains("step 2x of capacity 900000/s is 1800000/s"),
            "{e}"
        );
        // Without --sweep, --step and --max-rate are not used.
        parse(&["--rate", "500", "--max-rate", "100"])
            .unwrap()
            .validate()
            .unwrap();
    }

    #[tokio::test]
    async fn a_bad_value_fails_the_run_before_it_connects() {
        // Nothing listens on port 1: had the run started, it would say so.
        let mut args = parse(&["--sweep"]).unwrap();
        args.step = 0.0;
        let err = run(&args).await.unwrap_err().to_string();
        assert!(err.starts_with("a sweep from --rate 100"), "{err}");
        let mut args = parse(&[]).unwrap();
        args.top_k = 100_000;
        let err = run(&args).await.unwrap_err().to_string();
        assert!(err.starts_with("top_k 100000"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("fast").is_err());
        // Too long for a Duration: refused, not a panic.
        assert!(parse_duration("99999999999999999999999").is_err());
        assert!(parse_duration("999999999999999999m").is_err());
    }

    #[test]
    fn zipf_exponents_are_positive() {
        assert_eq!(parse_zipf("1.1"), Ok(1.1));
        for bad in ["0", "-1", "inf", "NaN", "often", "1000"] {
            assert!(parse_zipf(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_query_lines_are_reported_with_their_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.txt");
        let long = "x".repeat(5000);
        std::fs::write(&path, format!("paris\n\n# comment\n{long}\nrome\n")).unwrap();
        let err = load_queries(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("q.txt:4: query is 5000 bytes long"), "{err}");
        std::fs::write(&path, "paris\n\nrome\n").unwrap();
        assert_eq!(load_queries(Some(&path)).unwrap(), ["paris", "rome"]);
        assert_eq!(load_queries(None).unwrap().len(), 300);
    }
}
