//! How a parent chooses a replica for a request.

use std::str::FromStr;

/// A replica selection policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Each replica in turn.
    RoundRobin,
    /// Power of two choices: two replicas at random, the one with fewer
    /// requests in flight.
    LeastOutstanding,
    /// Rank replicas by smoothed latency times a cubic penalty on requests in
    /// flight, in the spirit of C3 (Suresh et al., NSDI 2015) and
    /// Elasticsearch's adaptive replica selection: fast, idle replicas first,
    /// and a replica building a queue loses traffic quickly.
    #[default]
    LatencyAware,
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "round_robin" => Ok(Policy::RoundRobin),
            "least_outstanding" => Ok(Policy::LeastOutstanding),
            "latency_aware" => Ok(Policy::LatencyAware),
            other => Err(format!(
                "unknown replica policy {other:?}: use round_robin, least_outstanding or latency_aware"
            )),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Policy::RoundRobin => "round_robin",
            Policy::LeastOutstanding => "least_outstanding",
            Policy::LatencyAware => "latency_aware",
        })
    }
}

/// What a policy sees of one candidate replica.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    /// Index of the replica in its group.
    pub index: usize,
    /// Share of normal traffic it may get now (slow start), in (0, 1].
    pub weight: f64,
    /// Requests in flight to it.
    pub in_flight: usize,
    /// Smoothed latency, µs (0 if unknown).
    pub ewma_us: f64,
}

/// Latency assumed for a replica not measured yet, µs.
const UNKNOWN_LATENCY_US: f64 = 1000.0;

impl Policy {
    /// Picks one of `candidates` (not empty). `turn` is a counter that
    /// increases per request; `coin` draws uniform numbers in [0, 1).
    pub fn pick(
        &self,
        candidates: &[Candidate],
        turn: usize,
        coin: &mut impl FnMut() -> f64,
    ) -> usize {
        debug_assert!(!candidates.is_empty());
        match self {
            Policy::RoundRobin => {
                // Walk from this turn's position; a replica in slow start is
                // taken with probability equal to its weight.
                let n = candidates.len();
                (0..n)
                    .map(|k| candidates[(turn + k) % n])
                    .find(|c| c.weight >= 1.0 || coin() < c.weight)
                    .unwrap_or(candidates[turn % n])
                    .index
            }
            Policy::LeastOutstanding => {
                let a = weighted(candidates, coin);
                let b = weighted(candidates, coin);
                let (ca, cb) = (candidates[a], candidates[b]);
                if cb.in_flight < ca.in_flight {
                    cb.index
                } else {
                    ca.index
                }
            }
            Policy::LatencyAware => {
                let score = |c: &Candidate| {
                    let latency = if c.ewma_us > 0.0 {
                        c.ewma_us
                    } else {
                        UNKNOWN_LATENCY_US
                    };
                    latency * (1.0 + c.in_flight as f64).powi(3) / c.weight
                };
                candidates
                    .iter()
                    .min_by(|x, y| score(x).total_cmp(&score(y)))
                    .expect("not empty")
                    .index
            }
        }
    }
}

/// A position in `candidates` drawn with probability proportional to weight.
fn weighted(candidates: &[Candidate], coin: &mut impl FnMut() -> f64) -> usize {
    let total: f64 = candidates.iter().map(|c| c.weight).sum();
    let mut x = coin() * total;
    for (i, c) in candidates.iter().enumerate() {
        if x < c.weight {
            return i;
        }
        x -= c.weight;
    }
    candidates.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coin() -> impl FnMut() -> f64 {
        let mut state = 42u64;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn candidate(index: usize, in_flight: usize, ewma_us: f64) -> Candidate {
        Candidate {
            index,
            weight: 1.0,
            in_flight,
            ewma_us,
        }
    }

    fn shares(policy: Policy, candidates: &[Candidate]) -> Vec<usize> {
        let mut coin = coin();
        let mut counts = vec![0; candidates.len()];
        for turn in 0..10_000 {
            counts[policy.pick(candidates, turn, &mut coin)] += 1;
        }
        counts
    }

    #[test]
    fn round_robin_spreads_evenly_and_honours_slow_start() {
        let even = shares(
            Policy::RoundRobin,
            &[candidate(0, 0, 0.0), candidate(1, 0, 0.0)],
        );
        assert_eq!(even, [5000, 5000]);
        let mut ramping = candidate(1, 0, 0.0);
        ramping.weight = 0.25;
        let counts = shares(Policy::RoundRobin, &[candidate(0, 0, 0.0), ramping]);
        // The ramping replica gets a quarter of its turns: ~1250 of 10000.
        assert!((1000..1500).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn least_outstanding_prefers_the_idle_replica() {
        let counts = shares(
            Policy::LeastOutstanding,
            &[
                candidate(0, 5, 0.0),
                candidate(1, 0, 0.0),
                candidate(2, 5, 0.0),
            ],
        );
        // Replica 1 wins whenever it is one of the two drawn: ~5/9 of picks.
        assert!((5000..6100).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn latency_aware_prefers_fast_replicas_until_they_queue() {
        let fast_idle = shares(
            Policy::LatencyAware,
            &[candidate(0, 0, 3000.0), candidate(1, 0, 1000.0)],
        );
        assert_eq!(fast_idle, [0, 10_000]);
        // The fast one with 2 in flight scores 1000 * 27 > 3000: the slow idle one wins.
        let fast_busy = shares(
            Policy::LatencyAware,
            &[candidate(0, 0, 3000.0), candidate(1, 2, 1000.0)],
        );
        assert_eq!(fast_busy, [10_000, 0]);
    }

    #[test]
    fn parses_its_names() {
        for p in [
            Policy::RoundRobin,
            Policy::LeastOutstanding,
            Policy::LatencyAware,
        ] {
            assert_eq!(p.to_string().parse::<Policy>().unwrap(), p);
        }
        assert!(
            "random"
                .parse::<Policy>()
                .unwrap_err()
                .contains("round_robin")
        );
    }
}
