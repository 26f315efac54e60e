//! A build's shard that a leaf serves is not replaced under it. A leaf
//! holds a shared lock on its shard's directory for as long as it runs;
//! `searchtree build --out` over a previous build takes each shard's
//! directory exclusively before it swaps the new build in, and refuses if a
//! leaf holds one. Without it a rebuild deleted the files a running tree
//! read, and every leaf restarted afterwards refused its data directory,
//! which was made over the build that was gone.

use std::fs::{File, TryLockError};
use std::path::Path;

/// Held by a leaf while it serves the shard in `shard_dir`: a shared lock
/// on the directory, for as long as the returned file lives. A path that
/// is not a shard's directory is refused first, saying what to give.
pub fn hold(shard_dir: &Path) -> anyhow::Result<File> {
    if !shard_dir.exists() {
        anyhow::bail!(
            "--index {} does not exist: give a shard's directory of a build \
             (BUILD/shards/shard-NNN)",
            shard_dir.display()
        );
    }
    if shard_dir.join(super::manifest::MANIFEST_FILE).exists() {
        anyhow::bail!(
            "--index {} is a whole build: give one of its shards' directories, {}",
            shard_dir.display(),
            shard_dir.join("shards/shard-NNN").display()
        );
    }
    let dir = File::open(shard_dir).map_err(|e| anyhow::anyhow!("{}: {e}", shard_dir.display()))?;
    match dir.try_lock_shared() {
        Ok(()) => Ok(dir),
        Err(TryLockError::WouldBlock) => anyhow::bail!(
            "{} is being replaced by a `searchtree build` right now; start the leaf once it \
             has finished",
            shard_dir.display()
        ),
        Err(TryLockError::Error(e)) => Err(anyhow::anyhow!("{}: {e}", shard_dir.display())),
    }
}

/// Takes every shard directory of the build in `build_dir` exclusively,
/// for as long as the returned files live; refuses, naming the first, if a
/// running leaf serves one.
pub fn take_all(build_dir: &Path) -> anyhow::Result<Vec<File>> {
    let shards = build_dir.join("shards");
    let Ok(entries) = std::fs::read_dir(&shards) else {
        return Ok(Vec::new());
    };
    let mut held = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let dir = File::open(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        match dir.try_lock() {
            Ok(()) => held.push(dir),
            Err(TryLockError::WouldBlock) => anyhow::bail!(
                "a running leaf serves {}: rebuilding {} in place would delete the files it \
                 reads, and it could not restart over the new build. Stop that tree first, or \
                 build into another directory and switch the running tree to it with \
                 `searchtree publish --root HOST:PORT --from-build DIR`",
                path.display(),
                build_dir.display()
            ),
            Err(TryLockError::Error(e)) => {
                anyhow::bail!("{}: {e}", path.display())
            }
        }
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_served_shard_is_not_taken_and_a_free_one_is() {
        let tmp = tempfile::tempdir().unwrap();
        let shard = tmp.path().join("shards/shard-000");
        std::fs::create_dir_all(&shard).unwrap();
        std::fs::create_dir_all(tmp.path().join("shards/shard-001")).unwrap();
        let served = hold(&shard).unwrap();
        let err = hold(&tmp.path().join("nowhere")).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        std::fs::write(tmp.path().join("manifest.json"), "{}").unwrap();
        let err = hold(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("is a whole build"), "{err}");
        let err = take_all(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("a running leaf serves") && err.contains("shard-000"),
            "{err}"
        );
        drop(served);
        let taken = take_all(tmp.path()).unwrap();
        assert_eq!(taken.len(), 2);
        // While a build holds them, a leaf does not start on one.
        let err = hold(&shard).unwrap_err().to_string();
        assert!(err.contains("being replaced"), "{err}");
    }
}
