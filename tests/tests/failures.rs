//! A crashed node never takes its parent down: the others still answer and
//! the coverage says exactly what is missing. A node that answers for other
//! shards than it was asked for is counted as missing too.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use searchtree_proto::pb::FailureReason;
use searchtree_tests::{client, fixture, node_binaries, search, start_uncached_sharded_tree};

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

/// Starts a node binary with `args` and `--listen 127.0.0.1:0`; returns it
/// and the address it printed.
fn start_node(program: &std::path::Path, args: &[&str]) -> (Child, SocketAddr) {
    start_node_at(program, args, "127.0.0.1:0")
}

/// Starts a node binary with `args` listening on `listen`; returns it and
/// the address it printed.
fn start_node_at(program: &std::path::Path, args: &[&str], listen: &str) -> (Child, SocketAddr) {
    let mut process = Command::new(program)
        .args(args)
        .args(["--listen", listen])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a node");
    let mut line = String::new();
    BufReader::new(process.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("stdout");
    let addr = line
        .trim()
        .strip_prefix("LISTENING ")
        .unwrap_or_else(|| panic!("node printed {line:?}"))
        .parse()
        .expect("address");
    (process, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answering_for_other_shards_is_counted_as_missing() {
    let fx = fixture(TMP);
    let bins = node_binaries();
    // The leaf of shard 1, given to the root as shard 0 too: a wrong
    // address, as a wrong registration in etcd would give it.
    let index = fx.sharded.join("shards/shard-001");
    let (mut leaf, leaf_addr) = start_node(
        &bins.leaf,
        &["--shard", "1", "--index", index.to_str().unwrap()],
    );
    let children = [format!("0@{leaf_addr}"), format!("1@{leaf_addr}")];
    let (mut root, root_addr) = start_node(
        &bins.root,
        &[
            "--child",
            &children[0],
            "--child",
            &children[1],
            "--cache-mb",
            "0",
        ],
    );
    let mut c = client(root_addr).await;
    for query in ["river", "music", "war"] {
        let r = search(&mut c, query, 10).await.expect("answers");
        let coverage = r.coverage.unwrap();
        assert_eq!(
            (coverage.shards_ok, coverage.shards_failed),
            (1, 1),
            "{query}: {coverage:?}"
        );
        assert_eq!(coverage.failures[0].shard, 0, "{coverage:?}");
        assert!(
            coverage.failures[0].message.contains("serves other shards"),
            "{coverage:?}"
        );
        assert!(r.partial);
        let mut ids: Vec<_> = r.hits.iter().map(|h| h.doc_id.as_str()).collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "{query}: a document twice: {:?}", r.hits);
        assert!(r.hits.iter().all(|h| h.shard == 1));
    }
    for p in [&mut root, &mut leaf] {
        let _ = p.kill();
        let _ = p.wait();
    }
}

/// A parent wired to itself (its child's address is its own, as a wrong
/// `--child` or etcd record would make it) refuses the request once it has
/// gone round 16 times, naming the loop, instead of passing it round until
/// its budget runs out; and goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_going_round_a_loop_is_refused_after_sixteen_hops() {
    let bins = node_binaries();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let own = format!("127.0.0.1:{port}");
    let child = format!("0@{own}");
    let (parent, addr) = start_node_at(&bins.parent, &["--child", &child, "--cache-mb", "0"], &own);
    let _parent = KilledOnDrop(parent);
    let mut c = client(addr).await;
    // A parent passes a partial answer up (strict mode is the root's): no
    // hits, and the one shard failed, naming the loop.
    let answer = c
        .search(searchtree_proto::pb::SearchRequest {
            query: "river".into(),
            budget_ms: 5000,
            ..Default::default()
        })
        .await
        .expect("a partial answer")
        .into_inner();
    let coverage = answer.coverage.unwrap();
    assert_eq!((coverage.shards_ok, coverage.shards_failed), (0, 1));
    assert!(
        coverage.failures[0].message.contains("wiring has a loop"),
        "{coverage:?}"
    );
    // The client's request and 16 more round the loop were served; the
    // next was refused on arrival, before it counted.
    assert_eq!(searchtree_tests::counter(addr, "requests").await, 17);
    // A client's own request past the limit is refused the same way.
    let refused = c
        .search(searchtree_proto::pb::SearchRequest {
            query: "river".into(),
            hops: 17,
            ..Default::default()
        })
        .await
        .expect_err("past the limit");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused}");
}

/// A node process killed when the test ends, passed or failed.
struct KilledOnDrop(Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
