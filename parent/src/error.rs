//! Why an inner node did not answer: one error type for the logic of parents
//! and the root, whose kinds stay distinct up the tree and are mapped to gRPC
//! codes once, in the adapter (`service.rs`).

/// Why an inner node did not answer a search. A missing shard is not an
/// error (it is coverage); these are the reasons for no answer at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The request is the caller's mistake (`INVALID_ARGUMENT`).
    #[error("{0}")]
    Invalid(String),
    /// Nothing could be answered in time (`DEADLINE_EXCEEDED`).
    #[error("{0}")]
    Timeout(String),
    /// Nothing could be answered: the shards failed (`UNAVAILABLE`).
    #[error("{0}")]
    Unavailable(String),
    /// Nothing could be answered: no shard holds the snapshot version the
    /// request is pinned to, so asking again cannot help
    /// (`FAILED_PRECONDITION`).
    #[error("{0}")]
    VersionMissing(String),
    /// The node is past its capacity and sheds the request
    /// (`RESOURCE_EXHAUSTED`).
    #[error("{0}")]
    Overloaded(String),
    /// A bug or an unexpected failure (`INTERNAL`).
    #[error("{0}")]
    Internal(String),
}

impl From<searchtree_proto::RequestError> for NodeError {
    fn from(err: searchtree_proto::RequestError) -> Self {
        NodeError::Invalid(err.to_string())
    }
}
