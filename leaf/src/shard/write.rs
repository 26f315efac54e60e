//! Writing shard directories: the other half of the format [`super`] reads.
//!
//! A shard is written in three steps: [`ShardWriter::create`] makes the
//! directory and an empty index with the shard schema, documents are added,
//! and [`ShardWriter::finish`] commits them and merges them into the single
//! segment the statistics are indexed by. Once every shard of a corpus is
//! finished, [`write_scoring`] computes the corpus-wide statistics over all
//! of them and writes each shard's `doc_freqs.bin` and `shard.json`.
//!
//! The writer lives in the leaf crate, beside the reader, schema and
//! statistics, rather than in the CLI that calls it: the format then has one
//! owner, and a later stage makes leaves write shards themselves (a live
//! corpus). What a build does around it — reading the corpus, assigning
//! documents to shards, staging the output, the manifest — stays in the CLI.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tantivy::indexer::NoMergePolicy;
use tantivy::{Index, IndexWriter, doc};

use super::{SHARD_META_FILE, ShardError, ShardMeta};
use crate::schema::{self, Fields};
use crate::stats::{self, CorpusTotals, DOC_FREQS_FILE, ShardDocFreqs};

/// tantivy's floor of indexing memory per thread: a writer is never given
/// less, whatever the caller's budget.
pub const MIN_MEMORY_PER_THREAD: usize = 16 << 20;

/// One document as a shard stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardDocument {
    /// Unique id within the corpus.
    pub id: String,
    /// Title, possibly empty.
    pub title: String,
    /// Body text.
    pub body: String,
}

/// A shard being written: documents go in, [`ShardWriter::finish`] makes
/// it one segment.
pub struct ShardWriter {
    dir: PathBuf,
    index: Index,
    writer: IndexWriter,
    fields: Fields,
    num_docs: u64,
}

impl ShardWriter {
    /// Creates `dir` (and its parents) with an empty index in the shard
    /// schema, written by `threads` threads sharing `memory` bytes (raised to
    /// [`MIN_MEMORY_PER_THREAD`] per thread). Segments are not merged while
    /// documents are added; [`ShardWriter::finish`] merges them once.
    pub fn create(dir: &Path, threads: usize, memory: usize) -> Result<ShardWriter, ShardError> {
        let index_err = |error| ShardError::Index {
            path: dir.to_path_buf(),
            error,
        };
        std::fs::create_dir_all(dir).map_err(|error| ShardError::Io {
            path: dir.to_path_buf(),
            error,
        })?;
        let (schema, fields) = schema::build();
        let index = Index::create_in_dir(dir, schema).map_err(index_err)?;
        let threads = threads.max(1);
        let memory = (memory / threads).max(MIN_MEMORY_PER_THREAD) * threads;
        let writer: IndexWriter = index
            .writer_with_num_threads(threads, memory)
            .map_err(index_err)?;
        writer.set_merge_policy(Box::new(NoMergePolicy));
        Ok(ShardWriter {
            dir: dir.to_path_buf(),
            index,
            writer,
            fields,
            num_docs: 0,
        })
    }

    /// Adds one document.
    pub fn add(&mut self, document: ShardDocument) -> Result<(), ShardError> {
        let ShardDocument { id, title, body } = document;
        let fields = &self.fields;
        self.writer
            .add_document(doc!(fields.id => id, fields.title => title, fields.body => body))
            .map_err(|error| ShardError::Index {
                path: self.dir.clone(),
                error,
            })?;
        self.num_docs += 1;
        Ok(())
    }

    /// Documents added so far.
    pub fn num_docs(&self) -> u64 {
        self.num_docs
    }

    /// Commits the documents and merges them into one segment, which the
    /// statistics file is indexed by; waits until the merge is done and the
    /// files it replaced are gone.
    pub fn finish(self) -> Result<WrittenShard, ShardError> {
        let ShardWriter {
            dir,
            index,
            mut writer,
            num_docs,
            ..
        } = self;
        let result = (|| {
            writer.commit()?;
            let segments = index.searchable_segment_ids()?;
            if segments.len() > 1 {
                writer.merge(&segments).wait()?;
            }
            writer.garbage_collect_files().wait()?;
            writer.wait_merging_threads()
        })();
        match result {
            Ok(()) => Ok(WrittenShard {
                dir,
                index,
                num_docs,
            }),
            Err(error) => Err(ShardError::Index { path: dir, error }),
        }
    }
}

