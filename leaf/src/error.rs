//! Why a leaf did not answer: one error type for the whole request path,
//! whose kinds stay distinct up the tree (a parent retries an unavailable
//! replica, never a bad query), mapped to gRPC codes once, in the adapter.

/// Why a leaf did not answer a search.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeafError {
    /// The request is the caller's mistake (`INVALID_ARGUMENT`).
    #[error("{0}")]
    Invalid(String),
    /// The deadline passed before a search could start (`DEADLINE_EXCEEDED`).
    #[error("{0}")]
    Timeout(String),
    /// The leaf is too busy to start this request before its deadline, or
    /// its queue is full (`RESOURCE_EXHAUSTED`): refused at once, so the
    /// caller still has time to try another replica.
    #[error("{0}")]
    Overloaded(String),
    /// The leaf will not serve this request now, e.g. an injected fault
    /// (`UNAVAILABLE`): another replica may.
    #[error("{0}")]
    Unavailable(String),
    /// The search failed in a way that is not the caller's fault
    /// (`INTERNAL`): an index error, or a panic caught in the search.
    #[error("{0}")]
    Internal(String),
    /// The request is pinned to a snapshot version this leaf does not hold
    /// (`FAILED_PRECONDITION`, message starting with `version-missing:`): a
    /// sibling that holds it may answer, and this replica should catch up.
    #[error("{0}")]
    VersionMissing(String),
}

impl From<crate::searcher::SearchError> for LeafError {
    fn from(err: crate::searcher::SearchError) -> Self {
        use crate::searcher::SearchError;
        match err {
            SearchError::InvalidQuery { .. } => LeafError::Invalid(err.to_string()),
            SearchError::Index(_) => LeafError::Internal(err.to_string()),
            SearchError::VersionMissing(_) => LeafError::VersionMissing(err.to_string()),
        }
    }
}

impl From<searchtree_proto::RequestError> for LeafError {
    fn from(err: searchtree_proto::RequestError) -> Self {
        LeafError::Invalid(err.to_string())
    }
}

/// What a caught panic said, if it carried a message (as `panic!`,
/// `assert!` and `expect` do), for a log line or an error message.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> Option<&str> {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
}
