//! Simulated leaves: children that answer on tokio's clock after a latency
//! drawn from a model — measured (a histogram saved by `searchtree bench
//! --save-latency`) or parametric (a lognormal body) — plus stragglers,
//! failures and dead replicas, optionally correlated in time (a slow
//! machine stays slow for a while).

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use searchtree_bench::limits::show;
use searchtree_parent::child::{Child, ChildError};
use searchtree_proto::pb::{
    Coverage, FetchRequest, FetchResponse, Hit, SearchRequest, SearchResponse, ShardSource,
};
use tokio::time::Instant;

/// Documents each simulated shard holds.
const SHARD_DOCS: u64 = 10_000;
/// Hits a simulated leaf returns (at most the request's k).
const LEAF_HITS: usize = 3;

/// The range of a lognormal body's median, ms: from 1 µs (the histograms'
/// resolution) to a minute (a leaf slower than that in the middle of its
/// distribution is not a search leaf; stragglers model the slow tail).
pub const MEDIAN_MS_RANGE: (f64, f64) = (0.001, 60_000.0);

/// The largest σ of a lognormal body: at 5 the p99 is already 10⁵ times the
/// median; wider is no longer a latency distribution anyone measured.
pub const MAX_SIGMA: f64 = 5.0;

/// The slowest one draw of a leaf's body may be: [`super::MAX_BUDGET`], the
/// longest a query may wait, so that a lognormal's far tail (σ 5 reaches
/// 10¹⁸ times the median) cuts there instead of overflowing a duration.
const MAX_DRAW: Duration = super::MAX_BUDGET;

/// The body of a leaf's latency distribution.
#[derive(Debug, Clone)]
pub enum Body {
    /// Lognormal with this median and shape (σ of the log).
    Lognormal {
        /// The median, µs.
        median_us: f64,
        /// σ of ln(latency).
        sigma: f64,
    },
    /// Drawn from measured latencies: (value µs, count) pairs.
    Measured {
        /// Values and cumulative counts, ascending.
        cumulative: Vec<(u64, u64)>,
    },
}

impl Body {
    /// Parses `lognormal:MEDIAN_MS[:SIGMA]` (σ 0.5 by default; the median
    /// within [`MEDIAN_MS_RANGE`], σ within 0 to [`MAX_SIGMA`]) or a file
    /// of `VALUE_US COUNT` lines (as `searchtree bench --save-latency`
    /// writes; values up to a day). The flag's value parser: the message
    /// says what is wrong and what is allowed.
    pub fn parse(spec: &str) -> Result<Body, String> {
        if let Some(rest) = spec.strip_prefix("lognormal:") {
            let mut parts = rest.split(':');
            let median_ms: f64 = parts.next().unwrap_or("").parse().map_err(|_| {
                format!("{spec:?} is not lognormal:MEDIAN_MS[:SIGMA] ({LOGNORMAL_RANGE})")
            })?;
            let sigma: f64 = match parts.next() {
                Some(s) => s
                    .parse()
                    .map_err(|_| format!("σ {s:?} is not a number ({LOGNORMAL_RANGE})"))?,
                None => 0.5,
            };
            if parts.next().is_some() {
                return Err(format!(
                    "{spec:?} has too many parts: give lognormal:MEDIAN_MS[:SIGMA]"
                ));
            }
            let body = Body::Lognormal {
                median_us: median_ms * 1000.0,
                sigma,
            };
            body.problem().map_or(Ok(body), Err)
        } else {
            Self::read(Path::new(spec))
        }
    }

    /// Checks a body built other than by [`Body::parse`] against the same
    /// bounds, the flag named.
    pub fn check(&self) -> anyhow::Result<()> {
        match self.problem() {
            None => Ok(()),
            Some(problem) => anyhow::bail!("--leaf-latency: {problem}"),
        }
    }

