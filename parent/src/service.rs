//! The parent's gRPC adapter: reads the request and its gRPC deadline, hands
//! them to its [`InnerNode`], and maps a [`crate::NodeError`] to a status.

use searchtree_node::serving::arrival;
use searchtree_proto::deadline::grpc_timeout;
use searchtree_proto::pb::search_server::Search;
use searchtree_proto::pb::{SearchRequest, SearchResponse};
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
        let params = self.node.validate(request.get_ref())?;
        let deadline = arrived + self.node.budget(&params, grpc_timeout(&request));
        let response = self.node.search(&params, deadline).await?;
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
            code(NodeError::Overloaded(String::new())),
            Code::ResourceExhausted
        );
        assert_eq!(code(NodeError::Internal(String::new())), Code::Internal);
    }
}
