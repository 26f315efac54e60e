//! A version's exact local totals (`local.json`): documents, tokens per
//! indexed field and a content digest of this shard alone. Inner nodes sum
//! them into the corpus totals every shard scores with, and compare digests
//! to tell whether replicas of a shard hold the same documents.
//!
//! tantivy's own token count is exact only for a segment written without
//! deletes; a merge that drops documents estimates it. So the totals of a
//! build are read from its segment, and those of a version built from
//! staged operations are carried forward exactly: a whole segment's at a
//! time where they are known ([`SEGMENT_TOTALS_FILE`]: a segment that
//! enters as the staging area indexed it, or leaves whole), and otherwise
//! document by document ([`LocalTotals::remove`], [`LocalTotals::add`]) by
//! running each field's tokenizer over the stored text of the documents
//! that leave or enter.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use searchtree_proto::sharding::fnv1a_64;
use serde::{Deserialize, Serialize};
use tantivy::schema::{Field, FieldType, Schema, Value};
use tantivy::{Index, Searcher, SegmentReader, TantivyDocument};

use crate::schema::Fields;

/// File name of a version's local totals inside its directory.
pub const LOCAL_FILE: &str = "local.json";

/// File name of a version's per-segment totals inside its directory: each
/// segment's own [`LocalTotals`], by segment id, so that a publish whose
/// load replaced a whole segment takes that segment's totals out at once
/// rather than reading and tokenizing every document in it. A version
/// without it (a build, or one written before it was kept) carries its
/// totals document by document.
pub const SEGMENT_TOTALS_FILE: &str = "segment_totals.json";

/// Each segment's own totals, by segment id ([`SEGMENT_TOTALS_FILE`]).
pub type SegmentTotals = HashMap<String, LocalTotals>;

/// This shard's exact totals for one version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalTotals {
    /// Documents in the shard.
    pub num_docs: u64,
    /// Tokens per indexed field, by field name.
    pub num_tokens: BTreeMap<String, u64>,
    /// The sum (mod 2^64) of `fnv1a_64(id)` over the documents: changes
    /// when any document enters or leaves, whatever the order.
    pub id_hash_sum: u64,
    /// The sum (mod 2^64) of each document's content hash (its id and the
    /// text of its indexed fields, [`TokenCounter::content_hash`]): changes
    /// when a document's text does, even where its token counts do not.
    /// (0 in the totals of versions written before it was kept: the same
    /// on every replica that shares their history.)
    #[serde(default)]
    pub content_hash_sum: u64,
}

/// One document's contribution to the totals.
#[derive(Debug, Clone, Default)]
pub struct DocTokens {
    /// The document's id.
    pub id: String,
    /// Its content hash ([`TokenCounter::content_hash`]).
    pub content: u64,
    /// Tokens per indexed field, by field name.
    pub tokens: BTreeMap<String, u64>,
}

impl LocalTotals {
    /// The totals of a segment written without deletes (a build, or a
    /// version's merged segment is NOT one): documents and tokens from
    /// tantivy's own counts, ids from the id field's term dictionary.
    pub fn of_undeleted(searcher: &Searcher, fields: Fields) -> tantivy::Result<Self> {
        let mut totals = LocalTotals::default();
        let counter = TokenCounter::new(searcher.index(), fields)?;
        let schema = searcher.schema();
        for (_, entry) in schema.fields() {
            if entry.is_indexed() {
                totals.num_tokens.insert(entry.name().to_string(), 0);
            }
        }
        for segment in searcher.segment_readers() {
            if segment.has_deletes() {
                return Err(tantivy::TantivyError::InvalidArgument(
                    "exact totals cannot be read from a segment with deletes".into(),
                ));
            }
            totals.num_docs += u64::from(segment.num_docs());
            for (field, entry) in schema.fields() {
                if entry.is_indexed() {
                    let tokens = segment.inverted_index(field)?.total_num_tokens();
                    *totals
                        .num_tokens
                        .entry(entry.name().to_string())
                        .or_default() += tokens;
                }
            }
            let ids = segment.inverted_index(fields.id)?;
            let mut terms = ids.terms().stream()?;
            while terms.advance() {
                totals.id_hash_sum = totals.id_hash_sum.wrapping_add(fnv1a_64(terms.key()));
            }
            // Every document's text, read once per version (the store's
            // blocks in order).
            let store = segment.get_store_reader(64)?;
            for doc in store.iter::<TantivyDocument>(None) {
                let hash = counter.content_hash(&doc?);
                totals.content_hash_sum = totals.content_hash_sum.wrapping_add(hash);
            }
        }
        Ok(totals)
    }

