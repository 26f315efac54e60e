//! Candidates of a pruned union of three or more terms, chosen by block-max
//! sums that may be off by rounding, before their exact scores are known.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use tantivy::{DocId, Score};

use super::pruning::{SUM_ORDER_MARGIN, threshold_below};

/// A score ordered totally, for the heap of the k best.
#[derive(Clone, Copy, PartialEq)]
struct Total(Score);

impl Eq for Total {}
impl PartialOrd for Total {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Total {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Every document handed over whose approximate score is within the
/// margin of the k-th best so far: a superset of the exact top-k.
///
/// If `A` is the k-th best approximate score, k documents have exact
/// scores of at least `A·(1 − ε)`, so the exact k-th is at least that, and
/// every document of the exact top-k has an approximate score of at least
/// `A·(1 − ε)²`, above the threshold `A / ((1 + SUM_ORDER_MARGIN) · slack)`
/// (ε ≤ 1.5e-5 is the rounding of a sum, see [`SUM_ORDER_MARGIN`]).
pub(crate) struct Candidates {
    k: usize,
    slack: f32,
    /// The k best approximate scores so far (the worst on top).
    best: BinaryHeap<Reverse<Total>>,
    /// Candidates in increasing doc order, possibly some below the
    /// threshold by now (dropped in batches).
    docs: Vec<(DocId, Score)>,
    /// Size of `docs` at which those below the threshold are dropped.
    compact_at: usize,
}

impl Candidates {
    /// Candidates for the top `k`, the block maxima's own slack being `slack`.
    pub(crate) fn new(k: usize, slack: f32) -> Self {
        Candidates {
            k,
            slack: slack * (1.0 + SUM_ORDER_MARGIN),
            best: BinaryHeap::with_capacity(k + 1),
            docs: Vec::new(),
            compact_at: 4 * k + 256,
        }
    }

    /// Adds a document handed over with its approximate score; returns the
    /// threshold for tantivy.
    pub(crate) fn push(&mut self, doc: DocId, approximate: Score) -> Score {
        self.docs.push((doc, approximate));
        if self.best.len() < self.k {
            self.best.push(Reverse(Total(approximate)));
        } else if let Some(mut worst) = self.best.peek_mut()
            && approximate > worst.0.0
        {
            *worst = Reverse(Total(approximate));
        }
        let threshold = self.threshold();
        if self.docs.len() >= self.compact_at {
            self.docs.retain(|&(_, score)| score > threshold);
            // Many ties may stay: grow, so that dropping stays amortized.
            self.compact_at = (2 * self.docs.len()).max(4 * self.k + 256);
        }
        threshold
    }

    /// The threshold for tantivy: `-∞` until k documents were handed over.
    pub(crate) fn threshold(&self) -> Score {
        match self.best.peek() {
            Some(Reverse(Total(kth))) if self.best.len() == self.k => {
                threshold_below(*kth, self.slack)
            }
            _ => Score::NEG_INFINITY,
        }
    }

    /// The candidates left, in increasing doc order.
    pub(crate) fn finish(mut self) -> Vec<(DocId, Score)> {
        let threshold = self.threshold();
        self.docs.retain(|&(_, score)| score > threshold);
        self.docs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_whatever_is_within_the_margin_of_the_kth() {
        let mut c = Candidates::new(2, 1.0);
        assert_eq!(c.push(0, 5.0), Score::NEG_INFINITY);
        let t = c.push(1, 3.0);
        assert!(t < 3.0 && t > 3.0 * (1.0 - 2.0 * SUM_ORDER_MARGIN));
        c.push(2, 3.0 * (1.0 - SUM_ORDER_MARGIN / 2.0)); // a near tie: kept
        c.push(3, 1.0); // below: dropped
        c.push(4, 4.0); // the k-th is now 4
        let docs: Vec<DocId> = c.finish().into_iter().map(|(d, _)| d).collect();
        assert_eq!(docs, [0, 4]);
    }

    #[test]
    fn many_ties_all_stay() {
        let mut c = Candidates::new(3, 1.0);
        for doc in 0..5000 {
            c.push(doc, 2.5);
        }
        assert_eq!(c.finish().len(), 5000);
    }
}
