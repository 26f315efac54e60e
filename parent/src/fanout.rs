//! Scatter/gather under a deadline: send a search to every child at once,
//! gather what comes back until the deadline, and merge it into one answer.
//!
//! A child that fails does not fail the search: its shards are counted as
//! failed in the coverage and the others still answer. A child that has not
//! answered by the deadline is counted as timed out and its call is dropped,
//! which cancels it (the leaf then stops searching). Only a bad request (every
//! child would refuse it) is an error here; even an answer with no shard at
//! all travels up as coverage, so the root can say precisely what is missing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use searchtree_proto::SearchParams;
use searchtree_proto::pb::{Coverage, FailureReason, SearchResponse, ShardFailure};
use searchtree_proto::query::truncate_bytes;
use tokio::time::Instant;

use crate::child::{Child, ChildError};
use crate::counters::{InnerCounter, InnerCounters};
use crate::error::NodeError;
use crate::merge::merge;

/// The smallest and largest time kept back for the hop to a child and back.
/// The floor covers the timer's 1 ms granularity: a deadline timer may fire
/// up to 1 ms late, at the child and here.
const HOP_FLOOR: Duration = Duration::from_millis(1);
const HOP_CEILING: Duration = Duration::from_millis(20);
/// What is kept back for a child not yet measured.
const HOP_INITIAL: Duration = Duration::from_millis(3);

/// A child plus what the parent has learned about it.
struct Slot {
    child: Arc<dyn Child>,
    /// Documents below the child, as it last reported.
    docs_total: AtomicU64,
    /// The hop's cost: round trip minus the time the child says it spent,
    /// i.e. network, queueing and serialisation, both ways.
    hop: HopEstimate,
}

/// A smoothed estimate of a hop's cost and of its variation, kept the way
/// TCP estimates its retransmission timeout (Jacobson/Karels): the reserve is
/// `mean + 4 × mean deviation`, so a jittery link (a loaded machine, a debug
/// build) gets a wider margin than a steady one. Races between concurrent
/// updates only lose a sample.
#[derive(Default)]
struct HopEstimate {
    /// Smoothed cost, µs (0: nothing measured yet).
    mean_us: AtomicU64,
    /// Smoothed mean deviation, µs.
    dev_us: AtomicU64,
}

impl HopEstimate {
    fn reserve(&self) -> Duration {
        let mean = self.mean_us.load(Ordering::Relaxed);
        if mean == 0 {
            return HOP_INITIAL;
        }
        let dev = self.dev_us.load(Ordering::Relaxed);
        Duration::from_micros(mean + 4 * dev).clamp(HOP_FLOOR, HOP_CEILING)
    }

    fn observe(&self, sample_us: u64) {
        let sample = sample_us.max(1);
        let mean = self.mean_us.load(Ordering::Relaxed);
        if mean == 0 {
            self.mean_us.store(sample, Ordering::Relaxed);
            self.dev_us.store(sample / 2, Ordering::Relaxed);
            return;
        }
        let dev = self.dev_us.load(Ordering::Relaxed);
        // RFC 6298: dev += (|mean - sample| - dev) / 4; mean += (sample - mean) / 8.
        self.dev_us
            .store((3 * dev + mean.abs_diff(sample)) / 4, Ordering::Relaxed);
        self.mean_us
            .store(((7 * mean + sample) / 8).max(1), Ordering::Relaxed);
    }
}

impl Slot {
    fn observe(&self, round_trip: Duration, response: &SearchResponse) {
        self.hop
            .observe((round_trip.as_micros() as u64).saturating_sub(response.took_us));
        if let Some(c) = &response.coverage {
            self.docs_total.store(c.docs_total, Ordering::Relaxed);
        }
    }
}

/// A parent's children and how to search them together.
#[derive(Clone)]
pub struct FanOut {
    slots: Arc<Vec<Slot>>,
    counters: Arc<InnerCounters>,
    /// Which child the next canary goes to: they take turns, so the risk of
    /// a query of death is spread over the children.
    next_canary: Arc<AtomicUsize>,
}

impl FanOut {
    /// A fan-out over `children`, counting into `counters` .
    pub fn new(children: Vec<Arc<dyn Child>>, counters: Arc<InnerCounters>) -> Self {
        let slots = children
            .into_iter()
            .map(|child| Slot {
                child,
                docs_total: AtomicU64::new(0),
                hop: HopEstimate::default(),
            })
            .collect();
        FanOut {
            slots: Arc::new(slots),
            counters,
            next_canary: Arc::default(),
        }
    }

