//! The parent's gRPC adapter: hands each request to its [`InnerNode`].

use searchtree_proto::pb::search_server::Search;
use searchtree_proto::pb::{SearchRequest, SearchResponse};
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
        let (_, response) = self.node.search(&request).await?;
        Ok(Response::new(response))
    }
}
