//! Two-phase search end to end: the root's default (ids and scores from the
//! tree, then titles and snippets fetched for the global top-k) answers
//! exactly what one phase answers — ids, scores, titles and snippets — and
//! what one whole-corpus index ranks; the Fetch RPC refuses hostile
//! requests on receipt; and server reflection lists it.

use futures::StreamExt;
use prost::Message;
use searchtree::bundled;
use searchtree_proto::pb::search_client::SearchClient;
use searchtree_proto::pb::{DocRef, FetchRequest, Hit, SearchRequest, SearchResponse};
use searchtree_tests::oracle::{Oracle, assert_same_hits};
use searchtree_tests::{Fixture, GENEROUS_BUDGET_MS, client, counter, fixture, send, start_tree};
use tonic::Code;
use tonic::transport::Channel;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// The fixture's 4-shard, 2-parent topology with the root in one phase or
/// two, whatever the build chose for the corpus (written beside it).
fn topology(fx: &Fixture, one_phase: bool) -> std::path::PathBuf {
    let file = fx.sharded.join(searchtree::build::TOPOLOGY_FILE);
    let mut topology = searchtree::tree::topology::Topology::load(&file).expect("topology");
    topology.root.one_phase = one_phase;
    // One file per call: tests run in parallel and must not read a file
    // another is writing.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let phases = if one_phase { 1 } else { 2 };
    let path = fx.sharded.join(format!("phases-{phases}-{n}.toml"));
    std::fs::write(&path, topology.to_toml()).expect("write topology");
    path
}

