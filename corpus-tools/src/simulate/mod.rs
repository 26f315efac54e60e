//! `searchtree simulate`: trees far larger than one machine, on virtual
//! time, with the code that serves.
//!
//! The inner nodes are the real ones (`searchtree-parent`'s `InnerNode`,
//! its fan-out, deadlines and merge, and `ReplicaGroup` with its health
//! checks, probation, retries and hedging); only the leaves are simulated
//! ([`leaf`]), answering after latencies drawn from a model. Everything runs
//! on one thread on tokio's paused clock: when every task waits, the clock
//! jumps to the next timer, so an hour of traffic costs what its work costs,
//! not an hour. Queries arrive open-loop (Poisson, `--rate`), and the same
//! seed gives the same numbers.
//!
//! With `--parallel N` the arrivals are split N ways — N Poisson streams at
//! rate/N, whose union is the Poisson stream asked for — each served by its
//! own copy of the tree on its own thread and paused clock, and the copies'
//! reports are added up. Queries do not share leaves' draws or inner nodes'
//! state across copies, so what a replica group learns (latency, health) it
//! learns from 1/N of the traffic; for trees without replicas the
//! statistics are those of one tree. The same seed and N give the same
//! numbers on any machine.
//!
//! No simulated query waits longer than [`MAX_BUDGET`], a day of simulated
//! time: a query with no budget gets that one, and says so in the output.
//! The simulator's root judges answers as the serving root does
//! (`searchtree_root::policy::judge`): a query that no shard answered is an
//! error (`UNAVAILABLE`, or `DEADLINE_EXCEEDED` when time ran out), not an
//! empty answer.

pub mod leaf;
pub mod tree;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;
use searchtree_parent::NodeError;
use searchtree_proto::MAX_TOP_K;
use searchtree_proto::pb::SearchRequest;
use searchtree_proto::query::QueryLimits;
use searchtree_proto::request::SearchParams;
use tokio::task::JoinSet;
use tokio::time::Instant;

use leaf::LeafModel;
use searchtree_bench::limits::show;
use searchtree_root::policy::judge;
use tree::TreeShape;

/// One simulation's settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The tree.
    pub shape: TreeShape,
    /// The leaves.
    pub model: LeafModel,
    /// Queries to send.
    pub queries: u64,
    /// Their mean rate, per second (Poisson arrivals).
    pub rate: f64,
    /// Each query's budget (None: no budget, every query waits for all).
    pub budget: Option<Duration>,
    /// Hits asked for.
    pub top_k: u32,
    /// Copies of the tree, each on a thread of its own serving 1/N of the
    /// arrivals (see the module's documentation); 1: one tree.
    pub parallel: u32,
}

/// What a simulation measured.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// Queries sent.
    pub sent: u64,
    /// Queries answered (complete or partial).
    pub completed: u64,
    /// Queries that failed, by error.
    pub errors: BTreeMap<String, u64>,
    /// Answers missing some shards, as a fraction of those answered.
    pub partial_fraction: f64,
    /// Mean and least fraction of shards in an answer.
    pub coverage_mean: f64,
    /// The least coverage of any answer.
    pub coverage_min: f64,
    /// Latency of answered queries, µs.
    pub latency: Histogram<u64>,
    /// Requests the leaves received (hedges, retries and shadows included).
    pub leaf_requests: u64,
    /// Simulated time from the first query to the last answer.
    pub simulated: Duration,
    /// Wall-clock time the simulation took.
    pub wall: Duration,
}

impl SimReport {
    /// The report as JSON, with the keys `searchtree bench` uses.
    pub fn json(&self) -> serde_json::Value {
        let h = &self.latency;
        let q = |p: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(p)
            }
        };
        serde_json::json!({
            "mode": "simulated",
            "sent": self.sent,
            "completed": self.completed,
            "errors": self.errors,
            "partial_fraction": self.partial_fraction,
            "coverage_mean": self.coverage_mean,
            "coverage_min": self.coverage_min,
            "latency_us": {
                "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999),
                "max": h.max(), "mean": h.mean(),
            },
            "leaf_requests": self.leaf_requests,
            "leaf_requests_per_query": self.leaf_requests as f64 / self.sent.max(1) as f64,
            "simulated_s": self.simulated.as_secs_f64(),
            "wall_s": self.wall.as_secs_f64(),
            "leaf_requests_per_wall_s": self.leaf_requests as f64 / self.wall.as_secs_f64().max(1e-9),
        })
    }
}

