//! Which query each request sends: the list in order, cycled (every query
//! as often as any other), or drawn from a Zipf distribution over the list
//! (`--zipf S`), as real query logs repeat a few head queries often and a
//! long tail rarely: query *i* (from 1) is drawn with probability
//! proportional to 1/*i*^S. That is what measures a result cache honestly.
//!
//! A draw depends only on the seed and the request's index, not on which
//! task sends it or when, so a run is reproducible under any concurrency.
//! The distribution is a precomputed CDF searched by bisection (no `rand`
//! in the workspace: `fastrand` supplies the uniform numbers).

use std::sync::Arc;

/// Picks the query of request number `i`.
#[derive(Debug, Clone)]
pub struct QueryPicker {
    queries: Arc<Vec<String>>,
    /// Zipf's cumulative distribution over `queries`, ending at 1; `None`
    /// for the list in order.
    cdf: Option<Vec<f64>>,
    seed: u64,
}

impl QueryPicker {
    /// Picks from `queries` in order, or by Zipf's law with exponent
    /// `zipf` (which must be positive and finite), drawn with `seed`.
    pub fn new(queries: Arc<Vec<String>>, zipf: Option<f64>, seed: u64) -> Self {
        assert!(!queries.is_empty(), "no queries to pick from");
        let cdf = zipf.map(|s| {
            assert!(
                s.is_finite() && s > 0.0,
                "zipf exponent {s} must be positive"
            );
            zipf_cdf(queries.len(), s)
        });
        QueryPicker { queries, cdf, seed }
    }

    /// The query request `i` sends.
    pub fn pick(&self, i: usize) -> &str {
        let index = match &self.cdf {
            None => i % self.queries.len(),
            Some(cdf) => {
                let u = fastrand::Rng::with_seed(mix(self.seed, i as u64)).f64();
                cdf.partition_point(|&c| c <= u).min(cdf.len() - 1)
            }
        };
        &self.queries[index]
    }
}

/// P(rank ≤ r) for ranks 1..=n under Zipf's law with exponent `s`.
fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let mut cdf: Vec<f64> = (1..=n)
        .scan(0.0, |sum, rank| {
            *sum += (rank as f64).powf(-s);
            Some(*sum)
        })
        .collect();
    let total = cdf[n - 1];
    for c in &mut cdf {
        *c /= total;
    }
    cdf[n - 1] = 1.0;
    cdf
}

/// A seed for request `i`'s draw (SplitMix64's finaliser), so that nearby
/// indices give unrelated numbers.
fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed ^ i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(n: usize) -> Arc<Vec<String>> {
        Arc::new((0..n).map(|i| format!("q{i}")).collect())
    }

    #[test]
    fn without_zipf_the_list_is_cycled_in_order() {
        let p = QueryPicker::new(list(3), None, 7);
        let picked: Vec<&str> = (0..5).map(|i| p.pick(i)).collect();
        assert_eq!(picked, ["q0", "q1", "q2", "q0", "q1"]);
    }

    #[test]
    fn zipf_draws_follow_one_over_rank_to_the_s() {
        let n = 100;
        let p = QueryPicker::new(list(n), Some(1.0), 42);
        let draws = 200_000;
        let mut counts = vec![0u32; n];
        for i in 0..draws {
            let q = p.pick(i);
            counts[q[1..].parse::<usize>().unwrap()] += 1;
        }
        // H(100) = 5.187...: rank 1 is drawn 1/H of the time, rank r 1/(r H).
        let h: f64 = (1..=n).map(|r| 1.0 / r as f64).sum();
        for rank in [1, 2, 10, 100] {
            let expected = draws as f64 / (rank as f64 * h);
            let got = counts[rank - 1] as f64;
            assert!(
                (got - expected).abs() < 5.0 * expected.sqrt() + 1.0,
                "rank {rank}: {got} draws, expected {expected:.0}"
            );
        }
    }

    #[test]
    fn draws_are_reproducible_and_depend_on_the_seed() {
        let a = QueryPicker::new(list(1000), Some(0.9), 1);
        let b = QueryPicker::new(list(1000), Some(0.9), 1);
        let c = QueryPicker::new(list(1000), Some(0.9), 2);
        let run = |p: &QueryPicker| (0..100).map(|i| p.pick(i).to_string()).collect::<Vec<_>>();
        assert_eq!(run(&a), run(&b));
        assert_ne!(run(&a), run(&c));
        // Out of order, the same index gives the same query.
        assert_eq!(a.pick(57), run(&b)[57]);
    }

    #[test]
    fn a_steeper_exponent_repeats_the_head_more() {
        let share_of_top = |s: f64| {
            let p = QueryPicker::new(list(300), Some(s), 3);
            (0..10_000).filter(|&i| p.pick(i) == "q0").count()
        };
        assert!(share_of_top(1.2) > share_of_top(0.6));
        let cdf = zipf_cdf(5, 2.0);
        assert_eq!(cdf[4], 1.0);
        assert!(cdf.windows(2).all(|w| w[0] < w[1]));
    }
}
