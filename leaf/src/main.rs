//! `searchtree-leaf`: serves one shard over gRPC.

use clap::Parser;
use searchtree_leaf::config::LeafConfig;
use searchtree_leaf::fault::Faults;
use searchtree_leaf::{LeafService, Shard, ShardSearcher};
use searchtree_node::serving;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    serving::init_tracing();
    let config = LeafConfig::parse();
    let faults = config.faults().map_err(anyhow::Error::msg)?;
    let shard = Shard::open(&config.index)?;
    tracing::info!(
        shard = shard.meta.shard,
        docs = shard.meta.num_docs,
        index = %config.index.display(),
        "shard opened"
    );
    if faults.is_active() {
        tracing::warn!(?faults, "fault injection is on");
    }
    let listener = serving::bind(&config.listen).await?;
    let mut searcher = ShardSearcher::new(shard);
    searcher.set_name(listener.local_addr()?.to_string());
    searcher.set_min_pruned_docs(config.min_pruned_docs);
    let service = LeafService::new(
        searcher,
        config.concurrency(),
        config.timing(),
        Faults::new(faults, config.seed()),
    )
    .with_max_queued(config.max_queued())
    .with_query_limits(config.query_limits.limits().map_err(anyhow::Error::msg)?)
    .with_crash_on(config.inject_crash_on.clone());
    if let Some(term) = &config.inject_crash_on {
        tracing::warn!(%term, "fault injection: this leaf aborts on queries containing the term");
    }
    let counters = service.counters();
    serving::serve(
        listener,
        service,
        counters,
        config.connections.limits(),
        serving::shutdown_signal(),
    )
    .await?;
    Ok(())
}