    /// What is out of bounds in this body, if anything.
    fn problem(&self) -> Option<String> {
        match self {
            Body::Lognormal { median_us, sigma } => {
                let median_ms = median_us / 1000.0;
                let (lo, hi) = MEDIAN_MS_RANGE;
                if !(lo..=hi).contains(&median_ms) {
                    Some(format!(
                        "the median {} ms is out of range ({LOGNORMAL_RANGE})",
                        show(median_ms)
                    ))
                } else if !(0.0..=MAX_SIGMA).contains(sigma) {
                    Some(format!(
                        "σ {} is out of range ({LOGNORMAL_RANGE})",
                        show(*sigma)
                    ))
                } else {
                    None
                }
            }
            Body::Measured { cumulative } => match cumulative.last() {
                None => Some("a measured body with no latencies".into()),
                Some((slowest, _)) if *slowest > MAX_DRAW.as_micros() as u64 => Some(format!(
                    "a measured latency of {slowest} µs is more than a day, the longest a simulated query may take"
                )),
                Some(_) => None,
            },
        }
    }

    fn read(path: &Path) -> Result<Body, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "{}: {e} (give lognormal:MEDIAN_MS[:SIGMA] or a file from `searchtree bench --save-latency`)",
                path.display()
            )
        })?;
        let mut cumulative = Vec::new();
        let mut total = 0u64;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let parse = |f: Option<&str>| f.and_then(|v| v.parse::<u64>().ok());
            let (Some(value), Some(count)) = (parse(fields.next()), parse(fields.next())) else {
                return Err(format!(
                    "{}:{}: expected `VALUE_US COUNT`",
                    path.display(),
                    n + 1
                ));
            };
            if value > MAX_DRAW.as_micros() as u64 {
                return Err(format!(
                    "{}:{}: {value} µs is more than a day ({} µs), the longest a simulated query may take",
                    path.display(),
                    n + 1,
                    MAX_DRAW.as_micros()
                ));
            }
            total = total.checked_add(count).ok_or_else(|| {
                format!(
                    "{}:{}: the counts add up to more than {}",
                    path.display(),
                    n + 1,
                    u64::MAX
                )
            })?;
            cumulative.push((value, total));
        }
        if total == 0 {
            return Err(format!("{}: no latencies", path.display()));
        }
        cumulative.sort_unstable();
        Ok(Body::Measured { cumulative })
    }

    /// One latency, from uniform draws `u`, `v` in [0, 1); at most
    /// [`MAX_DRAW`].
    fn draw(&self, u: f64, v: f64) -> Duration {
        match self {
            Body::Lognormal { median_us, sigma } => {
                // Box-Muller: a standard normal from two uniforms.
                let z = (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos();
                let secs = median_us * (sigma * z).exp() / 1e6;
                Duration::try_from_secs_f64(secs).map_or(MAX_DRAW, |d| d.min(MAX_DRAW))
            }
            Body::Measured { cumulative } => {
                let total = cumulative.last().map_or(1, |c| c.1);
                let target = (u * total as f64) as u64;
                let i = cumulative.partition_point(|(_, c)| *c <= target);
                Duration::from_micros(cumulative[i.min(cumulative.len() - 1)].0)
            }
        }
    }
}

/// The bounds of `lognormal:MEDIAN_MS[:SIGMA]`, as messages and the
/// flag's help give them.
const LOGNORMAL_RANGE: &str = "MEDIAN_MS from 0.001 to 60000, SIGMA from 0 to 5";

/// How every simulated leaf behaves.
#[derive(Debug, Clone)]
pub struct LeafModel {
    /// The latency body.
    pub body: Body,
    /// The chance a request meets a straggler.
    pub straggler_prob: f64,
    /// What a straggler adds.
    pub straggler: Duration,
    /// With this set, a leaf that straggles stays slow for this long
    /// (a slow machine), rather than request by request.
    pub straggler_for: Option<Duration>,
    /// The chance a request fails (unavailable).
    pub failure_prob: f64,
}

/// One simulated leaf (a replica of one shard).
pub struct SimLeaf {
    name: String,
    shards: [u32; 1],
    model: std::sync::Arc<LeafModel>,
    rng: Mutex<fastrand::Rng>,
    dead: bool,
    slow_until: Mutex<Option<Instant>>,
    /// The ids of the hits it answers (made once: formatting them per
    /// request was a good part of a simulation's time).
    doc_ids: Vec<String>,
    /// Requests this leaf was sent, across leaves (shared).
    requests: std::sync::Arc<AtomicU64>,
}

