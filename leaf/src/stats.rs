//! Corpus-wide BM25 statistics, so that a shard scores as the whole corpus.
//!
//! BM25 depends on the number of documents, each term's document frequency
//! and each field's average length. Scored with its own numbers, a shard
//! would rank differently from one index over the corpus, and scores from
//! different shards would not be comparable. `searchtree build` therefore
//! computes the corpus-wide numbers once and stores, beside each shard:
//!
//! - the totals (documents, tokens per field) in the shard's metadata, and
//! - `doc_freqs.bin`: for every term of each of the shard's segments, the
//!   term's document frequency over the whole corpus, indexed by the term's
//!   ordinal in that segment's term dictionary (4 bytes per term). A build's
//!   shard is one segment and its file holds one table ([`DocFreqs`]); a
//!   version published from loaded documents may keep several segments
//!   (those a load did not touch are not rewritten) and its file holds a
//!   table per segment, named by the segment's id ([`ShardDocFreqs`]).
//!
//! A leaf answers tantivy's [`Bm25StatisticsProvider`] from these, so no
//! query needs an extra round trip to learn global statistics.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tantivy::query::Bm25StatisticsProvider;
use tantivy::schema::Field;
use tantivy::{InvertedIndexReader, Searcher, Term};

/// File name of the per-term document frequencies inside a shard directory.
pub const DOC_FREQS_FILE: &str = "doc_freqs.bin";
const MAGIC: &[u8; 8] = b"STDFREQ1";
/// The magic of a file holding one table per segment.
const MAGIC_BY_SEGMENT: &[u8; 8] = b"STDFREQ2";

/// Whole-corpus totals, stored in each shard's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusTotals {
    /// Documents in the whole corpus.
    pub num_docs: u64,
    /// Tokens per indexed field over the whole corpus, by field name.
    pub num_tokens: BTreeMap<String, u64>,
}

/// Corpus-wide document frequencies of one segment's terms, per field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocFreqs {
    /// Field id → document frequency by term ordinal.
    per_field: HashMap<u32, Vec<u32>>,
}

impl DocFreqs {
    /// Frequencies for `field`, indexed by term ordinal.
    pub fn insert(&mut self, field: Field, by_ordinal: Vec<u32>) {
        self.per_field.insert(field.field_id(), by_ordinal);
    }

    /// Writes the table in its binary form.
    pub fn write_to(&self, mut out: impl Write) -> io::Result<()> {
        out.write_all(MAGIC)?;
        self.write_body(&mut out)
    }

    fn write_body(&self, mut out: impl Write) -> io::Result<()> {
        let mut fields: Vec<_> = self.per_field.iter().collect();
        fields.sort_by_key(|(id, _)| **id);
        out.write_all(&(fields.len() as u32).to_le_bytes())?;
        for (field, freqs) in fields {
            out.write_all(&field.to_le_bytes())?;
            out.write_all(&(freqs.len() as u64).to_le_bytes())?;
            for f in freqs {
                out.write_all(&f.to_le_bytes())?;
            }
        }
        Ok(())
    }

    /// Reads a table written by [`DocFreqs::write_to`].
    pub fn read_from(mut input: impl Read) -> io::Result<Self> {
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a searchtree doc_freqs file of one table (bad magic)",
            ));
        }
        Self::read_body(input)
    }

    fn read_body(mut input: impl Read) -> io::Result<Self> {
        let mut per_field = HashMap::new();
        for _ in 0..read_u32(&mut input)? {
            let field = read_u32(&mut input)?;
            // The length is the file's word: the table is read as it
            // comes, not allocated whole from it, so that a corrupt or
            // hostile length (a version copied from elsewhere) is an error
            // rather than an allocation that aborts the process.
            let len = read_u64(&mut input)?;
            let want = len.checked_mul(4).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a table of {len} frequencies, more than any file holds"),
                )
            })?;
            let mut bytes = Vec::new();
            (&mut input).take(want).read_to_end(&mut bytes)?;
            if bytes.len() as u64 != want {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "a table of {len} frequencies ends after {} bytes",
                        bytes.len()
                    ),
                ));
            }
            let freqs = bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            per_field.insert(field, freqs);
        }
        Ok(DocFreqs { per_field })
    }
}

