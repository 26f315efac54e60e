//! What a search or a fetch will cost, told before it runs, so that a short
//! one can run on the thread that received its request.
//!
//! Handing a search to the blocking pool wakes a pool thread and then, when
//! it ends, the runtime's worker again: two context switches per search,
//! which on short documents cost about as much as the search itself. A leaf
//! therefore runs a search whose estimate is at most its limit
//! (`--inline-search-cost`) on the async worker that received it, where a
//! longer one would keep the worker's other requests (health checks,
//! cancellations, other searches) waiting; those still go to the pool.
//! BENCHMARKS.md, "Short searches on the receiving thread", has the figures.
//!
//! The estimate counts what a search walks through: the postings of every
//! term the query names in this shard (twice over for a term read with its
//! positions, as a phrase's are), and, when the hits come back with titles
//! and snippets, the tokens of the bodies to highlight — `top_k` bodies of
//! the corpus's mean length, each token counting as four postings (a
//! document read, tokenized and its passages weighed). A query
//! whose work is not in the terms it names — a prefix, a range, a regular
//! expression, a fuzzy term, everything (`*`) — has no estimate and always
//! goes to the pool.
//!
//! A fetch ([`fetch_cost`]) counts the tokens of the bodies it will
//! highlight, each body its own length, two tokens to a unit (measured:
//! a fetch's token costs a third to a half of a posting).
//!
//! The query parsed for the estimate is the one the search then runs, in
//! place or on the pool (a [`Plan`]): a second parse cost a leaf about 3 %
//! of its CPU on short documents (BENCHMARKS.md, "Ids from the documents,
//! and a query parsed once").

use searchtree_proto::{FetchParams, SearchParams};
use tantivy::Term;
use tantivy::query::{Bm25StatisticsProvider, Query};

use crate::searcher::ShardSearcher;

/// The default limit: at most about a millisecond of a search here (a unit
/// took 50–150 ns at the median over the bundled and linux-doc queries).
/// Every search of the bundled corpus's quarter shards is under it; on
/// linux-doc, searches for ids are under it and searches with snippets of
/// its long bodies are not.
pub const DEFAULT_INLINE_SEARCH_COST: u64 = 8_192;

/// How much more a posting read with its positions costs than one read
/// without.
const POSITIONS_FACTOR: u64 = 2;

/// How many postings a token of a body to highlight counts as.
const TOKEN_FACTOR: u64 = 4;

/// How many tokens of a body a fetch highlights for one unit of work: a
/// fetch on linux-doc's shards took 27–50 ns a token at the median
/// (loading the document, splitting and highlighting its body), a third to
/// a half of a posting's 50–150 ns.
const FETCH_TOKENS_PER_UNIT: u64 = 2;

/// Characters of the query syntax whose matches are not the terms a query
/// names: a prefix (`*`), ranges and sets (`[`, `{`), regular expressions
/// (`/`), fuzzy terms and slop (`~`).
const EXPANDING_SYNTAX: [char; 5] = ['*', '[', '{', '/', '~'];

/// A search parsed on receipt, with its estimated work: the leaf decides
/// from the estimate where the search runs, and the search reuses the
/// parsed query instead of parsing it again.
pub struct Plan {
    /// The query, as [`ShardSearcher::parse`] made it.
    pub query: Box<dyn Query>,
    /// The estimated work, in postings and tokens.
    pub cost: u64,
}

/// Parses the search of `searcher` for `params` and estimates its work;
/// `None` if the work cannot be told from the query's terms (or the query
/// does not parse: the search will say why, from the pool).
pub fn plan(searcher: &ShardSearcher, params: &SearchParams) -> Option<Plan> {
    if params.query.contains(EXPANDING_SYNTAX) {
        return None;
    }
    let query = searcher.parse(&params.query).ok()?;
    let index = searcher.shard().reader.searcher();
    let mut postings = 0u64;
    let mut terms = 0usize;
    query.query_terms(&mut |term, positions| {
        terms += 1;
        let factor = if positions { POSITIONS_FACTOR } else { 1 };
        // The documents of this shard holding the term (what its postings
        // hold); a term the index cannot look up counts as every document.
        let docs = index.doc_freq(term).unwrap_or_else(|_| index.num_docs());
        postings = postings.saturating_add(docs.saturating_mul(factor));
    });
    if terms == 0 {
        return None;
    }
    let tokens = if params.ids_only {
        0
    } else {
        present_cost(searcher, params.top_k as u64)
    };
    Some(Plan {
        query,
        cost: postings.saturating_add(tokens),
    })
}

