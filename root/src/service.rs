//! The root's gRPC adapter: the one node clients call. It reads the request
//! and its gRPC deadline, hands them to the [`RootNode`], and maps a
//! [`searchtree_parent::NodeError`] to a status.

use searchtree_node::serving::arrival;
use searchtree_proto::deadline::grpc_timeout;
use searchtree_proto::hops;
use searchtree_proto::pb::search_server::Search;
use searchtree_proto::pb::{FetchRequest, FetchResponse, SearchRequest, SearchResponse};
use tonic::{Request, Response, Status};

use searchtree_parent::NodeError;

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
        let arrived = arrival(&request);
        hops::check_from_client(request.get_ref().hops)?;
        self.root.inner().count_queue_wait(arrived);
        let params = self.root.validate(request.get_ref())?;
        let deadline = arrived + self.root.budget(&params, grpc_timeout(&request));
        match self.root.search(&params, deadline).await {
            Ok(response) => Ok(Response::new(response)),
            Err(err) => Err(status_of(err, self.root.pushback())),
        }
    }

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<FetchResponse>, Status> {
        let arrived = arrival(&request);
        hops::check_from_client(request.get_ref().hops)?;
        let params = self.root.validate_fetch(request.get_ref())?;
        let deadline = arrived + self.root.fetch_budget(&params, grpc_timeout(&request));
        let response = self.root.fetch(&params, deadline).await?;
        Ok(Response::new(response))
    }
}

/// The status for an error; a shed query also carries gRPC's standard retry
/// pushback (`grpc-retry-pushback-ms`), so well-behaved clients back off.
fn status_of(err: NodeError, pushback: Option<std::time::Duration>) -> Status {
    let overloaded = matches!(err, NodeError::Overloaded(_));
    let mut status = Status::from(err);
    if let (true, Some(pushback)) = (overloaded, pushback)
        && let Ok(value) = pushback.as_millis().to_string().parse()
    {
        status
            .metadata_mut()
            .insert("grpc-retry-pushback-ms", value);
    }
    status
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_shed_query_carries_the_retry_pushback() {
        let status = status_of(
            NodeError::Overloaded("busy".into()),
            Some(Duration::from_millis(50)),
        );
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.metadata().get("grpc-retry-pushback-ms").unwrap(),
            "50"
        );
        let other = status_of(
            NodeError::Invalid("bad".into()),
            Some(Duration::from_millis(50)),
        );
        assert!(other.metadata().get("grpc-retry-pushback-ms").is_none());
    }
}
