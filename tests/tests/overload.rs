//! Overload at the root: past its admission limit a burst is shed at once
//! with RESOURCE_EXHAUSTED (and a retry pushback), nothing else fails, and
//! the tree answers normally right after.

use futures::future::join_all;
use searchtree::tree::topology::Topology;
use searchtree_proto::pb::SearchRequest;
use searchtree_tests::{SHARDS, client, counter, fixture, search, send, start_tree};
use tonic::Code;

const TMP: &str = env!("CARGO_TARGET_TMPDIR");
const BURST: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_limit_is_shed_fast_and_the_tree_recovers_at_once() {
    let fx = fixture(TMP);
    // Every leaf takes 300 ms per request: queries pile up at the root.
    let mut topology = Topology::generate(SHARDS, 2, 1).unwrap();
    for leaf in &mut topology.leaves {
        leaf.inject_delay_ms = 300;
        leaf.inject_delay_prob = 1.0;
    }
    let path = fx.sharded.join("overload.toml");
    std::fs::write(&path, topology.to_toml()).unwrap();
    let tree = start_tree(&path).await;
    let root = tree.root_addr();

    let burst = (0..BURST).map(|i| async move {
        let mut c = client(root).await;
        let started = std::time::Instant::now();
        let result = send(
            &mut c,
            SearchRequest {
                query: ["paris", "river", "music", "war"][i % 4].into(),
                top_k: 5,
                budget_ms: 5_000,
                ..Default::default()
            },
        )
        .await;
        (result, started.elapsed())
    });
    let outcomes = join_all(burst).await;
    let mut answered = 0;
    let mut shed = 0;
    for (result, took) in &outcomes {
        match result {
            Ok(r) => {
                assert!(!r.partial, "an admitted query is answered in full");
                answered += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    status.metadata().get("grpc-retry-pushback-ms").is_some(),
                    "no pushback"
                );
                // Shed at once, not after waiting for the leaves' 300 ms.
                assert!(took.as_millis() < 300, "shed after {took:?}");
                shed += 1;
            }
        }
    }
    assert!(shed > 0, "nothing shed out of {BURST}");
    assert!(answered > 0, "nothing admitted");
    assert_eq!(counter(root, "shed").await, shed as u64);

    // Right after, the tree answers normally.
    let mut c = client(root).await;
    let ok = search(&mut c, "title:paris", 3).await.unwrap();
    assert_eq!(ok.coverage.unwrap().shards_ok, SHARDS);
    tree.shutdown().await;
}
