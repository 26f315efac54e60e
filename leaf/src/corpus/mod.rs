//! A leaf's side of a live corpus: the versions of its shard it holds on
//! disk and in memory, the staging area loaded documents wait in, and the
//! steps that turn them into a new version (prepare, install, activate) or
//! copy a version from a sibling replica.
//!
//! ```text
//! DATA/
//!   SHARD                   the shard and build it belongs to ([`owner`])
//!   LOCK                    held locked by the leaf using it
//!   CURRENT                 {"version": N}; absent: the --index build is current
//!   versions/vNNNNNNNN/      an installed version: a shard directory + local.json
//!                            (+ segment_totals.json, each segment's own totals;
//!                            deleted_terms.bin, the terms of documents its
//!                            segments keep deleted, [`deleted_terms`])
//!   versions/vNNNNNNNN.tmp/  a candidate being prepared or copied; never searched
//!   staging/                 loaded operations ([`staging`])
//! ```
//!
//! The `--index` build directory is never written to: version 1 is read from
//! it in place. [`store::CorpusStore`] owns the layout; [`service`] serves it
//! as `searchtree.v1.Corpus`, one operation at a time on the blocking pool,
//! while searches pick their version from [`held::HeldVersions`] without
//! waiting for it.

pub mod background;
pub mod copy;
pub mod deleted_terms;
pub mod disk;
pub mod fsio;
pub mod held;
pub mod install;
pub mod local;
pub mod owner;
pub mod prepare;
pub mod segments;
pub mod service;
pub mod staging;
pub mod store;
#[cfg(test)]
mod tests;

pub use held::HeldVersions;
pub use service::LeafCorpus;
pub use store::CorpusStore;

use crate::shard::ShardError;

/// Why a corpus operation failed on a leaf.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// The request does not fit the leaf's state (a version it does not
    /// hold, no candidate to install, a build of another shard):
    /// `FAILED_PRECONDITION`.
    #[error("{0}")]
    Precondition(String),
    /// The request is malformed: `INVALID_ARGUMENT`.
    #[error("{0}")]
    Invalid(String),
    /// A file could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// tantivy failed.
    #[error(transparent)]
    Index(#[from] tantivy::TantivyError),
    /// A shard directory could not be opened.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// A JSON file could not be written or read.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The step would leave less free disk than the leaf keeps
    /// ([`disk::DiskFloor`]): `RESOURCE_EXHAUSTED`.
    #[error("{0}")]
    DiskFull(String),
}

impl From<CorpusError> for tonic::Status {
    fn from(err: CorpusError) -> Self {
        match err {
            CorpusError::Precondition(msg) => tonic::Status::failed_precondition(msg),
            CorpusError::Invalid(msg) => tonic::Status::invalid_argument(msg),
            CorpusError::DiskFull(msg) => tonic::Status::resource_exhausted(msg),
            other => tonic::Status::internal(other.to_string()),
        }
    }
}
