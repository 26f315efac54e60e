//! `searchtree-parent`: fans searches out to its children and merges them.

use clap::Parser;
use searchtree_node::serving;
use searchtree_parent::ParentService;
use searchtree_parent::config::ParentConfig;
use searchtree_parent::corpus::ParentCorpus;

/// mimalloc, as every searchtree binary: glibc's malloc and free were a
/// fifth of a leaf's time at the tree's peak (BENCHMARKS.md, "The allocator").
#[global_allocator]
static ALLOCATOR: searchtree_node::allocator::MiMalloc = searchtree_node::allocator::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    searchtree_node::allocator::configure_for_server();
    serving::init_tracing();
    let config = ParentConfig::parse();
    config
        .ops
        .install_client_security()
        .map_err(anyhow::Error::msg)?;
    let membership = config
        .ops
        .membership
        .membership()
        .map_err(anyhow::Error::msg)?;
    let (node, corpus_node) = config.inner.build("parent", membership.clone()).await?;
    let counters = node.counters();
    let listener = serving::bind_with(&config.listen, config.ops.drain.reuse_port).await?;
    // Before its first answer after a publish, a parent reports the
    // version it activated below: the one its next search is pinned to.
    let activated = std::sync::Arc::clone(&corpus_node);
    let status = node.status_fn(move || activated.last_activated());
    let shards = node.shards();
    let service = ParentService::new(node);
    let corpus = ParentCorpus::new(corpus_node);
    serving::serve(
        listener,
        service,
        corpus,
        counters,
        serving::ServeOptions::new(config.connections.limits(), config.ops.clone())
            .with_status(status)
            .with_member(membership, "parent", shards),
        serving::shutdown_signal(),
    )
    .await?;
    Ok(())
}
