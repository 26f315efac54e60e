//! Install: the corpus-wide statistics of the candidate version arrive (the
//! totals, then every term's document frequency summed over all shards);
//! the leaf keeps those of its own terms (in each of the candidate's
//! segments), writes the candidate's scoring files (`doc_freqs.bin`,
//! `shard.json`) durably, renames it into place and opens it — searchable
//! by number, not yet current.

use std::collections::HashMap;
use std::sync::Arc;

use searchtree_proto::pb::{FieldTerms, InstallChunk};
use tantivy::schema::Field;
use tantivy::{Index, InvertedIndexReader};

use super::deleted_terms::{DeletedTerms, FieldDeleted};
use super::store::CorpusStore;
use super::{CorpusError, fsio};
use crate::schema;
use crate::shard::{SHARD_META_FILE, ShardMeta, write_scoring_files};
use crate::stats::{CorpusTotals, DOC_FREQS_FILE, DocFreqs, ShardDocFreqs};

/// The corpus-wide document frequency of every id term: ids are unique in
/// a corpus (a build refuses duplicates, a load replaces by id), so the
/// publish does not exchange one term per document to learn it.
pub const UNIQUE_ID_FREQ: u32 = 1;

/// The corpus-wide statistics of a candidate, gathered chunk by chunk:
/// only the terms of this shard's segments are kept, by ordinal.
pub struct GlobalStats {
    version: u64,
    corpus: CorpusTotals,
    /// The id of each of the candidate's segments, in the order of each
    /// field's `segments`.
    segment_ids: Vec<String>,
    /// Per indexed field name.
    fields: HashMap<String, FieldStats>,
}

/// The global frequencies of one field's terms in the candidate.
struct FieldStats {
    field: Field,
    /// One per segment of the candidate (none in an empty candidate).
    segments: Vec<SegmentTerms>,
}

/// A term whose frequency no chunk has carried yet. 0 is a frequency: a
/// term only deleted documents of a segment hold is in no live document.
const UNSEEN: u32 = u32::MAX;

/// One segment's term dictionary for a field, and the global frequency of
/// each of its terms by ordinal; [`UNSEEN`] = not yet seen.
struct SegmentTerms {
    inverted: Arc<InvertedIndexReader>,
    by_ordinal: Vec<u32>,
}

impl GlobalStats {
    /// Takes in one chunk's terms; terms this shard does not hold are
    /// skipped. A frequency above the corpus's document count is refused:
    /// BM25's idf is undefined there (tantivy asserts it), so every search
    /// of the term would fail at this version.
    pub fn absorb(&mut self, terms: &[FieldTerms]) -> Result<(), CorpusError> {
        for group in terms {
            if group.terms.len() != group.doc_freqs.len() {
                return Err(CorpusError::Invalid(format!(
                    "field {}: {} terms but {} frequencies",
                    group.field,
                    group.terms.len(),
                    group.doc_freqs.len()
                )));
            }
            let Some(stats) = self.fields.get_mut(&group.field) else {
                continue;
            };
            let mut freqs = Vec::with_capacity(group.doc_freqs.len());
            for &freq in &group.doc_freqs {
                if freq > self.corpus.num_docs {
                    return Err(CorpusError::Invalid(format!(
                        "field {}: a term in {freq} documents of a corpus of {} in the \
                         statistics of version {}",
                        group.field, self.corpus.num_docs, self.version
                    )));
                }
                freqs.push(
                    u32::try_from(freq)
                        .ok()
                        .filter(|&f| f != UNSEEN)
                        .ok_or_else(|| {
                            CorpusError::Invalid(format!("document frequency {freq} out of range"))
                        })?,
                );
            }
            for segment in &mut stats.segments {
                segment.take(&group.terms, &freqs)?;
            }
        }
        Ok(())
    }
}

impl SegmentTerms {
    /// Records the frequencies of the terms this segment holds. The nodes
    /// above send a field's terms in order (they sum them in sorted maps),
    /// so the segment's dictionary is walked once beside them over the
    /// chunk's range, rather than each term looked up on its own (the
    /// install's main cost in a small publish, BENCHMARKS "Small changes to
    /// a large shard"); terms out of order are looked up one by one.
    fn take(&mut self, terms: &[Vec<u8>], freqs: &[u32]) -> Result<(), CorpusError> {
        let dictionary = self.inverted.terms();
        let (Some(first), Some(last)) = (terms.first(), terms.last()) else {
            return Ok(());
        };
        if !terms.windows(2).all(|w| w[0] < w[1]) {
            for (term, &freq) in terms.iter().zip(freqs) {
                if let Some(ord) = dictionary.term_ord(term)? {
                    self.by_ordinal[ord as usize] = freq;
                }
            }
            return Ok(());
        }
        let mut held = dictionary.range().ge(first).le(last).into_stream()?;
        let mut next = 0;
        while held.advance() {
            let key = held.key();
            while next < terms.len() && terms[next].as_slice() < key {
                next += 1;
            }
            if next == terms.len() {
                break;
            }
            if terms[next].as_slice() == key {
                self.by_ordinal[held.term_ord() as usize] = freqs[next];
                next += 1;
            }
        }
        Ok(())
    }
}

