//! `manifest.json`: what a build produced and from what. It lives beside
//! the shard format because a leaf checks a build against it before it
//! serves the build (a hot swap), as `searchtree verify` does.

use std::path::Path;

use searchtree_proto::sharding::SHARDING_FUNCTION;
use serde::{Deserialize, Serialize};

use crate::stats::CorpusTotals;

/// File name of the manifest in a build's output directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The layout version this tool writes, and the only one it recognises as
/// its own when deciding whether a directory may be replaced by a rebuild.
pub const MANIFEST_FORMAT: u32 = 1;

/// Everything a build knows about its output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Version of this layout.
    pub format: u32,
    /// When the build finished, seconds since the Unix epoch.
    pub created_unix: u64,
    /// The corpus the shards were built from.
    pub input: InputInfo,
    /// How documents were assigned to shards.
    pub sharding: String,
    /// How many shards.
    pub num_shards: u32,
    /// One entry per shard, in shard order.
    pub shards: Vec<ShardEntry>,
    /// Whole-corpus totals every shard scores with.
    pub corpus: CorpusTotals,
    /// The tantivy schema of every shard.
    pub schema: serde_json::Value,
}

/// The build's input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputInfo {
    /// Path as given.
    pub path: String,
    /// Checksum of the raw input bytes.
    pub checksum: String,
    /// Size of the input file in bytes.
    pub bytes: u64,
    /// Lines read (including blank and skipped ones).
    pub lines: u64,
    /// Documents indexed.
    pub documents: u64,
    /// Invalid lines skipped with `--skip-invalid`.
    pub skipped: u64,
    /// The JSON keys read for id, title and body.
    pub fields: [String; 3],
}

/// One shard of a build.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardEntry {
    /// Shard number.
    pub shard: u32,
    /// Its directory, relative to the output directory.
    pub dir: String,
    /// Documents in it.
    pub num_docs: u64,
}

impl Manifest {
    /// Reads `manifest.json` from a build's output directory.
    pub fn read(dir: &Path) -> anyhow::Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Says why this manifest is not one a build of this tool writes, if it
    /// is not. A build replaces its output directory only when that holds
    /// such a manifest, so a directory that merely has a file of that name
    /// is never taken for a previous build.
    pub fn check_ours(&self) -> Result<(), String> {
        if self.format != MANIFEST_FORMAT {
            return Err(format!(
                "format {} is not {MANIFEST_FORMAT}, the one this tool writes",
                self.format
            ));
        }
        if self.sharding != SHARDING_FUNCTION {
            return Err(format!("unknown sharding {:?}", self.sharding));
        }
        if self.num_shards == 0 || self.shards.len() != self.num_shards as usize {
            return Err(format!(
                "{} shard entries for num_shards {}",
                self.shards.len(),
                self.num_shards
            ));
        }
        for (n, entry) in self.shards.iter().enumerate() {
            let expected = format!("shards/{}", shard_dir_name(n as u32));
            if entry.shard != n as u32 || entry.dir != expected {
                return Err(format!(
                    "shard entry {n} is shard {} in {:?}, not shard {n} in {expected:?}",
                    entry.shard, entry.dir
                ));
            }
        }
        Ok(())
    }
}

/// The directory name of shard `n` inside a build's `shards/` directory.
pub fn shard_dir_name(n: u32) -> String {
    format!("shard-{n:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(num_shards: u32) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            created_unix: 0,
            input: InputInfo {
                path: "c.jsonl".into(),
                checksum: "crc32:00000000".into(),
                bytes: 0,
                lines: 0,
                documents: 0,
                skipped: 0,
                fields: ["id".into(), "title".into(), "body".into()],
            },
            sharding: SHARDING_FUNCTION.into(),
            num_shards,
            shards: (0..num_shards)
                .map(|n| ShardEntry {
                    shard: n,
                    dir: format!("shards/{}", shard_dir_name(n)),
                    num_docs: 1,
                })
                .collect(),
            corpus: CorpusTotals::default(),
            schema: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_manifest_this_tool_writes_is_recognised_and_others_are_not() {
        assert_eq!(manifest(3).check_ours(), Ok(()));
        let mut other = manifest(3);
        other.format = 2;
        assert!(other.check_ours().unwrap_err().contains("format 2"));
        let mut other = manifest(3);
        other.sharding = "modulo".into();
        assert!(other.check_ours().unwrap_err().contains("sharding"));
        let mut other = manifest(3);
        other.num_shards = 4;
        assert!(other.check_ours().unwrap_err().contains("3 shard entries"));
        assert!(manifest(0).check_ours().is_err());
        let mut other = manifest(3);
        other.shards[1].dir = "../elsewhere".into();
        assert!(other.check_ours().unwrap_err().contains("shard entry 1"));
    }
}