    /// The totals of a segment indexed as it stands — written without
    /// deletes and never merged, so that tantivy's token counts are exact —
    /// with each document's content hash from `content` (by id). Inserts
    /// its ids into `ids`. `None` when `content` lacks an id.
    pub fn of_indexed(
        segment: &SegmentReader,
        fields: Fields,
        content: impl Fn(&str) -> Option<u64>,
        ids: &mut std::collections::BTreeSet<String>,
    ) -> tantivy::Result<Option<Self>> {
        let mut totals = LocalTotals {
            num_docs: u64::from(segment.num_docs()),
            ..Default::default()
        };
        for (field, entry) in segment.schema().fields() {
            if entry.is_indexed() {
                let tokens = segment.inverted_index(field)?.total_num_tokens();
                totals.num_tokens.insert(entry.name().to_string(), tokens);
            }
        }
        let inverted = segment.inverted_index(fields.id)?;
        let mut terms = inverted.terms().stream()?;
        while terms.advance() {
            let id = String::from_utf8_lossy(terms.key());
            let Some(hash) = content(&id) else {
                return Ok(None);
            };
            totals.id_hash_sum = totals.id_hash_sum.wrapping_add(fnv1a_64(terms.key()));
            totals.content_hash_sum = totals.content_hash_sum.wrapping_add(hash);
            ids.insert(id.into_owned());
        }
        Ok(Some(totals))
    }

    /// Puts another part's totals in (a segment's).
    pub fn absorb(&mut self, other: &LocalTotals) {
        self.num_docs += other.num_docs;
        self.id_hash_sum = self.id_hash_sum.wrapping_add(other.id_hash_sum);
        self.content_hash_sum = self.content_hash_sum.wrapping_add(other.content_hash_sum);
        for (field, n) in &other.num_tokens {
            *self.num_tokens.entry(field.clone()).or_default() += n;
        }
    }

    /// Takes another part's totals out (a segment that leaves whole).
    pub fn subtract(&mut self, other: &LocalTotals) {
        self.num_docs = self.num_docs.saturating_sub(other.num_docs);
        self.id_hash_sum = self.id_hash_sum.wrapping_sub(other.id_hash_sum);
        self.content_hash_sum = self.content_hash_sum.wrapping_sub(other.content_hash_sum);
        for (field, n) in &other.num_tokens {
            let total = self.num_tokens.entry(field.clone()).or_default();
            *total = total.saturating_sub(*n);
        }
    }

    /// Takes a document out.
    pub fn remove(&mut self, doc: &DocTokens) {
        self.num_docs -= 1;
        self.id_hash_sum = self.id_hash_sum.wrapping_sub(fnv1a_64(doc.id.as_bytes()));
        self.content_hash_sum = self.content_hash_sum.wrapping_sub(doc.content);
        for (field, n) in &doc.tokens {
            let total = self.num_tokens.entry(field.clone()).or_default();
            *total = total.saturating_sub(*n);
        }
    }

    /// Puts a document in.
    pub fn add(&mut self, doc: &DocTokens) {
        self.num_docs += 1;
        self.id_hash_sum = self.id_hash_sum.wrapping_add(fnv1a_64(doc.id.as_bytes()));
        self.content_hash_sum = self.content_hash_sum.wrapping_add(doc.content);
        for (field, n) in &doc.tokens {
            *self.num_tokens.entry(field.clone()).or_default() += n;
        }
    }

    /// The content digest replicas of a shard compare: the id and content
    /// hash sums mixed with the document and token counts, in hex.
    pub fn digest(&self) -> String {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(&self.id_hash_sum.to_le_bytes());
        bytes.extend_from_slice(&self.content_hash_sum.to_le_bytes());
        bytes.extend_from_slice(&self.num_docs.to_le_bytes());
        for (field, n) in &self.num_tokens {
            bytes.extend_from_slice(field.as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(&n.to_le_bytes());
        }
        format!("{:016x}", fnv1a_64(&bytes))
    }

    /// Reads `local.json` of a version directory, if it has one.
    pub fn read(dir: &Path) -> std::io::Result<Option<Self>> {
        read_json_if_present(&dir.join(LOCAL_FILE))
    }

    /// Writes `local.json` into a version directory, durably.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        super::fsio::write_atomic(&dir.join(LOCAL_FILE), &bytes)
    }
}

/// Reads [`SEGMENT_TOTALS_FILE`] of a version directory, if it has one.
pub fn read_segment_totals(dir: &Path) -> std::io::Result<Option<SegmentTotals>> {
    read_json_if_present(&dir.join(SEGMENT_TOTALS_FILE))
}

/// The JSON file at `path`, parsed; `None` if there is none.
fn read_json_if_present<T: serde::de::DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(Into::into),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes [`SEGMENT_TOTALS_FILE`] into a version directory, durably.
pub fn write_segment_totals(dir: &Path, totals: &SegmentTotals) -> std::io::Result<()> {
    let sorted: BTreeMap<_, _> = totals.iter().collect();
    let bytes = serde_json::to_vec_pretty(&sorted)?;
    super::fsio::write_atomic(&dir.join(SEGMENT_TOTALS_FILE), &bytes)
}

/// A stored document's content hash ([`ContentHasher::hash`]), made
/// wherever a document is at hand: at a scan, and as a load stages it.
#[derive(Clone)]
pub struct ContentHasher {
    id: Field,
    /// The indexed fields but the id, in the schema's order.
    fields: Vec<Field>,
}