impl CorpusStore {
    /// Starts installing the candidate from the first chunk (version and
    /// corpus totals; it may carry terms too).
    pub fn begin_install(&self, first: &InstallChunk) -> Result<GlobalStats, CorpusError> {
        let candidate = self.candidate.as_ref().ok_or_else(|| {
            CorpusError::Precondition(format!(
                "shard {} has no candidate of version {} prepared",
                self.build.shard, first.version
            ))
        })?;
        if candidate.version != first.version {
            return Err(CorpusError::Precondition(format!(
                "shard {} prepared version {}, not {}",
                self.build.shard, candidate.version, first.version
            )));
        }
        self.check_disk(0, &format!("installing version {}", first.version))?;
        // The corpus holds this shard: totals below the shard's own are
        // no corpus's (and a count of 0 documents would leave every
        // field's mean length undefined).
        if first.num_docs < candidate.local.num_docs {
            return Err(CorpusError::Invalid(format!(
                "the statistics of version {} count {} documents, fewer than shard {}'s own {}",
                first.version, first.num_docs, self.build.shard, candidate.local.num_docs
            )));
        }
        for (field, &own) in &candidate.local.num_tokens {
            let total = first.num_tokens.get(field).copied().unwrap_or(0);
            if total < own {
                return Err(CorpusError::Invalid(format!(
                    "the statistics of version {} count {total} tokens in field {field}, fewer \
                     than shard {}'s own {own}",
                    first.version, self.build.shard
                )));
            }
        }
        let index = Index::open_in_dir(&candidate.dir)?;
        let searcher = index.reader()?.searcher();
        let segments = searcher.segment_readers();
        let mut fields = HashMap::new();
        for (field, entry) in index.schema().fields() {
            if !entry.is_indexed() {
                continue;
            }
            // Id terms are not exchanged: each is one document's.
            let known = if entry.name() == schema::ID {
                UNIQUE_ID_FREQ
            } else {
                UNSEEN
            };
            let segments = segments
                .iter()
                .map(|segment| {
                    let inverted = segment.inverted_index(field)?;
                    let by_ordinal = vec![known; inverted.terms().num_terms()];
                    Ok(SegmentTerms {
                        inverted,
                        by_ordinal,
                    })
                })
                .collect::<tantivy::Result<Vec<_>>>()?;
            fields.insert(entry.name().to_string(), FieldStats { field, segments });
        }
        let mut stats = GlobalStats {
            version: first.version,
            corpus: CorpusTotals {
                num_docs: first.num_docs,
                num_tokens: first.num_tokens.clone().into_iter().collect(),
            },
            segment_ids: segments
                .iter()
                .map(|s| s.segment_id().uuid_string())
                .collect(),
            fields,
        };
        stats.absorb(&first.terms)?;
        Ok(stats)
    }

    /// Completes the install once every chunk is in: checks every term of
    /// the candidate got its frequency, writes the scoring files, moves the
    /// candidate into place and opens it.
    pub fn finish_install(&mut self, stats: GlobalStats) -> Result<(), CorpusError> {
        let candidate = match self.candidate.take() {
            Some(c) if c.version == stats.version => c,
            other => {
                self.candidate = other;
                return Err(CorpusError::Precondition(format!(
                    "shard {} has no candidate of version {} prepared",
                    self.build.shard, stats.version
                )));
            }
        };
        let deleted = match DeletedTerms::read(&candidate.dir) {
            Ok(deleted) => deleted,
            Err(e) => {
                self.candidate = Some(candidate);
                return Err(e.into());
            }
        };
        let mut tables = vec![DocFreqs::default(); stats.segment_ids.len()];
        for (name, FieldStats { field, segments }) in stats.fields {
            for (number, (mut segment, table)) in segments.into_iter().zip(&mut tables).enumerate()
            {
                let gone = deleted.field(&stats.segment_ids[number], &name);
                if let Err(missing) = only_deleted_unseen(&mut segment, gone) {
                    self.candidate = Some(candidate);
                    return Err(CorpusError::Invalid(format!(
                        "the corpus statistics of version {} lack term #{missing} of field \
                         {name} of segment {number} of shard {}",
                        stats.version, self.build.shard
                    )));
                }
                table.insert(field, segment.by_ordinal);
            }
        }
        let doc_freqs =
            ShardDocFreqs::BySegment(stats.segment_ids.into_iter().zip(tables).collect());
        // Every shard of a published version names it alike, so that an
        // answer's `snapshot` lists one name: the version and a digest of
        // the corpus totals all shards were given.
        let input_checksum = candidate
            .from_build
            .clone()
            .unwrap_or_else(|| snapshot_name(stats.version, &stats.corpus));
        let meta = ShardMeta {
            shard: self.build.shard,
            num_shards: self.build.num_shards,
            num_docs: candidate.local.num_docs,
            corpus: stats.corpus,
            input_checksum,
            version: stats.version,
        };
        // Never write through a link into a build's files.
        for name in [DOC_FREQS_FILE, SHARD_META_FILE] {
            let _ = std::fs::remove_file(candidate.dir.join(name));
        }
        write_scoring_files(&candidate.dir, &meta, &doc_freqs)?;
        fsio::sync_dir(&candidate.dir)?;
        let dir = self.version_dir(stats.version);
        fsio::remove_dir_if_exists(&dir)?;
        std::fs::rename(&candidate.dir, &dir)?;
        fsio::sync_dir(&self.versions_root())?;
        self.hold(stats.version, dir)
    }
}

