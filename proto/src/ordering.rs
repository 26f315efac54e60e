//! The total order of hits: score descending, then `doc_id` ascending.
//!
//! Every node sorts with this one function, so an answer is deterministic and
//! a tree of any shape returns the same top-k as one index over the corpus.

use std::cmp::Ordering;

use crate::pb::Hit;

/// Orders two hits: higher score first; equal scores by `doc_id`, bytewise
/// ascending. Document ids are unique in a corpus, so the order is total.
/// Inlined across crates: every merge and top-k decision calls it per pair.
#[inline]
pub fn hit_order(a: &Hit, b: &Hit) -> Ordering {
    score_then_id(a.score, &a.doc_id, b.score, &b.doc_id)
}

/// [`hit_order`] on bare parts, for callers that have not built a [`Hit`] yet.
#[inline]
pub fn score_then_id(a_score: f32, a_id: &str, b_score: f32, b_id: &str) -> Ordering {
    b_score
        .total_cmp(&a_score)
        .then_with(|| a_id.as_bytes().cmp(b_id.as_bytes()))
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

    #[test]
    fn higher_score_first_then_lower_id() {
        let mut hits = [hit("b", 1.0), hit("c", 2.0), hit("a", 1.0)];
        hits.sort_by(hit_order);
        let ids: Vec<_> = hits.iter().map(|h| h.doc_id.as_str()).collect();
        assert_eq!(ids, ["c", "a", "b"]);
    }
}
