//! What a hit shows besides its id and score: its title and a snippet of
//! its body around the query's terms. One place, so a hit looks the same
//! whether the query phase filled it (one-phase search) or a later fetch did
//! (two-phase search).

use std::collections::{BTreeMap, BTreeSet};

use tantivy::query::{Bm25StatisticsProvider, Query};
use tantivy::schema::Value;
use tantivy::{Score, Searcher, TantivyDocument, Term};

use crate::highlight::Highlighter;
use crate::schema::Fields;

/// Longest snippet, in characters.
pub const SNIPPET_CHARS: usize = 160;

/// How much of a body the snippet is looked for in, in bytes (Elasticsearch's
/// `index.highlight.max_analyzed_offset` is 1,000,000 characters). Tokenizing
/// a body costs time in proportion to its length: a 20 MB document took
/// ~150 ms, more than the default budget, and every hit of its shard came
/// back without a title or snippet. Past this prefix a body is not looked
/// at, so a term that appears only later is not highlighted.
pub const MAX_ANALYZED_BYTES: usize = 1_000_000;

/// Builds titles and snippets for one query over one searcher.
pub struct Presenter {
    snippets: Highlighter,
    fields: Fields,
}

impl Presenter {
    /// A presenter highlighting `query`'s terms in the body. A snippet is
    /// the body's passage whose query terms weigh most, rarer terms more
    /// (1 / (1 + document frequency), as tantivy weighs them); the
    /// frequencies come from `statistics` — the corpus's, not the shard's —
    /// so a hit gets the same snippet whichever shard holds it, the same as
    /// one index over the corpus would give.
    pub fn new(
        searcher: &Searcher,
        statistics: &dyn Bm25StatisticsProvider,
        query: &dyn Query,
        fields: Fields,
    ) -> tantivy::Result<Self> {
        let mut terms: BTreeSet<&Term> = BTreeSet::new();
        query.query_terms(&mut |term, _| {
            if term.field() == fields.body {
                terms.insert(term);
            }
        });
        let mut weights: BTreeMap<String, Score> = BTreeMap::new();
        for term in terms {
            let value = term.value();
            let Some(text) = value.as_str() else {
                continue;
            };
            let doc_freq = statistics.doc_freq(term)?;
            if doc_freq > 0 {
                weights.insert(text.to_string(), 1.0 / (1.0 + doc_freq as Score));
            }
        }
        let snippets = if indexed_with_default_analyzer(searcher, fields.body) {
            Highlighter::for_default_analyzer(weights, SNIPPET_CHARS)
        } else {
            let tokenizer = searcher.index().tokenizer_for_field(fields.body)?;
            Highlighter::new(weights, tokenizer, SNIPPET_CHARS)
        };
        Ok(Presenter { snippets, fields })
    }

    /// The title and the highlighted snippet (HTML) of a stored document.
    pub fn title_and_snippet(&self, doc: &TantivyDocument) -> (String, String) {
        let title = doc
            .get_first(self.fields.title)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let body = doc
            .get_first(self.fields.body)
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let snippet = self
            .snippets
            .html(analyzed_prefix(body.trim(), MAX_ANALYZED_BYTES));
        (title, snippet)
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn analyzed_prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Whether `field` is indexed with tantivy's `default` analyzer, which the
/// index's tokenizer manager holds as tantivy made it (no node registers
/// another under that name): then the highlighter splits texts itself.
fn indexed_with_default_analyzer(searcher: &Searcher, field: tantivy::schema::Field) -> bool {
    match searcher.schema().get_field_entry(field).field_type() {
        tantivy::schema::FieldType::Str(options) => options
            .get_indexing_options()
            .is_some_and(|indexing| indexing.tokenizer() == "default"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_never_splits_a_character() {
        assert_eq!(analyzed_prefix("short", 100), "short");
        assert_eq!(analyzed_prefix("abcdef", 3), "abc");
        // 'é' is two bytes: a cut inside it backs off before it.
        assert_eq!(analyzed_prefix("aé", 2), "a");
        assert_eq!(analyzed_prefix("aé", 3), "aé");
    }

    #[test]
    fn the_body_is_highlighted_by_the_default_analyzer_s_own_split() {
        let (schema, fields) = crate::schema::build();
        let index = tantivy::Index::create_in_ram(schema);
        let searcher = index.reader().unwrap().searcher();
        assert!(indexed_with_default_analyzer(&searcher, fields.body));
        assert!(indexed_with_default_analyzer(&searcher, fields.title));
        // The id is indexed whole (`raw`).
        assert!(!indexed_with_default_analyzer(&searcher, fields.id));
    }
}
