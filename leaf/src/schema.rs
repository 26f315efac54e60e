//! The schema of every shard (and of the one-index oracle): one definition,
//! so that a shard and a whole-corpus index score a document identically.

use tantivy::schema::{FAST, Field, STORED, STRING, Schema, TEXT};

/// Field name of the document id: indexed raw (for `id:...` queries), stored,
/// and a fast field so the collector can break score ties by id cheaply.
pub const ID: &str = "id";
/// Field name of the title: tokenized and stored.
pub const TITLE: &str = "title";
/// Field name of the body: tokenized and stored (for snippets).
pub const BODY: &str = "body";

/// Handles to the fields of a shard's schema.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    /// See [`ID`].
    pub id: Field,
    /// See [`TITLE`].
    pub title: Field,
    /// See [`BODY`].
    pub body: Field,
}

/// Builds the corpus schema.
pub fn build() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let id = builder.add_text_field(ID, STRING | STORED | FAST);
    let title = builder.add_text_field(TITLE, TEXT | STORED);
    let body = builder.add_text_field(BODY, TEXT | STORED);
    (builder.build(), Fields { id, title, body })
}

/// Finds the corpus fields in an index's schema, or says which is missing.
pub fn fields_of(schema: &Schema) -> Result<Fields, tantivy::TantivyError> {
    Ok(Fields {
        id: schema.get_field(ID)?,
        title: schema.get_field(TITLE)?,
        body: schema.get_field(BODY)?,
    })
}
