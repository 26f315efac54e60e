//! Calls between nodes as frames, end to end: every node of a real tree
//! (root, parents, leaves) answers a search sent as frames exactly as it
//! answers it over HTTP/2, refuses bad ones the same way, and a tree whose
//! inner nodes call their children over HTTP/2 (`--child-transport grpc`)
//! answers every bundled query as the default tree (frames) does.

use std::time::Duration;

use searchtree::bundled;
use searchtree::tree::supervisor::{self, StartOptions};
use searchtree::tree::topology::Topology;
use searchtree_node::frames::{FrameChannel, Keepalive};
use searchtree_proto::pb::search_client::SearchClient;
use searchtree_proto::pb::{SearchRequest, SearchResponse};
use searchtree_tests::{GENEROUS_BUDGET_MS, client, fixture, node_binaries, start_sharded_tree};
use tonic::Code;

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

fn frames_client(addr: std::net::SocketAddr) -> SearchClient<FrameChannel> {
    SearchClient::new(FrameChannel::new(
        &addr.to_string(),
        Duration::from_secs(1),
        Keepalive {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(20),
        },
    ))
}

fn request(query: &str) -> SearchRequest {
    SearchRequest {
        query: query.into(),
        top_k: 10,
        budget_ms: GENEROUS_BUDGET_MS,
        ..Default::default()
    }
}

/// What must agree between two answers: the hits, the match count.
fn seen(response: &SearchResponse) -> (Vec<(String, f32, u32)>, u64) {
    let hits = response
        .hits
        .iter()
        .map(|h| (h.doc_id.clone(), h.score, h.shard))
        .collect();
    (hits, response.total_hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_answers_frames_as_it_answers_http2() {
    let fx = fixture(TMP);
    let tree = start_sharded_tree(fx).await;
    let queries: Vec<&str> = bundled::queries().into_iter().step_by(20).collect();
    for (name, addr) in tree.addresses() {
        let mut grpc = client(addr).await;
        let mut frames = frames_client(addr);
        for query in &queries {
            let over_http2 = grpc.search(request(query)).await.unwrap().into_inner();
            let over_frames = frames.search(request(query)).await.unwrap().into_inner();
            assert_eq!(seen(&over_frames), seen(&over_http2), "{name}: {query:?}");
            assert!(!over_frames.hits.is_empty() || over_http2.hits.is_empty());
        }
        // Refused alike: a query of only excluded terms, and a message
        // above the node's limit (4 MiB; the frame itself is allowed).
        for bad_query in ["-paris".to_string(), "volcano ".repeat(5 << 17)] {
            let bad = frames.search(request(&bad_query)).await.unwrap_err();
            let also_bad = grpc.search(request(&bad_query)).await.unwrap_err();
            assert_eq!(bad.code(), Code::InvalidArgument, "{name}: {bad:?}");
            assert_eq!(bad.message(), also_bad.message(), "{name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_calling_its_children_over_http2_answers_as_the_default_one() {
    let fx = fixture(TMP);
    let default_tree = start_sharded_tree(fx).await;
    let plan = Topology::load(&fx.sharded.join(searchtree::build::TOPOLOGY_FILE))
        .and_then(|t| Ok(t.plan()?))
        .expect("fixture topology");
    let http2_tree = supervisor::start(
        &plan,
        &node_binaries(),
        &StartOptions {
            default_log: Some("warn".into()),
            forward_logs: true,
            node_args: vec!["--child-transport".into(), "grpc".into()],
            ..StartOptions::default()
        },
    )
    .await
    .expect("tree starts");
    let mut by_frames = client(default_tree.root_addr()).await;
    let mut by_http2 = client(http2_tree.root_addr()).await;
    for query in bundled::queries() {
        let a = by_frames.search(request(query)).await.unwrap().into_inner();
        let b = by_http2.search(request(query)).await.unwrap().into_inner();
        assert_eq!(seen(&a), seen(&b), "{query:?}");
        let coverage = a.coverage.expect("coverage");
        assert_eq!(coverage.shards_ok, coverage.shards_total, "{query:?}");
    }
}
