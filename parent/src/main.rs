//! `searchtree-parent`: fans searches out to its children and merges them.

use clap::Parser;
use searchtree_parent::ParentService;
use searchtree_parent::config::{ParentConfig, fanout_over};
use searchtree_proto::serving;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    serving::init_tracing();
    let config = ParentConfig::parse();
    let fanout = fanout_over(&config.children)?;
    tracing::info!(
        children = config.children.len(),
        shards = fanout.shards_total(),
        "parent configured"
    );
    let listener = serving::bind(&config.listen).await?;
    serving::serve(
        listener,
        ParentService::new(fanout),
        serving::shutdown_signal(),
    )
    .await?;
    Ok(())
}
