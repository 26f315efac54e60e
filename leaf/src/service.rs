//! The leaf's gRPC adapter: validate the request, search on the blocking pool
//! under a concurrency limit, map errors to gRPC codes.

use std::sync::Arc;

use searchtree_proto::SearchParams;
use searchtree_proto::pb::search_server::Search;
use searchtree_proto::pb::{SearchRequest, SearchResponse};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::searcher::{SearchError, ShardSearcher};

/// Serves `searchtree.v1.Search` for one shard.
pub struct LeafService {
    searcher: Arc<ShardSearcher>,
    permits: Arc<Semaphore>,
}

impl LeafService {
    /// A service running at most `max_concurrent` searches at once; more wait
    /// their turn rather than oversubscribing the CPU.
    pub fn new(searcher: ShardSearcher, max_concurrent: usize) -> Self {
        LeafService {
            searcher: Arc::new(searcher),
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
        }
    }
}

impl From<SearchError> for Status {
    fn from(err: SearchError) -> Self {
        match err {
            SearchError::InvalidQuery { .. } => Status::invalid_argument(err.to_string()),
            SearchError::Index(_) => Status::internal(err.to_string()),
        }
    }
}

#[tonic::async_trait]
impl Search for LeafService {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let params = SearchParams::try_from(request.get_ref())?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Status::unavailable("leaf is shutting down"))?;
        let searcher = Arc::clone(&self.searcher);
        let response = tokio::task::spawn_blocking(move || searcher.search(&params))
            .await
            .map_err(|e| Status::internal(format!("search task failed: {e}")))??;
        Ok(Response::new(response))
    }
}
