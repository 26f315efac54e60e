//! `searchtree-root`: the tree's front door for clients.

use clap::Parser;
use searchtree_parent::config::fanout_over;
use searchtree_proto::serving;
use searchtree_root::RootService;
use searchtree_root::config::RootConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    serving::init_tracing();
    let config = RootConfig::parse();
    let fanout = fanout_over(&config.children)?;
    tracing::info!(
        children = config.children.len(),
        shards = fanout.shards_total(),
        "root configured"
    );
    let listener = serving::bind(&config.listen).await?;
    serving::serve(
        listener,
        RootService::new(fanout),
        serving::shutdown_signal(),
    )
    .await?;
    Ok(())
}
