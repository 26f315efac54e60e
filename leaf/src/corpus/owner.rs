//! Whose data directory this is: one leaf process at a time, and one shard
//! of one build for its whole life.
//!
//! A data directory's versions and staged operations are those of the
//! shard, and of the build, it was first opened over. Opened over another
//! shard (two leaves given the same `--data-dir`, a topology's entries
//! swapped) a leaf would serve that shard's documents as its own; opened
//! over another build of the corpus, it would serve versions derived from
//! documents that build no longer has. Both are refused at start, before
//! anything in the directory is touched, naming what the directory holds
//! and what to do.

use std::fs::File;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{CorpusError, fsio};
use crate::shard::ShardMeta;

/// The file naming the directory's shard and build.
pub const OWNER_FILE: &str = "SHARD";
/// The file a leaf holds locked while it uses the directory.
pub const LOCK_FILE: &str = "LOCK";

/// What [`OWNER_FILE`] records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Owner {
    shard: u32,
    num_shards: u32,
    input_checksum: String,
}

/// Takes the data directory `data` for this process: locks it (the lock
/// lasts as long as the returned file), then checks that it belongs to the
/// shard and build in `build_dir` (`build`), recording them if it is new.
pub fn claim(data: &Path, build_dir: &Path, build: &ShardMeta) -> Result<File, CorpusError> {
    std::fs::create_dir_all(data)?;
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data.join(LOCK_FILE))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(CorpusError::Precondition(format!(
                "{}: another leaf is using this data directory; give each leaf its own \
                 --data-dir (under `searchtree up`, each tree its own --state-dir)",
                data.display()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
    }
    let ours = Owner {
        shard: build.shard,
        num_shards: build.num_shards,
        input_checksum: build.input_checksum.clone(),
    };
    let path = data.join(OWNER_FILE);
    let recorded = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<Owner>(&bytes).map_err(|e| {
            CorpusError::Precondition(format!(
                "{} is not a leaf's owner record: {e}",
                path.display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fsio::write_atomic(&path, &serde_json::to_vec(&ours)?)?;
            return Ok(lock);
        }
        Err(e) => return Err(e.into()),
    };
    if (recorded.shard, recorded.num_shards) != (ours.shard, ours.num_shards) {
        return Err(CorpusError::Precondition(format!(
            "--data-dir {} holds shard {} of {} (its versions and staged operations), but \
             --index {} is shard {} of {}: give each leaf its own data directory",
            data.display(),
            recorded.shard,
            recorded.num_shards,
            build_dir.display(),
            ours.shard,
            ours.num_shards
        )));
    }
    if recorded.input_checksum != ours.input_checksum {
        return Err(CorpusError::Precondition(format!(
            "--data-dir {} was made over another build of the corpus (input checksum {}), \
             but --index {} is a different build ({}): its versions are not this build's. \
             Point --index at the build it was made over, or start over from this build \
             with a new (or emptied) data directory; to switch a running tree to a new \
             build, use `searchtree publish --from-build`",
            data.display(),
            recorded.input_checksum,
            build_dir.display(),
            ours.input_checksum
        )));
    }
    Ok(lock)
}
