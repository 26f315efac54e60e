//! The parent's gRPC adapter: reads the request and its gRPC deadline, hands
//! them to its [`InnerNode`], and maps a [`crate::NodeError`] to a status.

use searchtree_proto::deadline::grpc_timeout;
use searchtree_proto::pb::search_server::Search;
use searchtree_proto::pb::{SearchRequest, SearchResponse};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::node::InnerNode;

/// Serves `searchtree.v1.Search` by searching every child and merging.
pub struct ParentService {
    node: InnerNode,
}

impl ParentService {
    /// A service for `node`.
    pub fn new(node: InnerNode) -> Self {
        ParentService { node }
    }
}

#[tonic::async_trait]
impl Search for ParentService {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let arrived = Instant::now();
        let params = self.node.validate(request.get_ref())?;
        let deadline = arrived + self.node.budget(&params, grpc_timeout(&request));
        let response = self.node.search(&params, deadline).await?;
        Ok(Response::new(response))
    }
}