    /// Searches one child only, for a canary request (`params.canary`): the
    /// child does the same, so the request reaches exactly one leaf. The
    /// answer covers that child's part of the tree; a child that failed
    /// stands in as a failure, with its reason (e.g.
    /// [`FailureReason::Lost`] when it died under the request).
    pub async fn search_one(
        &self,
        params: &SearchParams,
        answer_at: Instant,
    ) -> Result<SearchResponse, NodeError> {
        if self.slots.is_empty() {
            return Ok(merge(params.top_k, Vec::new()));
        }
        let slot = &self.slots[self.next_canary.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let sent = Instant::now();
        let budget = answer_at
            .saturating_duration_since(sent)
            .saturating_sub(slot.hop.reserve());
        let answer = if budget.is_zero() {
            None
        } else {
            let call = slot.child.search(params.to_child_request(budget), budget);
            tokio::time::timeout_at(answer_at, call).await.ok()
        };
        match answer {
            Some(Ok(response)) => {
                slot.observe(sent.elapsed(), &response);
                Ok(response)
            }
            Some(Err(ChildError::InvalidArgument(msg))) => Err(NodeError::Invalid(msg)),
            Some(Err(err)) => {
                self.counters.inc(InnerCounter::ChildrenFailed);
                Ok(failure(slot, &err))
            }
            None => {
                self.counters.inc(InnerCounter::ChildrenTimedOut);
                let err = ChildError::Timeout(format!("no answer within {:.1?}", sent.elapsed()));
                Ok(failure(slot, &err))
            }
        }
    }

    /// Searches every child, gathers answers until `answer_at`, and merges
    /// them into the best `top_k`. Each child gets the time left until
    /// `answer_at` minus the measured cost of the hop to it and back.
    pub async fn search(
        &self,
        params: &SearchParams,
        answer_at: Instant,
    ) -> Result<SearchResponse, NodeError> {
        let sent = Instant::now();
        let mut pending: FuturesUnordered<_> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| {
                let budget = answer_at
                    .saturating_duration_since(sent)
                    .saturating_sub(slot.hop.reserve());
                // No time to even ask: counted as timed out below.
                (!budget.is_zero()).then(|| {
                    let request = params.to_child_request(budget);
                    async move { (i, slot.child.search(request, budget).await) }
                })
            })
            .collect();

        let mut parts = Vec::with_capacity(self.slots.len());
        let mut answered = vec![false; self.slots.len()];
        let deadline = tokio::time::sleep_until(answer_at);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                // An answer that is ready at the deadline still counts.
                biased;
                next = pending.next() => {
                    let Some((i, result)) = next else { break };
                    answered[i] = true;
                    let slot = &self.slots[i];
                    match result {
                        Ok(response) => {
                            slot.observe(sent.elapsed(), &response);
                            parts.push(response);
                        }
                        // Returning drops `pending`, cancelling the calls in flight.
                        Err(ChildError::InvalidArgument(msg)) => {
                            return Err(NodeError::Invalid(msg));
                        }
                        Err(err) => {
                            tracing::debug!(child = slot.child.name(), %err, "child failed");
                            self.counters.inc(if matches!(err, ChildError::Timeout(_)) {
                                InnerCounter::ChildrenTimedOut
                            } else {
                                InnerCounter::ChildrenFailed
                            });
                            parts.push(failure(slot, &err));
                        }
                    }
                }
                _ = &mut deadline => break,
            }
        }
        drop(pending); // cancels every call still outstanding
        let waited = sent.elapsed();
        for (slot, _) in self.slots.iter().zip(&answered).filter(|(_, a)| !**a) {
            self.counters.inc(InnerCounter::ChildrenTimedOut);
            let err = ChildError::Timeout(format!("no answer within {waited:.1?}"));
            parts.push(failure(slot, &err));
        }
        Ok(merge(params.top_k, parts))
    }
}

/// The longest message kept per failed shard, in bytes.
const MAX_FAILURE_MESSAGE_BYTES: usize = 256;

/// The answer that stands in for a child that failed: no hits, and each of
/// its shards counted as failed (or timed out) with the reason.
fn failure(slot: &Slot, err: &ChildError) -> SearchResponse {
    let child = &slot.child;
    let reason = match err {
        ChildError::Timeout(_) => FailureReason::Timeout,
        ChildError::Unavailable(_) => FailureReason::Unavailable,
        ChildError::Lost(_) => FailureReason::Lost,
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
                    message: truncate_bytes(
                        &format!("{}: {err}", child.name()),
                        MAX_FAILURE_MESSAGE_BYTES,
                    ),
                })
                .collect(),
            docs_total: slot.docs_total.load(Ordering::Relaxed),
            docs_searched: 0,
            sources: Vec::new(),
        }),
        partial: true,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_reserve_starts_conservative_and_widens_with_jitter() {
        let steady = HopEstimate::default();
        assert_eq!(steady.reserve(), HOP_INITIAL);
        for _ in 0..50 {
            steady.observe(300);
        }
        // 300 µs with no variation: the 1 ms floor.
        assert_eq!(steady.reserve(), HOP_FLOOR);

        let jittery = HopEstimate::default();
        for i in 0..50 {
            jittery.observe(if i % 2 == 0 { 500 } else { 2500 });
        }
        let r = jittery.reserve();
        assert!(r > Duration::from_millis(4) && r < HOP_CEILING, "{r:?}");
    }
}