/// Sets to 0 each term of `segment` no chunk carried whose documents there
/// are all deleted (`gone` counts them): the replica whose terms were
/// summed may have merged or dropped the segment that holds them, and a
/// term in no live document has no frequency to carry. Any other term left
/// unseen is the statistics' fault: its ordinal is the error.
fn only_deleted_unseen(
    segment: &mut SegmentTerms,
    gone: Option<&FieldDeleted>,
) -> Result<(), usize> {
    let terms = segment.inverted.terms();
    let mut bytes = Vec::new();
    for (ord, freq) in segment.by_ordinal.iter_mut().enumerate() {
        if *freq != UNSEEN {
            continue;
        }
        let deleted_only = gone.is_some_and(|gone| {
            bytes.clear();
            if !terms.ord_to_term(ord as u64, &mut bytes).unwrap_or(false) {
                return false;
            }
            let held = terms
                .get(&bytes)
                .ok()
                .flatten()
                .map_or(0, |info| info.doc_freq);
            gone.get(&bytes).copied().unwrap_or(0) >= held
        });
        if !deleted_only {
            return Err(ord);
        }
        *freq = 0;
    }
    Ok(())
}

/// The snapshot name of a version published from loaded documents:
/// `v{version}-{digest of the corpus totals}`, the same on every shard.
pub fn snapshot_name(version: u64, corpus: &CorpusTotals) -> String {
    let totals = super::local::LocalTotals {
        num_docs: corpus.num_docs,
        num_tokens: corpus.num_tokens.clone(),
        id_hash_sum: version,
        content_hash_sum: 0,
    };
    format!("v{version}-{}", totals.digest())
}

#[cfg(test)]
mod tests {
    use tantivy::{IndexWriter, doc};

    use super::*;

    /// A segment's `body` terms, none seen yet.
    fn segment_terms() -> SegmentTerms {
        let (schema, fields) = schema::build();
        let index = Index::create_in_ram(schema);
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 20 << 20).unwrap();
        writer
            .add_document(doc!(fields.id => "1", fields.body => "bb dd ff"))
            .unwrap();
        writer.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        let inverted = searcher.segment_readers()[0]
            .inverted_index(fields.body)
            .unwrap();
        let by_ordinal = vec![UNSEEN; inverted.terms().num_terms()];
        SegmentTerms {
            inverted,
            by_ordinal,
        }
    }

    #[test]
    fn terms_in_order_and_out_of_order_give_the_same_table() {
        let terms = |words: &[&str]| {
            words
                .iter()
                .map(|w| w.as_bytes().to_vec())
                .collect::<Vec<_>>()
        };
        let mut walked = segment_terms();
        walked
            .take(&terms(&["aa", "bb", "cc", "dd"]), &[1, 2, 3, 4])
            .unwrap();
        walked
            .take(&terms(&["ee", "ff", "gg"]), &[5, 6, 7])
            .unwrap();
        assert_eq!(walked.by_ordinal, vec![2, 4, 6]);
        let mut looked_up = segment_terms();
        looked_up
            .take(&terms(&["ff", "bb", "zz", "dd"]), &[6, 2, 9, 4])
            .unwrap();
        assert_eq!(looked_up.by_ordinal, walked.by_ordinal);
        let mut partial = segment_terms();
        partial.take(&terms(&["dd"]), &[4]).unwrap();
        assert_eq!(partial.by_ordinal, vec![UNSEEN, 4, UNSEEN]);
    }
}
