//! The tree's answers equal one whole-corpus index's: same ids, same order,
//! same scores, same match counts — through real processes over loopback.

use searchtree::bundled;
use searchtree_proto::pb::SearchResponse;
use searchtree_tests::oracle::{Expected, Oracle};
use searchtree_tests::{client, fixture, search, start_sharded_tree, start_tree};

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// Relative score difference allowed between the tree and the oracle.
const TOLERANCE: f32 = 1e-5;

fn assert_same(query: &str, k: usize, got: &SearchResponse, want: &(Vec<Expected>, u64)) {
    let got_ids: Vec<&str> = got.hits.iter().map(|h| h.doc_id.as_str()).collect();
    let want_ids: Vec<&str> = want.0.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(got_ids, want_ids, "query {query:?} top-{k}: ids differ");
    for (g, w) in got.hits.iter().zip(&want.0) {
        let rel = (g.score - w.score).abs() / w.score.abs().max(f32::MIN_POSITIVE);
        assert!(
            rel <= TOLERANCE,
            "query {query:?}: {} scored {} in the tree, {} in one index",
            g.doc_id,
            g.score,
            w.score
        );
    }
    assert_eq!(
        got.total_hits, want.1,
        "query {query:?}: match counts differ"
    );
    let c = got.coverage.as_ref().expect("coverage");
    assert_eq!((c.shards_ok, c.shards_total), (4, 4), "query {query:?}");
    assert!(!got.partial, "query {query:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_top10_equals_one_index_for_every_bundled_query() {
    let fx = fixture(TMP);
    let oracle = Oracle::open(&fx.whole.join("shards/shard-000"));
    let tree = start_sharded_tree(fx).await;
    let mut root = client(tree.root_addr()).await;

    let queries = bundled::queries();
    assert!(queries.len() >= 200, "only {} queries", queries.len());
    let mut nonempty = 0;
    for query in &queries {
        let got = search(&mut root, query, 10).await.expect(query);
        let want = oracle.top_k(query, 10);
        nonempty += usize::from(!want.0.is_empty());
        assert_same(query, 10, &got, &want);
    }
    // The comparison means something only if the queries find things.
    assert!(nonempty >= 200, "only {nonempty} queries had hits");
    tree.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_depths_of_k_and_of_tree_agree_too() {
    let fx = fixture(TMP);
    let oracle = Oracle::open(&fx.whole.join("shards/shard-000"));

    // Three levels: root -> top -> (mid -> leaf-0, leaf-1), leaf-2; root -> leaf-3.
    let topology = fx.dir.join("deep.toml");
    let shards = fx.sharded.join("shards");
    std::fs::write(
        &topology,
        format!(
            r#"
[root]
children = ["top", "leaf-3"]

[[parent]]
name = "top"
children = ["mid", "leaf-2"]

[[parent]]
name = "mid"
children = ["leaf-0", "leaf-1"]

{}"#,
            (0..4)
                .map(|s| format!(
                    "[[leaf]]\nname = \"leaf-{s}\"\nshard = {s}\nindex = \"{}\"\n",
                    shards.join(format!("shard-{s:03}")).display()
                ))
                .collect::<String>()
        ),
    )
    .unwrap();
    let tree = start_tree(&topology).await;
    let mut root = client(tree.root_addr()).await;
    for query in bundled::queries().iter().step_by(10) {
        for k in [1, 3, 50] {
            let got = search(&mut root, query, k).await.expect(query);
            assert_same(query, k as usize, &got, &oracle.top_k(query, k as usize));
        }
    }
    // Many ties: a one-letter term shared by many short documents.
    for query in ["the", "a", "title:the"] {
        let got = search(&mut root, query, 25).await.expect(query);
        assert_same(query, 25, &got, &oracle.top_k(query, 25));
    }
    tree.shutdown().await;
}
