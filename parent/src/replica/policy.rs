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
    /// Score replicas by smoothed latency times a cubic penalty on requests
    /// in flight, in the spirit of C3 (Suresh et al., NSDI 2015) and
    /// Elasticsearch's adaptive replica selection, and draw one with
    /// probability proportional to 1/score²: fast, idle replicas get most of
    /// the traffic, and a replica building a queue loses it quickly.
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
    /// Share of normal traffic it may get now (slow start), in (0, 1]. The
    /// group applies it after the policy has chosen (see
    /// `ReplicaGroup::pick`); policies rank by load and latency alone.
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
            Policy::RoundRobin => candidates[turn % candidates.len()].index,
            Policy::LeastOutstanding => {
                let a = uniform(candidates, coin);
                let b = uniform(candidates, coin);
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
                    latency * (1.0 + c.in_flight as f64).powi(3)
                };
                // Drawn with probability proportional to 1/score²: equally
                // good replicas share the load, one 3x slower gets a ninth of
                // a peer's share, and every replica keeps getting some traffic
                // so its numbers never go stale.
                let weights: Vec<f64> = candidates.iter().map(|c| score(c).powi(-2)).collect();
                let mut x = coin() * weights.iter().sum::<f64>();
                for (c, w) in candidates.iter().zip(&weights) {
                    if x < *w {
                        return c.index;
                    }
                    x -= w;
                }
                candidates[candidates.len() - 1].index
            }
        }
    }
}

/// A position in `candidates`, drawn uniformly.
fn uniform(candidates: &[Candidate], coin: &mut impl FnMut() -> f64) -> usize {
    ((coin() * candidates.len() as f64) as usize).min(candidates.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coin() -> impl FnMut() -> f64 {
        let mut rng = fastrand::Rng::with_seed(42);
        move || rng.f64()
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
    fn round_robin_spreads_evenly() {
        let even = shares(
            Policy::RoundRobin,
            &[candidate(0, 0, 0.0), candidate(1, 0, 0.0)],
        );
        assert_eq!(even, [5000, 5000]);
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
        let tie = shares(
            Policy::LatencyAware,
            &[candidate(0, 0, 1000.0), candidate(1, 0, 1010.0)],
        );
        assert!((4600..5400).contains(&tie[0]), "{tie:?}");
        let fast_idle = shares(
            Policy::LatencyAware,
            &[candidate(0, 0, 3000.0), candidate(1, 0, 1000.0)],
        );
        // 1/1000² against 1/3000²: the fast one gets 9 of every 10.
        assert!((8700..9300).contains(&fast_idle[1]), "{fast_idle:?}");
        // The fast one with 2 in flight scores 1000 * 27 = 27000 > 3000: the
        // slow idle one gets 81 of every 82.
        let fast_busy = shares(
            Policy::LatencyAware,
            &[candidate(0, 0, 3000.0), candidate(1, 2, 1000.0)],
        );
        assert!(fast_busy[0] > 9_700, "{fast_busy:?}");
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
