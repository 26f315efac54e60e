//! When and how far the leaf's collector may let tantivy skip documents
//! (block-max WAND) without changing its exact (score desc, id asc) answer.
//!
//! tantivy skips a block of postings when the block's best possible score
//! cannot beat the threshold it is given. Two things could make a skip wrong
//! for this tree, and this module guards against both:
//!
//! - **Block maxima under corpus-wide statistics.** At indexing time tantivy
//!   stores, per block of 128 postings, the (field length, term frequency)
//!   pair that scores best under the *segment's own* average field length.
//!   The leaf scores with the *corpus's* average length, and under another
//!   average another pair of the block may score best: the stored pair then
//!   underestimates the block's maximum. It does so by at most the ratio of
//!   the two averages (see [`Pruning::slack`]), so the threshold handed to
//!   tantivy is divided by that ratio.
//! - **Summation order.** tantivy's block-max union adds the terms' scores
//!   in the order its cursors happen to be in, not in the scorer's own order
//!   (the query's); with three or more terms in one document the float sums
//!   may differ in the last bit, and exact ties (which the tree breaks by
//!   id) would break by that bit instead. With one or two terms the sums are
//!   identical (a + b = b + a exactly). For a union of three or more terms
//!   the block-max sums only choose candidates, with a relative margin
//!   wider than any rounding of the sum ([`SUM_ORDER_MARGIN`]), and the
//!   candidates are then scored again in the query's order ([`Rescorer`]).
//!
//! Other queries (exclusions, phrases, MUST mixed with SHOULD, nested or
//! boosted clauses, three or more MUST terms) are scored exhaustively: either
//! tantivy has no block-max path for them, or its sums could not be redone
//! here in the scorer's order ([`prunable`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use tantivy::query::{
    Bm25StatisticsProvider, BooleanQuery, EnableScoring, Occur, Query, Scorer, TermQuery, Weight,
};
use tantivy::schema::Field;
use tantivy::{DocId, DocSet, Score, Searcher, SegmentReader};

/// Relative head-room on top of the averages' ratio, for the rounding of
/// the averages and of the sums compared with the threshold.
const ROUNDING_SLACK: f32 = 1e-4;

/// Relative margin below the k-th block-max sum within which a document is
/// still a candidate: summing up to the 128 terms a query may hold
/// (`DEFAULT_MAX_TERMS`) in two different orders moves an f32 sum of
/// positive terms by less than 2 · 127 · 2⁻²⁴ ≈ 1.5e-5 of itself.
pub const SUM_ORDER_MARGIN: f32 = 1e-4;

/// How a query is pruned, if at all.
enum Shape<'q> {
    /// Block-max sums equal the scorer's: one term, or two joined alike.
    Exact,
    /// A union (all SHOULD) of three or more terms: candidates from the
    /// block-max sums, scores redone from these clauses, in order.
    TermUnion(Vec<&'q dyn Query>),
    /// Not pruned.
    Exhaustive,
}

fn shape(query: &dyn Query) -> Shape<'_> {
    if query.downcast_ref::<TermQuery>().is_some() {
        return Shape::Exact;
    }
    let Some(boolean) = query.downcast_ref::<BooleanQuery>() else {
        return Shape::Exhaustive;
    };
    let clauses = boolean.clauses();
    let Some((first, _)) = clauses.first() else {
        return Shape::Exhaustive;
    };
    let alike_terms = *first != Occur::MustNot
        && clauses
            .iter()
            .all(|(occur, q)| occur == first && q.downcast_ref::<TermQuery>().is_some());
    if !alike_terms {
        Shape::Exhaustive
    } else if clauses.len() <= 2 {
        Shape::Exact
    } else if *first == Occur::Should && boolean.get_minimum_number_should_match() <= 1 {
        Shape::TermUnion(clauses.iter().map(|(_, q)| q.as_ref()).collect())
    } else {
        Shape::Exhaustive
    }
}

