//! The parent's gRPC adapter: reads the request and its gRPC deadline, hands
//! them to its [`InnerNode`], and maps a [`crate::NodeError`] to a status.

use searchtree_node::serving::arrival;
use searchtree_proto::deadline::grpc_timeout;
use searchtree_proto::hops;
use searchtree_proto::pb::search_server::Search;
use searchtree_proto::pb::{FetchRequest, FetchResponse, SearchRequest, SearchResponse};
use tonic::{Request, Response, Status};

use crate::error::NodeError;
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
        let arrived = arrival(&request);
        hops::check(request.get_ref().hops, "a parent")?;
        self.node.count_queue_wait(arrived);
        let params = self.node.validate(request.get_ref())?;
        let deadline = arrived + self.node.budget(&params, grpc_timeout(&request));
        let response = self.node.search(&params, deadline).await?;
        Ok(Response::new(response))
    }

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let arrived = arrival(&request);
        hops::check(request.get_ref().hops, "a parent")?;
        let params = self.node.validate_fetch(request.get_ref())?;
        let deadline = arrived + self.node.fetch_budget(&params, grpc_timeout(&request));
        let response = self.node.fetch(&params, deadline).await?;
        Ok(Response::new(response))
    }
}

/// The one mapping of the logic's errors to gRPC codes.
impl From<NodeError> for Status {
    fn from(err: NodeError) -> Self {
        match err {
            NodeError::Invalid(msg) => Status::invalid_argument(msg),
            NodeError::Timeout(msg) => Status::deadline_exceeded(msg),
            NodeError::Unavailable(msg) => Status::unavailable(msg),
            NodeError::VersionMissing(msg) => Status::failed_precondition(msg),
            NodeError::Overloaded(msg) => Status::resource_exhausted(msg),
            NodeError::Internal(msg) => Status::internal(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn every_kind_has_its_own_code() {
        let code = |e: NodeError| Status::from(e).code();
        assert_eq!(
            code(NodeError::Invalid(String::new())),
            Code::InvalidArgument
        );
        assert_eq!(
            code(NodeError::Timeout(String::new())),
            Code::DeadlineExceeded
        );
        assert_eq!(
            code(NodeError::Unavailable(String::new())),
            Code::Unavailable
        );
        assert_eq!(
            code(NodeError::VersionMissing(String::new())),
            Code::FailedPrecondition
        );
        assert_eq!(
            code(NodeError::Overloaded(String::new())),
            Code::ResourceExhausted
        );
        assert_eq!(code(NodeError::Internal(String::new())), Code::Internal);
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_from_arrival_to_the_handler_is_counted() {
        use std::sync::Arc;
        use std::time::Duration;

        use searchtree_node::serving::Arrival;
        use tokio::time::Instant;

        use crate::counters::{InnerCounter, inner_counters};
        use crate::fake::FakeChild;
        use crate::node::{InnerNode, InnerTiming};

        let counters = inner_counters("parent");
        let service = ParentService::new(InnerNode::new(
            "p",
            vec![Arc::new(FakeChild::answering(
                0,
                Duration::from_millis(1),
                &[("a", 1.0)],
            ))],
            InnerTiming::default(),
            Arc::clone(&counters),
        ));
        let ask = |waited: u64| {
            let mut request = Request::new(SearchRequest {
                query: "q".into(),
                budget_ms: 100,
                ..Default::default()
            });
            let arrived = Instant::now() - Duration::from_millis(waited);
            request.extensions_mut().insert(Arrival(arrived));
            request
        };
        service.search(ask(2)).await.unwrap();
        service.search(ask(15)).await.unwrap();
        assert_eq!(counters.get(InnerCounter::QueueWaits), 2);
        assert_eq!(counters.get(InnerCounter::QueueWaitUsTotal), 17_000);
        assert_eq!(counters.get(InnerCounter::QueueWaitsOver10Ms), 1);
    }
}