impl SimLeaf {
    /// Leaf `replica` of `shard`, drawing from `seed`; a dead one refuses
    /// everything, health checks too.
    pub fn new(
        shard: u32,
        replica: u32,
        model: std::sync::Arc<LeafModel>,
        seed: u64,
        dead: bool,
        requests: std::sync::Arc<AtomicU64>,
    ) -> SimLeaf {
        SimLeaf {
            name: format!("leaf-{shard}-{replica}"),
            shards: [shard],
            model,
            rng: Mutex::new(fastrand::Rng::with_seed(
                seed ^ (u64::from(shard) << 20) ^ u64::from(replica),
            )),
            dead,
            slow_until: Mutex::new(None),
            doc_ids: (0..LEAF_HITS).map(|i| format!("s{shard}-d{i}")).collect(),
            requests,
        }
    }

    /// This request's latency, or its failure, and the scores of the hits
    /// it answers with (best first), from one lock of its generator.
    fn outcome(&self) -> Result<(Duration, [f32; LEAF_HITS]), ChildError> {
        let (u, v, s, f, mut scores) = {
            let mut rng = self.rng.lock().expect("rng lock");
            let draws = (rng.f64(), rng.f64(), rng.f64(), rng.f64());
            let scores: [f32; LEAF_HITS] = std::array::from_fn(|_| rng.f32() * 10.0);
            (draws.0, draws.1, draws.2, draws.3, scores)
        };
        scores.sort_unstable_by(|a, b| b.total_cmp(a));
        let m = &self.model;
        if f < m.failure_prob {
            return Err(ChildError::Unavailable(format!("{} failed", self.name)));
        }
        let mut latency = m.body.draw(u, v);
        let straggling = match m.straggler_for {
            None => s < m.straggler_prob,
            Some(period) => {
                let now = Instant::now();
                let mut until = self.slow_until.lock().expect("slow lock");
                if until.is_some_and(|t| t > now) {
                    true
                } else if s < m.straggler_prob {
                    *until = Some(now + period);
                    true
                } else {
                    false
                }
            }
        };
        if straggling {
            latency += m.straggler;
        }
        Ok((latency, scores))
    }
}

impl Child for SimLeaf {
    fn name(&self) -> &str {
        &self.name
    }

    fn shards(&self) -> &[u32] {
        &self.shards
    }