/// Whether the collector may prune `query` and still answer exactly: a
/// single term, terms joined alike (one or two), or a union of terms.
pub fn prunable(query: &dyn Query) -> bool {
    !matches!(shape(query), Shape::Exhaustive)
}

/// Permission to prune one search, with what it takes to prune it safely.
#[derive(Clone)]
pub struct Pruning {
    /// The average length of each field the query scores, as the scores
    /// see it (from the statistics provider).
    scored_averages: Vec<(Field, f32)>,
    /// For a union of three or more terms: the clauses' weights, in the
    /// query's order, to score candidates again as the scorer sums.
    clauses: Option<Arc<Vec<Box<dyn Weight>>>>,
    /// A fixed slack instead of the computed one (tests only).
    fixed_slack: Option<f32>,
}

impl Pruning {
    /// Pruning for `query` scored with `statistics` over `searcher`, or
    /// `None` when the query cannot be pruned exactly (see [`prunable`]).
    pub fn for_query(
        query: &dyn Query,
        searcher: &Searcher,
        statistics: &dyn Bm25StatisticsProvider,
    ) -> tantivy::Result<Option<Pruning>> {
        let clauses = match shape(query) {
            Shape::Exhaustive => return Ok(None),
            Shape::Exact => None,
            Shape::TermUnion(clauses) => {
                // As BooleanQuery::weight builds them: same statistics, so
                // the same BM25 weights.
                let scoring = EnableScoring::enabled_from_statistics_provider(statistics, searcher);
                let weights = clauses
                    .into_iter()
                    .map(|clause| clause.weight(scoring))
                    .collect::<tantivy::Result<Vec<_>>>()?;
                Some(Arc::new(weights))
            }
        };
        let mut fields = BTreeSet::new();
        query.query_terms(&mut |term, _| {
            fields.insert(term.field());
        });
        let docs = statistics.total_num_docs()?;
        let scored_averages = fields
            .into_iter()
            .map(|field| {
                // As tantivy's Bm25Weight computes it.
                let average = statistics.total_num_tokens(field)? as Score / docs as Score;
                Ok((field, average))
            })
            .collect::<tantivy::Result<_>>()?;
        Ok(Some(Pruning {
            scored_averages,
            clauses,
            fixed_slack: None,
        }))
    }

    /// For a pruned union of three or more terms, what scores its
    /// candidates again in `segment`; `None` when the block-max sums are
    /// already the scorer's own.
    pub(crate) fn rescorer(&self, segment: &SegmentReader) -> tantivy::Result<Option<Rescorer>> {
        let Some(clauses) = &self.clauses else {
            return Ok(None);
        };
        let scorers = clauses
            .iter()
            .map(|weight| weight.scorer(segment, 1.0))
            .collect::<tantivy::Result<_>>()?;
        Ok(Some(Rescorer { scorers }))
    }

    /// The same pruning, trusting the stored block maxima as they are (tests
    /// only: shows what the slack protects against).
    #[cfg(test)]
    pub(crate) fn with_fixed_slack(mut self, slack: f32) -> Self {
        self.fixed_slack = Some(slack);
        self
    }

    /// By how much a block maximum tantivy computes in `segment` may
    /// underestimate the block's true best score; infinite when unknown.
    ///
    /// A term's score is `w · tf / (tf + k1·(1 − b + b·len/avg))`. With `r`
    /// the ratio of the two averages (segment's over corpus's, or its
    /// inverse, whichever is ≥ 1), every document's length term changes by
    /// a factor within `[1, r]` in one direction, so its score changes by a
    /// factor within `[1/r, r]`. The stored pair was best under the
    /// segment's average, so the block's true best under the corpus's
    /// average is at most `r` times the stored pair's score under it.
    pub fn slack(&self, segment: &SegmentReader) -> tantivy::Result<f32> {
        if let Some(fixed) = self.fixed_slack {
            return Ok(fixed);
        }
        let mut ratio: f32 = 1.0;
        for &(field, scored) in &self.scored_averages {
            // As tantivy's postings serializer computed it for this segment.
            let tokens = segment.inverted_index(field)?.total_num_tokens();
            let stored = tokens as Score / segment.max_doc() as Score;
            if !(stored > 0.0 && scored > 0.0 && stored.is_finite() && scored.is_finite()) {
                // No usable average: an empty field matches nothing, but do
                // not guess. Infinite slack turns pruning off.
                return Ok(Score::INFINITY);
            }
            ratio = ratio.max(stored / scored).max(scored / stored);
        }
        Ok(ratio * (1.0 + ROUNDING_SLACK))
    }
}

