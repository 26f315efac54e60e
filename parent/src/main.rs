//! `searchtree-parent`: fans searches out to its children and merges them.

use clap::Parser;
use searchtree_parent::config::ParentConfig;
use searchtree_parent::node::inner_counters;
use searchtree_parent::{InnerNode, ParentService};
use searchtree_proto::serving;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    serving::init_tracing();
    let config = ParentConfig::parse();
    let counters = inner_counters("parent", &[]);
    let node = InnerNode::new(
        "parent",
        config.inner.grpc_children(&counters)?,
        config.inner.timing()?,
        counters,
    );
    tracing::info!(
        children = config.inner.children.len(),
        shards = node.shards_total(),
        "parent configured"
    );
    let counters = node.counters();
    let listener = serving::bind(&config.listen).await?;
    serving::serve(
        listener,
        ParentService::new(node),
        counters,
        serving::shutdown_signal(),
    )
    .await?;
    Ok(())
}
