//! The root's gRPC adapter: the one node clients call.
//!
//! The root handles a request like any inner node — validate, deadline,
//! fan out, merge (see [`InnerNode`]) — and then decides what the client is
//! told about an incomplete answer ([`crate::policy`]).

use searchtree_parent::InnerNode;
use searchtree_proto::pb::search_server::Search;
use searchtree_proto::pb::{SearchRequest, SearchResponse};
use tonic::{Request, Response, Status};

use crate::canary::{Canary, CanaryConfig};
use crate::policy::judge;

/// Serves `searchtree.v1.Search` to clients for the whole tree.
pub struct RootService {
    node: InnerNode,
    canary: Option<Canary>,
}

impl RootService {
    /// A root over `node`'s children.
    pub fn new(node: InnerNode) -> Self {
        RootService { node, canary: None }
    }

    /// Sends canaries for unseen queries (see [`crate::canary`]), if `config`
    /// is given.
    pub fn with_canary(mut self, config: Option<CanaryConfig>) -> Self {
        if let Some(config) = config {
            tracing::info!(?config, "canary requests on");
        }
        self.canary = config.map(Canary::new);
        self
    }
}

#[tonic::async_trait]
impl Search for RootService {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let (params, response) = match &self.canary {
            Some(canary) => canary.search(&self.node, &request).await?,
            None => self.node.search(&request).await?,
        };
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