/// The threshold to hand tantivy when the k-th best score so far is `kth`:
/// strictly below `kth`, since a document scoring exactly `kth` may still
/// enter the top-k on its id, and lowered by `slack` so that no block whose
/// true maximum reaches `kth` is skipped. `-∞` (skip nothing) when the
/// bound cannot be trusted: non-positive scores (negative boosts) or an
/// infinite slack.
pub fn threshold_below(kth: Score, slack: f32) -> Score {
    if !(kth > 0.0 && kth.is_finite() && slack >= 1.0 && slack.is_finite()) {
        return Score::NEG_INFINITY;
    }
    (kth / slack).next_down()
}

/// Scores documents of a union of terms as tantivy's own union scorer
/// does: each matching clause's score added, in the query's order, to 0.
pub(crate) struct Rescorer {
    scorers: Vec<Box<dyn Scorer>>,
}

impl Rescorer {
    /// The score of `doc`, or `None` if no clause matches it. Documents
    /// must come in increasing order.
    pub(crate) fn score(&mut self, doc: DocId) -> Option<Score> {
        let mut sum: Score = 0.0;
        let mut matched = false;
        for scorer in &mut self.scorers {
            if scorer.doc() < doc {
                scorer.seek(doc);
            }
            if scorer.doc() == doc {
                sum += scorer.score();
                matched = true;
            }
        }
        matched.then_some(sum)
    }
}

#[cfg(test)]
mod tests {
    use tantivy::query::QueryParser;

    use super::*;
    use crate::schema;

    #[test]
    fn only_one_or_two_like_terms_are_prunable() {
        let (schema, f) = schema::build();
        let index = tantivy::Index::create_in_ram(schema);
        let parser = QueryParser::for_index(&index, vec![f.title, f.body]);
        let cases = [
            ("word", true),       // title:word OR body:word
            ("title:word", true), // one term
            ("title:a title:b", true),
            ("+title:a +title:b", true),
            ("two words", true), // a union of four terms
            ("title:a title:b title:c", true),
            ("+title:a +title:b +title:c", false), // three MUST terms
            ("+title:a title:b", false),           // MUST and SHOULD mixed
            ("word -other", false),
            ("\"a phrase\"", false),
            ("title:a^2", false), // a boost wraps the term
        ];
        for (query, expected) in cases {
            let parsed = parser.parse_query(query).unwrap();
            assert_eq!(prunable(&*parsed), expected, "{query}: {parsed:?}");
        }
    }

    #[test]
    fn the_threshold_lets_the_kth_score_and_ties_through() {
        for kth in [1e-3f32, 0.5, 1.0, 7.25, 1e6] {
            let t = threshold_below(kth, 1.0);
            assert!(t < kth, "{kth}");
            assert!(threshold_below(kth, 1.5) < kth / 1.5 + f32::EPSILON);
        }
        assert_eq!(threshold_below(0.0, 1.0), f32::NEG_INFINITY);
        assert_eq!(threshold_below(-2.0, 1.0), f32::NEG_INFINITY);
        assert_eq!(threshold_below(f32::NAN, 1.0), f32::NEG_INFINITY);
        assert_eq!(threshold_below(3.0, f32::INFINITY), f32::NEG_INFINITY);
    }
}
