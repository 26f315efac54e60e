//! Bad requests get INVALID_ARGUMENT with a message a person can act on, at
//! every kind of node, and the tree keeps serving afterwards.

use searchtree_tests::{client, fixture, search, start_sharded_tree};
use tonic::Code;

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_invalid_argument_and_the_tree_keeps_serving() {
    let fx = fixture(TMP);
    let tree = start_sharded_tree(fx).await;
    let addresses = tree.addresses();
    // The root, a parent and a leaf all refuse the same way.
    for name in ["root", "parent-0", "leaf-0"] {
        let addr = addresses.iter().find(|(n, _)| n == name).unwrap().1;
        let mut node = client(addr).await;
        for (query, top_k, should_mention) in [
            ("", 10, "query is empty"),
            ("   ", 10, "query is empty"),
            ("\"unbalanced phrase", 10, "cannot parse query"),
            ("title:(", 10, "cannot parse query"),
            ("nosuchfield:paris", 10, "nosuchfield"),
            ("paris", 1001, "top_k 1001 is too large"),
            ("-paris", 10, "only excluded terms"),
            // Punctuation has no words to search: said as much, not
            // blamed on exclusions the query does not have.
            ("! !", 10, "punctuation"),
        ] {
            let status = search(&mut node, query, top_k)
                .await
                .expect_err(&format!("{name} accepted {query:?} top_k={top_k}"));
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{name} {query:?}: {status:?}"
            );
            assert!(
                status.message().contains(should_mention),
                "{name} {query:?}: message {:?} should mention {should_mention:?}",
                status.message()
            );
        }
        // Still serving, and still exact enough to find the obvious answer.
        let ok = search(&mut node, "paris", 10)
            .await
            .expect("serves after errors");
        if name == "leaf-0" {
            // A leaf answers for its own shard, and finds paris there
            // whenever the whole tree does.
            assert!(
                ok.hits.iter().all(|h| h.shard == 0),
                "{name} answered for other shards: {:?}",
                ok.hits
            );
            let mut root = client(tree.root_addr()).await;
            let tree_paris = search(&mut root, "paris", 1000).await.unwrap();
            if tree_paris.hits.iter().any(|h| h.shard == 0) {
                assert!(!ok.hits.is_empty(), "{name} found nothing for paris");
            }
        } else {
            assert!(!ok.hits.is_empty(), "{name} found nothing for paris");
        }
    }
    let mut root = client(tree.root_addr()).await;
    let paris = search(&mut root, "title:paris", 3).await.unwrap();
    assert_eq!(paris.hits[0].doc_id, "paris");
    tree.shutdown().await;
}
