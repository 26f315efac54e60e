//! Command-line configuration of a leaf node.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use searchtree_node::ops::OpsArgs;
use searchtree_node::query_args::QueryLimitArgs;
use searchtree_node::serving::ConnectionArgs;
use searchtree_proto::BudgetPolicy;

use crate::fault::FaultConfig;
use crate::node::LeafTiming;

/// Serve one shard of a searchtree corpus over gRPC.
#[derive(Debug, Parser)]
#[command(name = "searchtree-leaf", version)]
pub struct LeafConfig {
    /// Shard directory written by `searchtree build` (e.g. OUT/shards/shard-000).
    #[arg(long)]
    pub index: PathBuf,
    /// The shard the index must hold (checked at start; what the leaf
    /// registers in etcd is always the shard its index holds).
    #[arg(long)]
    pub shard: Option<u32>,
    /// The leaf's mutable state: loaded documents and the versions
    /// published since the build (see `corpus.proto`). Without it the leaf
    /// serves its build read-only and refuses to load or publish.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Free space kept on the data directory's file system: a load's
    /// batch, a publish's prepare or install, or a copy from a sibling
    /// that would leave less is refused with RESOURCE_EXHAUSTED before it
    /// writes (searches go on). A size (`512MiB`, `1GiB`) or a percentage
    /// of the file system (`5%`); `0` refuses only what does not fit.
    #[arg(long, default_value = crate::corpus::disk::DEFAULT_MIN_FREE)]
    pub min_free_disk: crate::corpus::disk::MinFree,
    /// Address to listen on; port 0 picks a free port, printed as
    /// `LISTENING HOST:PORT` on stdout.
    #[arg(long, default_value = "127.0.0.1:0", value_parser = searchtree_node::serving::listen_address)]
    pub listen: String,
    /// How many connections it holds, and when it closes an idle one.
    #[command(flatten)]
    pub connections: ConnectionArgs,
    /// Metrics, TLS, admin calls, tracing and drain.
    #[command(flatten)]
    pub ops: OpsArgs,
    /// Searches run at once; further requests queue until their deadline.
    /// Defaults to the number of CPUs.
    #[arg(long, value_parser = at_least_one)]
    pub max_concurrent_searches: Option<usize>,
    /// Requests that may wait for a search slot; more are refused at once
    /// with RESOURCE_EXHAUSTED, so the queue stays bounded under any load.
    /// Defaults to 64 per search slot.
    #[arg(long)]
    pub max_queued_searches: Option<usize>,
    /// Budget of a request that names none (no budget_ms, no gRPC deadline).
    #[arg(long, default_value_t = 100)]
    pub default_budget_ms: u64,
    /// The longest budget granted to any request.
    #[arg(long, default_value_t = 30_000)]
    pub max_budget_ms: u64,
    /// Collection stops this long before the deadline, leaving time to fetch
    /// titles and snippets and send the answer.
    #[arg(long, default_value_t = 1)]
    pub reserve_ms: u64,
    /// Testing: delay chosen requests by this many milliseconds.
    #[arg(long, default_value_t = 0)]
    pub inject_delay_ms: u64,
    /// Testing: probability (0–1) that a request is delayed.
    #[arg(long, default_value_t = 0.0)]
    pub inject_delay_prob: f64,
    /// Testing: probability (0–1) that a request fails with UNAVAILABLE.
    #[arg(long, default_value_t = 0.0)]
    pub inject_error_prob: f64,
    /// Testing: seed of the fault draws (default: from the clock).
    #[arg(long)]
    pub inject_seed: Option<u64>,
    /// Testing: abort the whole process on a query containing this string,
    /// as a query of death would (to test canaries and restarts).
    #[arg(long)]
    pub inject_crash_on: Option<String>,
    /// Shards with fewer documents are scored exhaustively rather than with
    /// block-max pruning, which costs more than it saves on short posting
    /// lists (0 prunes every shard).
    #[arg(long, default_value_t = crate::searcher::MIN_PRUNED_DOCS)]
    pub min_pruned_docs: u64,
    /// Searches and fetches whose estimated work (postings and tokens, see
    /// the README) is at most this run on the thread that received them
    /// rather than on the blocking pool, saving two context switches each;
    /// longer ones go to the pool, so that the thread's other requests do
    /// not wait behind them (0 sends every search and fetch to the pool).
    #[arg(long, default_value_t = crate::cost::DEFAULT_INLINE_SEARCH_COST)]
    pub inline_search_cost: u64,
    /// How complex a query may be.
    #[command(flatten)]
    pub query_limits: QueryLimitArgs,
}

/// A count that must not be 0: a leaf with no search slot would queue every
/// request until its deadline.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

impl LeafConfig {
    /// The effective search concurrency.
    pub fn concurrency(&self) -> usize {
        self.max_concurrent_searches.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
        })
    }

    /// The effective bound on requests waiting for a search slot.
    pub fn max_queued(&self) -> usize {
        self.max_queued_searches
            .unwrap_or_else(|| self.concurrency().max(1) * crate::node::DEFAULT_QUEUED_PER_SLOT)
    }

    /// The leaf's deadline handling.
    pub fn timing(&self) -> LeafTiming {
        LeafTiming {
            policy: BudgetPolicy {
                default: Duration::from_millis(self.default_budget_ms),
                max: Duration::from_millis(self.max_budget_ms),
            },
            reserve: Duration::from_millis(self.reserve_ms),
        }
    }

    /// The faults to inject, checked.
    pub fn faults(&self) -> Result<FaultConfig, String> {
        let config = FaultConfig {
            delay: Duration::from_millis(self.inject_delay_ms),
            delay_prob: self.inject_delay_prob,
            error_prob: self.inject_error_prob,
        };
        config.validate()?;
        Ok(config)
    }

    /// The seed for fault draws.
    pub fn seed(&self) -> u64 {
        self.inject_seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ u64::from(std::process::id())
        })
    }
}
