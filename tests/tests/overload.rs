//! Overload at the root: past its admission limit a burst is shed at once
//! with RESOURCE_EXHAUSTED (and a retry pushback), nothing else fails, and
//! the tree answers normally right after. Overload below the root: a leaf
//! that sheds a burst stays in rotation, and a query every shard refused
//! for load reaches the client as RESOURCE_EXHAUSTED too.

use std::process::{Child, Command, Stdio};

use futures::future::join_all;
use searchtree::tree::topology::Topology;
use searchtree_proto::pb::SearchRequest;
use searchtree_tests::{
    SHARDS, client, counter, fixture, node_binaries, read_listening, search, send, start_tree,
    terminate,
};
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

/// A node process started by hand, and the address it listens on; killed
/// when dropped.
struct Node(Child, std::net::SocketAddr);

impl Node {
    fn start(binary: std::path::PathBuf, args: &[&str]) -> Node {
        let mut child = Command::new(binary)
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the node");
        let (addr, _) = read_listening(child.stdout.take().expect("piped"));
        Node(child, addr)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        terminate(&mut self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_shedding_load_stays_in_rotation_and_the_client_is_told_to_back_off() {
    let fx = fixture(TMP);
    let bins = node_binaries();
    // One search slot and one place in its queue: a burst overflows it.
    let index = fx.whole.join("shards/shard-000");
    let leaf = Node::start(
        bins.leaf,
        &[
            "--index",
            index.to_str().unwrap(),
            "--max-concurrent-searches",
            "1",
            "--max-queued-searches",
            "1",
        ],
    );
    // The root's own admission off, so that the leaf is the one to shed,
    // and its cache off, so that every query of the burst reaches the leaf
    // (concurrent identical queries would be searched once).
    let child = format!("0@{}", leaf.1);
    let root = Node::start(
        bins.root,
        &["--child", &child, "--no-admission", "--cache-mb", "0"],
    );
    let addr = root.1;

    const WORDS: [&str; 8] = [
        "paris", "river", "music", "war", "history", "city", "art", "science",
    ];
    let burst = (0..BURST).map(|i| async move {
        let mut c = client(addr).await;
        send(
            &mut c,
            SearchRequest {
                // Distinct queries: three words of the list each.
                query: format!(
                    "{} {} {}",
                    WORDS[i % 8],
                    WORDS[(i / 8) % 8],
                    WORDS[(i / 64) % 8]
                ),
                top_k: 10,
                budget_ms: 2_000,
                ..Default::default()
            },
        )
        .await
    });
    let outcomes = join_all(burst).await;
    let mut shed = 0;
    for outcome in &outcomes {
        if let Err(status) = outcome {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert!(
                status
                    .message()
                    .contains("every one is at its limit; retry"),
                "{status:?}"
            );
            shed += 1;
        }
    }
    assert!(shed > 0, "the leaf shed nothing of {BURST}");
    assert!(shed < BURST, "the leaf answered nothing");
    assert_eq!(
        counter(addr, "ejections").await,
        0,
        "a leaf shedding load was taken out of rotation"
    );
    assert_eq!(counter(addr, "nothing_answered").await, shed as u64);

    // Right after, the leaf answers in full.
    let mut c = client(addr).await;
    let ok = search(&mut c, "title:paris", 3).await.unwrap();
    assert_eq!(ok.coverage.unwrap().shards_ok, 1);
}
