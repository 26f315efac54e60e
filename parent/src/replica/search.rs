//! One request through the group: a primary call, a retry on another replica
//! after a retryable failure if time remains, and a hedge to a second replica
//! if the primary is slow; the first answer wins and the other call is
//! dropped. This is the group's [`Child`] implementation.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use searchtree_proto::pb::{FetchRequest, FetchResponse, SearchRequest, SearchResponse};
use tokio::time::Instant;

use super::ReplicaGroup;
use super::health::answered_version;
use super::state::{InFlight, Replica};
use crate::child::{Child, ChildError};
use crate::counters::InnerCounter;

/// No retry is sent with less time left than this.
const MIN_RETRY_BUDGET: Duration = Duration::from_millis(1);

/// Why a call was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Primary,
    Retry,
    Hedge,
}

impl ReplicaGroup {
    async fn call(
        &self,
        replicas: &[Arc<Replica>],
        i: usize,
        kind: Kind,
        request: SearchRequest,
        budget: Duration,
    ) -> (usize, Kind, Instant, Result<SearchResponse, ChildError>) {
        let replica = &replicas[i];
        let _in_flight = InFlight::new(&replica.outstanding);
        let started = Instant::now();
        self.counters.inc(InnerCounter::ReplicaCalls);
        let result = replica.child.search(request, budget).await;
        (i, kind, started, result)
    }

    /// Whether a request that failed with `err` may be retried: always when
    /// the replica lacked the version asked for (a sibling holds it, and
    /// the replica leaves rotation at once), else if a retry token is left;
    /// a retry refused for want of one is counted.
    pub(super) fn may_retry(&self, err: &ChildError) -> bool {
        if err.version_missing().is_some() {
            return true;
        }
        let taken = self.retry_budget.take();
        if !taken {
            self.counters.inc(InnerCounter::RetriesThrottled);
        }
        taken
    }

    async fn search_replicas(
        &self,
        request: SearchRequest,
        budget: Duration,
    ) -> Result<SearchResponse, ChildError> {
        let start = Instant::now();
        let deadline = start + budget;
        let turn = self.turn.load(Ordering::Relaxed);
        self.shadow(&request, budget, turn);
        self.hedge_budget.earn();
        self.retry_budget.earn();

        let replicas = self.replicas();
        let replicas = &replicas[..];
        let first = self
            .pick(replicas, &[])
            .ok_or_else(|| ChildError::Unavailable(format!("{}: no replica", self.name)))?;
        let mut tried = vec![first];
        let mut flights = FuturesUnordered::new();
        flights.push(self.call(replicas, first, Kind::Primary, request.clone(), budget));
        let mut retries_left = self.config.retries;
        let hedge_at = self
            .hedge_delay(replicas.len())
            .map(|d| start + d)
            .filter(|at| *at < deadline);
        let mut hedge_armed = hedge_at.is_some();

        loop {
            let hedge_timer = async {
                match hedge_at {
                    Some(at) if hedge_armed => tokio::time::sleep_until(at).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                Some((i, kind, started, result)) = flights.next() => match result {
                    Ok(mut response) => {
                        let version = answered_version(&response, request.version);
                        self.on_success(&replicas[i], started.elapsed(), version);
                        if kind == Kind::Hedge {
                            self.counters.inc(InnerCounter::HedgesWon);
                            // The primary lost the race: it was at least this slow.
                            replicas[first].lock().observe(start.elapsed());
                        }
                        if let Some(c) = response.coverage.as_mut() {
                            for source in &mut c.sources {
                                source.hedged |= kind == Kind::Hedge;
                                source.retried |= kind == Kind::Retry;
                            }
                        }
                        // Returning drops the other call in flight, cancelling it.
                        return Ok(response);
                    }
                    Err(ChildError::InvalidArgument(msg)) => return Err(ChildError::InvalidArgument(msg)),
                    Err(err) => {
                        let retryable = self.on_failure(&replicas[i], &err, started.elapsed(), request.version);
                        let remaining = deadline.saturating_duration_since(Instant::now());
                        if flights.is_empty()
                            && retryable
                            && retries_left > 0
                            && remaining > MIN_RETRY_BUDGET
                            && let Some(j) = self.pick(replicas, &tried)
                            && self.may_retry(&err)
                        {
                            retries_left -= 1;
                            tried.push(j);
                            self.counters.inc(InnerCounter::Retries);
                            flights.push(self.call(replicas, j, Kind::Retry, request.clone(), remaining));
                            continue;
                        }
                        if flights.is_empty() {
                            return Err(err);
                        }
                    }
                },
                _ = hedge_timer => {
                    hedge_armed = false;
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if !remaining.is_zero()
                        && let Some(j) = self.pick_hedge(replicas, &tried)
                        && self.hedge_budget.take()
                    {
                        tried.push(j);
                        self.counters.inc(InnerCounter::HedgesSent);
                        flights.push(self.call(replicas, j, Kind::Hedge, request.clone(), remaining));
                    }
                }
            }
        }
    }
}

impl Child for ReplicaGroup {
    fn name(&self) -> &str {
        &self.name
    }

    fn replica_states(&self) -> Vec<(String, &'static str)> {
        self.replica_rotations()
    }

    fn shards(&self) -> &[u32] {
        &self.shards
    }

    fn search(
        &self,
        request: SearchRequest,
        budget: Duration,
    ) -> BoxFuture<'_, Result<SearchResponse, ChildError>> {
        Box::pin(self.search_replicas(request, budget))
    }

