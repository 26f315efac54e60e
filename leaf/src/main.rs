//! `searchtree-leaf`: serves one shard over gRPC.

use clap::Parser;
use searchtree_leaf::config::LeafConfig;
use searchtree_leaf::{LeafService, Shard, ShardSearcher};
use searchtree_proto::serving;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    serving::init_tracing();
    let config = LeafConfig::parse();
    let shard = Shard::open(&config.index)?;
    tracing::info!(
        shard = shard.meta.shard,
        docs = shard.meta.num_docs,
        index = %config.index.display(),
        "shard opened"
    );
    let service = LeafService::new(ShardSearcher::new(shard), config.concurrency());
    let listener = serving::bind(&config.listen).await?;
    serving::serve(listener, service, serving::shutdown_signal()).await?;
    Ok(())
}
