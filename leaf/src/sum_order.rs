//! Conjunctions that add their clauses' scores in the query's order, so
//! that a document scores the same to the last bit whichever shard — or
//! one index over the whole corpus — holds it.
//!
//! tantivy scores a conjunction (`+a +b +c`) as `(s₀ + s₁) + (s₂ + … + sₙ)`
//! with its clauses sorted by cost, and the cost depends on the segment's
//! layout: a term's posting-list length, or for a union (a word over the
//! default fields) the lengths of those of its terms with documents left
//! beyond the first 4,096-document window. A shard sorts the same clauses
//! differently from another shard, or from one index over the corpus, and
//! float addition not being associative, rounds the same sum to another
//! last bit. Harmless but for ties: the tree breaks equal scores by id, and
//! a tie in one layout could become a one-bit difference in another,
//! reordering hits and even changing which reach the top-k.
//!
//! [`in_query_order`] rewrites each conjunction of three or more required
//! clauses into nested pairs, from the left in the query's order:
//! `((c₀ c₁) c₂) c₃`. A pair adds alike in either order (a + b = b + a
//! exactly), so nesting fixes every rounding: the sum is
//! `((s₀ + s₁) + s₂) + s₃` in every layout. (Unions already add in the
//! query's order; one or two required clauses need nothing.) The tests'
//! one-index oracle parses queries the same way.

use tantivy::query::{BooleanQuery, Occur, Query};

/// The rewritten query, or `None` when nothing in `query` needs it.
pub fn in_query_order(query: &dyn Query) -> Option<Box<dyn Query>> {
    let boolean = query.downcast_ref::<BooleanQuery>()?;
    let mut changed = false;
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::with_capacity(boolean.clauses().len());
    for (occur, clause) in boolean.clauses() {
        let rewritten = in_query_order(clause.as_ref());
        changed |= rewritten.is_some();
        clauses.push((*occur, rewritten.unwrap_or_else(|| clause.box_clone())));
    }
    let required = clauses.iter().filter(|(o, _)| *o == Occur::Must).count();
    // A minimum of SHOULD matches can turn SHOULD clauses into required
    // ones inside tantivy; such queries are left as they are.
    let minimum = boolean.get_minimum_number_should_match();
    if required >= 3 && minimum == 0 {
        let (must, others): (Vec<_>, Vec<_>) =
            clauses.into_iter().partition(|(o, _)| *o == Occur::Must);
        let nested = must
            .into_iter()
            .map(|(_, clause)| clause)
            .reduce(|sum, next| Box::new(BooleanQuery::intersection(vec![sum, next])))
            .expect("three or more required clauses");
        clauses = std::iter::once((Occur::Must, nested))
            .chain(others)
            .collect();
        changed = true;
    }
    changed.then(|| {
        Box::new(BooleanQuery::with_minimum_required_clauses(
            clauses, minimum,
        )) as Box<dyn Query>
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tantivy::query::{EnableScoring, QueryParser};
    use tantivy::schema::{Schema, TEXT};
    use tantivy::{DocId, Index, IndexWriter, Score, Searcher, doc};

    use super::*;

    /// Every match of `query` with its score, from the scorer itself.
    fn scores(searcher: &Searcher, query: &dyn Query) -> BTreeMap<DocId, Score> {
        let weight = query
            .weight(EnableScoring::enabled_from_searcher(searcher))
            .unwrap();
        let mut out = BTreeMap::new();
        weight
            .for_each(searcher.segment_reader(0), &mut |doc, score| {
                out.insert(doc, score);
            })
            .unwrap();
        out
    }

    /// A rewritten conjunction matches what the query matches, and scores
    /// each match as its required clauses' scores added from the left in
    /// the query's order — whatever their posting lists' lengths, which is
    /// what tantivy's own order follows.
    #[test]
    fn conjunctions_add_from_the_left_in_the_query_order() {
        let mut schema = Schema::builder();
        let body = schema.add_text_field("body", TEXT);
        let title = schema.add_text_field("title", TEXT);
        let index = Index::create_in_ram(schema.build());
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 20 << 20).unwrap();
        let words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"];
        for i in 0..5_000usize {
            // Each word 0-3 times, and fillers: lengths and frequencies
            // that differ, so scores are not round numbers.
            let mut text: Vec<&str> = Vec::new();
            for (k, word) in words.iter().enumerate() {
                let reps = (i * (2 * k + 3) + k * i / 7) % (4 + k % 2);
                text.extend(std::iter::repeat_n(*word, reps.min(3)));
            }
            text.extend(std::iter::repeat_n("filler", i % 11));
            writer
                .add_document(doc!(body => text.join(" "), title => words[i % 6]))
                .unwrap();
        }
        writer.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        let parser = QueryParser::for_index(&index, vec![title, body]);
        let mut differed = 0;
        for (q, required) in [
            ("+alpha +beta +gamma", vec!["alpha", "beta", "gamma"]),
            (
                "+gamma +alpha +delta +beta",
                vec!["gamma", "alpha", "delta", "beta"],
            ),
            ("+zeta +beta +alpha -epsilon", vec!["zeta", "beta", "alpha"]),
            ("+alpha +beta +gamma zeta", vec!["alpha", "beta", "gamma"]),
        ] {
            let query = parser.parse_query(q).unwrap();
            let rewritten = in_query_order(query.as_ref()).expect("rewritten");
            let (theirs, ours) = (scores(&searcher, &*query), scores(&searcher, &*rewritten));
            assert!(ours.len() > 50, "{q}: {} matches", ours.len());
            assert_eq!(
                ours.keys().collect::<Vec<_>>(),
                theirs.keys().collect::<Vec<_>>(),
                "{q}: matches differ"
            );
            let clause: Vec<BTreeMap<DocId, Score>> = required
                .iter()
                .map(|w| scores(&searcher, &*parser.parse_query(w).unwrap()))
                .collect();
            let optional = q
                .split(' ')
                .find(|w| !w.starts_with(['+', '-']))
                .map(|w| scores(&searcher, &*parser.parse_query(w).unwrap()));
            for (doc, score) in &ours {
                let mut sum = clause[0][doc];
                for c in &clause[1..] {
                    sum += c[doc];
                }
                if let Some(extra) = optional.as_ref().and_then(|o| o.get(doc)) {
                    sum += extra;
                }
                assert_eq!(score.to_bits(), sum.to_bits(), "{q}: doc {doc}");
                differed += usize::from(score.to_bits() != theirs[doc].to_bits());
            }
        }
        // tantivy's own order (by cost) rounds some sums differently: the
        // rewrite is what makes them the query's.
        assert!(differed > 0, "no sum differed from tantivy's order");
    }

    /// One or two required clauses add alike in any order: left as they are.
    #[test]
    fn leaves_alone_what_needs_no_rewrite() {
        let mut schema = Schema::builder();
        let body = schema.add_text_field("body", TEXT);
        let index = Index::create_in_ram(schema.build());
        let parser = QueryParser::for_index(&index, vec![body]);
        for q in ["a", "+a +b", "a b c d", "+a +b -c -d", "\"a b c\""] {
            let query = parser.parse_query(q).unwrap();
            assert!(in_query_order(query.as_ref()).is_none(), "{q}");
        }
        let nested = parser.parse_query("(+a +b +c) OR d").unwrap();
        assert!(in_query_order(nested.as_ref()).is_some());
    }
}
