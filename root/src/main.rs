//! `searchtree-root`: the tree's front door for clients.

use clap::Parser;
use searchtree_parent::InnerNode;
use searchtree_parent::node::inner_counters;
use searchtree_proto::serving;
use searchtree_root::RootService;
use searchtree_root::config::RootConfig;
use searchtree_root::policy::ROOT_COUNTERS;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    serving::init_tracing();
    let config = RootConfig::parse();
    let counters = inner_counters("root", ROOT_COUNTERS);
    let node = InnerNode::new(
        "root",
        config.inner.grpc_children(&counters)?,
        config.inner.timing()?,
        counters,
    );
    tracing::info!(
        children = config.inner.children.len(),
        shards = node.shards_total(),
        "root configured"
    );
    let counters = node.counters();
    let listener = serving::bind(&config.listen).await?;
    serving::serve(
        listener,
        RootService::new(node),
        counters,
        serving::shutdown_signal(),
    )
    .await?;
    Ok(())
}