    fn fetch(
        &self,
        request: FetchRequest,
        budget: Duration,
    ) -> BoxFuture<'_, Result<FetchResponse, ChildError>> {
        Box::pin(self.fetch_replicas(request, budget))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::testing::{fakes, group, ms, request, round_robin};
    use super::*;
    use crate::fake::FakeChild;
    use crate::replica::ReplicaConfig;
    use crate::replica::state::{OVERLOAD_BACKOFF, Rotation};

    #[tokio::test(start_paused = true)]
    async fn a_failed_request_ejects_its_replica_and_is_retried_on_another() {
        let r = fakes(2, ms(1));
        let g = group(&r, round_robin());
        r[0].set_down(true);
        let response = g.search(request(), ms(100)).await.unwrap();
        let source = &response.coverage.unwrap().sources[0];
        assert_eq!(source.replica, "r1");
        assert!(source.retried);
        assert_eq!(g.rotations()[0], Rotation::Ejected, "passive health");
        assert_eq!(g.counters.get(InnerCounter::Retries), 1);
        // Never to the same replica: with both down the request fails after one retry.
        r[1].set_down(true);
        let err = g.search(request(), ms(100)).await.unwrap_err();
        assert!(matches!(err, ChildError::Unavailable(_)));
        assert_eq!(r[0].calls() + r[1].calls(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_shedding_load_stays_in_rotation_and_its_request_goes_to_another() {
        let busy = Arc::new(
            FakeChild::failing(0, ms(1), ChildError::Overloaded("at its limit".into()))
                .named("busy"),
        );
        let healthy = fakes(1, ms(1)).remove(0);
        let g = group(&[busy, Arc::clone(&healthy)], round_robin());
        // Refused for load: retried on the sibling, and left alone for a
        // moment, in rotation.
        let response = g.search(request(), ms(100)).await.unwrap();
        assert_eq!(response.coverage.unwrap().sources[0].replica, "r0");
        assert_eq!(g.counters.get(InnerCounter::Retries), 1);
        for _ in 0..4 {
            g.search(request(), ms(100)).await.unwrap();
        }
        assert_eq!(healthy.calls(), 5);
        assert_eq!(
            g.counters.get(InnerCounter::Retries),
            1,
            "no more tries of it"
        );
        assert_eq!(
            g.rotations(),
            [Rotation::In, Rotation::In],
            "shedding load is not an outage"
        );
        assert_eq!(g.counters.get(InnerCounter::Ejections), 0);
        // After the back-off it is asked again.
        tokio::time::advance(OVERLOAD_BACKOFF).await;
        g.search(request(), ms(100)).await.unwrap();
        g.search(request(), ms(100)).await.unwrap();
        assert_eq!(g.counters.get(InnerCounter::Retries), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_group_shedding_load_as_a_whole_is_not_sent_every_request_twice() {
        let busy = |name: &str| {
            Arc::new(
                FakeChild::failing(0, ms(1), ChildError::Overloaded("at its limit".into()))
                    .named(name),
            )
        };
        let (a, b) = (busy("a"), busy("b"));
        let g = group(&[Arc::clone(&a), Arc::clone(&b)], round_robin());
        for _ in 0..100 {
            let err = g.search(request(), ms(100)).await.unwrap_err();
            assert!(matches!(err, ChildError::Overloaded(_)), "{err:?}");
        }
        // 100 requests: a burst of 10 retries, then one per 5 requests
        // (and one a second; 100 requests of 1 ms take a tenth of one).
        let retries = g.counters.get(InnerCounter::Retries);
        assert!((28..=31).contains(&retries), "{retries} retries");
        assert_eq!(a.calls() + b.calls(), 100 + retries as usize);
        assert_eq!(
            g.counters.get(InnerCounter::RetriesThrottled),
            100 - retries
        );
        // At a ratio of 1 every refused request is tried again.
        let (a, b) = (busy("a"), busy("b"));
        let unthrottled = ReplicaConfig {
            retry_ratio: 1.0,
            ..round_robin()
        };
        let g = group(&[Arc::clone(&a), Arc::clone(&b)], unthrottled);
        for _ in 0..100 {
            g.search(request(), ms(100)).await.unwrap_err();
        }
        assert_eq!(g.counters.get(InnerCounter::Retries), 100);
        assert_eq!(g.counters.get(InnerCounter::RetriesThrottled), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_without_time_left() {
        // The first pick fails as unavailable, but only after 10 ms.
        let setup = || {
            let failing = Arc::new(
                FakeChild::failing(0, ms(10), ChildError::Unavailable("gone".into())).named("f"),
            );
            let healthy = fakes(1, ms(1)).remove(0);
            let g = group(&[failing, Arc::clone(&healthy)], round_robin());
            (healthy, g)
        };
        // With a 10 ms budget the failure comes when no time is left.
        let (healthy, g) = setup();
        let start = Instant::now();
        let err = g.search(request(), ms(10)).await.unwrap_err();
        assert!(matches!(err, ChildError::Unavailable(_)));
        assert_eq!(start.elapsed(), ms(10));
        assert_eq!(healthy.calls(), 0, "no retry after the deadline");
        assert_eq!(g.counters.get(InnerCounter::Retries), 0);
        // The same failure with time left is retried on the other replica.
        let (healthy, g) = setup();
        g.search(request(), ms(20)).await.unwrap();
        assert_eq!(healthy.calls(), 1, "a retry while time remains");
        assert_eq!(g.counters.get(InnerCounter::Retries), 1);
    }
}
