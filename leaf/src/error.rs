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
    /// The leaf will not serve this request now, e.g. an injected fault
    /// (`UNAVAILABLE`): another replica may.
    #[error("{0}")]
    Unavailable(String),
    /// The search failed in a way that is not the caller's fault
    /// (`INTERNAL`): an index error, or a panic caught in the search.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::searcher::SearchError> for LeafError {
    fn from(err: crate::searcher::SearchError) -> Self {
        use crate::searcher::SearchError;
        match err {
            SearchError::InvalidQuery { .. } => LeafError::Invalid(err.to_string()),
            SearchError::Index(_) => LeafError::Internal(err.to_string()),
        }
    }
}

impl From<searchtree_proto::RequestError> for LeafError {
    fn from(err: searchtree_proto::RequestError) -> Self {
        LeafError::Invalid(err.to_string())
    }
}

impl From<LeafError> for tonic::Status {
    fn from(err: LeafError) -> Self {
        match err {
            LeafError::Invalid(msg) => tonic::Status::invalid_argument(msg),
            LeafError::Timeout(msg) => tonic::Status::deadline_exceeded(msg),
            LeafError::Unavailable(msg) => tonic::Status::unavailable(msg),
            LeafError::Internal(msg) => tonic::Status::internal(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn every_kind_has_its_own_code() {
        let code = |e: LeafError| tonic::Status::from(e).code();
        assert_eq!(code(LeafError::Invalid("q".into())), Code::InvalidArgument);
        assert_eq!(code(LeafError::Timeout("t".into())), Code::DeadlineExceeded);
        assert_eq!(code(LeafError::Unavailable("u".into())), Code::Unavailable);
        assert_eq!(code(LeafError::Internal("i".into())), Code::Internal);
    }
}
