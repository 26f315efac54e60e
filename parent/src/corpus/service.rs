//! The parent's gRPC adapter for `searchtree.v1.Corpus`: every call is
//! passed to its [`CorpusNode`]; Publish is the root's, and copying versions
//! a leaf's.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use searchtree_node::background;
use searchtree_node::serving::request_stream::numbered;
use searchtree_proto::pb::corpus_server::Corpus;
use searchtree_proto::pb::{
    ActivateRequest, ActivateResponse, CatchUpRequest, CatchUpResponse, CopyVersionRequest,
    DiscardRequest, DiscardResponse, FileChunk, InstallChunk, InstallResponse, LoadAck, LoadBatch,
    PrepareChunk, PrepareRequest, PublishRequest, PublishResponse, VersionsRequest,
    VersionsResponse,
};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::clients::CorpusChildren;
use super::publish_steps::VERSIONS_TIMEOUT;
use super::{CorpusNode, receiver_stream};
use searchtree_proto::forwarded::{self, describe_shards};
use searchtree_proto::sharding::NUM_SHARDS_METADATA;

/// A stream of answers, as the `Corpus` service returns them.
pub type AnswerStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// How long a parent waits for its replicas' shards when a Load stream
/// opens (see [`Corpus::load`]); one that does not answer by then keeps
/// what was known of it.
pub const LOAD_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves `searchtree.v1.Corpus` at a parent.
#[derive(Debug, Clone)]
pub struct ParentCorpus {
    node: Arc<CorpusNode>,
}

impl ParentCorpus {
    /// A service over `node`.
    pub fn new(node: Arc<CorpusNode>) -> Self {
        ParentCorpus { node }
    }

    /// Refuses a step of the root's `call` (a publish's, a discard) that a
    /// client sent here rather than through the root (see [`forwarded`]).
    fn step_from_above(&self, metadata: &MetadataMap, call: &str) -> Result<(), Status> {
        if forwarded::is_forwarded(metadata) {
            Ok(())
        } else {
            Err(not_root_here(&self.node.children(), call))
        }
    }
}

/// The corpus's shard count a Load stream is placed with: the
/// [`NUM_SHARDS_METADATA`] metadata the node above sets. A Load without it
/// came from a client, not from the root: refused (see
/// [`searchtree_proto::forwarded`]).
pub fn num_shards_of(metadata: &MetadataMap, children: &CorpusChildren) -> Result<u32, Status> {
    let Some(value) = metadata.get(NUM_SHARDS_METADATA) else {
        return Err(not_root_here(children, "load"));
    };
    let n = value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "{NUM_SHARDS_METADATA} {value:?} is not a shard count"
            ))
        })?;
    if let Some(max) = children.shards().last()
        && *max >= n
    {
        return Err(Status::invalid_argument(format!(
            "{NUM_SHARDS_METADATA} {n} is too small: shard {max} is below this node"
        )));
    }
    Ok(n)
}

/// The refusal of a client's `call` sent to this parent rather than the root.
fn not_root_here(children: &CorpusChildren, call: &str) -> Status {
    let shards = describe_shards(&children.shards());
    forwarded::not_root(&format!("a parent ({shards})"), call)
}

/// How [`leaf_only`]'s refusal ends.
pub const LEAF_ONLY: &str = " is a leaf's call";

/// Inner nodes pass these on; only leaves act on them.
pub fn leaf_only(call: &str) -> Status {
    Status::failed_precondition(format!("{call}{LEAF_ONLY}"))
}

#[tonic::async_trait]
impl Corpus for ParentCorpus {
    type LoadStream = AnswerStream<LoadAck>;
    type PrepareStream = AnswerStream<PrepareChunk>;
    type CopyVersionStream = AnswerStream<FileChunk>;

    async fn load(
        &self,
        request: Request<Streaming<LoadBatch>>,
    ) -> Result<Response<Self::LoadStream>, Status> {
        let num_shards = num_shards_of(request.metadata(), &self.node.children())?;
        // The root checked every replica's shards before the load began,
        // but this stream opens with the first batch for these shards,
        // maybe minutes later: a replica named since (a stray etcd record)
        // is checked now, before the load's replicas are fixed.
        self.node.versions(LOAD_CHECK_TIMEOUT).await;
        let incoming = numbered(request.into_inner(), "Load", "LoadBatch");
        let (acks, work) = self.node.load(num_shards, incoming);
        background::spawn(work);
        Ok(Response::new(Box::pin(receiver_stream(acks))))
    }

    async fn publish(
        &self,
        _request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        Err(not_root_here(&self.node.children(), "publish"))
    }

    async fn prepare(
        &self,
        request: Request<PrepareRequest>,
    ) -> Result<Response<Self::PrepareStream>, Status> {
        self.step_from_above(request.metadata(), "publish")?;
        let node = Arc::clone(&self.node);
        let request = request.into_inner();
        let chunks = background::spawn(async move {
            let prepared = node.prepare(&request).await?;
            // Chunking every term is CPU work: off the async workers.
            tokio::task::spawn_blocking(move || prepared.into_chunks())
                .await
                .map_err(|e| Status::internal(format!("chunking terms failed: {e}")))
        })
        .await
        .map_err(|e| Status::internal(format!("prepare failed unexpectedly: {e}")))??
        .into_iter()
        .map(Ok);
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn install(
        &self,
        request: Request<Streaming<InstallChunk>>,
    ) -> Result<Response<InstallResponse>, Status> {
        self.step_from_above(request.metadata(), "publish")?;
        let node = Arc::clone(&self.node);
        let incoming = numbered(request.into_inner(), "Install", "InstallChunk");
        let installed = background::spawn(async move { node.install(incoming).await })
            .await
            .map_err(|e| Status::internal(format!("install failed unexpectedly: {e}")))??;
        Ok(Response::new(installed))
    }

    async fn activate(
        &self,
        request: Request<ActivateRequest>,
    ) -> Result<Response<ActivateResponse>, Status> {
        self.step_from_above(request.metadata(), "publish")?;
        Ok(Response::new(
            self.node.activate(request.into_inner()).await?,
        ))
    }

    async fn versions(
        &self,
        request: Request<VersionsRequest>,
    ) -> Result<Response<VersionsResponse>, Status> {
        let within = searchtree_proto::deadline::grpc_timeout(&request)
            .unwrap_or(VERSIONS_TIMEOUT)
            .min(VERSIONS_TIMEOUT);
        let mut versions = self.node.versions(within).await;
        versions.role = "parent".into();
        Ok(Response::new(versions))
    }

    async fn copy_version(
        &self,
        _request: Request<CopyVersionRequest>,
    ) -> Result<Response<Self::CopyVersionStream>, Status> {
        Err(leaf_only("CopyVersion"))
    }

    async fn discard(
        &self,
        request: Request<DiscardRequest>,
    ) -> Result<Response<DiscardResponse>, Status> {
        self.step_from_above(request.metadata(), "discard")?;
        let node = Arc::clone(&self.node);
        let discarded = background::spawn(async move { node.discard().await })
            .await
            .map_err(|e| Status::internal(format!("discard failed unexpectedly: {e}")))?;
        Ok(Response::new(discarded))
    }

    async fn catch_up(
        &self,
        _request: Request<CatchUpRequest>,
    ) -> Result<Response<CatchUpResponse>, Status> {
        Err(leaf_only("CatchUp"))
    }
}