async fn search(root: &mut SearchClient<Channel>, query: &str, top_k: u32) -> SearchResponse {
    send(
        root,
        SearchRequest {
            query: query.into(),
            top_k,
            budget_ms: GENEROUS_BUDGET_MS,
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{query:?}: {e}"))
}

/// What a client sees of a hit.
fn shown(h: &Hit) -> (&str, f32, u32, &str, &str) {
    (&h.doc_id, h.score, h.shard, &h.title, &h.snippet)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phases_answer_exactly_what_one_phase_and_one_index_answer() {
    let fx = fixture(TMP);
    let oracle = Oracle::open(&fx.whole.join("shards/shard-000"));
    let two = start_tree(&topology(fx, false)).await;
    let one = start_tree(&topology(fx, true)).await;
    let (mut two_root, mut one_root) =
        (client(two.root_addr()).await, client(one.root_addr()).await);
    let queries: Vec<String> = bundled::queries()
        .into_iter()
        .step_by(25)
        .map(String::from)
        .collect();
    assert!(queries.len() >= 8, "only {} queries", queries.len());
    let mut with_snippets = 0;
    for query in &queries {
        for k in [1, 10, 50] {
            let got = search(&mut two_root, query, k).await;
            let want = search(&mut one_root, query, k).await;
            assert_eq!(got.hits_unfetched, 0, "{query:?} top-{k}");
            let got_hits: Vec<_> = got.hits.iter().map(shown).collect();
            let want_hits: Vec<_> = want.hits.iter().map(shown).collect();
            assert_eq!(got_hits, want_hits, "{query:?} top-{k}: two phases vs one");
            let (expected, _) = oracle.top_k(query, k as usize);
            assert_same_hits(
                &format!("{query:?} top-{k}: tree vs one index"),
                &got.hits,
                &expected,
            );
            with_snippets += got
                .hits
                .iter()
                .filter(|h| h.snippet.contains("<b>"))
                .count();
        }
    }
    assert!(
        with_snippets > 100,
        "only {with_snippets} highlighted snippets"
    );

    // Two phases fetched the global top-k only; one phase fetched nothing.
    let root_fetches = |addr| async move { counter(addr, "fetches").await };
    assert!(root_fetches(two.root_addr()).await >= queries.len() as u64);
    assert_eq!(root_fetches(one.root_addr()).await, 0);

    // A client asking for ids only gets no titles, and nothing unfetched.
    let bare = send(
        &mut two_root,
        SearchRequest {
            query: queries[0].clone(),
            top_k: 10,
            budget_ms: GENEROUS_BUDGET_MS,
            ids_only: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(!bare.hits.is_empty());
    assert!(
        bare.hits
            .iter()
            .all(|h| h.title.is_empty() && h.snippet.is_empty())
    );
    assert_eq!(bare.hits_unfetched, 0);

    // ... and can fetch them itself, through the root.
    let docs: Vec<DocRef> = bare
        .hits
        .iter()
        .map(|h| DocRef {
            doc_id: h.doc_id.clone(),
            shard: h.shard,
        })
        .chain([DocRef {
            doc_id: "no-such-document".into(),
            shard: 0,
        }])
        .collect();
    let fetched = two_root
        .fetch(FetchRequest {
            hops: 0,
            query: queries[0].clone(),
            docs,
            budget_ms: GENEROUS_BUDGET_MS,
            version: 0,
        })
        .await
        .expect("fetch")
        .into_inner();
    let full = search(&mut one_root, &queries[0], 10).await;
    let titles: Vec<(&str, &str)> = fetched
        .hits
        .iter()
        .map(|h| (h.doc_id.as_str(), h.title.as_str()))
        .collect();
    let want: Vec<(&str, &str)> = full
        .hits
        .iter()
        .map(|h| (h.doc_id.as_str(), h.title.as_str()))
        .collect();
    assert_eq!(titles, want);
    assert_eq!(fetched.not_found.len(), 1);
    assert!(fetched.unfetched.is_empty());
    two.shutdown().await;
    one.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_fetches_are_refused_at_every_node_with_what_to_change() {
    let fx = fixture(TMP);
    let tree = start_tree(&topology(fx, false)).await;
    let doc = |id: String| DocRef {
        doc_id: id,
        shard: 0,
    };
    let hostile = [
        (
            FetchRequest {
                hops: 0,
                query: "(".repeat(10_000),
                docs: vec![doc("a".into())],
                budget_ms: 100,
                version: 0,
            },
            "",
        ),
        (
            FetchRequest {
                hops: 0,
                query: "rust".into(),
                docs: (0..1001).map(|i| doc(i.to_string())).collect(),
                budget_ms: 100,
                version: 0,
            },
            "at most 1000",
        ),
        (
            FetchRequest {
                hops: 0,
                query: "rust".into(),
                docs: vec![doc("x".repeat(1025))],
                budget_ms: 100,
                version: 0,
            },
            "at most 1024 bytes",
        ),
        (
            FetchRequest {
                hops: 0,
                query: "rust".into(),
                docs: vec![doc(String::new())],
                budget_ms: 100,
                version: 0,
            },
            "empty doc_id",
        ),
    ];
    for (name, addr) in tree.addresses() {
        let mut node = client(addr).await;
        for (request, says) in &hostile {
            let status = node.fetch(request.clone()).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
            assert!(
                status.message().contains(says),
                "{name}: {}",
                status.message()
            );
        }
    }
    tree.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_search_service_with_fetch() {
    let fx = fixture(TMP);
    let tree = start_tree(&topology(fx, false)).await;
    let channel = Channel::from_shared(format!("http://{}", tree.root_addr()))
        .expect("address")
        .connect()
        .await
        .expect("connect");
    let mut reflection = ServerReflectionClient::new(channel);
    let ask = |request: MessageRequest| {
        futures::stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        }])
    };
    let mut answers = reflection
        .server_reflection_info(ask(MessageRequest::ListServices(String::new())))
        .await
        .expect("list services")
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"searchtree.v1.Search"), "{names:?}");

    let mut answers = reflection
        .server_reflection_info(ask(MessageRequest::FileContainingSymbol(
            "searchtree.v1.Search".into(),
        )))
        .await
        .expect("file containing symbol")
        .into_inner();
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("not a file descriptor");
    };
    let methods: Vec<String> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap())
        .flat_map(|f| f.service)
        .filter(|s| s.name() == "Search")
        .flat_map(|s| s.method)
        .map(|m| m.name().to_string())
        .collect();
    assert_eq!(methods, ["Search", "Fetch"]);

    // A symbol that does not exist, 100 KB long: refused as not found,
    // with a message short enough for any client's header limit (16 KiB
    // in grpc-go and grpc-python), not the symbol quoted in full.
    let mut answers = reflection
        .server_reflection_info(ask(MessageRequest::FileContainingSymbol(
            "x".repeat(100_000),
        )))
        .await
        .expect("file containing a missing symbol")
        .into_inner();
    let status = match answers.next().await {
        Some(Err(status)) => status,
        Some(Ok(answer)) => match answer.message_response {
            Some(MessageResponse::ErrorResponse(e)) => {
                tonic::Status::new(Code::from(e.error_code), e.error_message)
            }
            other => panic!("an answer for a missing symbol: {other:?}"),
        },
        None => panic!("the stream ended with no answer"),
    };
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(
        status.message().len() <= 1024,
        "{} bytes",
        status.message().len()
    );
    tree.shutdown().await;
}
