//! A search request as a node accepts it: validated once, on receipt.

use std::time::Duration;

use crate::pb::{Priority, SearchRequest};
use crate::query::{self, QueryError, QueryLimits};

/// Hits returned when a request asks for `top_k = 0`.
pub const DEFAULT_TOP_K: usize = 10;
/// The largest `top_k` a node accepts; above it a request is refused rather
/// than letting one client make every leaf collect and ship huge lists.
pub const MAX_TOP_K: usize = 1000;
/// Why a request was refused. Each maps to `INVALID_ARGUMENT` with a message
/// that tells the caller what to change.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum RequestError {
    /// The query is empty, malformed or too complex (see [`crate::query`]).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// `top_k` is above [`MAX_TOP_K`].
    #[error("top_k {0} is too large: ask for at most {MAX_TOP_K} hits")]
    TopKTooLarge(u32),
    /// `priority` is not one of the `Priority` values.
    #[error("priority {0} is unknown: give 0 (interactive) or 1 (batch)")]
    Priority(i32),
    /// `min_coverage` is not a fraction.
    #[error("min_coverage {0} is not a fraction: give a number from 0.0 to 1.0")]
    MinCoverage(String),
}

impl From<RequestError> for tonic::Status {
    fn from(err: RequestError) -> Self {
        tonic::Status::invalid_argument(err.to_string())
    }
}

/// A validated search request.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchParams {
    /// The query, in tantivy syntax, not empty.
    pub query: String,
    /// How many hits to return, 1..=[`MAX_TOP_K`].
    pub top_k: usize,
    /// The caller's latency budget (`budget_ms`), if it gave one. The
    /// effective budget also depends on the gRPC deadline: see
    /// [`crate::deadline`].
    pub budget: Option<Duration>,
    /// Strict mode: the least fraction of shards that must answer in full
    /// (0 accepts any partial answer).
    pub min_coverage: f64,
    /// Search one shard only (see `SearchRequest.canary`).
    pub canary: bool,
    /// Interactive or batch work, for admission under overload.
    pub priority: Priority,
    /// Count every match exactly, leaving block-max pruning off (see
    /// `SearchRequest.exact_total_hits`).
    pub exact_total_hits: bool,
    /// The query phase only: no titles or snippets (see
    /// `SearchRequest.ids_only`).
    pub ids_only: bool,
    /// The snapshot version to answer at, 0 for each node's current (see
    /// `SearchRequest.version`).
    pub version: u64,
    /// Inner nodes the request has passed through (see [`crate::hops`]).
    pub hops: u32,
    /// Whether every node adds its timings to the response
    /// (`SearchRequest.profile`).
    pub profile: bool,
}

/// Validation with the default [`QueryLimits`].
impl TryFrom<&SearchRequest> for SearchParams {
    type Error = RequestError;

    fn try_from(req: &SearchRequest) -> Result<Self, Self::Error> {
        SearchParams::validate(req, &QueryLimits::default())
    }
}

impl SearchParams {
    /// Validates a request on receipt, its query against `limits`: every
    /// node does this before any work, so a malformed or hostile request
    /// costs one cheap `INVALID_ARGUMENT`.
    pub fn validate(req: &SearchRequest, limits: &QueryLimits) -> Result<Self, RequestError> {
        query::check(&req.query, limits)?;
        let top_k = match req.top_k as usize {
            0 => DEFAULT_TOP_K,
            k if k > MAX_TOP_K => return Err(RequestError::TopKTooLarge(req.top_k)),
            k => k,
        };
        if !(0.0..=1.0).contains(&req.min_coverage) {
            return Err(RequestError::MinCoverage(req.min_coverage.to_string()));
        }
        let priority =
            Priority::try_from(req.priority).map_err(|_| RequestError::Priority(req.priority))?;
        let budget = (req.budget_ms > 0).then(|| Duration::from_millis(req.budget_ms.into()));
        Ok(SearchParams {
            query: req.query.clone(),
            top_k,
            budget,
            min_coverage: req.min_coverage,
            canary: req.canary,
            priority,
            exact_total_hits: req.exact_total_hits,
            ids_only: req.ids_only,
            version: req.version,
            hops: req.hops,
            profile: req.profile,
        })
    }

    /// The request to forward to a child that has `budget` to answer in.
    /// The budget travels both as `budget_ms` (rounded up) and as the gRPC
    /// deadline set by the caller (exact); the child takes the smaller.
    /// Strict mode is the root's business, so it is not forwarded.
    pub fn to_child_request(&self, budget: Duration) -> SearchRequest {
        let ms = budget.as_micros().div_ceil(1000);
        SearchRequest {
            query: self.query.clone(),
            top_k: self.top_k as u32,
            budget_ms: u32::try_from(ms).unwrap_or(u32::MAX).max(1),
            min_coverage: 0.0,
            canary: self.canary,
            priority: self.priority as i32,
            exact_total_hits: self.exact_total_hits,
            ids_only: self.ids_only,
            version: self.version,
            hops: crate::hops::next(self.hops),
            profile: self.profile,
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
            ..Default::default()
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
            Err(RequestError::Query(QueryError::Empty))
        );
        assert_eq!(
            SearchParams::try_from(&req("a", 1001)),
            Err(RequestError::TopKTooLarge(1001))
        );
        let long = "a ".repeat(query::DEFAULT_MAX_QUERY_BYTES);
        assert!(matches!(
            SearchParams::try_from(&req(&long, 5)),
            Err(RequestError::Query(QueryError::TooLong { .. }))
        ));
        assert_eq!(SearchParams::try_from(&req("a", 1000)).unwrap().top_k, 1000);
        for bad in [-0.1, 1.5, f64::NAN] {
            let r = SearchRequest {
                min_coverage: bad,
                ..req("a", 1)
            };
            assert!(matches!(
                SearchParams::try_from(&r),
                Err(RequestError::MinCoverage(_))
            ));
        }
    }

    #[test]
    fn child_requests_carry_the_budget_rounded_up_and_no_strict_mode() {
        let p = SearchParams::try_from(&SearchRequest {
            min_coverage: 1.0,
            ..req("a", 7)
        })
        .unwrap();
        let child = p.to_child_request(Duration::from_micros(47_200));
        assert_eq!((child.budget_ms, child.top_k), (48, 7));
        assert_eq!(child.min_coverage, 0.0);
        assert_eq!(p.to_child_request(Duration::ZERO).budget_ms, 1);
    }

    #[test]
    fn messages_say_what_to_change() {
        let status = tonic::Status::from(RequestError::TopKTooLarge(5000));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("at most 1000"));
    }
}
