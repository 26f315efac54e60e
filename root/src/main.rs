//! `searchtree-root`: the tree's front door for clients.

use clap::Parser;
use searchtree_node::serving;
use searchtree_root::config::RootConfig;
use searchtree_root::corpus::RootCorpus;
use searchtree_root::{RootNode, RootService};

/// mimalloc, as every searchtree binary: glibc's malloc and free were a
/// fifth of a leaf's time at the tree's peak (BENCHMARKS.md, "The allocator").
#[global_allocator]
static ALLOCATOR: searchtree_node::allocator::MiMalloc = searchtree_node::allocator::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    searchtree_node::allocator::configure_for_server();
    serving::init_tracing();
    let config = RootConfig::parse();
    config
        .ops
        .install_client_security()
        .map_err(anyhow::Error::msg)?;
    let membership = config
        .ops
        .membership
        .membership()
        .map_err(anyhow::Error::msg)?;
    let (node, corpus_node) = config.inner.build("root", membership.clone()).await?;
    let counters = node.counters();
    let shards = node.shards();
    let listener = serving::bind_with(&config.listen, config.ops.drain.reuse_port).await?;
    let load_pace = config
        .load_pace()?
        .map(|pace| std::sync::Arc::new(searchtree_root::load_pace::LoadPace::new(pace)));
    let root = RootNode::new(node)
        .with_load_pace(load_pace.clone())
        .with_canary(config.canary())
        .with_admission(config.admission()?)
        .with_one_phase(config.one_phase);
    let corpus = RootCorpus::new(corpus_node, root.pinned())
        .with_load_pace(load_pace)
        .with_announcements(membership.clone());
    corpus
        .pin_at_start(searchtree_root::corpus::PIN_AT_START_WAIT)
        .await;
    // Kept for as long as the root serves: it follows the announcements.
    let announcements = membership
        .as_ref()
        .map(|m| searchtree_membership::Announcements::start(m.etcd.clone(), &m.tree));
    corpus.spawn_follow_publishes(
        std::time::Duration::from_secs(config.follow_publishes_secs),
        announcements.as_ref().map(|a| a.subscribe()),
    );
    let pinned = root.pinned();
    let status = root.inner().status_fn(move || pinned.get());
    let service = RootService::new(root);
    let page = searchtree_root::status::routes(listener.local_addr()?.to_string());
    serving::serve(
        listener,
        service,
        corpus,
        counters,
        serving::ServeOptions::new(config.connections.limits(), config.ops.clone())
            .with_status(status)
            .with_member(membership, "root", shards)
            .with_http_routes(page),
        serving::shutdown_signal(),
    )
    .await?;
    Ok(())
}
