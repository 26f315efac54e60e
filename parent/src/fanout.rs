//! Scatter/gather: send a search to every child at once, gather what comes
//! back, and merge it into one answer.
//!
//! A child that fails does not fail the search: its shards are counted as
//! failed in the coverage and the others still answer. Only a bad request
//! (every child would refuse it) is an error here; even an answer with no
//! shard at all travels up as coverage, so the root can say precisely what
//! is missing. The root decides what to tell a client when nothing answered
//! ([`require_an_answer`]).

use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use searchtree_proto::SearchParams;
use searchtree_proto::pb::{Coverage, FailureReason, SearchResponse, ShardFailure};

use crate::child::{Child, ChildError};
use crate::merge::merge;

/// Why a whole search failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FanOutError {
    /// A child refused the request as invalid (e.g. a query that does not parse).
    #[error("{0}")]
    InvalidArgument(String),
    /// No shard answered; the message lists what went wrong with each.
    #[error("no shard could answer: {0}")]
    NothingAnswered(String),
}

impl From<FanOutError> for tonic::Status {
    fn from(err: FanOutError) -> Self {
        match err {
            FanOutError::InvalidArgument(msg) => tonic::Status::invalid_argument(msg),
            FanOutError::NothingAnswered(_) => tonic::Status::unavailable(err.to_string()),
        }
    }
}

/// A parent's children and how to search them together.
#[derive(Clone)]
pub struct FanOut {
    children: Vec<Arc<dyn Child>>,
}

impl FanOut {
    /// A fan-out over `children`.
    pub fn new(children: Vec<Arc<dyn Child>>) -> Self {
        FanOut { children }
    }

    /// The number of shards below all children.
    pub fn shards_total(&self) -> usize {
        self.children.iter().map(|c| c.shards().len()).sum()
    }

    /// Searches every child and merges the answers into the best `top_k`.
    pub async fn search(&self, params: &SearchParams) -> Result<SearchResponse, FanOutError> {
        let request = params.to_request();
        let mut pending: FuturesUnordered<_> = self
            .children
            .iter()
            .map(|child| {
                let request = request.clone();
                async move { (child, child.search(request).await) }
            })
            .collect();

        let mut parts = Vec::with_capacity(self.children.len());
        while let Some((child, result)) = pending.next().await {
            match result {
                Ok(response) => parts.push(response),
                // Dropping `pending` on return cancels the calls still in flight.
                Err(ChildError::InvalidArgument(msg)) => {
                    return Err(FanOutError::InvalidArgument(msg));
                }
                Err(err) => {
                    tracing::warn!(child = child.name(), %err, "child failed");
                    parts.push(failure(child.as_ref(), &err));
                }
            }
        }
        Ok(merge(params.top_k, parts))
    }
}

/// Turns an answer in which no shard took part into an error for the client:
/// there is nothing to show, and the message says why for each shard.
pub fn require_an_answer(response: SearchResponse) -> Result<SearchResponse, FanOutError> {
    let coverage = response.coverage.clone().unwrap_or_default();
    if coverage.shards_total > 0 && coverage.shards_ok == 0 {
        let reasons: Vec<String> = coverage
            .failures
            .iter()
            .map(|f| format!("shard {}: {}", f.shard, f.message))
            .collect();
        return Err(FanOutError::NothingAnswered(reasons.join("; ")));
    }
    Ok(response)
}

/// The answer that stands in for a child that failed: no hits, and each of
/// its shards counted as failed (or timed out) with the reason.
pub fn failure(child: &dyn Child, err: &ChildError) -> SearchResponse {
    let reason = match err {
        ChildError::Timeout(_) => FailureReason::Timeout,
        ChildError::Unavailable(_) => FailureReason::Unavailable,
        ChildError::InvalidArgument(_) | ChildError::Failed(_) => FailureReason::Error,
    };
    let n = child.shards().len() as u32;
    let timed_out = reason == FailureReason::Timeout;
    SearchResponse {
        coverage: Some(Coverage {
            shards_total: n,
            shards_ok: 0,
            shards_timed_out: if timed_out { n } else { 0 },
            shards_failed: if timed_out { 0 } else { n },
            failures: child
                .shards()
                .iter()
                .map(|&shard| ShardFailure {
                    shard,
                    reason: reason as i32,
                    message: format!("{}: {err}", child.name()),
                })
                .collect(),
        }),
        partial: true,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fake::FakeChild;

    fn params(top_k: usize) -> SearchParams {
        SearchParams {
            query: "q".into(),
            top_k,
            budget: None,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn merges_all_children_and_waits_for_the_slowest() {
        let fanout = FanOut::new(vec![
            Arc::new(FakeChild::answering(0, ms(5), &[("a", 1.0), ("b", 3.0)])),
            Arc::new(FakeChild::answering(1, ms(40), &[("c", 2.0)])),
        ]);
        let start = tokio::time::Instant::now();
        let r = fanout.search(&params(2)).await.unwrap();
        assert_eq!(start.elapsed(), ms(40));
        let ids: Vec<_> = r.hits.iter().map(|h| h.doc_id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(r.total_hits, 3);
        assert!(!r.partial);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_child_is_coverage_not_an_error() {
        let fanout = FanOut::new(vec![
            Arc::new(FakeChild::answering(0, ms(5), &[("a", 1.0)])),
            Arc::new(FakeChild::failing(
                1,
                ms(1),
                ChildError::Unavailable("connection refused".into()),
            )),
        ]);
        let r = fanout.search(&params(10)).await.unwrap();
        let c = r.coverage.unwrap();
        assert_eq!((c.shards_total, c.shards_ok, c.shards_failed), (2, 1, 1));
        assert_eq!(c.failures[0].shard, 1);
        assert_eq!(c.failures[0].reason, FailureReason::Unavailable as i32);
        assert!(c.failures[0].message.contains("connection refused"));
        assert!(r.partial);
        assert_eq!(r.hits.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_invalid_query_fails_fast_and_cancels_the_rest() {
        let slow = Arc::new(FakeChild::answering(0, ms(1000), &[("a", 1.0)]));
        let fanout = FanOut::new(vec![
            slow.clone(),
            Arc::new(FakeChild::failing(
                1,
                ms(2),
                ChildError::InvalidArgument("cannot parse query".into()),
            )),
        ]);
        let start = tokio::time::Instant::now();
        let err = fanout.search(&params(10)).await.unwrap_err();
        assert_eq!(
            err,
            FanOutError::InvalidArgument("cannot parse query".into())
        );
        assert_eq!(start.elapsed(), ms(2));
        assert_eq!(slow.cancelled.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_answered_is_coverage_until_the_root_makes_it_unavailable() {
        let fanout = FanOut::new(vec![Arc::new(FakeChild::failing(
            0,
            ms(1),
            ChildError::Unavailable("down".into()),
        ))]);
        let response = fanout.search(&params(10)).await.unwrap();
        assert_eq!(response.coverage.as_ref().unwrap().shards_failed, 1);
        let err = require_an_answer(response).unwrap_err();
        assert!(matches!(err, FanOutError::NothingAnswered(ref m) if m.contains("shard 0")));
        assert_eq!(tonic::Status::from(err).code(), tonic::Code::Unavailable);
    }
}
