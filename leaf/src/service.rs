//! The leaf's gRPC adapter: read the request and its gRPC deadline, hand
//! them to the [`LeafNode`], and map its errors to gRPC codes (written once,
//! in [`LeafError`]'s conversion).

use std::sync::Arc;

use searchtree_node::serving::arrival;
use searchtree_proto::QueryLimits;
use searchtree_proto::pb::search_server::Search;
use searchtree_proto::pb::{FetchRequest, FetchResponse, SearchRequest, SearchResponse};
use tonic::{Request, Response, Status};

use crate::corpus::held::HeldVersions;
use crate::error::LeafError;
use crate::fault::Faults;
use crate::node::LeafNode;
pub use crate::node::{LeafCounter, LeafCounters, LeafTiming};

/// Serves `searchtree.v1.Search` for one shard, at any version it holds.
pub struct LeafService {
    node: LeafNode<HeldVersions>,
}

impl LeafService {
    /// A service running at most `max_concurrent` searches at once; more wait
    /// their turn (until their deadline, in a bounded queue) rather than
    /// oversubscribing the CPU. It answers at the versions `versions` holds,
    /// which the corpus service changes.
    pub fn new(
        versions: Arc<HeldVersions>,
        max_concurrent: usize,
        timing: LeafTiming,
        faults: Faults,
    ) -> Self {
        LeafService {
            node: LeafNode::shared(versions, max_concurrent, timing, faults),
        }
    }

    /// Testing: abort the process on a query containing `term`, as a query
    /// of death would.
    pub fn with_crash_on(self, term: Option<String>) -> Self {
        LeafService {
            node: self.node.with_crash_on(term),
        }
    }

    /// Checks queries against `limits` instead of the defaults.
    pub fn with_query_limits(self, limits: QueryLimits) -> Self {
        LeafService {
            node: self.node.with_query_limits(limits),
        }
    }

    /// Lets at most `max_queued` requests wait for a search slot; more are
    /// refused at once with `RESOURCE_EXHAUSTED`.
    pub fn with_max_queued(self, max_queued: usize) -> Self {
        LeafService {
            node: self.node.with_max_queued(max_queued),
        }
    }

    /// Runs searches estimated at most `cost` on the thread that received
    /// them ([`LeafNode::with_inline_cost`]).
    pub fn with_inline_cost(self, cost: u64) -> Self {
        LeafService {
            node: self.node.with_inline_cost(cost),
        }
    }

    /// The leaf's counters.
    pub fn counters(&self) -> Arc<LeafCounters> {
        self.node.counters()
    }
}

#[tonic::async_trait]
impl Search for LeafService {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let arrived = arrival(&request);
        let params = self.node.validate(request.get_ref())?;
        let budget = self.node.timing().policy.budget_of(&request, params.budget);
        let query = tracing::enabled!(tracing::Level::DEBUG).then(|| params.query.clone());
        let response = self.node.search(params, arrived + budget).await?;
        if let Some(query) = query {
            tracing::debug!(
                %query,
                hits = response.hits.len(),
                took = ?arrived.elapsed(),
                "answered"
            );
        }
        Ok(Response::new(response))
    }

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let arrived = arrival(&request);
        let params = self.node.validate_fetch(request.get_ref())?;
        let budget = self.node.timing().policy.budget_of(&request, params.budget);
        let response = self.node.fetch(params, arrived + budget).await?;
        Ok(Response::new(response))
    }
}

/// The one mapping of the logic's errors to gRPC codes.
impl From<LeafError> for Status {
    fn from(err: LeafError) -> Self {
        match err {
            LeafError::Invalid(msg) => Status::invalid_argument(msg),
            LeafError::Timeout(msg) => Status::deadline_exceeded(msg),
            LeafError::Unavailable(msg) => Status::unavailable(msg),
            LeafError::Overloaded(msg) => Status::resource_exhausted(msg),
            LeafError::Internal(msg) => Status::internal(msg),
            LeafError::VersionMissing(msg) => Status::failed_precondition(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn every_kind_has_its_own_code() {
        let code = |e: LeafError| Status::from(e).code();
        assert_eq!(code(LeafError::Invalid("q".into())), Code::InvalidArgument);
        assert_eq!(code(LeafError::Timeout("t".into())), Code::DeadlineExceeded);
        assert_eq!(code(LeafError::Unavailable("u".into())), Code::Unavailable);
        assert_eq!(code(LeafError::Internal("i".into())), Code::Internal);
        assert_eq!(
            code(LeafError::VersionMissing("version-missing: v".into())),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(LeafError::Overloaded("o".into())),
            Code::ResourceExhausted
        );
    }
}
