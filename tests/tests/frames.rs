//! Calls between nodes as frames, end to end: every node of a real tree
//! (root, parents, leaves) answers a search sent as frames exactly as it
//! answers it over HTTP/2, refuses bad ones the same way, and a tree whose
//! inner nodes call their children over HTTP/2 (`--child-transport grpc`)
//! answers every bundled query as the default tree (frames) does. Garbage
//! sent as frames (calls of every kind of wrong, frames no caller writes,
//! connections cut mid-frame) takes no node down, panics none, and is
//! answered with the codes a caller's mistakes get.

use std::time::Duration;

use searchtree::bundled;
use searchtree::tree::supervisor::{self, StartOptions};
use searchtree::tree::topology::Topology;
use searchtree_node::frames::{FrameChannel, Keepalive, wire};
use searchtree_proto::pb::search_client::SearchClient;
use searchtree_proto::pb::{SearchRequest, SearchResponse};
use searchtree_tests::{
    GENEROUS_BUDGET_MS, client, counter, fixture, node_binaries, start_sharded_tree,
};
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

/// A small deterministic generator (SplitMix64): the same garbage every run,
/// so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The paths a garbage call asks for: the node's own methods, methods it
/// serves only over HTTP/2, streaming ones, and paths that are no path.
const PATHS: &[&str] = &[
    "/searchtree.v1.Search/Search",
    "/searchtree.v1.Search/Search",
    "/searchtree.v1.Search/Fetch",
    "/searchtree.v1.Corpus/Load",
    "/searchtree.v1.Corpus/Prepare",
    "/searchtree.v1.NodeStats/GetStats",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/searchtree.v1.Search/",
    "/",
    "",
    "*",
    "http://elsewhere/searchtree.v1.Search/Search",
    "/searchtree.v1.Search/Search?x=%ff",
];

/// Headers a garbage call carries: the ones a caller sends, with values a
/// caller should not send.
const HEADERS: &[(&str, &[&str])] = &[
    (
        "grpc-timeout",
        &[
            "1m",
            "0n",
            "99999999H",
            "-5m",
            "",
            "12",
            "1x",
            "18446744073709551615S",
        ],
    ),
    (
        "grpc-encoding",
        &["gzip", "deflate", "identity", "zstd", "bogus"],
    ),
    (
        "content-type",
        &["application/grpc", "application/grpc+json", "text/html", ""],
    ),
    ("te", &["trailers", "gzip"]),
    ("authorization", &["Bearer ", "Bearer x", "Basic Og==", ""]),
    (
        "traceparent",
        &[
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00--",
            "zz",
        ],
    ),
    ("grpc-accept-encoding", &["gzip", ","]),
];

/// A gRPC message: a search or fetch request with fields no client should
/// send, or bytes that are no message, behind a length prefix that may lie.
fn garbage_message(rng: &mut Rng) -> Vec<u8> {
    use prost::Message;
    let queries = [
        "paris",
        "",
        "\"unclosed",
        "a AND (b OR",
        "*",
        "title:",
        "x~9^99",
    ];
    let message = match rng.below(4) {
        0 => SearchRequest {
            query: rng.pick(&queries).to_string(),
            top_k: *rng.pick(&[0, 1, 10, 1000, 1001, u32::MAX]),
            budget_ms: *rng.pick(&[0, 1, 50, GENEROUS_BUDGET_MS, u32::MAX]),
            min_coverage: *rng.pick(&[0.0, 0.5, 1.0, -1.0, 2.0, f64::NAN, f64::INFINITY]),
            canary: rng.below(2) == 0,
            priority: *rng.pick(&[0, 1, 2, 99, -7]),
            exact_total_hits: rng.below(2) == 0,
            ids_only: rng.below(2) == 0,
            version: *rng.pick(&[0, 1, u64::MAX]),
            profile: rng.below(2) == 0,
            hops: *rng.pick(&[0, 1, 64, u32::MAX]),
        }
        .encode_to_vec(),
        1 => searchtree_proto::pb::FetchRequest {
            query: rng.pick(&queries).to_string(),
            docs: (0..rng.below(4))
                .map(|_| searchtree_proto::pb::DocRef {
                    doc_id: String::from_utf8_lossy(&rng.bytes(12)).into_owned(),
                    shard: *rng.pick(&[0, 1, 3, 4, u32::MAX]),
                })
                .collect(),
            budget_ms: *rng.pick(&[0, 1, GENEROUS_BUDGET_MS, u32::MAX]),
            version: *rng.pick(&[0, 1, u64::MAX]),
            hops: *rng.pick(&[0, u32::MAX]),
        }
        .encode_to_vec(),
        _ => rng.bytes(64),
    };
    let compressed = u8::from(rng.below(6) == 0);
    let length = match rng.below(5) {
        0 => rng.next() as u32,
        1 => (message.len() as u32).saturating_add(1),
        _ => message.len() as u32,
    };
    let mut out = vec![compressed];
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&message);
    if rng.below(8) == 0 {
        out.truncate(rng.below(out.len() + 1));
    }
    out
}

