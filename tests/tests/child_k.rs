//! Asking children for fewer hits than k keeps the tree exact: with a tiny
//! `child_k_probability` every child is asked for about one hit, so nearly
//! every query takes the path where a child is asked again, and the answers
//! must still equal one whole-corpus index's.

use searchtree::build::TOPOLOGY_FILE;
use searchtree::bundled;
use searchtree::tree::topology::Topology;
use searchtree_proto::pb::SearchResponse;
use searchtree_tests::oracle::{Expected, Oracle, assert_same_hits};
use searchtree_tests::{client, counter, fixture, node_addr, search, start_tree};

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

fn assert_same(query: &str, k: usize, got: &SearchResponse, want: &(Vec<Expected>, u64)) {
    assert_same_hits(&format!("query {query:?} top-{k}"), &got.hits, &want.0);
    if got.total_hits_is_lower_bound {
        assert!(
            got.total_hits <= want.1,
            "query {query:?}: too many matches"
        );
    } else {
        assert_eq!(
            got.total_hits, want.1,
            "query {query:?}: match counts differ"
        );
    }
    assert!(!got.partial, "query {query:?}: partial: {:?}", got.coverage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_asked_for_one_hit_and_then_again_still_give_the_exact_top_k() {
    let fx = fixture(TMP);
    let oracle = Oracle::open(&fx.whole.join("shards/shard-000"));
    let mut topology = Topology::load(&fx.sharded.join(TOPOLOGY_FILE)).unwrap();
    topology.routing.child_k_probability = Some(0.01);
    let path = fx.sharded.join("child-k.toml");
    std::fs::write(&path, topology.to_toml()).unwrap();
    let tree = start_tree(&path).await;
    let mut root = client(tree.root_addr()).await;

    let queries = bundled::queries();
    // Many ties: one-letter terms shared by many short documents.
    let ties = ["the", "a", "title:the"];
    for query in queries.iter().step_by(3).chain(&ties) {
        for k in [1, 10, 50] {
            let got = search(&mut root, query, k).await.expect(query);
            assert_same(query, k as usize, &got, &oracle.top_k(query, k as usize));
        }
    }
    // The second ask happened, at the root and at the parents.
    let root_again = counter(tree.root_addr(), "children_asked_again").await;
    let parent_again = counter(node_addr(&tree, "parent-0"), "children_asked_again").await;
    assert!(root_again > 50, "root asked again only {root_again} times");
    assert!(
        parent_again > 50,
        "parent asked again only {parent_again} times"
    );
    tree.shutdown().await;
}
