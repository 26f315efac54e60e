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
use searchtree_parent::child::{Child, ChildError};
use searchtree_proto::pb::{
    Coverage, FetchRequest, FetchResponse, Hit, SearchRequest, SearchResponse, ShardSource,
};
use tokio::time::Instant;

/// Documents each simulated shard holds.
const SHARD_DOCS: u64 = 10_000;
/// Hits a simulated leaf returns (at most the request's k).
const LEAF_HITS: usize = 3;

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
    /// Parses `lognormal:MEDIAN_MS[:SIGMA]` (σ 0.5 by default) or a file
    /// of `VALUE_US COUNT` lines (as `searchtree bench --save-latency`
    /// writes).
    pub fn parse(spec: &str) -> Result<Body, String> {
        if let Some(rest) = spec.strip_prefix("lognormal:") {
            let mut parts = rest.split(':');
            let median_ms: f64 = parts
                .next()
                .unwrap_or("")
                .parse()
                .map_err(|_| format!("--leaf-latency {spec:?}: lognormal:MEDIAN_MS[:SIGMA]"))?;
            let sigma: f64 = match parts.next() {
                Some(s) => s
                    .parse()
                    .map_err(|_| format!("--leaf-latency {spec:?}: σ {s:?} is not a number"))?,
                None => 0.5,
            };
            if !(median_ms > 0.0 && (0.0..=5.0).contains(&sigma)) {
                return Err(format!(
                    "--leaf-latency {spec:?}: the median must be positive and σ within 0..5"
                ));
            }
            return Ok(Body::Lognormal {
                median_us: median_ms * 1000.0,
                sigma,
            });
        }
        Self::read(Path::new(spec))
    }

    fn read(path: &Path) -> Result<Body, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "--leaf-latency {}: {e} (give lognormal:MEDIAN_MS[:SIGMA] or a file from `searchtree bench --save-latency`)",
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
            total += count;
            cumulative.push((value, total));
        }
        if total == 0 {
            return Err(format!("{}: no latencies", path.display()));
        }
        cumulative.sort_unstable();
        Ok(Body::Measured { cumulative })
    }

    /// One latency, from uniform draws `u`, `v` in [0, 1).
    fn draw(&self, u: f64, v: f64) -> Duration {
        match self {
            Body::Lognormal { median_us, sigma } => {
                // Box-Muller: a standard normal from two uniforms.
                let z = (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos();
                Duration::from_secs_f64(median_us * (sigma * z).exp() / 1e6)
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
                .contains("--leaf-latency")
        );
    }
}