/// The longest a simulated query may take: a day of simulated time. It is
/// the largest `--budget-ms`, and the budget of a query when none is given
/// (so "no budget" means "a day", as the output says); every inner node's
/// budget limit; and the most one leaf draw may take (a lognormal's far tail
/// is cut there, as no query could wait for more). Millisecond flags (delays,
/// stragglers) are bounded by it too.
pub const MAX_BUDGET: Duration = Duration::from_secs(86_400);

/// The slowest and fastest query rates simulated, per second: below one
/// query in 1000 s a gap between two arrivals can be days (and the run
/// weeks of simulated time); above a million no tree is being asked a
/// meaningful question.
pub const RATE_RANGE: (f64, f64) = (0.001, 1_000_000.0);

/// The most queries one simulation sends: each asks every leaf, so more
/// would take days of wall time.
pub const MAX_QUERIES: u64 = 1_000_000_000;

/// The most copies of the tree `--parallel` runs, one thread each.
pub const MAX_PARALLEL: u32 = 256;

/// What one query came to.
enum Outcome {
    Answered {
        latency: Duration,
        coverage: f64,
        partial: bool,
    },
    Failed(String),
}

/// The most leaf processes (leaves times replicas) a simulation builds:
/// each costs a few kilobytes and is asked by every query, so a million
/// take gigabytes and hours; more would only exhaust memory.
pub const MAX_LEAF_PROCESSES: u64 = 1_000_000;

impl SimConfig {
    /// Checks every setting, naming the flag, its value and the range it
    /// takes: values that would panic (a rate whose gaps overflow a
    /// duration), hang (no queries at all, a fan-out of 1), exhaust memory
    /// (too many leaf processes) or mean nothing (a probability above 1, a
    /// budget the reserve eats whole). The command checks every run of a
    /// sweep with it before the first one starts; [`run`] checks again.
    pub fn check(&self) -> anyhow::Result<()> {
        let (shape, model) = (&self.shape, &self.model);
        let (slowest, fastest) = RATE_RANGE;
        anyhow::ensure!(
            (slowest..=fastest).contains(&self.rate),
            "--rate {} must be a number of queries per second from {slowest} to {fastest}",
            show(self.rate)
        );
        anyhow::ensure!(
            (1..=MAX_QUERIES).contains(&self.queries),
            "--queries {} must be from 1 to {MAX_QUERIES}",
            self.queries
        );
        anyhow::ensure!(
            (1..=MAX_TOP_K).contains(&(self.top_k as usize)),
            "--top-k {} must be from 1 to {MAX_TOP_K} (nodes refuse more)",
            self.top_k
        );
        anyhow::ensure!(
            shape.leaves >= 1 && shape.replicas >= 1,
            "--leaves {} and --replicas {} must be at least 1",
            shape.leaves,
            shape.replicas
        );
        let processes = u64::from(shape.leaves) * u64::from(shape.replicas);
        anyhow::ensure!(
            processes <= MAX_LEAF_PROCESSES,
            "--leaves {} times --replicas {} is {processes} leaf processes: at most {MAX_LEAF_PROCESSES} are simulated (each costs memory, and every query asks every leaf)",
            shape.leaves,
            shape.replicas
        );
        anyhow::ensure!(
            shape.fanout >= 2,
            "--fanout {} must be at least 2 (children per inner node)",
            shape.fanout
        );
        anyhow::ensure!(
            (1..=MAX_PARALLEL).contains(&self.parallel),
            "--parallel {} must be from 1 to {MAX_PARALLEL}",
            self.parallel
        );
        let unit = |flag: &str, p: f64| {
            anyhow::ensure!(
                (0.0..=1.0).contains(&p),
                "--{flag} {} must be a number from 0 to 1",
                show(p)
            );
            Ok(())
        };
        unit("straggler-prob", model.straggler_prob)?;
        unit("failure-prob", model.failure_prob)?;
        unit("dead-fraction", shape.dead_fraction)?;
        unit("hedge-ratio", shape.hedge_ratio)?;
        anyhow::ensure!(
            shape.child_k_probability > 0.0 && shape.child_k_probability <= 1.0,
            "--child-k-probability {} must be above 0 and at most 1",
            show(shape.child_k_probability)
        );
        let day = |flag: &str, d: Duration| {
            anyhow::ensure!(
                d <= MAX_BUDGET,
                "--{flag} {} must be at most {} ms (a day)",
                show(d.as_secs_f64() * 1000.0),
                MAX_BUDGET.as_millis()
            );
            Ok(())
        };
        day("straggler-ms", model.straggler)?;
        day("straggler-for-ms", model.straggler_for.unwrap_or_default())?;
        day("reserve-ms", shape.reserve)?;
        day("hop-ms", shape.hop)?;
        if let Some(budget) = self.budget {
            day("budget-ms", budget)?;
            anyhow::ensure!(
                !budget.is_zero(),
                "--budget-ms must be above 0 (leave it out for no budget)"
            );
            anyhow::ensure!(
                budget > shape.reserve,
                "--budget-ms {} must be above --reserve-ms {}: the root keeps the reserve back for its merge, so no leaf would have any time",
                show(budget.as_secs_f64() * 1000.0),
                show(shape.reserve.as_secs_f64() * 1000.0)
            );
        }
        model.body.check()?;
        Ok(())
    }

