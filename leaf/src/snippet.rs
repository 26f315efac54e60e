//! What a hit shows besides its id and score: its title and a snippet of
//! its body around the query's terms. One place, so a hit looks the same
//! whether the query phase filled it (one-phase search) or a later fetch did
//! (two-phase search).

use tantivy::query::Query;
use tantivy::schema::Value;
use tantivy::snippet::SnippetGenerator;
use tantivy::{Searcher, TantivyDocument};

use crate::schema::Fields;

/// Longest snippet, in characters.
pub const SNIPPET_CHARS: usize = 160;

/// Builds titles and snippets for one query over one searcher (snippets
/// weigh the query's terms by the searcher's statistics, so both phases must
/// use the same shard's searcher to agree).
pub struct Presenter {
    snippets: SnippetGenerator,
    fields: Fields,
}

impl Presenter {
    /// A presenter highlighting `query`'s terms in the body.
    pub fn new(searcher: &Searcher, query: &dyn Query, fields: Fields) -> tantivy::Result<Self> {
        let mut snippets = SnippetGenerator::create(searcher, query, fields.body)?;
        snippets.set_max_num_chars(SNIPPET_CHARS);
        Ok(Presenter { snippets, fields })
    }

    /// The title and the highlighted snippet (HTML) of a stored document.
    pub fn title_and_snippet(&self, doc: &TantivyDocument) -> (String, String) {
        let title = doc
            .get_first(self.fields.title)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        (title, self.snippets.snippet_from_doc(doc).to_html())
    }
}
