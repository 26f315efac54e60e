//! Hostile input against a real tree with replicas: queries of death, queries
//! built to make error messages huge, and requests a user gets wrong are all
//! answered `INVALID_ARGUMENT` with a short message, by whichever node they
//! reach, and every node is still alive afterwards. With canaries on, a query
//! that kills a leaf kills one leaf, once.

use std::net::SocketAddr;
use std::time::Duration;

use futures::future::join_all;
use searchtree::tree::topology::Topology;
use searchtree_proto::pb::GetStatsRequest;
use searchtree_proto::pb::SearchRequest;
use searchtree_proto::pb::node_stats_client::NodeStatsClient;
use searchtree_tests::{SHARDS, client, fixture, node_addr, search, send, start_tree};
use tonic::Code;

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// The longest status message a client may see: it travels in an HTTP/2
/// header, percent-encoded.
const MAX_MESSAGE: usize = 1024;

/// Queries that crashed, wedged or confused the tree before, and relatives.
fn hostile_queries() -> Vec<String> {
    vec![
        "(".repeat(2200),                       // stack overflow in the parser
        "(".repeat(4096),                       // the longest allowed, all '('
        format!("{}a", "NOT ".repeat(1000)),    // the other recursion
        "title:(".repeat(500),                  // field groups
        "\"".repeat(3000),                      // a message that echoed it twice
        format!("title:{}", "\"".repeat(4000)), // ... escaped, 14 KB
        "title:*".into(),                       // an internal schema error
        "body:*".into(),
        "title:/ab.*c/".into(),                       // regexes
        "a^1e300".into(),                             // infinite scores
        (0..300).map(|i| format!("w{i} ")).collect(), // too many terms
        "x".repeat(100_000),                          // far over the byte limit
        "nosuchfield:paris".into(),
        String::new(),
    ]
}

async fn alive(addr: SocketAddr) -> bool {
    let connect = NodeStatsClient::connect(format!("http://{addr}"));
    let Ok(Ok(mut stats)) = tokio::time::timeout(Duration::from_secs(2), connect).await else {
        return false;
    };
    stats.get_stats(GetStatsRequest {}).await.is_ok()
}

fn replicated_topology(name: &str, edit: impl FnOnce(&mut Topology)) -> std::path::PathBuf {
    let fx = fixture(TMP);
    let mut topology = Topology::generate(SHARDS, 2, 2).unwrap();
    topology.routing.health_interval_ms = Some(100);
    edit(&mut topology);
    let path = fx.sharded.join(name);
    std::fs::write(&path, topology.to_toml()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_with_replicas_survives_a_burst_of_hostile_queries() {
    let tree = start_tree(&replicated_topology("hostile.toml", |_| {})).await;
    let nodes = tree.addresses();
    // The root first, and nodes below it called directly: each defends itself.
    for target in ["root", "parent-0", "leaf-0-0"] {
        let addr = node_addr(&tree, target);
        let burst = (0..3).flat_map(|_| hostile_queries()).map(|q| async move {
            let mut c = client(addr).await;
            let r = send(
                &mut c,
                SearchRequest {
                    query: q.clone(),
                    top_k: 10,
                    budget_ms: 5_000,
                    ..Default::default()
                },
            )
            .await;
            (q, r)
        });
        for (q, result) in join_all(burst).await {
            let shown = &q[..q.len().min(40)];
            let status = result.expect_err(&format!("{target} accepted {shown:?}"));
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{target} {shown:?}: {status:?}"
            );
            assert!(
                status.message().len() <= MAX_MESSAGE && !status.message().is_empty(),
                "{target} {shown:?}: message of {} bytes",
                status.message().len()
            );
        }
    }
    for (name, addr) in &nodes {
        assert!(alive(*addr).await, "{name} died");
    }
    let mut root = client(tree.root_addr()).await;
    let ok = search(&mut root, "title:paris", 3).await.unwrap();
    assert_eq!(ok.coverage.unwrap().shards_ok, SHARDS);
    assert_eq!(ok.hits[0].doc_id, "paris");
    tree.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_kills_its_canary_costs_one_leaf_once() {
    const DEADLY: &str = "zzdeadlyzz";
    let path = replicated_topology("canary.toml", |t| {
        t.root.canary = true;
        for leaf in &mut t.leaves {
            leaf.inject_crash_on = Some(DEADLY.into());
        }
        // No retries to hide behind: a lost request is never retried anyway.
        t.routing.retries = Some(1);
    });
    let tree = start_tree(&path).await;
    let leaves: Vec<_> = tree
        .addresses()
        .into_iter()
        .filter(|(n, _)| n.starts_with("leaf-"))
        .collect();
    let mut root = client(tree.root_addr()).await;
    // An ordinary query: a canary, then the fan-out; full coverage.
    let ok = search(&mut root, "title:paris", 3).await.unwrap();
    assert_eq!(ok.coverage.unwrap().shards_ok, SHARDS);

    for _ in 0..5 {
        let status = search(&mut root, &format!("paris {DEADLY}"), 10)
            .await
            .expect_err("a query of death is refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("crashed"), "{}", status.message());
    }
    let mut dead = Vec::new();
    for (name, addr) in &leaves {
        if !alive(*addr).await {
            dead.push(name.clone());
        }
    }
    assert_eq!(dead.len(), 1, "exactly one leaf died: {dead:?}");
    // The tree still answers in full: the dead leaf's replica took over.
    let ok = search(&mut root, "title:paris", 3).await.unwrap();
    assert_eq!(ok.coverage.unwrap().shards_ok, SHARDS);
    tree.shutdown().await;
}