fn read_u32(input: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    input.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(input: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    input.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// The corpus-wide document frequencies of a shard's terms, as its
/// `doc_freqs.bin` holds them: one table for the one segment of a build, or
/// one per segment, by segment id, for a published version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardDocFreqs {
    /// The table of a shard of (at most) one segment, whatever its id.
    OneSegment(DocFreqs),
    /// A table per segment, by the segment's id (`SegmentId::uuid_string`).
    BySegment(BTreeMap<String, DocFreqs>),
}

impl ShardDocFreqs {
    /// Writes the tables in their binary form.
    pub fn write_to(&self, mut out: impl Write) -> io::Result<()> {
        match self {
            ShardDocFreqs::OneSegment(table) => table.write_to(out),
            ShardDocFreqs::BySegment(tables) => {
                out.write_all(MAGIC_BY_SEGMENT)?;
                out.write_all(&(tables.len() as u32).to_le_bytes())?;
                for (segment, table) in tables {
                    out.write_all(&(segment.len() as u32).to_le_bytes())?;
                    out.write_all(segment.as_bytes())?;
                    table.write_body(&mut out)?;
                }
                Ok(())
            }
        }
    }

    /// Reads tables written by [`ShardDocFreqs::write_to`] (or by
    /// [`DocFreqs::write_to`]).
    pub fn read_from(mut input: impl Read) -> io::Result<Self> {
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic)?;
        if &magic == MAGIC {
            return Ok(ShardDocFreqs::OneSegment(DocFreqs::read_body(input)?));
        }
        if &magic != MAGIC_BY_SEGMENT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a searchtree doc_freqs file (bad magic)",
            ));
        }
        let mut tables = BTreeMap::new();
        for _ in 0..read_u32(&mut input)? {
            let len = read_u32(&mut input)? as usize;
            if len > 64 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a segment id of {len} bytes: the file is damaged"),
                ));
            }
            let mut id = vec![0u8; len];
            input.read_exact(&mut id)?;
            let id = String::from_utf8(id).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, "a segment id is not text")
            })?;
            tables.insert(id, DocFreqs::read_body(&mut input)?);
        }
        Ok(ShardDocFreqs::BySegment(tables))
    }
}

/// Answers BM25's questions with whole-corpus numbers for one shard.
///
/// Term ordinals are per segment, so each segment has its table; a term's
/// corpus-wide frequency is the same in every table that holds it.
pub struct CorpusStatistics {
    totals: CorpusTotals,
    field_names: HashMap<u32, String>,
    /// Per field id: each segment's term dictionary and its frequencies.
    lookups: HashMap<u32, Vec<SegmentFreqs>>,
}

/// One segment's term dictionary for a field, and the corpus-wide
/// frequency of each of its terms by ordinal.
type SegmentFreqs = (Arc<InvertedIndexReader>, Vec<u32>);

impl CorpusStatistics {
    /// Ties the stored statistics to the segments of `searcher`: each
    /// segment must have its table, covering every term it holds.
    pub fn new(
        searcher: &Searcher,
        totals: CorpusTotals,
        doc_freqs: ShardDocFreqs,
    ) -> tantivy::Result<Self> {
        let segments = searcher.segment_readers();
        let mismatch = |why: String| {
            tantivy::TantivyError::InvalidArgument(format!(
                "{why}; the shard and its statistics do not belong together"
            ))
        };
        let tables: Vec<DocFreqs> = match doc_freqs {
            ShardDocFreqs::OneSegment(table) => {
                if segments.len() > 1 {
                    return Err(tantivy::TantivyError::InvalidArgument(format!(
                        "a built shard must be a single segment, this one has {}; rebuild it \
                         with `searchtree build`",
                        segments.len()
                    )));
                }
                // An empty shard has no segment: nothing matches, nothing
                // to look up.
                segments.first().map(|_| table).into_iter().collect()
            }
            ShardDocFreqs::BySegment(mut by_id) => {
                let mut tables = Vec::with_capacity(segments.len());
                for segment in segments {
                    let id = segment.segment_id().uuid_string();
                    let table = by_id.remove(&id).ok_or_else(|| {
                        mismatch(format!("doc_freqs has no table for segment {id}"))
                    })?;
                    tables.push(table);
                }
                if let Some(id) = by_id.keys().next() {
                    return Err(mismatch(format!(
                        "doc_freqs has a table for segment {id}, which the index does not hold"
                    )));
                }
                tables
            }
        };
        let schema = searcher.schema();
        let mut field_names = HashMap::new();
        let mut lookups: HashMap<u32, Vec<SegmentFreqs>> = HashMap::new();
        for (segment, table) in segments.iter().zip(tables) {
            for (field_id, freqs) in table.per_field {
                let field = Field::from_field_id(field_id);
                let reader = segment.inverted_index(field)?;
                let actual = reader.terms().num_terms();
                if freqs.len() != actual {
                    return Err(mismatch(format!(
                        "doc_freqs for field {} cover {} terms but the segment has {actual}",
                        schema.get_field_name(field),
                        freqs.len()
                    )));
                }
                // BM25's idf is undefined for a term in more documents than
                // the corpus holds (tantivy asserts it at every search).
                if let Some(&most) = freqs.iter().max()
                    && u64::from(most) > totals.num_docs
                {
                    return Err(mismatch(format!(
                        "doc_freqs for field {} hold a term in {most} documents of a corpus of {}",
                        schema.get_field_name(field),
                        totals.num_docs
                    )));
                }
                lookups.entry(field_id).or_default().push((reader, freqs));
            }
        }
        for (field, entry) in schema.fields() {
            if entry.is_indexed() {
                field_names.insert(field.field_id(), entry.name().to_string());
            }
        }
        Ok(CorpusStatistics {
            totals,
            field_names,
            lookups,
        })
    }
}

