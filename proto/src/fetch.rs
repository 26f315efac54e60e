//! A fetch request (the second phase of a two-phase search) as a node
//! accepts it: validated once, on receipt, like a search.

use std::time::Duration;

use crate::pb::{DocRef, FetchRequest};
use crate::query::{self, QueryError, QueryLimits};
use crate::request::MAX_TOP_K;

/// The longest document id a fetch may name, in bytes: far above any real
/// id, low enough that a hostile request cannot make every leaf hash
/// megabytes of id.
pub const MAX_DOC_ID_BYTES: usize = 1024;

/// Why a fetch request was refused. Each maps to `INVALID_ARGUMENT` with a
/// message that tells the caller what to change.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum FetchError {
    /// The query is empty, malformed or too complex (see [`crate::query`]).
    #[error(transparent)]
    Query(#[from] QueryError),
    /// More documents than a search may return.
    #[error("{0} documents asked for: fetch at most {MAX_TOP_K} at once")]
    TooManyDocs(usize),
    /// A document id is empty.
    #[error("document {0} has an empty doc_id: give the id a search returned")]
    EmptyDocId(usize),
    /// A document id is longer than [`MAX_DOC_ID_BYTES`].
    #[error(
        "document {index} has a doc_id of {bytes} bytes: ids are at most {MAX_DOC_ID_BYTES} bytes"
    )]
    DocIdTooLong {
        /// Its position in the request.
        index: usize,
        /// Its length in bytes.
        bytes: usize,
    },
}

impl From<FetchError> for tonic::Status {
    fn from(err: FetchError) -> Self {
        tonic::Status::invalid_argument(err.to_string())
    }
}

/// A validated fetch request.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchParams {
    /// The query the snippets highlight, checked like a search's.
    pub query: String,
    /// The documents to fetch, at most [`MAX_TOP_K`], each id non-empty and
    /// at most [`MAX_DOC_ID_BYTES`].
    pub docs: Vec<DocRef>,
    /// The caller's latency budget (`budget_ms`), if it gave one.
    pub budget: Option<Duration>,
    /// The snapshot version the search answered at, 0 for each node's
    /// current (see `FetchRequest.version`).
    pub version: u64,
    /// Inner nodes the request has passed through (see [`crate::hops`]).
    pub hops: u32,
}

impl FetchParams {
    /// Validates a fetch on receipt, its query against `limits` (the same
    /// limits as searches), so a hostile request costs one cheap
    /// `INVALID_ARGUMENT` before any document is read.
    pub fn validate(req: &FetchRequest, limits: &QueryLimits) -> Result<Self, FetchError> {
        query::check(&req.query, limits)?;
        if req.docs.len() > MAX_TOP_K {
            return Err(FetchError::TooManyDocs(req.docs.len()));
        }
        for (index, doc) in req.docs.iter().enumerate() {
            if doc.doc_id.is_empty() {
                return Err(FetchError::EmptyDocId(index));
            }
            if doc.doc_id.len() > MAX_DOC_ID_BYTES {
                return Err(FetchError::DocIdTooLong {
                    index,
                    bytes: doc.doc_id.len(),
                });
            }
        }
        Ok(FetchParams {
            query: req.query.clone(),
            docs: req.docs.clone(),
            budget: (req.budget_ms > 0).then(|| Duration::from_millis(req.budget_ms.into())),
            version: req.version,
            hops: req.hops,
        })
    }

    /// The request for a child that holds `docs` and has `budget` to answer
    /// in (rounded up to whole milliseconds, at least 1, as searches are).
    pub fn to_child_request(&self, docs: Vec<DocRef>, budget: Duration) -> FetchRequest {
        let ms = budget.as_micros().div_ceil(1000);
        FetchRequest {
            query: self.query.clone(),
            docs,
            budget_ms: u32::try_from(ms).unwrap_or(u32::MAX).max(1),
            version: self.version,
            hops: crate::hops::next(self.hops),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str) -> DocRef {
        DocRef {
            doc_id: id.into(),
            shard: 0,
        }
    }

    fn req(query: &str, docs: Vec<DocRef>) -> FetchRequest {
        FetchRequest {
            hops: 0,
            query: query.into(),
            docs,
            budget_ms: 0,
            version: 0,
        }
    }

    fn validate(r: &FetchRequest) -> Result<FetchParams, FetchError> {
        FetchParams::validate(r, &QueryLimits::default())
    }

    #[test]
    fn accepts_a_query_phase_answer() {
        let p = validate(&FetchRequest {
            budget_ms: 20,
            ..req("rust", vec![doc("a"), doc("b")])
        })
        .unwrap();
        assert_eq!(p.docs.len(), 2);
        assert_eq!(p.budget, Some(Duration::from_millis(20)));
        assert_eq!(validate(&req("rust", vec![])).unwrap().budget, None);
        let max = vec![doc("a"); MAX_TOP_K];
        assert!(validate(&req("rust", max)).is_ok());
    }

    #[test]
    fn refuses_hostile_requests_with_what_to_change() {
        assert!(matches!(
            validate(&req("(".repeat(500).as_str(), vec![doc("a")])),
            Err(FetchError::Query(_))
        ));
        assert_eq!(
            validate(&req("a", vec![doc("a"); MAX_TOP_K + 1])),
            Err(FetchError::TooManyDocs(MAX_TOP_K + 1))
        );
        assert_eq!(
            validate(&req("a", vec![doc("a"), doc("")])),
            Err(FetchError::EmptyDocId(1))
        );
        let long = "x".repeat(MAX_DOC_ID_BYTES + 1);
        let err = validate(&req("a", vec![doc(&long)])).unwrap_err();
        assert_eq!(
            err,
            FetchError::DocIdTooLong {
                index: 0,
                bytes: MAX_DOC_ID_BYTES + 1
            }
        );
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("at most 1024 bytes"));
    }

    #[test]
    fn child_requests_carry_the_budget_rounded_up() {
        let p = validate(&req("a", vec![doc("a")])).unwrap();
        let child = p.to_child_request(vec![doc("b")], Duration::from_micros(4_200));
        assert_eq!((child.budget_ms, child.docs.len()), (5, 1));
        assert_eq!(p.to_child_request(vec![], Duration::ZERO).budget_ms, 1);
    }
}