/// One frame of garbage: mostly calls the node parses as far as its gRPC
/// stack, some cancels and pings of ids never used, some frames of kinds,
/// fields and lengths no caller writes.
fn garbage_frame(rng: &mut Rng, out: &mut Vec<u8>) {
    let any = rng.next();
    let id = *rng.pick(&[0, 1, 2, any]);
    let mut payload = Vec::new();
    let kind = match rng.below(12) {
        0..=1 => {
            // A sound search, as a caller sends it: the node must still
            // answer these among the garbage.
            use prost::Message;
            let path = b"/searchtree.v1.Search/Search";
            payload.extend_from_slice(&(path.len() as u16).to_be_bytes());
            payload.extend_from_slice(path);
            let headers = [("content-type", "application/grpc"), ("te", "trailers")];
            payload.extend_from_slice(&(headers.len() as u16).to_be_bytes());
            for (name, value) in headers {
                for field in [name.as_bytes(), value.as_bytes()] {
                    payload.extend_from_slice(&(field.len() as u16).to_be_bytes());
                    payload.extend_from_slice(field);
                }
            }
            let query: &&str = rng.pick(&["paris", "river", "war"]);
            let message = request(query).encode_to_vec();
            payload.push(0);
            payload.extend_from_slice(&(message.len() as u32).to_be_bytes());
            payload.extend_from_slice(&message);
            1
        }
        2..=7 => {
            let path = rng.pick(PATHS).as_bytes();
            payload.extend_from_slice(&(path.len() as u16).to_be_bytes());
            payload.extend_from_slice(path);
            let headers: Vec<(&str, &str)> = (0..rng.below(5))
                .map(|_| {
                    let (name, values) = rng.pick(HEADERS);
                    (*name, *rng.pick(values))
                })
                .collect();
            payload.extend_from_slice(&(headers.len() as u16).to_be_bytes());
            for (name, value) in headers {
                for field in [name.as_bytes(), value.as_bytes()] {
                    payload.extend_from_slice(&(field.len() as u16).to_be_bytes());
                    payload.extend_from_slice(field);
                }
            }
            payload.extend_from_slice(&garbage_message(rng));
            if rng.below(6) == 0 {
                // A field cut short, or a header count that lies.
                let cut = rng.below(payload.len() + 1);
                payload.truncate(cut);
            }
            1
        }
        8 => 2,
        9 => *rng.pick(&[4, 5, 3, 6]),
        10 => rng.next() as u8,
        _ => {
            payload = rng.bytes(40);
            rng.below(7) as u8
        }
    };
    let length = (payload.len() + 9) as u32;
    let length = match rng.below(40) {
        0 => rng.below(9) as u32,
        1 => u32::MAX,
        2 => length + 100,
        _ => length,
    };
    out.extend_from_slice(&length.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&payload);
}

