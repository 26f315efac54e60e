//! The root's gRPC adapter: the one node clients call.
//!
//! The root handles a request like any inner node — validate, deadline,
//! fan out, merge (see [`InnerNode`]) — and then decides what the client is
//! told about an incomplete answer ([`crate::policy`]).

use searchtree_parent::InnerNode;
use searchtree_proto::pb::search_server::Search;
use searchtree_proto::pb::{SearchRequest, SearchResponse};
use tonic::{Request, Response, Status};

use crate::policy::judge;

/// Serves `searchtree.v1.Search` to clients for the whole tree.
pub struct RootService {
    node: InnerNode,
}

impl RootService {
    /// A root over `node`'s children.
    pub fn new(node: InnerNode) -> Self {
        RootService { node }
    }
}

#[tonic::async_trait]
impl Search for RootService {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let (params, response) = self.node.search(&request).await?;
        match judge(&params, response) {
            Ok(response) => Ok(Response::new(response)),
            Err((refusal, status)) => {
                self.node.counters().inc(refusal.counter());
                tracing::info!(query = %params.query, %status, "answer refused");
                Err(status)
            }
        }
    }
}
