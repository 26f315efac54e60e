//! A fetch through the group: one replica, chosen as searches are
//! ([`choice`](super::choice)); if it refuses or cannot be reached, once more
//! on another while time remains. No hedging: a fetch is small, and a
//! fetch's latency says little about a replica's search latency, so it is
//! not folded into the statistics that hedging and probation judge by. A
//! refusal still ejects the replica, and a refusal for load leaves it alone
//! for a back-off, as they would for a search.

use std::time::Duration;

use searchtree_proto::pb::{FetchRequest, FetchResponse};
use tokio::time::Instant;

use super::ReplicaGroup;
use super::state::InFlight;
use crate::child::ChildError;
use crate::counters::InnerCounter;

/// No retry is sent with less time left than this.
const MIN_RETRY_BUDGET: Duration = Duration::from_millis(1);

impl ReplicaGroup {
    /// Fetches from one replica, retrying another on a retryable failure.
    pub(super) async fn fetch_replicas(
        &self,
        request: FetchRequest,
        budget: Duration,
    ) -> Result<FetchResponse, ChildError> {
        let deadline = Instant::now() + budget;
        let mut tried = Vec::new();
        let mut budget = budget;
        let replicas = self.replicas();
        self.retry_budget.earn();
        // The failure a retry would follow, if this is one.
        let mut failed: Option<ChildError> = None;
        loop {
            let Some(i) = self.pick(&replicas, &tried) else {
                return Err(failed.unwrap_or_else(|| {
                    ChildError::Unavailable(format!("{}: no replica", self.name))
                }));
            };
            if let Some(err) = failed.take() {
                // A retry, to a replica there is: within the budget.
                if !self.may_retry(&err) {
                    return Err(err);
                }
                self.counters.inc(InnerCounter::Retries);
            }
            tried.push(i);
            let replica = &replicas[i];
            let started = Instant::now();
            self.counters.inc(InnerCounter::ReplicaCalls);
            let result = {
                let _in_flight = InFlight::new(&replica.outstanding);
                replica.child.fetch(request.clone(), budget).await
            };
            let err = match result {
                Ok(answer) => {
                    self.on_answered(replica, request.version);
                    return Ok(answer);
                }
                Err(err) => err,
            };
            // Only refusals and versions missing say something about the
            // replica: a fetch's latency is not its search latency.
            let retryable = (err.is_retryable() || matches!(err, ChildError::Failed(_)))
                && self.on_failure(replica, &err, started.elapsed(), request.version);
            budget = deadline.saturating_duration_since(Instant::now());
            let retry = retryable
                && budget > MIN_RETRY_BUDGET
                && tried.len() <= self.config.retries as usize;
            if !retry {
                return Err(err);
            }
            failed = Some(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use searchtree_proto::pb::DocRef;

    use super::super::testing::{fakes, group, ms, round_robin};
    use super::*;
    use crate::child::Child;
    use crate::replica::state::Rotation;

    fn fetch_request() -> FetchRequest {
        FetchRequest {
            hops: 0,
            query: "q".into(),
            docs: vec![DocRef {
                doc_id: "a".into(),
                shard: 0,
            }],
            budget_ms: 0,
            version: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_goes_to_one_replica_and_around_a_dead_one() {
        let r = fakes(2, ms(1));
        let g = group(&r, round_robin());
        let answer = g.fetch(fetch_request(), ms(100)).await.unwrap();
        assert_eq!(answer.hits.len(), 1);
        assert_eq!(
            r[0].fetch_calls() + r[1].fetch_calls(),
            1,
            "one replica asked"
        );

        r[0].set_down(true);
        r[1].set_down(false);
        for _ in 0..2 {
            let answer = g.fetch(fetch_request(), ms(100)).await.unwrap();
            assert_eq!(answer.hits[0].doc_id, "a");
        }
        assert_eq!(g.rotations()[0], Rotation::Ejected, "passive health");
        assert!(g.counters.get(InnerCounter::Retries) >= 1);

        r[1].set_down(true);
        let err = g.fetch(fetch_request(), ms(100)).await.unwrap_err();
        assert!(matches!(err, ChildError::Unavailable(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_replica_is_not_retried() {
        let r = fakes(2, ms(50));
        let g = group(&r, round_robin());
        let start = Instant::now();
        let err = g.fetch(fetch_request(), ms(20)).await.unwrap_err();
        assert!(matches!(err, ChildError::Timeout(_)), "{err:?}");
        assert_eq!(start.elapsed(), ms(20));
        assert_eq!(r[0].fetch_calls() + r[1].fetch_calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_replica_s_failure_is_its_own_and_spends_no_retry() {
        let r = fakes(1, ms(1));
        let g = group(&r, round_robin());
        r[0].set_down(true);
        let err = g.fetch(fetch_request(), ms(100)).await.unwrap_err();
        assert!(
            matches!(&err, ChildError::Unavailable(m) if m.contains("is down")),
            "the replica's own error, not 'no replica': {err:?}"
        );
        assert_eq!(g.counters.get(InnerCounter::Retries), 0);
        assert_eq!(g.counters.get(InnerCounter::RetriesThrottled), 0);
        // The budget is untouched: ten retries are still there.
        assert_eq!((0..20).filter(|_| g.retry_budget.take()).count(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn fetch_retries_come_out_of_the_group_s_budget() {
        let r = fakes(2, ms(1));
        let g = group(&r, round_robin());
        while g.retry_budget.take() {}
        r[0].set_down(true);
        // The dead replica's turn: no retry left, its error comes back.
        let err = g.fetch(fetch_request(), ms(100)).await.unwrap_err();
        assert!(matches!(err, ChildError::Unavailable(_)), "{err:?}");
        assert_eq!(g.counters.get(InnerCounter::RetriesThrottled), 1);
        assert_eq!(r[1].fetch_calls(), 0);
    }
}
