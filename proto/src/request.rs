//! A search request as a node accepts it: validated once, on receipt.

use std::time::Duration;

use crate::pb::SearchRequest;

/// Hits returned when a request asks for `top_k = 0`.
pub const DEFAULT_TOP_K: usize = 10;
/// The largest `top_k` a node accepts; above it a request is refused rather
/// than letting one client make every leaf collect and ship huge lists.
pub const MAX_TOP_K: usize = 1000;
/// The longest query string accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 4096;

/// Why a request was refused. Each maps to `INVALID_ARGUMENT` with a message
/// that tells the caller what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// The query string is empty or only white space.
    #[error("query is empty: give at least one term, e.g. \"rust\" or \"title:paris\"")]
    EmptyQuery,
    /// The query string is longer than [`MAX_QUERY_BYTES`].
    #[error("query is {0} bytes long; the limit is {MAX_QUERY_BYTES} bytes")]
    QueryTooLong(usize),
    /// `top_k` is above [`MAX_TOP_K`].
    #[error("top_k {0} is too large: ask for at most {MAX_TOP_K} hits")]
    TopKTooLarge(u32),
}

impl From<RequestError> for tonic::Status {
    fn from(err: RequestError) -> Self {
        tonic::Status::invalid_argument(err.to_string())
    }
}

/// A validated search request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchParams {
    /// The query, in tantivy syntax, not empty.
    pub query: String,
    /// How many hits to return, 1..=[`MAX_TOP_K`].
    pub top_k: usize,
    /// The caller's latency budget, if it gave one.
    pub budget: Option<Duration>,
}

impl TryFrom<&SearchRequest> for SearchParams {
    type Error = RequestError;

    fn try_from(req: &SearchRequest) -> Result<Self, Self::Error> {
        if req.query.trim().is_empty() {
            return Err(RequestError::EmptyQuery);
        }
        if req.query.len() > MAX_QUERY_BYTES {
            return Err(RequestError::QueryTooLong(req.query.len()));
        }
        let top_k = match req.top_k as usize {
            0 => DEFAULT_TOP_K,
            k if k > MAX_TOP_K => return Err(RequestError::TopKTooLarge(req.top_k)),
            k => k,
        };
        let budget = (req.budget_ms > 0).then(|| Duration::from_millis(req.budget_ms.into()));
        Ok(SearchParams {
            query: req.query.clone(),
            top_k,
            budget,
        })
    }
}

impl SearchParams {
    /// The wire form of these parameters, for forwarding to a child.
    pub fn to_request(&self) -> SearchRequest {
        SearchRequest {
            query: self.query.clone(),
            top_k: self.top_k as u32,
            budget_ms: self
                .budget
                .map_or(0, |b| u32::try_from(b.as_millis()).unwrap_or(u32::MAX)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(query: &str, top_k: u32) -> SearchRequest {
        SearchRequest {
            query: query.into(),
            top_k,
            budget_ms: 0,
        }
    }

    #[test]
    fn zero_top_k_means_default() {
        let p = SearchParams::try_from(&req("rust", 0)).unwrap();
        assert_eq!(p.top_k, DEFAULT_TOP_K);
        assert_eq!(p.budget, None);
    }

    #[test]
    fn refuses_empty_long_and_oversized() {
        assert_eq!(
            SearchParams::try_from(&req("  ", 5)),
            Err(RequestError::EmptyQuery)
        );
        assert_eq!(
            SearchParams::try_from(&req("a", 1001)),
            Err(RequestError::TopKTooLarge(1001))
        );
        let long = "a ".repeat(MAX_QUERY_BYTES);
        assert!(matches!(
            SearchParams::try_from(&req(&long, 5)),
            Err(RequestError::QueryTooLong(_))
        ));
        assert_eq!(SearchParams::try_from(&req("a", 1000)).unwrap().top_k, 1000);
    }

    #[test]
    fn messages_say_what_to_change() {
        let status = tonic::Status::from(RequestError::TopKTooLarge(5000));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("at most 1000"));
    }
}
