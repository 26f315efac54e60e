//! A crashed node never takes its parent down: the others still answer and
//! the coverage says exactly what is missing.

use searchtree_proto::pb::FailureReason;
use searchtree_tests::{client, fixture, search, start_uncached_sharded_tree};

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leaf_is_counted_as_failed_and_the_rest_answer() {
    let fx = fixture(TMP);
    // Uncached: the same query is asked as leaves go, and a cached answer
    // would stand in for them.
    let mut tree = start_uncached_sharded_tree(fx).await;
    let mut root = client(tree.root_addr()).await;
    let before = search(&mut root, "river", 10).await.unwrap();
    assert!(!before.partial);

    tree.stop_node("leaf-2").await.unwrap();
    for _ in 0..3 {
        let after = search(&mut root, "river", 10).await.expect("still answers");
        let c = after.coverage.clone().unwrap();
        assert_eq!(
            (
                c.shards_total,
                c.shards_ok,
                c.shards_failed,
                c.shards_timed_out
            ),
            (4, 3, 1, 0)
        );
        assert!(after.partial);
        assert_eq!(c.failures.len(), 1);
        assert_eq!(c.failures[0].shard, 2);
        assert_eq!(c.failures[0].reason, FailureReason::Unavailable as i32);
        // The answer is the exact top-10 of the three shards still up.
        let expected: Vec<_> = before
            .hits
            .iter()
            .filter(|h| h.shard != 2)
            .map(|h| h.doc_id.clone())
            .collect();
        let got: Vec<_> = after.hits.iter().map(|h| h.doc_id.clone()).collect();
        assert_eq!(got[..expected.len()], expected[..]);
        assert!(after.hits.iter().all(|h| h.shard != 2));
    }

    // With every leaf of a parent gone, the other parent still answers.
    tree.stop_node("leaf-3").await.unwrap();
    let half = search(&mut root, "river", 10).await.unwrap();
    let c = half.coverage.unwrap();
    assert_eq!((c.shards_ok, c.shards_failed), (2, 2));

    // With every leaf gone the root itself answers UNAVAILABLE, and keeps running.
    tree.stop_node("leaf-0").await.unwrap();
    tree.stop_node("leaf-1").await.unwrap();
    let status = search(&mut root, "river", 10).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("no shard could answer"),
        "{status:?}"
    );
    let status = search(&mut root, "river", 10).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    tree.shutdown().await;
}
