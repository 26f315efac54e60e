//! The result cache in a real tree: a query asked again is answered from the
//! root's cache, with the same answer as the first time and as one index
//! over the whole corpus; a node started with `--cache-mb 0` never hits,
//! and a parent's cache serves what its own caller asks again.

use searchtree::build::TOPOLOGY_FILE;
use searchtree::tree::topology::Topology;
use searchtree_proto::pb::SearchResponse;
use searchtree_tests::oracle::{Oracle, assert_same_hits};
use searchtree_tests::{Fixture, client, counter, fixture, node_addr, search, start_tree};

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

const QUERIES: [&str; 3] = ["river", "paris france", "\"new york\""];

/// The answer without what may differ between two askings: the time taken.
fn timeless(r: &SearchResponse) -> SearchResponse {
    SearchResponse {
        took_us: 0,
        ..r.clone()
    }
}

fn assert_matches_oracle(oracle: &Oracle, query: &str, got: &SearchResponse) {
    let (want, total) = oracle.top_k(query, 10);
    assert_same_hits(&format!("{query:?}"), &got.hits, &want);
    if !got.total_hits_is_lower_bound {
        assert_eq!(got.total_hits, total, "{query:?}");
    }
    assert!(!got.partial, "{query:?}");
}

/// The fixture's tree with `edit` applied to its topology.
fn topology(fx: &Fixture, name: &str, edit: impl FnOnce(&mut Topology)) -> std::path::PathBuf {
    let mut t = Topology::load(&fx.sharded.join(TOPOLOGY_FILE)).unwrap();
    edit(&mut t);
    let path = fx.dir.join(name);
    std::fs::write(&path, t.to_toml()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_asked_again_is_a_root_cache_hit_equal_to_the_first_and_the_oracle() {
    let fx = fixture(TMP);
    let oracle = Oracle::open(&fx.whole.join("shards/shard-000"));
    let tree = start_tree(&fx.sharded.join(TOPOLOGY_FILE)).await;
    let root_addr = tree.root_addr();
    let parent = node_addr(&tree, "parent-0");
    let mut root = client(root_addr).await;

    for (i, query) in QUERIES.into_iter().enumerate() {
        let first = search(&mut root, query, 10).await.unwrap();
        assert_matches_oracle(&oracle, query, &first);
        let hits = counter(root_addr, "cache_hits").await;
        let parent_requests = counter(parent, "requests").await;

        let again = search(&mut root, query, 10).await.unwrap();
        assert_eq!(
            counter(root_addr, "cache_hits").await,
            hits + 1,
            "{query:?}"
        );
        assert_eq!(
            counter(parent, "requests").await,
            parent_requests,
            "{query:?}: the query phase went no further than the root"
        );
        assert_eq!(timeless(&again), timeless(&first), "{query:?}");
        assert_matches_oracle(&oracle, query, &again);
        assert_eq!(counter(root_addr, "cache_misses").await, i as u64 + 1);
    }
    // Another k is another answer: a miss, and still exact.
    let top5 = search(&mut root, QUERIES[0], 5).await.unwrap();
    assert_eq!(
        counter(root_addr, "cache_misses").await,
        QUERIES.len() as u64 + 1
    );
    assert_eq!(top5.hits.len(), 5);
    assert!(counter(root_addr, "cache_bytes").await > 0);
    tree.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_mb_0_turns_a_nodes_cache_off_and_a_parent_caches_for_its_caller() {
    let fx = fixture(TMP);
    let oracle = Oracle::open(&fx.whole.join("shards/shard-000"));
    let path = topology(fx, "cache-off.toml", |t| {
        t.root.cache_mb = Some(0);
        t.parents[0].cache_mb = Some(0);
        // Every parent asked for all k: one key per query at each parent
        // (a second ask for more hits would be another key).
        t.routing.child_k_probability = Some(1.0);
    });
    let tree = start_tree(&path).await;
    let root_addr = tree.root_addr();
    let (off, on) = (node_addr(&tree, "parent-0"), node_addr(&tree, "parent-1"));
    let mut root = client(root_addr).await;

    for _ in 0..3 {
        let r = search(&mut root, QUERIES[0], 10).await.unwrap();
        assert_matches_oracle(&oracle, QUERIES[0], &r);
    }
    for node in [root_addr, off] {
        assert_eq!(counter(node, "cache_hits").await, 0);
        assert_eq!(counter(node, "cache_misses").await, 0, "not even looked up");
    }
    // parent-1 searched once and answered the root's next two from its cache.
    assert_eq!(counter(on, "cache_misses").await, 1);
    assert_eq!(counter(on, "cache_hits").await, 2);
    tree.shutdown().await;
}
