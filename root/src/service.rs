//! The root's gRPC adapter: the one node clients call.
//!
//! The root validates each request before any child sees it, fans it out over
//! the tree with the parent's [`FanOut`], and reports how long it took. It is
//! the one node that turns "no shard answered" into an error for the client.

use std::time::Instant;

use searchtree_parent::FanOut;
use searchtree_parent::fanout::require_an_answer;
use searchtree_proto::SearchParams;
use searchtree_proto::pb::search_server::Search;
use searchtree_proto::pb::{SearchRequest, SearchResponse};
use tonic::{Request, Response, Status};

/// Serves `searchtree.v1.Search` to clients for the whole tree.
pub struct RootService {
    fanout: FanOut,
}

impl RootService {
    /// A root over `fanout`'s children.
    pub fn new(fanout: FanOut) -> Self {
        RootService { fanout }
    }
}

#[tonic::async_trait]
impl Search for RootService {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let started = Instant::now();
        let params = SearchParams::try_from(request.get_ref())?;
        let result = self
            .fanout
            .search(&params)
            .await
            .and_then(require_an_answer);
        let elapsed = started.elapsed();
        match &result {
            Ok(r) => {
                tracing::debug!(query = %params.query, hits = r.hits.len(), ?elapsed, "search")
            }
            Err(err) => tracing::info!(query = %params.query, %err, ?elapsed, "search refused"),
        }
        let mut response = result?;
        response.took_us = elapsed.as_micros() as u64;
        Ok(Response::new(response))
    }
}
