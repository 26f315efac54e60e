//! The correctness oracle: one plain tantivy index over the whole corpus,
//! searched with tantivy's own collector and statistics, ties broken by id.
//!
//! It shares nothing with the leaves' search path but the schema, so an
//! agreement between the tree and the oracle means the tree is exact.

use std::path::Path;

use tantivy::collector::TopDocs;
use tantivy::query::QueryParser;
use tantivy::schema::Value;
use tantivy::{Index, IndexReader, TantivyDocument};

use searchtree_leaf::schema;

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
        let everything = TopDocs::with_limit(searcher.num_docs().max(1) as usize).order_by_score();
        let all = searcher
            .search(&*query, &everything)
            .expect("oracle search");
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
}
