//! `manifest.json`: what a build produced and from what.

use std::path::Path;

use searchtree_leaf::stats::CorpusTotals;
use serde::{Deserialize, Serialize};

/// File name of the manifest in a build's output directory.
pub const MANIFEST_FILE: &str = "manifest.json";

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
}

/// The directory name of shard `n` inside a build's `shards/` directory.
pub fn shard_dir_name(n: u32) -> String {
    format!("shard-{n:03}")
}