impl Bm25StatisticsProvider for CorpusStatistics {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        let name = self.field_names.get(&field.field_id());
        Ok(name
            .and_then(|n| self.totals.num_tokens.get(n))
            .copied()
            .unwrap_or(0))
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.totals.num_docs)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        let Some(segments) = self.lookups.get(&term.field().field_id()) else {
            return Ok(0);
        };
        // A term absent from every segment of this shard matches nothing
        // here, so its frequency cannot change any score this shard
        // produces.
        for (reader, freqs) in segments {
            if let Some(ord) = reader.terms().term_ord(term.serialized_value_bytes())? {
                return Ok(u64::from(freqs[ord as usize]));
            }
        }
        Ok(0)
    }
}

/// Computes the whole-corpus totals and, for each shard, the corpus-wide
/// document frequency of each of its terms. Each shard must be one segment.
pub fn compute(shards: &[Searcher]) -> tantivy::Result<(CorpusTotals, Vec<DocFreqs>)> {
    let mut totals = CorpusTotals::default();
    let mut per_shard = vec![DocFreqs::default(); shards.len()];
    let Some(first) = shards.first() else {
        return Ok((totals, per_shard));
    };
    let schema = first.schema().clone();
    // An empty shard has no segment; every other shard must have exactly one.
    let mut segments = Vec::with_capacity(shards.len());
    for searcher in shards {
        let readers = searcher.segment_readers();
        if readers.len() > 1 {
            return Err(tantivy::TantivyError::InvalidArgument(
                "every shard must be merged into one segment before computing statistics".into(),
            ));
        }
        totals.num_docs += readers.first().map_or(0, |r| u64::from(r.num_docs()));
        segments.push(readers.first());
    }
    for (field, entry) in schema.fields() {
        if !entry.is_indexed() {
            continue;
        }
        let readers = segments
            .iter()
            .map(|s| s.map(|s| s.inverted_index(field)).transpose())
            .collect::<tantivy::Result<Vec<_>>>()?;
        let tokens: u64 = readers.iter().flatten().map(|r| r.total_num_tokens()).sum();
        totals.num_tokens.insert(entry.name().to_string(), tokens);

        let mut global: HashMap<Vec<u8>, u32> = HashMap::new();
        for reader in readers.iter().flatten() {
            let mut terms = reader.terms().stream()?;
            while terms.advance() {
                *global.entry(terms.key().to_vec()).or_default() += terms.value().doc_freq;
            }
        }
        for (reader, out) in readers.iter().zip(per_shard.iter_mut()) {
            let Some(reader) = reader else {
                out.insert(field, Vec::new());
                continue;
            };
            let mut by_ordinal = Vec::with_capacity(reader.terms().num_terms());
            let mut terms = reader.terms().stream()?;
            while terms.advance() {
                debug_assert_eq!(terms.term_ord() as usize, by_ordinal.len());
                by_ordinal.push(global[terms.key()]);
            }
            out.insert(field, by_ordinal);
        }
    }
    Ok((totals, per_shard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_freqs_round_trip() {
        let mut table = DocFreqs::default();
        table.insert(Field::from_field_id(1), vec![3, 1, 4]);
        table.insert(Field::from_field_id(2), vec![]);
        let mut bytes = Vec::new();
        table.write_to(&mut bytes).unwrap();
        assert_eq!(DocFreqs::read_from(&bytes[..]).unwrap(), table);
    }

    #[test]
    fn tables_by_segment_round_trip_and_a_build_s_file_reads_as_one_segment() {
        let mut one = DocFreqs::default();
        one.insert(Field::from_field_id(1), vec![3, 1, 4]);
        let mut two = DocFreqs::default();
        two.insert(Field::from_field_id(1), vec![2]);
        let tables = ShardDocFreqs::BySegment(BTreeMap::from([
            ("aa".to_string(), one.clone()),
            ("bb".to_string(), two),
        ]));
        let mut bytes = Vec::new();
        tables.write_to(&mut bytes).unwrap();
        assert_eq!(ShardDocFreqs::read_from(&bytes[..]).unwrap(), tables);
        // A build writes one table; read as the shard's, it is that table.
        let mut bytes = Vec::new();
        one.write_to(&mut bytes).unwrap();
        assert_eq!(
            ShardDocFreqs::read_from(&bytes[..]).unwrap(),
            ShardDocFreqs::OneSegment(one)
        );
        // A file of tables by segment is not a build's.
        let mut bytes = Vec::new();
        tables.write_to(&mut bytes).unwrap();
        assert!(DocFreqs::read_from(&bytes[..]).is_err());
    }

    #[test]
    fn a_table_longer_than_its_file_is_an_error_not_an_allocation() {
        for len in [u64::MAX, 1 << 50, 3] {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&1u32.to_le_bytes());
            bytes.extend_from_slice(&0u32.to_le_bytes());
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(&7u32.to_le_bytes());
            let err = DocFreqs::read_from(&bytes[..]).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("a table of {len} frequencies")),
                "{err}"
            );
        }
    }

    #[test]
    fn refuses_foreign_files() {
        let err = DocFreqs::read_from(&b"NOTMAGIC\0\0\0\0"[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
