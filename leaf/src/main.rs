//! `searchtree-leaf`: serves one shard over gRPC.

use std::sync::Arc;

use clap::Parser;
use searchtree_leaf::LeafService;
use searchtree_leaf::config::LeafConfig;
use searchtree_leaf::corpus::background;
use searchtree_leaf::corpus::disk::{self, DiskFloor};
use searchtree_leaf::corpus::store::SearcherSettings;
use searchtree_leaf::corpus::{CorpusStore, HeldVersions, LeafCorpus};
use searchtree_leaf::fault::Faults;
use searchtree_node::serving;

/// mimalloc, as every searchtree binary: glibc's malloc and free were a
/// fifth of a leaf's time at the tree's peak (BENCHMARKS.md, "The allocator").
#[global_allocator]
static ALLOCATOR: searchtree_node::allocator::MiMalloc = searchtree_node::allocator::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    searchtree_node::allocator::configure_for_server();
    serving::init_tracing();
    let config = LeafConfig::parse();
    config
        .ops
        .install_client_security()
        .map_err(anyhow::Error::msg)?;
    let faults = config.faults().map_err(anyhow::Error::msg)?;
    let membership = config
        .ops
        .membership
        .membership()
        .map_err(anyhow::Error::msg)?;
    // Held while the process runs: a rebuild in place waits for no leaf.
    let _serving_build = searchtree_leaf::shard::in_use::hold(&config.index)?;
    let listener = serving::bind_with(&config.listen, config.ops.drain.reuse_port).await?;
    let name = listener.local_addr()?.to_string();
    let settings = SearcherSettings {
        name: name.clone(),
        min_pruned_docs: config.min_pruned_docs,
    };
    // The store is opened off the async workers (it may open several
    // versions and clean up after a crash), on a low-priority thread, so
    // that the staging writer's threads start at its priority.
    let store = match config.data_dir.clone() {
        Some(data) => {
            let index = config.index.clone();
            let settings = settings.clone();
            let floor = DiskFloor::new(config.min_free_disk);
            let store = background::spawn(move || CorpusStore::open(&index, &data, settings));
            Some(store.await??.with_disk_floor(floor))
        }
        None => None,
    };
    let held = match &store {
        Some(store) => store.held(),
        None => Arc::new(HeldVersions::new(settings.open(&config.index)?)),
    };
    let current = held.get(0)?;
    let shard = current.shard().meta.shard;
    if let Some(expected) = config.shard
        && expected != shard
    {
        anyhow::bail!(
            "--shard {expected}, but {} holds shard {shard}",
            config.index.display()
        );
    }
    tracing::info!(
        shard,
        docs = current.shard().meta.num_docs,
        version = current.shard().meta.version,
        versions = ?held.numbers(),
        index = %config.index.display(),
        data_dir = ?config.data_dir,
        "shard opened"
    );
    drop(current);
    if faults.is_active() {
        tracing::warn!(?faults, "fault injection is on");
    }
    let service = LeafService::new(
        Arc::clone(&held),
        config.concurrency(),
        config.timing(),
        Faults::new(faults, config.seed()),
    )
    .with_max_queued(config.max_queued())
    .with_inline_cost(config.inline_search_cost)
    .with_query_limits(config.query_limits.limits().map_err(anyhow::Error::msg)?)
    .with_crash_on(config.inject_crash_on.clone());
    if let Some(term) = &config.inject_crash_on {
        tracing::warn!(%term, "fault injection: this leaf aborts on queries containing the term");
    }
    let counters = service.counters();
    match &config.data_dir {
        Some(data) => disk::watch(
            data.clone(),
            Some(DiskFloor::new(config.min_free_disk)),
            Arc::clone(&counters),
        ),
        None => disk::watch(config.index.clone(), None, Arc::clone(&counters)),
    }
    let status_versions = Arc::clone(&held);
    let status_counters = Arc::clone(&counters);
    let status: searchtree_node::ops::status::RoleStatusFn =
        Arc::new(move || searchtree_node::ops::status::RoleStatus {
            version: status_versions
                .get(0)
                .map_or(0, |current| current.shard().meta.version),
            children: Vec::new(),
            disk: disk::status(&status_counters),
        });
    let corpus = match store {
        Some(store) => LeafCorpus::new(store, Arc::clone(&counters), name),
        None => LeafCorpus::read_only(held, Arc::clone(&counters), name),
    };
    serving::serve(
        listener,
        service,
        corpus,
        counters,
        serving::ServeOptions::new(config.connections.limits(), config.ops.clone())
            .with_status(status)
            .with_member(membership, "leaf", vec![shard]),
        serving::shutdown_signal(),
    )
    .await?;
    Ok(())
}