/// The work of a fetch in this shard ([`crate::fetch`]): the tokens of the
/// bodies it will highlight, [`FETCH_TOKENS_PER_UNIT`] to a unit. Each
/// body counts its own length (the body field's norm, which tantivy keeps
/// per document), not the corpus's mean, so one long document in a fetch
/// sends it to the pool. Documents of other shards, or not found, cost
/// nothing. `None` if a lookup fails (the fetch then says why, from the
/// pool).
pub fn fetch_cost(searcher: &ShardSearcher, params: &FetchParams) -> Option<u64> {
    let shard = searcher.shard();
    let index = shard.reader.searcher();
    let mut tokens = 0u64;
    for doc in params.docs.iter().filter(|d| d.shard == shard.meta.shard) {
        let term = Term::from_field_text(shard.fields.id, &doc.doc_id);
        let Some(address) = crate::fetch::find(&index, term).ok()? else {
            continue;
        };
        let norms = index
            .segment_reader(address.segment_ord)
            .get_fieldnorms_reader(shard.fields.body)
            .ok()?;
        tokens = tokens.saturating_add(u64::from(norms.fieldnorm(address.doc_id)));
    }
    Some(tokens / FETCH_TOKENS_PER_UNIT)
}

/// The tokens highlighted for `top_k` hits, weighted: that many bodies of
/// the corpus's mean length (at most the shard's documents).
fn present_cost(searcher: &ShardSearcher, top_k: u64) -> u64 {
    let shard = searcher.shard();
    let stats = &shard.stats;
    let docs = stats.total_num_docs().unwrap_or(0).max(1);
    let tokens = stats.total_num_tokens(shard.fields.body).unwrap_or(0);
    top_k
        .min(shard.meta.num_docs)
        .saturating_mul(tokens / docs)
        .saturating_mul(TOKEN_FACTOR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::Shard;
    use crate::shard::write::{ShardDocument, ShardWriter, write_scoring};

    /// A three-document shard (number 0 of 1) in a fresh directory.
    fn tiny_shard() -> (tempfile::TempDir, ShardSearcher) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard");
        let mut writer = ShardWriter::create(&path, 1, 0).unwrap();
        for (id, title, body) in [
            ("a", "Apple", "an apple a day keeps the banana away"),
            ("b", "Banana", "a banana is yellow; an apple is not"),
            ("c", "Cherry", "cherries are small and red"),
        ] {
            writer
                .add(ShardDocument {
                    id: id.into(),
                    title: title.into(),
                    body: body.into(),
                })
                .unwrap();
        }
        write_scoring(&[writer.finish().unwrap()], "sum").unwrap();
        (dir, ShardSearcher::new(Shard::open(&path).unwrap()))
    }

    /// A leaf over [`tiny_shard`]'s shard in `dir`, running work estimated
    /// at most `inline_cost` where it arrives.
    fn leaf_node(dir: &std::path::Path, inline_cost: u64) -> crate::node::LeafNode<ShardSearcher> {
        use crate::fault::{FaultConfig, Faults};
        use crate::node::{LeafNode, LeafTiming};
        let searcher = ShardSearcher::new(Shard::open(&dir.join("shard")).unwrap());
        let timing = LeafTiming {
            policy: Default::default(),
            reserve: std::time::Duration::from_millis(1),
        };
        LeafNode::new(searcher, 1, timing, Faults::new(FaultConfig::default(), 1))
            .with_inline_cost(inline_cost)
    }

    /// The estimate alone.
    fn estimate(searcher: &ShardSearcher, params: &SearchParams) -> Option<u64> {
        plan(searcher, params).map(|p| p.cost)
    }

    fn params(query: &str, ids_only: bool) -> SearchParams {
        SearchParams::try_from(&searchtree_proto::pb::SearchRequest {
            query: query.into(),
            top_k: 2,
            ids_only,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn terms_cost_their_postings_and_phrases_twice() {
        let (_dir, searcher) = tiny_shard();
        let cost = |q| estimate(&searcher, &params(q, true));
        let one = cost("apple").expect("a term has an estimate");
        assert!(one > 0);
        // Title and body: each field's postings count.
        assert!(cost("apple banana").unwrap() > one);
        assert_eq!(cost("\"apple banana\"").unwrap() % POSITIONS_FACTOR, 0);
        assert_eq!(cost("zzzunseen"), Some(0));
    }

    #[test]
    fn queries_that_expand_have_no_estimate() {
        let (_dir, searcher) = tiny_shard();
        for q in [
            "app*",
            "\"apple ba\"*",
            "body:[a TO c]",
            "\"apple banana\"~2",
            "*",
        ] {
            assert_eq!(estimate(&searcher, &params(q, true)), None, "{q}");
        }
    }

    #[tokio::test]
    async fn a_search_answers_the_same_on_the_receiving_thread_as_on_the_pool() {
        use crate::node::LeafCounter;
        let (dir, _) = tiny_shard();
        let node = |inline_cost| leaf_node(dir.path(), inline_cost);
        // In place; planned but too costly for in place; never planned.
        let (inline, planned, pooled) = (node(DEFAULT_INLINE_SEARCH_COST), node(1), node(0));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        for query in [
            "apple",
            "apple banana",
            "\"an apple\"",
            "apple -banana",
            "app*",
        ] {
            let a = inline.search(params(query, false), deadline).await.unwrap();
            let b = pooled.search(params(query, false), deadline).await.unwrap();
            assert_eq!((&a.hits, a.total_hits), (&b.hits, b.total_hits), "{query}");
            let c = planned
                .search(params(query, false), deadline)
                .await
                .unwrap();
            assert_eq!((&c.hits, c.total_hits), (&b.hits, b.total_hits), "{query}");
        }
        // All but the prefix ran where they were received.
        assert_eq!(inline.counters().get(LeafCounter::SearchesInline), 4);
        assert_eq!(pooled.counters().get(LeafCounter::SearchesInline), 0);
        assert_eq!(planned.counters().get(LeafCounter::SearchesInline), 0);
    }

    fn fetch(ids: &[(&str, u32)]) -> FetchParams {
        let docs = ids
            .iter()
            .map(|(id, shard)| searchtree_proto::pb::DocRef {
                doc_id: id.to_string(),
                shard: *shard,
            })
            .collect();
        let request = searchtree_proto::pb::FetchRequest {
            query: "apple".into(),
            docs,
            ..Default::default()
        };
        FetchParams::validate(&request, &searchtree_proto::QueryLimits::default()).unwrap()
    }

    #[test]
    fn a_fetch_costs_its_own_bodies_in_this_shard() {
        let (_dir, searcher) = tiny_shard();
        let cost = |ids: &[(&str, u32)]| fetch_cost(&searcher, &fetch(ids)).unwrap();
        // "a" has 8 body tokens, "c" 5: each counts its own length.
        let units = |tokens| tokens / FETCH_TOKENS_PER_UNIT;
        assert_eq!(cost(&[("a", 0)]), units(8));
        assert_eq!(cost(&[("c", 0)]), units(5));
        assert_eq!(cost(&[("a", 0), ("c", 0)]), units(13));
        // Another shard's document, or one not held, costs nothing.
        assert_eq!(cost(&[("a", 1), ("zzz", 0)]), 0);
    }

    #[tokio::test]
    async fn a_fetch_answers_the_same_on_the_receiving_thread_as_on_the_pool() {
        use crate::node::LeafCounter;
        let (dir, _) = tiny_shard();
        let node = |inline_cost| leaf_node(dir.path(), inline_cost);
        // In place; estimated but too costly for in place; never estimated.
        let (inline, estimated, pooled) = (node(DEFAULT_INLINE_SEARCH_COST), node(1), node(0));
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let ids = [("a", 0), ("b", 0), ("zzz", 0), ("c", 1)];
        let a = inline.fetch(fetch(&ids), deadline).await.unwrap();
        let b = pooled.fetch(fetch(&ids), deadline).await.unwrap();
        let c = estimated.fetch(fetch(&ids), deadline).await.unwrap();
        assert_eq!(a.hits.len(), 2);
        assert!(a.hits[0].snippet.contains("<b>apple</b>"), "{:?}", a.hits);
        for other in [&b, &c] {
            assert_eq!(a.hits, other.hits);
            assert_eq!(a.not_found, other.not_found);
            assert_eq!(a.unfetched, other.unfetched);
        }
        assert_eq!(inline.counters().get(LeafCounter::FetchesInline), 1);
        assert_eq!(pooled.counters().get(LeafCounter::FetchesInline), 0);
        assert_eq!(estimated.counters().get(LeafCounter::FetchesInline), 0);
    }

    #[test]
    fn hits_with_snippets_add_the_bodies_to_highlight() {
        let (_dir, searcher) = tiny_shard();
        let bare = estimate(&searcher, &params("apple", true)).unwrap();
        let shown = estimate(&searcher, &params("apple", false)).unwrap();
        assert!(shown > bare, "{shown} > {bare}");
    }
}
