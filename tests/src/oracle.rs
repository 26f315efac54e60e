//! The correctness oracle: one plain tantivy index over the whole corpus,
//! searched with its own statistics, every match scored and counted, ties
//! broken by id.
//!
//! It shares nothing with the leaves' search path but the schema and the
//! way a query is parsed — conjunctions of three or more clauses nested to
//! add in the query's order ([`searchtree_leaf::sum_order`]), since
//! tantivy's own order depends on the index's layout and no two layouts
//! would then agree to the last bit — so an agreement between the tree and
//! the oracle means the tree is exact. It never prunes: it scores every
//! match through `Weight::for_each`, the scorer's own sums (tantivy's
//! `TopDocs` would go through block-max WAND, whose sums of three or more
//! terms may differ in the last bit).

use std::path::Path;

use tantivy::collector::{Collector, DocSetCollector, SegmentCollector};
use tantivy::query::{QueryParser, TermQuery};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::{
    DocAddress, DocId, Index, IndexReader, Score, SegmentOrdinal, SegmentReader, TantivyDocument,
    Term,
};

use searchtree_leaf::snippet::SNIPPET_CHARS;
use searchtree_leaf::{schema, sum_order};
use searchtree_proto::pb::Hit;

/// One expected hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    /// Document id.
    pub id: String,
    /// Score.
    pub score: f32,
}

/// The whole-corpus index.
pub struct Oracle {
    index: Index,
    reader: IndexReader,
    parser: QueryParser,
}

impl Oracle {
    /// Opens the one-shard build in `dir`.
    pub fn open(dir: &Path) -> Oracle {
        let index = Index::open_in_dir(dir).expect("oracle index");
        let fields = schema::fields_of(&index.schema()).expect("schema");
        let parser = QueryParser::for_index(&index, vec![fields.title, fields.body]);
        let reader = index.reader().expect("reader");
        Oracle {
            index,
            reader,
            parser,
        }
    }

    /// The best `k` hits (score desc, id asc) and the number of matches.
    pub fn top_k(&self, query: &str, k: usize) -> (Vec<Expected>, u64) {
        let searcher = self.reader.searcher();
        let query = self.parser.parse_query(query).expect("oracle parses");
        let query = sum_order::in_query_order(&*query).unwrap_or(query);
        let mut all = searcher.search(&*query, &AllScored).expect("oracle search");
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        let total = all.len() as u64;
        // Everything scoring at least the k-th score may be in the top k once
        // ties are broken by id.
        let Some(&(cutoff, _)) = all.get(k.saturating_sub(1)).or(all.last()) else {
            return (Vec::new(), 0);
        };
        let id_field = self.index.schema().get_field(schema::ID).expect("id");
        let mut hits: Vec<Expected> = all
            .iter()
            .take_while(|(score, _)| *score >= cutoff)
            .map(|(score, address)| {
                let doc: TantivyDocument = searcher.doc(*address).expect("doc");
                Expected {
                    id: doc
                        .get_first(id_field)
                        .and_then(|v| v.as_str())
                        .expect("id")
                        .to_string(),
                    score: *score,
                }
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        hits.truncate(k);
        (hits, total)
    }

    /// The title and snippet (HTML, at most [`SNIPPET_CHARS`] characters)
    /// one index gives each of `ids` for `query`: tantivy's own snippet
    /// generator over the whole corpus.
    pub fn presented(&self, query: &str, ids: &[&str]) -> Vec<(String, String)> {
        let searcher = self.reader.searcher();
        let schema = self.index.schema();
        let fields = schema::fields_of(&schema).expect("schema");
        let query = self.parser.parse_query(query).expect("oracle parses");
        let mut snippets =
            SnippetGenerator::create(&searcher, &*query, fields.body).expect("snippets");
        snippets.set_max_num_chars(SNIPPET_CHARS);
        ids.iter()
            .map(|id| {
                let term = Term::from_field_text(fields.id, id);
                let found = searcher
                    .search(
                        &TermQuery::new(term, IndexRecordOption::Basic),
                        &DocSetCollector,
                    )
                    .expect("id lookup");
                let address = *found.iter().next().expect("id in the oracle");
                let doc: TantivyDocument = searcher.doc(address).expect("doc");
                let title = doc
                    .get_first(fields.title)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string();
                (title, snippets.snippet_from_doc(&doc).to_html())
            })
            .collect()
    }
}

/// Every match with its score, through tantivy's default (unpruned) path.
struct AllScored;

/// [`AllScored`] for one segment.
struct SegmentAllScored {
    segment: SegmentOrdinal,
    hits: Vec<(Score, DocAddress)>,
}

impl Collector for AllScored {
    type Fruit = Vec<(Score, DocAddress)>;
    type Child = SegmentAllScored;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        _reader: &SegmentReader,
    ) -> tantivy::Result<SegmentAllScored> {
        Ok(SegmentAllScored {
            segment,
            hits: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn merge_fruits(&self, fruits: Vec<Self::Fruit>) -> tantivy::Result<Self::Fruit> {
        Ok(fruits.into_iter().flatten().collect())
    }
}

impl SegmentCollector for SegmentAllScored {
    type Fruit = Vec<(Score, DocAddress)>;

    fn collect(&mut self, doc: DocId, score: Score) {
        self.hits.push((score, DocAddress::new(self.segment, doc)));
    }

    fn harvest(self) -> Self::Fruit {
        self.hits
    }
}

/// Asserts that `got` are the oracle's hits `want`: the same ids in the same
/// order, each score equal to the oracle's to the last bit. `what` names the
/// case in a failure (query, k, mode).
pub fn assert_same_hits(what: &str, got: &[Hit], want: &[Expected]) {
    let got_ids: Vec<&str> = got.iter().map(|h| h.doc_id.as_str()).collect();
    let want_ids: Vec<&str> = want.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(got_ids, want_ids, "{what}: ids differ from one index's");
    for (g, w) in got.iter().zip(want) {
        assert!(
            g.score.to_bits() == w.score.to_bits(),
            "{what}: {} scored {} in the tree, {} in one index",
            g.doc_id,
            g.score,
            w.score
        );
    }
}
