//! A shard on disk: a single-segment tantivy index plus the files that make it
//! score as part of the whole corpus.
//!
//! ```text
//! shard-000/
//!   meta.json, *.idx, *.pos, ...   tantivy's own files (one segment for a
//!                                  build; a published version may keep more)
//!   shard.json                     ShardMeta: which shard, corpus-wide totals
//!   doc_freqs.bin                  corpus-wide document frequency per term
//! ```
//!
//! This module reads a shard; [`write`] writes one. Both halves of the
//! format live here so that it has one owner.

pub mod check;
pub mod in_use;
pub mod manifest;
pub mod write;

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tantivy::{Index, IndexReader, ReloadPolicy};

use crate::schema::{self, Fields};
use crate::stats::{CorpusStatistics, CorpusTotals, DOC_FREQS_FILE, ShardDocFreqs};

pub use write::{ShardDocument, ShardWriter, WrittenShard, write_scoring, write_scoring_files};

/// File name of a shard's metadata inside its directory.
pub const SHARD_META_FILE: &str = "shard.json";

/// What a shard directory says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// This shard's number, `0..num_shards`.
    pub shard: u32,
    /// How many shards the corpus was split into.
    pub num_shards: u32,
    /// Documents in this shard.
    pub num_docs: u64,
    /// Whole-corpus totals used for scoring.
    pub corpus: CorpusTotals,
    /// Checksum of the corpus input the shard was built from, to tell shards
    /// of different builds apart.
    pub input_checksum: String,
    /// The snapshot version this shard directory holds: 1 for a build,
    /// higher for versions a running tree published since (see
    /// `corpus.proto`). Shards written before versions existed read as 1.
    #[serde(default = "first_version")]
    pub version: u64,
}

/// The version of a freshly built corpus.
pub const FIRST_VERSION: u64 = 1;

fn first_version() -> u64 {
    FIRST_VERSION
}

/// Why a shard could not be opened or written.
///
/// Each message names the path and includes the underlying error, so the
/// underlying error is a field, not a `source`: an error chain printed whole
/// (`Caused by:`) would otherwise say it twice.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// A file of the shard could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// `shard.json` is not valid.
    #[error("{path}: {error}")]
    Meta {
        /// The file.
        path: PathBuf,
        /// The error.
        error: serde_json::Error,
    },
    /// tantivy refused the index, or failed to write it.
    #[error("{path}: {error}")]
    Index {
        /// The shard directory.
        path: PathBuf,
        /// The error.
        error: tantivy::TantivyError,
    },
}

/// An opened shard, ready to search.
pub struct Shard {
    /// The shard's metadata.
    pub meta: ShardMeta,
    /// The tantivy index.
    pub index: Index,
    /// A reader over the (immutable) index.
    pub reader: IndexReader,
    /// The schema's fields.
    pub fields: Fields,
    /// Corpus-wide BM25 statistics for this shard.
    pub stats: CorpusStatistics,
    /// The directory it was opened from (a replica catching up copies it).
    pub dir: PathBuf,
}

impl Shard {
    /// Opens the shard in `dir`, checking that its parts belong together.
    pub fn open(dir: &Path) -> Result<Shard, ShardError> {
        let index_err = |error| ShardError::Index {
            path: dir.to_path_buf(),
            error,
        };
        let meta = read_meta(dir)?;
        let doc_freqs_path = dir.join(DOC_FREQS_FILE);
        let doc_freqs = File::open(&doc_freqs_path)
            .and_then(|f| ShardDocFreqs::read_from(BufReader::new(f)))
            .map_err(|error| ShardError::Io {
                path: doc_freqs_path,
                error,
            })?;
        let index = Index::open_in_dir(dir).map_err(index_err)?;
        let fields = schema::fields_of(&index.schema()).map_err(index_err)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(index_err)?;
        let stats = CorpusStatistics::new(&reader.searcher(), meta.corpus.clone(), doc_freqs)
            .map_err(index_err)?;
        Ok(Shard {
            meta,
            index,
            reader,
            fields,
            stats,
            dir: dir.to_path_buf(),
        })
    }
}

/// Reads `shard.json` from a shard directory.
pub fn read_meta(dir: &Path) -> Result<ShardMeta, ShardError> {
    let path = dir.join(SHARD_META_FILE);
    let file = File::open(&path).map_err(|error| ShardError::Io {
        path: path.clone(),
        error,
    })?;
    serde_json::from_reader(BufReader::new(file)).map_err(|error| ShardError::Meta { path, error })
}
