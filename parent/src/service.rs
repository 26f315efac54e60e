//! The parent's gRPC adapter: validate, fan out, stamp the time taken.

use std::time::Instant;

use searchtree_proto::SearchParams;
use searchtree_proto::pb::search_server::Search;
use searchtree_proto::pb::{SearchRequest, SearchResponse};
use tonic::{Request, Response, Status};

use crate::fanout::FanOut;

/// Serves `searchtree.v1.Search` by searching every child and merging.
pub struct ParentService {
    fanout: FanOut,
}

impl ParentService {
    /// A service over `fanout`'s children.
    pub fn new(fanout: FanOut) -> Self {
        ParentService { fanout }
    }
}

#[tonic::async_trait]
impl Search for ParentService {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let started = Instant::now();
        let params = SearchParams::try_from(request.get_ref())?;
        let mut response = self.fanout.search(&params).await?;
        response.took_us = started.elapsed().as_micros() as u64;
        Ok(Response::new(response))
    }
}