    /// The budget each query has: the one given, or [`MAX_BUDGET`]; one
    /// figure for the queries' deadlines and for the output that states it.
    pub fn budget_or_cap(&self) -> Duration {
        self.budget.unwrap_or(MAX_BUDGET)
    }
}

/// Runs a simulation: one copy of the tree per `config.parallel`, each on
/// its own thread with a current-thread runtime and a paused clock.
pub fn run(config: &SimConfig) -> anyhow::Result<SimReport> {
    config.check()?;
    // Thousands of simulated nodes: no metric series per child.
    searchtree_node::ops::metrics::without_child_series();
    let copies = u64::from(config.parallel).min(config.queries);
    let wall = std::time::Instant::now();
    let reports = std::thread::scope(|scope| {
        let running: Vec<_> = (0..copies)
            .map(|copy| {
                let part = copy_config(config, copy, copies);
                std::thread::Builder::new()
                    .name(format!("simulate-{copy}"))
                    .spawn_scoped(scope, move || run_one(&part))
            })
            .collect::<Result<_, _>>()?;
        running
            .into_iter()
            .map(|copy| {
                copy.join()
                    .map_err(|_| anyhow::anyhow!("a simulation thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let mut report = add_up(reports)?;
    report.wall = wall.elapsed();
    Ok(report)
}

/// Copy `copy` of `copies`: its share of the queries, at its share of the
/// rate, drawing from its own seed (copy 0 keeps the seed given, so one
/// copy is the plain simulation).
fn copy_config(config: &SimConfig, copy: u64, copies: u64) -> SimConfig {
    let mut part = config.clone();
    part.queries = config.queries / copies + u64::from(copy < config.queries % copies);
    part.rate = config.rate / copies as f64;
    part.shape.seed = config
        .shape
        .seed
        .wrapping_add(copy.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    part.parallel = 1;
    part
}

/// One copy's report added into the others': counts summed, latencies
/// merged, means weighted by the queries they are over.
fn add_up(reports: Vec<SimReport>) -> anyhow::Result<SimReport> {
    let mut reports = reports.into_iter();
    let mut total = reports
        .next()
        .ok_or_else(|| anyhow::anyhow!("no simulation ran"))?;
    for r in reports {
        let (a, b) = (total.completed as f64, r.completed as f64);
        if a + b > 0.0 {
            total.partial_fraction =
                (total.partial_fraction * a + r.partial_fraction * b) / (a + b);
            total.coverage_mean = (total.coverage_mean * a + r.coverage_mean * b) / (a + b);
        }
        total.coverage_min = total.coverage_min.min(r.coverage_min);
        total.sent += r.sent;
        total.completed += r.completed;
        for (kind, n) in r.errors {
            *total.errors.entry(kind).or_default() += n;
        }
        total.latency.add(&r.latency)?;
        total.leaf_requests += r.leaf_requests;
        total.simulated = total.simulated.max(r.simulated);
    }
    Ok(total)
}

/// Runs one copy of the tree on a current-thread runtime with a paused
/// clock.
fn run_one(config: &SimConfig) -> anyhow::Result<SimReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    let wall = std::time::Instant::now();
    let mut report = runtime.block_on(drive(config))?;
    report.wall = wall.elapsed();
    // Drop the runtime (health-check tasks and all) before returning.
    drop(runtime);
    Ok(report)
}

async fn drive(config: &SimConfig) -> anyhow::Result<SimReport> {
    let (root, requests) = tree::build(&config.shape, config.model.clone());
    let root = Arc::new(root);
    let budget = config.budget_or_cap();
    let params = SearchParams::validate(
        &SearchRequest {
            query: "simulated".into(),
            top_k: config.top_k,
            ..Default::default()
        },
        &QueryLimits::default(),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let params = Arc::new(params);
    let mut arrivals = fastrand::Rng::with_seed(config.shape.seed ^ 0x5eed_a771);
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let mut report = SimReport {
        sent: 0,
        completed: 0,
        errors: BTreeMap::new(),
        partial_fraction: 0.0,
        coverage_mean: 0.0,
        coverage_min: 1.0,
        // Up to twice the longest budget: no answer comes later than its
        // budget (and one that did would be recorded at the top, not lost).
        latency: Histogram::new_with_bounds(1, 2 * MAX_BUDGET.as_micros() as u64, 3)?,
        leaf_requests: 0,
        simulated: Duration::ZERO,
        wall: Duration::ZERO,
    };
    let mut partial = 0u64;
    let mut coverage_sum = 0.0;
    let mut record = |outcome: Outcome, report: &mut SimReport| match outcome {
        Outcome::Answered {
            latency,
            coverage,
            partial: p,
        } => {
            report.completed += 1;
            partial += u64::from(p);
            coverage_sum += coverage;
            report.coverage_min = report.coverage_min.min(coverage);
            report
                .latency
                .saturating_record((latency.as_micros() as u64).max(1));
        }
        Outcome::Failed(kind) => *report.errors.entry(kind).or_default() += 1,
    };
    let start = Instant::now();
    let mut at = start;
    for _ in 0..config.queries {
        // Exponential gaps: Poisson arrivals at the rate asked for.
        let gap = -(1.0 - arrivals.f64()).ln() / config.rate;
        at += Duration::from_secs_f64(gap);
        tokio::time::sleep_until(at).await;
        let root = Arc::clone(&root);
        let params = Arc::clone(&params);
        tasks.spawn(async move {
            let sent = Instant::now();
            // Judged as the serving root judges it: an answer no shard
            // contributed to is an error, not a fast empty answer.
            let judged = root
                .search(&params, sent + budget)
                .await
                .and_then(|response| judge(&params, response).map_err(|(_, err)| err));
            match judged {
                Ok(response) => {
                    let coverage = response.coverage.as_ref().map_or(0.0, |c| {
                        f64::from(c.shards_ok) / f64::from(c.shards_total.max(1))
                    });
                    Outcome::Answered {
                        latency: sent.elapsed(),
                        coverage,
                        partial: response.partial,
                    }
                }
                Err(err) => Outcome::Failed(code_name(&err).to_string()),
            }
        });
        report.sent += 1;
        while let Some(done) = tasks.try_join_next() {
            record(done?, &mut report);
        }
    }
    while let Some(done) = tasks.join_next().await {
        record(done?, &mut report);
    }
    report.simulated = start.elapsed();
    report.leaf_requests = requests.load(Ordering::Relaxed);
    if report.completed > 0 {
        report.partial_fraction = partial as f64 / report.completed as f64;
        report.coverage_mean = coverage_sum / report.completed as f64;
    } else {
        report.coverage_min = 0.0;
    }
    Ok(report)
}

/// The gRPC code the serving root would answer `err` with, by the name the
/// load tester's reports use, so that the two reports' `errors` compare.
fn code_name(err: &NodeError) -> &'static str {
    match err {
        NodeError::Invalid(_) => "INVALID_ARGUMENT",
        NodeError::Timeout(_) => "DEADLINE_EXCEEDED",
        NodeError::Unavailable(_) => "UNAVAILABLE",
        NodeError::VersionMissing(_) => "FAILED_PRECONDITION",
        NodeError::Overloaded(_) => "RESOURCE_EXHAUSTED",
        NodeError::Internal(_) => "INTERNAL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leaf::Body;

    fn config(leaves: u32, queries: u64) -> SimConfig {
        SimConfig {
            shape: TreeShape {
                leaves,
                fanout: 10,
                replicas: 1,
                dead_fraction: 0.0,
                hedge_ratio: 0.0,
                child_k_probability: 1.0,
                reserve: Duration::from_millis(1),
                hop: Duration::ZERO,
                seed: 7,
            },
            model: LeafModel {
                body: Body::Lognormal {
                    median_us: 1000.0,
                    sigma: 0.1,
                },
                straggler_prob: 0.01,
                straggler: Duration::from_secs(1),
                straggler_for: None,
                failure_prob: 0.0,
            },
            queries,
            rate: 20.0,
            budget: None,
            top_k: 10,
            parallel: 1,
        }
    }

    #[test]
    fn a_hundred_leaves_each_slow_one_time_in_a_hundred_make_63_percent_of_queries_slow() {
        let queries = 3_000;
        let r = run(&config(100, queries)).unwrap();
        assert_eq!(r.completed, queries);
        // Slow: held up by a straggler (1 s added), well above the body.
        let slow = r.latency.count_between(500_000, u64::MAX) as f64 / queries as f64;
        let expected = 1.0 - 0.99f64.powi(100); // 0.634
        let sd = (expected * (1.0 - expected) / queries as f64).sqrt();
        assert!(
            (slow - expected).abs() < 4.0 * sd,
            "{slow:.4} of queries slow, expected {expected:.4} ± {:.4}",
            4.0 * sd
        );
        assert_eq!(r.leaf_requests, 100 * queries);
    }

    #[test]
    fn copies_in_parallel_add_up_to_one_simulation_of_every_query() {
        let queries = 3_000;
        let mut c = config(100, queries);
        c.parallel = 2;
        let r = run(&c).unwrap();
        assert_eq!((r.sent, r.completed), (queries, queries));
        assert_eq!(r.leaf_requests, 100 * queries);
        let slow = r.latency.count_between(500_000, u64::MAX) as f64 / queries as f64;
        let expected = 1.0 - 0.99f64.powi(100);
        let sd = (expected * (1.0 - expected) / queries as f64).sqrt();
        assert!(
            (slow - expected).abs() < 4.0 * sd,
            "{slow:.4} of queries slow"
        );
        // Deterministic for a given seed and number of copies.
        let again = run(&c).unwrap();
        assert_eq!(r.latency, again.latency);
        assert_eq!(r.coverage_mean, again.coverage_mean);
    }

    #[test]
    fn the_same_seed_gives_the_same_numbers() {
        let mut c = config(50, 500);
        c.shape.replicas = 2;
        c.shape.hedge_ratio = 0.1;
        c.budget = Some(Duration::from_millis(50));
        let strip = |r: SimReport| {
            let mut j = r.json();
            j.as_object_mut().unwrap().remove("wall_s");
            j.as_object_mut()
                .unwrap()
                .remove("leaf_requests_per_wall_s");
            j
        };
        let a = strip(run(&c).unwrap());
        let b = strip(run(&c).unwrap());
        assert_eq!(a, b);
        c.shape.seed = 8;
        assert_ne!(a, strip(run(&c).unwrap()), "another seed, other numbers");
    }

    #[test]
    fn hostile_shapes_and_rates_are_refused_before_anything_is_built() {
        let refused = |change: &dyn Fn(&mut SimConfig), what: &str| {
            let mut c = config(10, 10);
            change(&mut c);
            let err = run(&c).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(what), "{what}: {err:?}");
        };
        refused(&|c| c.shape.fanout = 0, "--fanout 0 must be at least 2");
        refused(&|c| c.shape.fanout = 1, "--fanout 1 must be at least 2");
        // Would allocate until memory ran out.
        refused(&|c| c.shape.leaves = 4_000_000, "leaf processes");
        refused(
            &|c| {
                c.shape.leaves = 1000;
                c.shape.replicas = 1_000_000;
            },
            "leaf processes",
        );
        refused(&|c| c.rate = f64::INFINITY, "--rate");
        refused(&|c| c.rate = f64::NAN, "--rate");
        // Its first gap overflowed a Duration: a panic.
        refused(
            &|c| c.rate = 1e-300,
            "--rate 1e-300 must be a number of queries per second from 0.001 to 1000000",
        );
        refused(&|c| c.budget = Some(Duration::ZERO), "--budget-ms");
        refused(
            &|c| c.budget = Some(Duration::from_millis(1)),
            "--budget-ms 1 must be above --reserve-ms 1",
        );
        refused(
            &|c| c.budget = Some(MAX_BUDGET + Duration::from_secs(1)),
            "--budget-ms 86401000 must be at most 86400000 ms",
        );
        refused(
            &|c| c.top_k = 100_000,
            "--top-k 100000 must be from 1 to 1000",
        );
        refused(&|c| c.queries = 0, "--queries 0 must be from 1");
        refused(&|c| c.model.failure_prob = 2.0, "--failure-prob 2 must be");
        refused(&|c| c.shape.dead_fraction = f64::NAN, "--dead-fraction NaN");
        refused(
            &|c| c.model.straggler = Duration::from_secs(86_401),
            "--straggler-ms 86401000 must be at most",
        );
        refused(
            &|c| {
                c.model.body = Body::Lognormal {
                    median_us: 1e15,
                    sigma: 0.5,
                }
            },
            "--leaf-latency: the median 1000000000000 ms is out of range",
        );
    }

    #[test]
    fn with_every_leaf_dead_every_query_fails_as_at_the_serving_root() {
        let mut c = config(20, 50);
        c.shape.dead_fraction = 1.0;
        let r = run(&c).unwrap();
        assert_eq!(r.sent, 50);
        assert_eq!(r.completed, 0, "no leaf answered, yet queries did");
        assert_eq!(r.errors.get("UNAVAILABLE"), Some(&50), "{:?}", r.errors);
        assert_eq!((r.coverage_mean, r.coverage_min), (0.0, 0.0));
        assert!(r.latency.is_empty());
        // With replicas, all dead, the same; half dead, every query is
        // answered by the live replica of each shard.
        c.shape.replicas = 2;
        let r = run(&c).unwrap();
        assert_eq!((r.completed, r.errors.get("UNAVAILABLE")), (0, Some(&50)));
        c.shape.dead_fraction = 0.5;
        let r = run(&c).unwrap();
        assert_eq!(r.completed, 50, "{:?}", r.errors);
    }

    #[test]
    fn with_every_leaf_too_slow_for_the_budget_every_query_fails_as_timed_out() {
        let mut c = config(20, 50);
        c.model.straggler_prob = 1.0;
        c.budget = Some(Duration::from_millis(100));
        let r = run(&c).unwrap();
        assert_eq!(r.completed, 0);
        assert_eq!(
            r.errors.get("DEADLINE_EXCEEDED"),
            Some(&50),
            "{:?}",
            r.errors
        );
    }

    #[test]
    fn no_budget_waits_for_every_leaf_past_an_hour_and_long_budgets_hold_below_the_root() {
        // Three levels; one leaf request in ten takes 90 minutes. Without a
        // budget (or with two hours) every answer is complete: nothing is
        // cut at an hour, at the root or at the nodes below it.
        let mut c = config(20, 100);
        c.shape.fanout = 4;
        c.model.straggler_prob = 0.1;
        c.model.straggler = Duration::from_secs(90 * 60);
        for budget in [None, Some(Duration::from_secs(2 * 3600))] {
            c.budget = budget;
            let r = run(&c).unwrap();
            assert_eq!(r.completed, 100, "{budget:?}: {:?}", r.errors);
            assert_eq!(r.coverage_min, 1.0, "{budget:?}");
            assert!(
                r.latency.max() > 90 * 60 * 1_000_000,
                "{budget:?}: max {} µs",
                r.latency.max()
            );
        }
        assert_eq!(c.budget_or_cap(), Duration::from_secs(7200));
        c.budget = None;
        assert_eq!(c.budget_or_cap(), MAX_BUDGET);
    }

    #[test]
    fn a_budget_bounds_latency_and_costs_coverage() {
        let mut c = config(100, 1_000);
        c.budget = Some(Duration::from_millis(50));
        let r = run(&c).unwrap();
        assert_eq!(r.completed, 1_000);
        assert!(r.latency.max() <= 51_000, "max {} µs", r.latency.max());
        // About one leaf in a hundred straggles past the budget.
        assert!(
            (0.985..0.995).contains(&r.coverage_mean),
            "coverage {}",
            r.coverage_mean
        );
        assert!(r.partial_fraction > 0.5, "{}", r.partial_fraction);
    }
}
