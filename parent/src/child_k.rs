//! How many hits to ask each child for, and when to ask a child again.
//!
//! Documents are spread over shards by a hash of their id, so the global
//! top-k falls on a child covering `m` of a node's `n` shards like
//! `Binomial(k, m/n)`: with four children and k = 10, a child rarely holds
//! more than six of the ten. Asking every child for all k hits ships and
//! merges (and, one level down, searches for) hits that cannot make the
//! answer. As Vespa's `top-k-probability` does, a node asks each child for
//! `k'` hits, the smallest number that holds the child's share of the
//! global top-k with a configured probability — one more than the
//! binomial quantile, because a child that returns exactly as many of the
//! top-k as it was asked for cannot tell that it holds no more, and is
//! asked again (so the chance of a second ask is that of holding `k'` or
//! more: at most one minus the probability).
//!
//! The answer stays exact: a child that returned all `k'` hits it was asked
//! for *might* hold more of the global top-k — if its `k'`-th hit ranks
//! before the merged k-th hit (or fewer than k hits were found overall), its
//! next hit could too. Such a child is asked again, for all k, and its second
//! answer replaces its first ([`needs_more`]). A child whose `k'`-th hit
//! ranks after the merged k-th holds nothing more that could make the
//! answer, whatever its next hits are, because they rank after its `k'`-th.

use std::cmp::Ordering;

use searchtree_proto::hit_order;
use searchtree_proto::pb::{Hit, SearchResponse};

/// Default [`child_k`] probability: with 4 shards and k = 10 a leaf is asked
/// for 7 hits rather than 10, and at most one child in a hundred is asked
/// again. Higher means fewer second asks and fewer savings.
pub const DEFAULT_CHILD_K_PROBABILITY: f64 = 0.99;

/// The number of hits to ask of a child holding `child_shards` of the
/// node's `node_shards`, when the node must return `k`: the smallest `k'`
/// with `P(Binomial(k, child_shards / node_shards) < k') ≥ probability`
/// (the chance that the child holds `k'` or more of the top-k, and so is
/// asked again, is at most `1 − probability`), at least 1 and at most `k`.
/// A probability of 1 or more (or a child holding every shard) asks for all
/// `k`.
pub fn child_k(k: usize, child_shards: usize, node_shards: usize, probability: f64) -> usize {
    if k <= 1 || probability >= 1.0 || node_shards == 0 || child_shards >= node_shards {
        return k;
    }
    let share = child_shards as f64 / node_shards as f64;
    // The probability mass function by its recurrence, in logs so that
    // large k does not underflow the first term.
    let ln_odds = (share / (1.0 - share)).ln();
    let mut ln_pmf = k as f64 * (1.0 - share).ln();
    let mut cdf = 0.0;
    for x in 0..k {
        cdf += ln_pmf.exp();
        if cdf >= probability {
            // P(X <= x) >= probability: asked for x + 1, the child is asked
            // again only when it holds x + 1 or more.
            return (x + 1).min(k);
        }
        ln_pmf += ((k - x) as f64 / (x + 1) as f64).ln() + ln_odds;
    }
    k
}

