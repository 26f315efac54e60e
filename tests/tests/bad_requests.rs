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

/// Sends `body`, as it is, as the message of a `Search` call to `addr`, the
/// way a client built from some other .proto would.
async fn raw_search(
    addr: std::net::SocketAddr,
    body: Vec<u8>,
) -> Result<searchtree_proto::pb::SearchResponse, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
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
