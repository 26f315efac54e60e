//! The root's gRPC adapter: the one node clients call. It reads the request
//! and its gRPC deadline, hands them to the [`RootNode`], and maps a
//! [`searchtree_parent::NodeError`] to a status.

use searchtree_proto::deadline::grpc_timeout;
use searchtree_proto::pb::search_server::Search;
use searchtree_proto::pb::{SearchRequest, SearchResponse};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::node::RootNode;

/// Serves `searchtree.v1.Search` to clients for the whole tree.
pub struct RootService {
    root: RootNode,
}

impl RootService {
    /// A service for `root`.
    pub fn new(root: RootNode) -> Self {
        RootService { root }
    }
}

#[tonic::async_trait]
impl Search for RootService {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let arrived = Instant::now();
        let params = self.root.validate(request.get_ref())?;
        let deadline = arrived + self.root.budget(&params, grpc_timeout(&request));
        let response = self.root.search(&params, deadline).await?;
        Ok(Response::new(response))
    }
}