/// Whether a child asked for `asked` hits, which answered `answer`, must be
/// asked again for more because its hits beyond `asked` might belong in the
/// node's top-k. `kth` is the k-th hit of the merge of every child's first
/// answer, or `None` if fewer than k hits were found. Only a complete
/// answer that filled its quota can hide more.
pub fn needs_more(asked: usize, answer: &SearchResponse, kth: Option<&Hit>) -> bool {
    if answer.partial || answer.hits.len() < asked {
        return false;
    }
    let Some(last) = answer.hits.last() else {
        return false;
    };
    match kth {
        None => true,
        Some(kth) => hit_order(last, kth) == Ordering::Less,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str, score: f32) -> Hit {
        Hit {
            doc_id: id.into(),
            score,
            ..Default::default()
        }
    }

    fn answer(hits: &[(&str, f32)]) -> SearchResponse {
        SearchResponse {
            hits: hits.iter().map(|(id, s)| hit(id, *s)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn asks_for_one_more_than_the_binomial_quantile() {
        // Binomial(10, 1/4): P(X <= 5) = 0.980, P(X <= 6) = 0.9965.
        assert_eq!(child_k(10, 1, 4, 0.99), 7);
        assert_eq!(child_k(10, 1, 4, 0.98), 6);
        assert_eq!(child_k(10, 1, 4, 0.92), 5);
        // Binomial(10, 1/2): P(X <= 8) = 0.989, P(X <= 9) = 0.999: all k.
        assert_eq!(child_k(10, 2, 4, 0.99), 10);
        // A large fan-out gains most: Binomial(10, 1/16).
        assert_eq!(child_k(10, 1, 16, 0.99), 4);
        // Large k does not underflow, and stays near the mean + a few sd.
        let big = child_k(1000, 1, 4, 0.99);
        assert!((260..=290).contains(&big), "{big}");
    }

    /// P(Binomial(k, share) >= at), summed directly.
    fn tail(k: usize, share: f64, at: usize) -> f64 {
        let choose =
            |n: usize, r: usize| (0..r).fold(1.0, |c, i| c * (n - i) as f64 / (i + 1) as f64);
        (at..=k)
            .map(|x| choose(k, x) * share.powi(x as i32) * (1.0 - share).powi((k - x) as i32))
            .sum()
    }

    #[test]
    fn a_child_is_asked_again_with_at_most_one_minus_the_probability() {
        // Asked again when it holds k' or more of the top-k.
        for (k, child, node) in [
            (10, 1, 4),
            (10, 1, 22),
            (10, 2, 4),
            (50, 1, 4),
            (50, 2, 4),
            (20, 3, 7),
        ] {
            for p in [0.5, 0.9, 0.99, 0.999] {
                let asked = child_k(k, child, node, p);
                let again = tail(k, child as f64 / node as f64, asked);
                assert!(
                    asked == k || again <= 1.0 - p + 1e-9,
                    "k {k}, {child}/{node}, p {p}: k' {asked}, asked again {again:.4}"
                );
                // And k' is the least that does: one fewer asks again too often.
                if asked > 1 {
                    let fewer = tail(k, child as f64 / node as f64, asked - 1);
                    assert!(
                        fewer > 1.0 - p - 1e-9,
                        "k {k}, {child}/{node}, p {p}: {fewer}"
                    );
                }
            }
        }
    }

    #[test]
    fn degenerate_cases_ask_for_everything_or_at_least_one() {
        assert_eq!(child_k(10, 4, 4, 0.99), 10);
        assert_eq!(child_k(10, 1, 4, 1.0), 10);
        assert_eq!(child_k(1, 1, 4, 0.5), 1);
        assert_eq!(child_k(10, 1, 256, 0.01), 1);
        assert_eq!(child_k(10, 1, 0, 0.5), 10);
        // Underflow of (1 - share)^k falls back to asking for everything.
        assert_eq!(child_k(1000, 255, 256, 0.99), 1000);
    }

    #[test]
    fn a_child_is_asked_again_only_if_it_might_hold_more_of_the_top_k() {
        let kth = hit("k", 2.0);
        // Filled its quota and its last hit ranks before the k-th: ask again.
        assert!(needs_more(
            2,
            &answer(&[("a", 5.0), ("b", 3.0)]),
            Some(&kth)
        ));
        // Same score as the k-th but a smaller id ranks before it.
        assert!(needs_more(1, &answer(&[("a", 2.0)]), Some(&kth)));
        // Its last hit is the k-th itself, or ranks after: nothing more.
        assert!(!needs_more(1, &answer(&[("k", 2.0)]), Some(&kth)));
        assert!(!needs_more(
            2,
            &answer(&[("a", 5.0), ("z", 2.0)]),
            Some(&kth)
        ));
        // Fewer hits than asked: it has no more.
        assert!(!needs_more(
            3,
            &answer(&[("a", 5.0), ("b", 3.0)]),
            Some(&kth)
        ));
        // Fewer than k hits overall: any child that filled its quota.
        assert!(needs_more(1, &answer(&[("a", 0.1)]), None));
        assert!(!needs_more(1, &answer(&[]), None));
        // A partial answer is best-so-far; asking again cannot make it exact.
        let partial = SearchResponse {
            partial: true,
            ..answer(&[("a", 5.0)])
        };
        assert!(!needs_more(1, &partial, Some(&kth)));
    }
}
