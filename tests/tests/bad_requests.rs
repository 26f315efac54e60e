//! Bad requests get INVALID_ARGUMENT with a message a person can act on, at
//! every kind of node, and the tree keeps serving afterwards. So does a Load
//! stream one of whose messages does not decode, and what came before it
//! stands; an Install stream's is refused the same way.

use prost::Message;
use searchtree_proto::forwarded::forwarded;
use searchtree_proto::pb::corpus_client::CorpusClient;
use searchtree_proto::pb::{
    DocOp, DocRef, FetchRequest, InstallResponse, LoadAck, LoadBatch, SearchRequest,
    VersionsRequest,
};
use searchtree_proto::sharding::{NUM_SHARDS_METADATA, shard_of};
use searchtree_tests::{SHARDS, client, fixture, node_addr, search, start_sharded_tree};
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
            // A prefix that begins more words than a shard expands: each
            // shard would pick different ones.
            ("\"the a\"*", 10, "begins more than 50 words"),
            // Punctuation has no words to search: said as much, not
            // blamed on exclusions the query does not have.
            ("! !", 10, "punctuation"),
            ("...", 10, "punctuation"),
            ("title:\"\u{1f389}\"", 10, "symbols"),
            // Words the index leaves out, too long to be words.
            (
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy",
                10,
                "words of 40 bytes or more",
            ),
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
        // A sloppy phrase too costly to match: refused before any leaf
        // tries (one such query once took every leaf down).
        let sloppy = format!("\"{}\"~255", "the of and in a to was is ".repeat(4).trim());
        let status = search(&mut node, &sloppy, 10)
            .await
            .expect_err("a sloppy phrase past the cap");
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(status.message().contains("slop 255"), "{name}: {status:?}");
        // A fetch is refused for the same query as a search, at every
        // level: the leaf that finds it invalid says why, and its parents
        // pass that on rather than answering with the document unfetched.
        let fetch = FetchRequest {
            query: "-paris".into(),
            docs: vec![DocRef {
                doc_id: "anything".into(),
                shard: 0,
            }],
            ..Default::default()
        };
        let status = node.fetch(fetch).await.expect_err("a fetch of -paris");
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(
            status.message().contains("only excluded terms"),
            "{name}: {status:?}"
        );
        // A message above the transport's limit (4 MiB): the request is at
        // fault, not the server (tonic says OUT_OF_RANGE).
        let huge = "volcano ".repeat(5 << 17);
        let status = search(&mut node, &huge, 10)
            .await
            .expect_err("a 5 MiB request");
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(
            status.message().contains("send a smaller one"),
            "{name}: {status:?}"
        );
        if name == "root" {
            // Fields only nodes set: a client's canary would read as a
            // complete answer over one shard; its hops past the limit.
            for (request, should_mention) in [
                (
                    SearchRequest {
                        query: "volcano".into(),
                        canary: true,
                        ..Default::default()
                    },
                    "leave canary false",
                ),
                (
                    SearchRequest {
                        query: "volcano".into(),
                        hops: 17,
                        ..Default::default()
                    },
                    "clients leave it 0",
                ),
            ] {
                let status = node.search(request).await.expect_err(should_mention);
                assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
                assert!(status.message().contains(should_mention), "{status:?}");
            }
        }
        // A request that is not a SearchRequest at all: a client whose
        // .proto declares the query as bytes, sending bytes that are not
        // UTF-8; a field with a length past the message's end. The request
        // is what is wrong.
        for (body, should_mention) in [
            (vec![0x0a, 0x02, 0xff, 0xfe], "not UTF-8"),
            (vec![0x0a, 0x7f, b'a'], "buffer underflow"),
        ] {
            let status = raw_search(addr, body).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
            assert!(
                status.message().contains(should_mention)
                    && status.message().contains("not this method's message"),
                "{name}: {:?}",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_message_that_does_not_decode_is_invalid_argument_and_what_came_before_stands() {
    let fx = fixture(TMP);
    let tree = start_sharded_tree(fx).await;
    let root = tree.root_addr();
    // The root, a parent and a leaf (each as the node above would call it:
    // with the corpus's shard count) all answer alike. Every document goes
    // to shard 0, which is below all three.
    for (i, name) in ["root", "parent-0", "leaf-0"].into_iter().enumerate() {
        let addr = node_addr(&tree, name);
        let before = staged_on_shard_0(root).await;
        let first = batch(11, &format!("{name}-first"));
        let after = batch(13, &format!("{name}-after"));
        // Message 2 holds a document whose id is not UTF-8: what a client
        // whose .proto declares ids as bytes could send.
        let undecodable = vec![0x12, 0x04, 0x0a, 0x02, 0xff, 0xfe];
        let (acks, end) = raw_load(
            addr,
            name != "root",
            vec![first.encode_to_vec(), undecodable, after.encode_to_vec()],
        )
        .await;
        assert_eq!(acks.len(), 1, "{name}: {acks:?}");
        assert!(
            acks[0].ok && acks[0].seq == 11 && acks[0].added == 1,
            "{name}: {acks:?}"
        );
        let status = end.expect_err("the stream must not end as if whole");
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(
            status
                .message()
                .starts_with("message 2 of the Load stream is not a LoadBatch")
                && status.message().contains("not UTF-8")
                && status.message().contains("send message 2"),
            "{name}: {:?}",
            status.message()
        );
        // What was acknowledged is staged; nothing of the message after it.
        assert_eq!(staged_on_shard_0(root).await, before + 1, "{name}");
        assert_eq!(before, i as u64);
    }
    // So does a publish's Install step (as the node above passes it down):
    // a chunk whose replica name is not UTF-8 is named, not INTERNAL.
    for name in ["parent-0", "leaf-0"] {
        let undecodable = vec![0x08, 0x07, 0x2a, 0x02, 0xff, 0xfe];
        let status = raw_install(node_addr(&tree, name), vec![undecodable])
            .await
            .expect_err("an undecodable Install chunk must be refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(
            status
                .message()
                .starts_with("message 1 of the Install stream is not an InstallChunk")
                && status.message().contains("not UTF-8")
                && status.message().contains("no message came before it"),
            "{name}: {:?}",
            status.message()
        );
    }
    // A message past the size limit after one that was answered: refused
    // by its number too, not with the transport's OUT_OF_RANGE.
    let too_large = vec![0u8; (64 << 20) + 1024];
    let (acks, end) = raw_load(
        root,
        false,
        vec![batch(17, "root-before-large").encode_to_vec(), too_large],
    )
    .await;
    assert!(
        acks.len() == 1 && acks[0].ok && acks[0].seq == 17,
        "{acks:?}"
    );
    let status = end.expect_err("an oversized message must be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("message 2 of the Load stream is larger than a LoadBatch may be (64 MiB)")
            && status.message().ends_with("split into smaller ones"),
        "{:?}",
        status.message()
    );
    assert_eq!(staged_on_shard_0(root).await, 4);
    // A well-formed load goes through afterwards: nothing was left held.
    let (acks, end) = raw_load(root, false, vec![batch(21, "root-next").encode_to_vec()]).await;
    end.expect("a whole stream ends cleanly");
    assert!(acks.len() == 1 && acks[0].ok, "{acks:?}");
    assert_eq!(staged_on_shard_0(root).await, 5);
    tree.shutdown().await;
}

/// A batch of one document, with an id of shard 0 that starts with `stem`.
fn batch(seq: u64, stem: &str) -> LoadBatch {
    let id = (0..)
        .map(|n| format!("{stem}-{n}"))
        .find(|id| shard_of(id, SHARDS) == 0)
        .unwrap();
    LoadBatch {
        seq,
        ops: vec![DocOp {
            id,
            title: "bad stream".into(),
            body: "a document sent beside a message that does not decode".into(),
            delete: false,
            line: seq,
        }],
    }
}

/// Operations staged on shard 0 (its one leaf), through the root.
async fn staged_on_shard_0(root: std::net::SocketAddr) -> u64 {
    let mut corpus = CorpusClient::connect(format!("http://{root}"))
        .await
        .unwrap();
    let leaves = corpus
        .versions(VersionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .leaves;
    leaves
        .iter()
        .filter(|l| l.shard == 0)
        .map(|l| l.staged_ops)
        .sum()
}

/// Sends `messages`, each as it is, as a `Load` stream to `addr` (with the
/// corpus's shard count, as a node above sends it, when `from_above`), and
/// returns the acknowledgements and how the stream ended.
async fn raw_load(
    addr: std::net::SocketAddr,
    from_above: bool,
    messages: Vec<Vec<u8>>,
) -> (Vec<LoadAck>, Result<(), tonic::Status>) {
    let mut grpc = raw_client(addr).await;
    let path = http::uri::PathAndQuery::from_static("/searchtree.v1.Corpus/Load");
    let mut request =
        tonic::Request::new(futures::stream::iter(messages.into_iter().map(RawMessage)));
    if from_above {
        request
            .metadata_mut()
            .insert(NUM_SHARDS_METADATA, SHARDS.to_string().parse().unwrap());
    }
    let response = grpc
        .streaming(
            request,
            path,
            tonic_prost::ProstCodec::<RawMessage, LoadAck>::default(),
        )
        .await;
    let mut stream = match response {
        Ok(response) => response.into_inner(),
        Err(status) => return (Vec::new(), Err(status)),
    };
    let mut acks = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(ack)) => acks.push(ack),
            Ok(None) => return (acks, Ok(())),
            Err(status) => return (acks, Err(status)),
        }
    }
}