/// Sends one connection's garbage to `addr` (the magic, then frames, maybe
/// cut off in the middle) and reads what comes back until the node closes
/// or goes quiet: the status of each answer that came back, and its
/// message.
async fn send_garbage(addr: std::net::SocketAddr, rng: &mut Rng) -> Vec<(Code, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut bytes = wire::MAGIC.to_vec();
    for _ in 0..1 + rng.below(12) {
        garbage_frame(rng, &mut bytes);
    }
    if rng.below(5) == 0 {
        bytes.truncate(8 + rng.below(bytes.len() - 8));
    }
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The node may close before it has read it all: a write error is the
    // node refusing garbage, not a failure.
    let _ = stream.write_all(&bytes).await;
    let mut read = Vec::new();
    let quiet = Duration::from_millis(if rng.below(4) == 0 { 0 } else { 300 });
    while let Ok(Ok(n)) = tokio::time::timeout(quiet, stream.read_buf(&mut read)).await {
        if n == 0 {
            break;
        }
    }
    let mut answers = read.get(8..).unwrap_or_default();
    let mut codes = Vec::new();
    while let Ok(Some(frame)) = wire::read_frame(&mut answers).await {
        if frame.kind == wire::Kind::Response {
            let mut payload = frame.payload;
            let headers = wire::get_headers(&mut payload).expect("an answer's headers");
            let trailers = wire::get_headers(&mut payload).expect("an answer's trailers");
            let status = tonic::Status::from_header_map(&trailers)
                .or_else(|| tonic::Status::from_header_map(&headers));
            codes.push(status.map_or((Code::Ok, String::new()), |s| {
                (s.code(), s.message().to_string())
            }));
        }
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_garbage_on_a_connection_of_frames_takes_a_node_down() {
    let fx = fixture(TMP);
    let tree = start_sharded_tree(fx).await;
    let pids: Vec<_> = tree
        .addresses()
        .into_iter()
        .map(|(name, _)| (tree.pid(&name), name))
        .collect();
    let mut rng = Rng(0x5EA7C47EE);
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..40 {
        let sends = tree.addresses().into_iter().map(|(_, addr)| {
            let mut rng = Rng(rng.next());
            async move { send_garbage(addr, &mut rng).await }
        });
        for (code, message) in futures::future::join_all(sends).await.into_iter().flatten() {
            // What a caller got wrong is its mistake (INVALID_ARGUMENT), a
            // method or encoding the node does not serve over frames
            // UNIMPLEMENTED, a budget too short to search in
            // DEADLINE_EXCEEDED, a version the node does not hold or a
            // request that went round a loop of nodes FAILED_PRECONDITION;
            // INTERNAL only where gRPC's compression spec asks for it (a
            // compressed message with no `grpc-encoding`).
            let expected = match code {
                Code::Ok
                | Code::InvalidArgument
                | Code::Unimplemented
                | Code::DeadlineExceeded
                | Code::FailedPrecondition => true,
                Code::Internal => message.contains("compressed-flag but no grpc-encoding"),
                _ => false,
            };
            assert!(expected, "{code:?}: {message}");
            *codes.entry(format!("{code:?}")).or_default() += 1;
        }
    }
    // The garbage got as far as the nodes' gRPC stacks, and the sound calls
    // among it were answered.
    eprintln!("answers to garbage by status: {codes:?}");
    assert!(codes.get("Ok").is_some_and(|&n| n > 10), "{codes:?}");
    assert!(
        codes.get("InvalidArgument").is_some_and(|&n| n > 10),
        "{codes:?}"
    );
    // Every node is the process it was, and answers as it did.
    for (pid, name) in &pids {
        assert_eq!(tree.pid(name), *pid, "{name} was restarted");
    }
    assert!(
        tree.restart_counts().iter().all(|(_, n)| *n == 0),
        "{:?}",
        tree.restart_counts()
    );
    for (name, addr) in tree.addresses() {
        assert_eq!(counter(addr, "panics").await, 0, "{name} panicked");
    }
    let query = bundled::queries()[0];
    for (name, addr) in tree.addresses() {
        let over_http2 = client(addr).await.search(request(query)).await;
        let over_frames = frames_client(addr).search(request(query)).await;
        let (a, b) = (
            over_http2.expect(&name).into_inner(),
            over_frames.expect(&name).into_inner(),
        );
        assert_eq!(seen(&a), seen(&b), "{name}");
        assert!(!a.hits.is_empty(), "{name}");
    }
}