impl ContentHasher {
    /// A hasher for documents of `schema`, whose id field is `id`.
    pub fn new(schema: &Schema, id: Field) -> Self {
        let fields = schema
            .fields()
            .filter(|(field, entry)| entry.is_indexed() && *field != id)
            .map(|(field, _)| field)
            .collect();
        ContentHasher { id, fields }
    }

    /// `fnv1a_64` over the document's id and the text of each indexed
    /// field, in the schema's order, each value closed by a 0xff byte
    /// (which no UTF-8 text contains), each field by another.
    pub fn hash(&self, doc: &TantivyDocument) -> u64 {
        let mut bytes = Vec::new();
        let id = doc.get_first(self.id).and_then(|v| v.as_str());
        bytes.extend_from_slice(id.unwrap_or_default().as_bytes());
        bytes.push(0xff);
        for field in &self.fields {
            for value in doc.get_all(*field) {
                if let Some(text) = value.as_str() {
                    bytes.extend_from_slice(text.as_bytes());
                }
                bytes.push(0xff);
            }
            bytes.push(0xff);
        }
        fnv1a_64(&bytes)
    }
}

/// Counts a stored document's tokens per indexed field the way indexing
/// did: each text field's own tokenizer over its stored text; a raw
/// (untokenized) field counts one token per value.
pub struct TokenCounter {
    fields: Vec<(Field, String, tantivy::tokenizer::TextAnalyzer)>,
    id: Field,
    hasher: ContentHasher,
}

impl TokenCounter {
    /// A counter for the indexed text fields of `index`'s schema.
    pub fn new(index: &Index, fields: Fields) -> tantivy::Result<Self> {
        let schema: Schema = index.schema();
        let mut counted = Vec::new();
        for (field, entry) in schema.fields() {
            if !entry.is_indexed() {
                continue;
            }
            if !matches!(entry.field_type(), FieldType::Str(_)) {
                return Err(tantivy::TantivyError::InvalidArgument(format!(
                    "field {} is not text: its tokens cannot be counted",
                    entry.name()
                )));
            }
            counted.push((
                field,
                entry.name().to_string(),
                index.tokenizer_for_field(field)?,
            ));
        }
        Ok(TokenCounter {
            fields: counted,
            id: fields.id,
            hasher: ContentHasher::new(&schema, fields.id),
        })
    }

    /// The id and tokens per field of a stored document.
    pub fn count(&mut self, doc: &TantivyDocument) -> DocTokens {
        self.count_visiting(doc, &mut |_, _| {})
    }

    /// [`TokenCounter::count`], handing `visit` each token (its field's
    /// name and its text, the term indexing made of it) as it goes.
    pub fn count_visiting(
        &mut self,
        doc: &TantivyDocument,
        visit: &mut dyn FnMut(&str, &str),
    ) -> DocTokens {
        let mut out = DocTokens::default();
        for (field, name, analyzer) in &mut self.fields {
            let mut n = 0u64;
            for value in doc.get_all(*field) {
                let Some(text) = value.as_str() else { continue };
                let mut stream = analyzer.token_stream(text);
                while stream.advance() {
                    visit(name, &stream.token().text);
                    n += 1;
                }
            }
            out.tokens.insert(name.clone(), n);
        }
        out.id = doc
            .get_first(self.id)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        out.content = self.content_hash(doc);
        out
    }

    /// A stored document's content hash ([`ContentHasher::hash`]).
    pub fn content_hash(&self, doc: &TantivyDocument) -> u64 {
        self.hasher.hash(doc)
    }
}

#[cfg(test)]
mod tests {
    use tantivy::{IndexWriter, doc};

    use super::*;
    use crate::schema;

    /// The totals of a one-document index, read by a scan, and as a load
    /// carries them forward (`add`): the same.
    fn totals_of(title: &str, body: &str) -> (LocalTotals, LocalTotals) {
        let (schema, fields) = schema::build();
        let index = Index::create_in_ram(schema);
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 20 << 20).unwrap();
        let stored = doc!(fields.id => "d1", fields.title => title, fields.body => body);
        writer.add_document(stored.clone()).unwrap();
        writer.commit().unwrap();
        let scanned =
            LocalTotals::of_undeleted(&index.reader().unwrap().searcher(), fields).unwrap();
        let mut carried = LocalTotals::default();
        carried.add(&TokenCounter::new(&index, fields).unwrap().count(&stored));
        (scanned, carried)
    }

    #[test]
    fn an_edit_that_keeps_every_count_still_changes_the_digest() {
        let (before, carried) = totals_of("river", "the old stone bridge");
        assert_eq!(carried.digest(), before.digest(), "scan and load agree");
        // Same id, same number of tokens in every field, other words.
        let (after, _) = totals_of("river", "the new stone bridge");
        assert_eq!(
            (after.num_docs, &after.num_tokens, after.id_hash_sum),
            (before.num_docs, &before.num_tokens, before.id_hash_sum)
        );
        assert_ne!(after.digest(), before.digest());
        // A word moved from one field to the other: another content too.
        let (moved, _) = totals_of("river the", "old stone bridge");
        assert_ne!(moved.content_hash_sum, before.content_hash_sum);
    }
}