    fn search(
        &self,
        request: SearchRequest,
        _budget: Duration,
    ) -> BoxFuture<'_, Result<SearchResponse, ChildError>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            if self.dead {
                return Err(ChildError::Unavailable(format!("{} is dead", self.name)));
            }
            let (latency, scores) = self.outcome()?;
            tokio::time::sleep(latency).await;
            let shard = self.shards[0];
            // Scores best first; ids ascend, so ties keep the hit order.
            let hits: Vec<Hit> = self.doc_ids[..LEAF_HITS.min(request.top_k as usize)]
                .iter()
                .zip(scores)
                .map(|(id, score)| Hit {
                    doc_id: id.clone(),
                    score,
                    shard,
                    ..Default::default()
                })
                .collect();
            Ok(SearchResponse {
                total_hits: hits.len() as u64,
                hits,
                coverage: Some(Coverage {
                    shards_total: 1,
                    shards_ok: 1,
                    docs_total: SHARD_DOCS,
                    docs_searched: SHARD_DOCS,
                    sources: vec![ShardSource {
                        shard,
                        replica: self.name.clone(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                took_us: latency.as_micros() as u64,
                ..Default::default()
            })
        })
    }

    fn fetch(
        &self,
        _request: FetchRequest,
        _budget: Duration,
    ) -> BoxFuture<'_, Result<FetchResponse, ChildError>> {
        Box::pin(async { Err(ChildError::Failed("simulated leaves hold no text".into())) })
    }

    fn check_health(&self) -> BoxFuture<'_, Result<(), ChildError>> {
        let dead = self.dead;
        Box::pin(async move {
            if dead {
                Err(ChildError::Unavailable("dead".into()))
            } else {
                Ok(())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lognormal_draws_have_the_median_asked_for() {
        let body = Body::parse("lognormal:2:0.5").unwrap();
        let mut rng = fastrand::Rng::with_seed(1);
        let mut draws: Vec<Duration> = (0..20_001)
            .map(|_| body.draw(rng.f64(), rng.f64()))
            .collect();
        draws.sort();
        let median = draws[10_000].as_secs_f64() * 1000.0;
        assert!((median - 2.0).abs() < 0.05, "median {median} ms");
    }

    #[test]
    fn measured_draws_follow_the_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leaf.txt");
        std::fs::write(&path, "# value_us count\n1000 3\n5000 1\n").unwrap();
        let body = Body::parse(path.to_str().unwrap()).unwrap();
        let mut rng = fastrand::Rng::with_seed(2);
        let slow = (0..10_000)
            .filter(|_| body.draw(rng.f64(), rng.f64()) == Duration::from_millis(5))
            .count();
        assert!((2300..2700).contains(&slow), "{slow} of 10000 at 5 ms");
        assert!(Body::parse("lognormal:x").is_err());
        assert!(
            Body::parse("/no/such/file")
                .unwrap_err()
                .contains("/no/such/file: ")
        );
    }

    #[test]
    fn lognormal_parameters_are_bounded_and_the_bounds_named() {
        assert!(Body::parse("lognormal:60000:5").is_ok());
        assert!(Body::parse("lognormal:0.001:0").is_ok());
        for (spec, what) in [
            (
                "lognormal:1e12",
                "the median 1000000000000 ms is out of range",
            ),
            ("lognormal:0", "the median 0 ms is out of range"),
            ("lognormal:-2", "the median -2 ms is out of range"),
            ("lognormal:NaN", "the median NaN ms is out of range"),
            ("lognormal:inf", "the median inf ms is out of range"),
            ("lognormal:2:6", "σ 6 is out of range"),
            ("lognormal:2:-1", "σ -1 is out of range"),
            ("lognormal:2:NaN", "σ NaN is out of range"),
            ("lognormal:2:0.5:9", "too many parts"),
        ] {
            let err = Body::parse(spec).unwrap_err();
            assert!(err.contains(what), "{spec}: {err}");
            if err.contains("out of range") {
                assert!(err.contains(LOGNORMAL_RANGE), "{spec}: {err}");
            }
        }
        let built = Body::Lognormal {
            median_us: 1e15,
            sigma: 0.5,
        };
        assert!(
            built
                .check()
                .unwrap_err()
                .to_string()
                .starts_with("--leaf-latency: ")
        );
    }

    #[test]
    fn the_far_tail_of_a_draw_is_cut_at_a_day_not_overflowed() {
        // σ 5 at the most extreme draw: 10^18 times the median, which
        // overflowed a Duration before.
        let body = Body::parse("lognormal:60000:5").unwrap();
        let worst = 1.0 - f64::EPSILON / 2.0;
        assert_eq!(body.draw(worst, 0.0), MAX_DRAW);
        let middle = body.draw(0.5, 0.25).as_secs_f64();
        assert!((middle - 60.0).abs() < 1e-6, "{middle}");
    }

    #[test]
    fn measured_latencies_beyond_a_day_are_refused_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leaf.txt");
        std::fs::write(&path, "1000 3\n86400000001 1\n").unwrap();
        let err = Body::parse(path.to_str().unwrap()).unwrap_err();
        assert!(
            err.contains("leaf.txt:2: 86400000001 µs is more than a day"),
            "{err}"
        );
        std::fs::write(&path, "1000 18446744073709551615\n2000 1\n").unwrap();
        let err = Body::parse(path.to_str().unwrap()).unwrap_err();
        assert!(err.contains("leaf.txt:2: the counts add up"), "{err}");
    }
}
