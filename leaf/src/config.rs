//! Command-line configuration of a leaf node.

use std::path::PathBuf;

use clap::Parser;

/// Serve one shard of a searchtree corpus over gRPC.
#[derive(Debug, Parser)]
#[command(name = "searchtree-leaf", version)]
pub struct LeafConfig {
    /// Shard directory written by `searchtree build` (e.g. OUT/shards/shard-000).
    #[arg(long)]
    pub index: PathBuf,
    /// Address to listen on; port 0 picks a free port, printed as
    /// `LISTENING HOST:PORT` on stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Searches run at once; further requests queue. Defaults to the number
    /// of CPUs.
    #[arg(long)]
    pub max_concurrent_searches: Option<usize>,
}

impl LeafConfig {
    /// The effective search concurrency.
    pub fn concurrency(&self) -> usize {
        self.max_concurrent_searches.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
        })
    }
}