/// Sends `messages`, each as it is, as an `Install` stream to `addr`, the
/// way the node above passes a publish's step down.
async fn raw_install(
    addr: std::net::SocketAddr,
    messages: Vec<Vec<u8>>,
) -> Result<InstallResponse, tonic::Status> {
    let mut grpc = raw_client(addr).await;
    let path = http::uri::PathAndQuery::from_static("/searchtree.v1.Corpus/Install");
    let request = forwarded(futures::stream::iter(messages.into_iter().map(RawMessage)));
    grpc.client_streaming(
        request,
        path,
        tonic_prost::ProstCodec::<RawMessage, InstallResponse>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

/// A gRPC client of `addr` that sends messages as they are.
async fn raw_client(addr: std::net::SocketAddr) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    grpc
}

/// Sends `body`, as it is, as the message of a `Search` call to `addr`, the
/// way a client built from some other .proto would.
async fn raw_search(
    addr: std::net::SocketAddr,
    body: Vec<u8>,
) -> Result<searchtree_proto::pb::SearchResponse, tonic::Status> {
    let mut grpc = raw_client(addr).await;
    let path = http::uri::PathAndQuery::from_static("/searchtree.v1.Search/Search");
    grpc.unary(
        tonic::Request::new(RawMessage(body)),
        path,
        tonic_prost::ProstCodec::<RawMessage, searchtree_proto::pb::SearchResponse>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}

/// A message whose encoding is exactly the bytes it holds.
#[derive(Debug, Clone, Default)]
struct RawMessage(Vec<u8>);

impl prost::Message for RawMessage {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        _tag: u32,
        _wire_type: prost::encoding::WireType,
        _buf: &mut impl prost::bytes::Buf,
        _ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        unreachable!("only sent")
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear();
    }
}
