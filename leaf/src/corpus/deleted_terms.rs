//! The terms of the documents a version's segments still hold but no
//! longer serve.
//!
//! A publish keeps a segment that lost a few of its documents with a
//! delete file, as Lucene does, rather than rewriting it
//! ([`super::segments`]). tantivy then still counts the deleted documents
//! in the segment's term dictionary, and the tree's statistics must not:
//! a term's local document frequency is what its segments' dictionaries
//! say less the deleted documents holding it. This file keeps those
//! counts for each segment with deletes, gathered from the deleted
//! documents' own text as they leave (the cost of the change, not of the
//! segment), and carried from version to version while the segment is
//! kept.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::Path;

use tantivy::TantivyDocument;

use super::fsio;
use super::local::{DocTokens, TokenCounter};
use crate::schema;

/// File name of a version's deleted-term counts (absent: no segment of the
/// version has deletes).
pub const DELETED_TERMS_FILE: &str = "deleted_terms.bin";
const MAGIC: &[u8; 8] = b"STDELTM1";

/// For one segment and field: term bytes → deleted documents holding it.
pub type FieldDeleted = HashMap<Vec<u8>, u32>;

/// The deleted documents' terms of each segment with deletes, by segment id
/// and field name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletedTerms {
    segments: BTreeMap<String, BTreeMap<String, FieldDeleted>>,
}

impl DeletedTerms {
    /// The counts of the version in `dir`; none if it has no such file.
    pub fn read(dir: &Path) -> io::Result<Self> {
        match std::fs::read(dir.join(DELETED_TERMS_FILE)) {
            Ok(bytes) => Self::parse(&bytes).map_err(|why| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {why}", dir.join(DELETED_TERMS_FILE).display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the counts into the version directory `dir` (nothing when
    /// there are none).
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        if self.segments.is_empty() {
            return Ok(());
        }
        let mut out = MAGIC.to_vec();
        put_u32(&mut out, self.segments.len() as u32);
        for (segment, fields) in &self.segments {
            put_bytes(&mut out, segment.as_bytes());
            put_u32(&mut out, fields.len() as u32);
            for (field, terms) in fields {
                put_bytes(&mut out, field.as_bytes());
                let mut sorted: Vec<_> = terms.iter().collect();
                sorted.sort();
                put_u32(&mut out, sorted.len() as u32);
                for (term, count) in sorted {
                    put_bytes(&mut out, term);
                    put_u32(&mut out, *count);
                }
            }
        }
        fsio::write_atomic(&dir.join(DELETED_TERMS_FILE), &out)
    }

    /// Counts the terms of `doc`, a document of segment `segment` leaving
    /// it, each once (a document holds a term or not); returns its tokens
    /// as [`TokenCounter::count`] does.
    pub fn add_document(
        &mut self,
        segment: &str,
        counter: &mut TokenCounter,
        doc: &TantivyDocument,
    ) -> DocTokens {
        let mut seen: HashSet<(String, String)> = HashSet::new();
        let fields = self.segments.entry(segment.to_string()).or_default();
        counter.count_visiting(doc, &mut |field, term| {
            // Id terms are not exchanged (each is one document's).
            if field != schema::ID && seen.insert((field.to_string(), term.to_string())) {
                *fields
                    .entry(field.to_string())
                    .or_default()
                    .entry(term.as_bytes().to_vec())
                    .or_default() += 1;
            }
        })
    }

    /// Keeps the counts of the segments `keep` names only: a segment merged
    /// or dropped has no deleted documents left.
    pub fn retain_segments(&mut self, keep: impl Fn(&str) -> bool) {
        self.segments.retain(|segment, _| keep(segment));
    }

    /// The counts of `segment`'s `field`, if it has any.
    pub fn field(&self, segment: &str, field: &str) -> Option<&FieldDeleted> {
        self.segments.get(segment)?.get(field)
    }

    /// Whether no segment has counts.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut input = Reader { bytes, at: 0 };
        if input.take(MAGIC.len())? != MAGIC {
            return Err("not a searchtree deleted-terms file (bad magic)".into());
        }
        let mut out = DeletedTerms::default();
        for _ in 0..input.u32()? {
            let segment = input.string()?;
            let fields = out.segments.entry(segment).or_default();
            for _ in 0..input.u32()? {
                let field = input.string()?;
                let terms = fields.entry(field).or_default();
                for _ in 0..input.u32()? {
                    let term = input.bytes()?.to_vec();
                    terms.insert(term, input.u32()?);
                }
            }
        }
        if input.at != bytes.len() {
            return Err(format!("{} bytes after the end", bytes.len() - input.at));
        }
        Ok(out)
    }
}

fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len() as u32);
    out.extend_from_slice(bytes);
}

/// Reads the file's words, every length checked against what is left, so
/// that a damaged file is an error rather than a panic.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| format!("cut short at byte {} (wanted {n} more)", self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use tantivy::{Index, doc};

    use super::*;

    #[test]
    fn a_documents_terms_count_once_and_survive_the_file() {
        let (schema, fields) = schema::build();
        let index = Index::create_in_ram(schema);
        let mut counter = TokenCounter::new(&index, fields).unwrap();
        let mut deleted = DeletedTerms::default();
        let a = doc!(fields.id => "a", fields.title => "Stone", fields.body => "stone river stone");
        let b = doc!(fields.id => "b", fields.title => "river", fields.body => "bridge");
        let tokens = deleted.add_document("seg1", &mut counter, &a);
        assert_eq!(tokens.tokens["body"], 3, "tokens are still counted");
        deleted.add_document("seg1", &mut counter, &b);
        deleted.add_document("seg2", &mut counter, &b);
        let body = deleted.field("seg1", "body").unwrap();
        assert_eq!(body[&b"stone".to_vec()], 1, "twice in one document, once");
        assert_eq!(body[&b"river".to_vec()], 1);
        assert_eq!(body[&b"bridge".to_vec()], 1);
        assert_eq!(
            deleted.field("seg1", "title").unwrap()[&b"stone".to_vec()],
            1
        );
        assert!(deleted.field("seg2", "body").unwrap().len() == 1);

        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            DeletedTerms::read(dir.path()).unwrap(),
            DeletedTerms::default()
        );
        deleted.write(dir.path()).unwrap();
        assert_eq!(DeletedTerms::read(dir.path()).unwrap(), deleted);

        deleted.retain_segments(|s| s == "seg2");
        assert!(deleted.field("seg1", "body").is_none());
        assert!(deleted.field("seg2", "body").is_some());
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (schema, fields) = schema::build();
        let index = Index::create_in_ram(schema);
        let mut counter = TokenCounter::new(&index, fields).unwrap();
        let mut deleted = DeletedTerms::default();
        deleted.add_document(
            "seg",
            &mut counter,
            &doc!(fields.id => "a", fields.body => "x y"),
        );
        deleted.write(dir.path()).unwrap();
        let path = dir.path().join(DELETED_TERMS_FILE);
        let bytes = std::fs::read(&path).unwrap();
        for cut in [4, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let err = DeletedTerms::read(dir.path()).unwrap_err().to_string();
            assert!(err.contains(DELETED_TERMS_FILE), "{err}");
        }
        let mut huge = bytes.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &huge).unwrap();
        assert!(DeletedTerms::read(dir.path()).is_err());
    }
}