/// A shard whose documents are written, one segment, still without the
/// scoring files only the whole corpus can give it.
pub struct WrittenShard {
    dir: PathBuf,
    index: Index,
    num_docs: u64,
}

impl WrittenShard {
    /// The shard's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Documents in the shard.
    pub fn num_docs(&self) -> u64 {
        self.num_docs
    }
}

/// Computes the corpus-wide statistics over `shards` — every shard of one
/// corpus, shard `i` at position `i` — and writes each one's scoring files,
/// marked with the corpus input's checksum. Returns the corpus totals.
pub fn write_scoring(
    shards: &[WrittenShard],
    input_checksum: &str,
) -> Result<CorpusTotals, ShardError> {
    let searchers = shards
        .iter()
        .map(|shard| {
            shard
                .index
                .reader()
                .map(|reader| reader.searcher())
                .map_err(|error| ShardError::Index {
                    path: shard.dir.clone(),
                    error,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (corpus, doc_freqs) = stats::compute(&searchers).map_err(|error| ShardError::Index {
        path: shards
            .first()
            .and_then(|s| s.dir.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        error,
    })?;
    for (number, (shard, table)) in shards.iter().zip(doc_freqs).enumerate() {
        let meta = ShardMeta {
            shard: number as u32,
            num_shards: shards.len() as u32,
            num_docs: shard.num_docs,
            corpus: corpus.clone(),
            input_checksum: input_checksum.to_string(),
            version: super::FIRST_VERSION,
        };
        write_scoring_files(&shard.dir, &meta, &ShardDocFreqs::OneSegment(table)).map_err(
            |error| ShardError::Io {
                path: shard.dir.clone(),
                error,
            },
        )?;
    }
    Ok(corpus)
}

/// Writes a shard's metadata and statistics into its directory.
pub fn write_scoring_files(
    dir: &Path,
    meta: &ShardMeta,
    doc_freqs: &ShardDocFreqs,
) -> std::io::Result<()> {
    let mut out = BufWriter::new(File::create(dir.join(DOC_FREQS_FILE))?);
    doc_freqs.write_to(&mut out)?;
    out.into_inner()?.sync_all()?;
    let mut out = BufWriter::new(File::create(dir.join(SHARD_META_FILE))?);
    serde_json::to_writer_pretty(&mut out, meta)?;
    out.write_all(b"\n")?;
    out.into_inner()?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::Shard;

    fn document(id: &str, body: &str) -> ShardDocument {
        ShardDocument {
            id: id.into(),
            title: String::new(),
            body: body.into(),
        }
    }

    #[test]
    fn written_shards_open_with_corpus_wide_totals() {
        let dir = std::env::temp_dir().join(format!("st-shard-write-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut writers: Vec<ShardWriter> = (0..2)
            .map(|s| ShardWriter::create(&dir.join(format!("shard-{s}")), 1, 0).unwrap())
            .collect();
        writers[0].add(document("a", "paris in spring")).unwrap();
        writers[0].add(document("b", "rome")).unwrap();
        writers[1].add(document("c", "paris")).unwrap();
        let shards: Vec<WrittenShard> = writers.into_iter().map(|w| w.finish().unwrap()).collect();
        assert_eq!(shards[0].num_docs(), 2);
        let corpus = write_scoring(&shards, "sum").unwrap();
        assert_eq!(corpus.num_docs, 3);

        for (number, shard) in shards.iter().enumerate() {
            let opened = Shard::open(shard.dir()).unwrap();
            assert_eq!(opened.meta.shard, number as u32);
            assert_eq!(opened.meta.num_shards, 2);
            assert_eq!(opened.meta.num_docs, shard.num_docs());
            assert_eq!(opened.meta.corpus, corpus);
            assert_eq!(opened.meta.input_checksum, "sum");
            assert_eq!(opened.reader.searcher().segment_readers().len(), 1);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
