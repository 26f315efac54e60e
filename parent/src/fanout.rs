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
use searchtree_proto::hit_order;
use searchtree_proto::pb::{Coverage, FailureReason, Hit, SearchResponse, ShardFailure};
use searchtree_proto::query::truncate_bytes;
use tokio::time::Instant;

use crate::child::{Child, ChildError};
use crate::child_k::{DEFAULT_CHILD_K_PROBABILITY, child_k, needs_more};
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

/// How a fan-out asks its children and when it stops waiting for them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FanOutOptions {
    /// Each child is asked for as many hits as it holds of the top-k with
    /// this probability ([`crate::child_k`]); 1 asks every child for all k.
    pub child_k_probability: f64,
    /// Answer before the deadline once enough shards have answered; `None`
    /// waits for every child until the deadline.
    pub early_answer: Option<EarlyAnswer>,
}

impl Default for FanOutOptions {
    fn default() -> Self {
        FanOutOptions {
            child_k_probability: DEFAULT_CHILD_K_PROBABILITY,
            early_answer: None,
        }
    }
}

/// Adaptive coverage, as Vespa has it: once `coverage` of the shards have
/// answered, wait at most `wait` more for the rest, instead of until the
/// deadline. A tail of stragglers then costs a bounded delay and the
/// answer's coverage says what was left out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EarlyAnswer {
    /// The fraction of shards (0–1] after which waiting is bounded.
    pub coverage: f64,
    /// How much longer to wait for the rest.
    pub wait: Duration,
}

impl EarlyAnswer {
    fn threshold(&self, node_shards: usize) -> EarlyThreshold {
        EarlyThreshold {
            shards: ((self.coverage * node_shards as f64).ceil() as usize).max(1),
            wait: self.wait,
        }
    }
}

/// [`EarlyAnswer`] in shards of one node.
#[derive(Debug, Clone, Copy)]
struct EarlyThreshold {
    shards: usize,
    wait: Duration,
}

impl EarlyThreshold {
    fn reached(&self, shards_ok: usize) -> bool {
        shards_ok >= self.shards
    }
}

/// A parent's children and how to search them together.
#[derive(Clone)]
pub struct FanOut {
    slots: Arc<Vec<Slot>>,
    counters: Arc<InnerCounters>,
    options: FanOutOptions,
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
            options: FanOutOptions::default(),
            next_canary: Arc::default(),
        }
    }

    /// The same fan-out, asking and waiting as `options` say.
    pub fn with_options(mut self, options: FanOutOptions) -> Self {
        self.options = options;
        self
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
    ///
    /// Each child is asked for only as many hits as it is likely to hold of
    /// the top-k ([`crate::child_k`]); a child that might hold more is asked
    /// again, for all of them, in the time that remains. If that second
    /// answer does not come, the child's first hits stay in the answer and
    /// its shards count as timed out.
    pub async fn search(
        &self,
        params: &SearchParams,
        answer_at: Instant,
    ) -> Result<SearchResponse, NodeError> {
        let k = params.top_k;
        let node_shards: usize = self.slots.iter().map(|s| s.child.shards().len()).sum();
        let asks: Vec<(usize, usize)> = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let shards = slot.child.shards().len();
                (
                    i,
                    child_k(k, shards, node_shards, self.options.child_k_probability),
                )
            })
            .collect();
        let early = self.options.early_answer.map(|e| e.threshold(node_shards));
        let mut answers = self.gather(params, &asks, answer_at, early).await?;

        let kth = {
            let mut firsts: Vec<&Hit> = answers
                .iter()
                .filter_map(Answer::answered)
                .flat_map(|r| &r.hits)
                .collect();
            firsts.sort_by(|a, b| hit_order(a, b));
            firsts.get(k.saturating_sub(1)).map(|h| (*h).clone())
        };
        let again: Vec<(usize, usize)> = asks
            .iter()
            .filter(|&&(i, asked)| {
                asked < k
                    && answers[i]
                        .answered()
                        .is_some_and(|r| needs_more(asked, r, kth.as_ref()))
            })
            .map(|&(i, _)| (i, k))
            .collect();
        if !again.is_empty() {
            self.counters.inc(InnerCounter::QueriesAskedAgain);
            self.counters
                .add(InnerCounter::ChildrenAskedAgain, again.len() as u64);
            let mut seconds = self.gather(params, &again, answer_at, None).await?;
            for &(i, _) in &again {
                let second = std::mem::replace(&mut seconds[i], Answer::NotAsked);
                let first = std::mem::replace(&mut answers[i], Answer::NotAsked);
                answers[i] = match (second, first) {
                    (Answer::Answered(full), _) => Answer::Answered(full),
                    // The first answer's hits are real, but maybe not all of
                    // the child's share: keep them, count the shards as lost.
                    (second, Answer::Answered(first)) => {
                        let stand_in = match second {
                            Answer::StandIn(r) => r,
                            _ => {
                                failure(&self.slots[i], &ChildError::Timeout("no time left".into()))
                            }
                        };
                        Answer::StandIn(SearchResponse {
                            hits: first.hits,
                            total_hits: first.total_hits,
                            total_hits_is_lower_bound: first.total_hits_is_lower_bound,
                            snapshot: first.snapshot,
                            ..stand_in
                        })
                    }
                    (_, first) => first,
                };
            }
        }
        let parts = answers.into_iter().enumerate().map(|(i, a)| match a {
            Answer::Answered(response) | Answer::StandIn(response) => response,
            Answer::NotAsked => failure(
                &self.slots[i],
                &ChildError::Timeout("not asked: no time left".into()),
            ),
        });
        Ok(merge(k, parts))
    }

    /// Asks the children in `asks` (slot, hits wanted) at once and gathers
    /// their answers until `answer_at` — or, with `early`, until a bounded
    /// wait after enough shards have answered. One entry per slot of the
    /// node.
    async fn gather(
        &self,
        params: &SearchParams,
        asks: &[(usize, usize)],
        answer_at: Instant,
        early: Option<EarlyThreshold>,
    ) -> Result<Vec<Answer>, NodeError> {
        let sent = Instant::now();
        let mut pending: FuturesUnordered<_> = asks
            .iter()
            .filter_map(|&(i, top_k)| {
                let slot = &self.slots[i];
                let budget = answer_at
                    .saturating_duration_since(sent)
                    .saturating_sub(slot.hop.reserve());
                // No time to even ask: counted as timed out below.
                (!budget.is_zero()).then(|| {
                    let mut request = params.to_child_request(budget);
                    request.top_k = top_k as u32;
                    async move { (i, slot.child.search(request, budget).await) }
                })
            })
            .collect();

        let mut answers: Vec<Answer> = (0..self.slots.len()).map(|_| Answer::NotAsked).collect();
        let mut answered = vec![false; self.slots.len()];
        let mut shards_ok = 0usize;
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
                            shards_ok += response.coverage.as_ref().map_or(0, |c| c.shards_ok as usize);
                            answers[i] = Answer::Answered(response);
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
                            answers[i] = Answer::StandIn(failure(slot, &err));
                        }
                    }
                    if let Some(early) = early
                        && early.reached(shards_ok)
                        && !pending.is_empty()
                    {
                        let at = (Instant::now() + early.wait).min(answer_at);
                        if at < deadline.deadline() {
                            deadline.as_mut().reset(at);
                        }
                    }
                }
                _ = &mut deadline => {
                    if deadline.deadline() < answer_at {
                        self.counters.inc(InnerCounter::EarlyAnswers);
                    }
                    break;
                }
            }
        }
        drop(pending); // cancels every call still outstanding
        let waited = sent.elapsed();
        for &(i, _) in asks.iter().filter(|(i, _)| !answered[*i]) {
            self.counters.inc(InnerCounter::ChildrenTimedOut);
            let err = ChildError::Timeout(format!("no answer within {waited:.1?}"));
            answers[i] = Answer::StandIn(failure(&self.slots[i], &err));
        }
        Ok(answers)
    }
}

/// What became of one child in one round of asking.
enum Answer {
    /// It answered.
    Answered(SearchResponse),
    /// It failed or was late: this stands in for its shards.
    StandIn(SearchResponse),
    /// It was not asked (this round).
    NotAsked,
}

impl Answer {
    fn answered(&self) -> Option<&SearchResponse> {
        match self {
            Answer::Answered(r) => Some(r),
            _ => None,
        }
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
    use crate::counters::inner_counters;
    use crate::fake::FakeChild;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn params(top_k: usize) -> SearchParams {
        SearchParams::try_from(&searchtree_proto::pb::SearchRequest {
            query: "q".into(),
            top_k: top_k as u32,
            ..Default::default()
        })
        .unwrap()
    }

    /// `n` hits named `{prefix}{i}` scoring `top`, `top - 1`, ...
    fn hits(prefix: &str, n: usize, top: f32) -> Vec<(String, f32)> {
        (0..n)
            .map(|i| (format!("{prefix}{i:02}"), top - i as f32))
            .collect()
    }

    fn child(shard: u32, delay: Duration, hits: &[(String, f32)]) -> Arc<FakeChild> {
        let hits: Vec<(&str, f32)> = hits.iter().map(|(id, s)| (id.as_str(), *s)).collect();
        Arc::new(FakeChild::answering(shard, delay, &hits))
    }

    fn fanout(children: &[Arc<FakeChild>], options: FanOutOptions) -> (FanOut, Arc<InnerCounters>) {
        let counters = inner_counters("parent");
        let children = children
            .iter()
            .map(|c| Arc::clone(c) as Arc<dyn Child>)
            .collect();
        (
            FanOut::new(children, Arc::clone(&counters)).with_options(options),
            counters,
        )
    }

    /// The answer of one index holding every child's hits.
    fn exact(all: &[&[(String, f32)]], k: usize) -> Vec<String> {
        let mut hits: Vec<(String, f32)> = all.iter().flat_map(|h| h.iter().cloned()).collect();
        hits.sort_by(|a, b| searchtree_proto::ordering::score_then_id(a.1, &a.0, b.1, &b.0));
        hits.into_iter().take(k).map(|(id, _)| id).collect()
    }

    fn ids(r: &SearchResponse) -> Vec<String> {
        r.hits.iter().map(|h| h.doc_id.clone()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_child_holding_more_of_the_top_k_is_asked_again_and_the_answer_stays_exact() {
        // The last child holds the ten best (last, so that the second
        // round's answers must be matched to children by slot, not by
        // position); the others only weak hits.
        let strong = hits("a", 12, 100.0);
        let weak: Vec<_> = (0..3).map(|s| hits(&format!("w{s}-"), 12, 10.0)).collect();
        let mut children: Vec<_> = weak
            .iter()
            .enumerate()
            .map(|(i, h)| child(i as u32, ms(5), h))
            .collect();
        children.push(child(3, ms(5), &strong));
        let (f, counters) = fanout(&children, FanOutOptions::default());
        let r = f
            .search(&params(10), Instant::now() + ms(100))
            .await
            .unwrap();
        let all: Vec<&[(String, f32)]> = std::iter::once(strong.as_slice())
            .chain(weak.iter().map(|w| w.as_slice()))
            .collect();
        assert_eq!(ids(&r), exact(&all, 10));
        assert!(!r.partial);
        // Binomial(10, 1/4) at 0.99: six hits asked of each, so the strong
        // child was asked again, and only it.
        assert_eq!(children[3].calls(), 2);
        assert!(children[..3].iter().all(|c| c.calls() == 1));
        assert_eq!(counters.get(InnerCounter::ChildrenAskedAgain), 1);
        assert_eq!(counters.get(InnerCounter::QueriesAskedAgain), 1);
        assert_eq!(r.total_hits, 48);
    }

    #[tokio::test(start_paused = true)]
    async fn hits_spread_over_children_need_no_second_ask() {
        // Interleaved scores: each child holds 2-3 of the top ten.
        let spread: Vec<Vec<(String, f32)>> = (0..4)
            .map(|s| {
                (0..12)
                    .map(|i| (format!("s{s}-{i:02}"), 100.0 - (4 * i + s) as f32))
                    .collect()
            })
            .collect();
        let children: Vec<_> = spread
            .iter()
            .enumerate()
            .map(|(s, h)| child(s as u32, ms(5), h))
            .collect();
        let (f, counters) = fanout(&children, FanOutOptions::default());
        let r = f
            .search(&params(10), Instant::now() + ms(100))
            .await
            .unwrap();
        let all: Vec<&[(String, f32)]> = spread.iter().map(|h| h.as_slice()).collect();
        assert_eq!(ids(&r), exact(&all, 10));
        assert!(children.iter().all(|c| c.calls() == 1));
        assert_eq!(counters.get(InnerCounter::ChildrenAskedAgain), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn fewer_than_k_hits_overall_asks_again_any_child_that_filled_its_quota() {
        // A tiny probability asks each child for one hit; six exist in all.
        let few: Vec<Vec<(String, f32)>> = (0..3)
            .map(|s| hits(&format!("f{s}-"), 2, 5.0 - s as f32))
            .collect();
        let children: Vec<_> = few
            .iter()
            .enumerate()
            .map(|(s, h)| child(s as u32, ms(5), h))
            .collect();
        let options = FanOutOptions {
            child_k_probability: 0.01,
            ..Default::default()
        };
        let (f, _) = fanout(&children, options);
        let r = f
            .search(&params(10), Instant::now() + ms(100))
            .await
            .unwrap();
        let all: Vec<&[(String, f32)]> = few.iter().map(|h| h.as_slice()).collect();
        assert_eq!(ids(&r), exact(&all, 10));
        assert_eq!(r.hits.len(), 6);
        assert!(children.iter().all(|c| c.calls() == 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_ask_that_misses_the_deadline_keeps_the_first_hits_and_says_so() {
        let strong = hits("a", 12, 100.0);
        let weak = hits("w", 12, 10.0);
        // 30 ms per answer: the second ask of child 0 would end at 60 ms.
        let children = vec![child(0, ms(30), &strong), child(1, ms(5), &weak)];
        let options = FanOutOptions {
            child_k_probability: 0.5,
            ..Default::default()
        };
        let (f, counters) = fanout(&children, options);
        let start = Instant::now();
        let r = f.search(&params(10), start + ms(50)).await.unwrap();
        assert_eq!(start.elapsed(), ms(50));
        assert!(r.partial);
        let c = r.coverage.as_ref().unwrap();
        assert_eq!((c.shards_ok, c.shards_timed_out), (1, 1));
        // Child 0's first five hits are real and lead the answer.
        assert_eq!(ids(&r)[..5], exact(&[&strong], 5)[..]);
        assert_eq!(children[0].calls(), 2);
        assert_eq!(counters.get(InnerCounter::ChildrenAskedAgain), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn probability_one_asks_every_child_for_all_k() {
        let strong = hits("a", 12, 100.0);
        let children = vec![
            child(0, ms(5), &strong),
            child(1, ms(5), &hits("w", 3, 1.0)),
        ];
        let options = FanOutOptions {
            child_k_probability: 1.0,
            ..Default::default()
        };
        let (f, _) = fanout(&children, options);
        let r = f
            .search(&params(10), Instant::now() + ms(100))
            .await
            .unwrap();
        assert_eq!(ids(&r), exact(&[&strong], 10));
        assert!(children.iter().all(|c| c.calls() == 1));
    }

    #[tokio::test(start_paused = true)]
    async fn early_answer_waits_only_a_bounded_time_for_stragglers() {
        let make = || {
            (0..4u32)
                .map(|s| {
                    child(
                        s,
                        ms(if s == 3 { 80 } else { 5 }),
                        &hits(&format!("s{s}-"), 3, 10.0),
                    )
                })
                .collect::<Vec<_>>()
        };
        let early = FanOutOptions {
            early_answer: Some(EarlyAnswer {
                coverage: 0.75,
                wait: ms(10),
            }),
            ..Default::default()
        };
        let children = make();
        let (f, counters) = fanout(&children, early);
        let start = Instant::now();
        let r = f.search(&params(3), start + ms(100)).await.unwrap();
        assert_eq!(
            start.elapsed(),
            ms(15),
            "three of four by 5 ms, then 10 ms more"
        );
        assert!(r.partial);
        let c = r.coverage.unwrap();
        assert_eq!((c.shards_ok, c.shards_timed_out), (3, 1));
        assert_eq!(counters.get(InnerCounter::EarlyAnswers), 1);
        assert_eq!(
            children[3]
                .cancelled
                .load(std::sync::atomic::Ordering::SeqCst),
            1
        );

        // Off, it waits for the straggler (which is in time).
        let children = make();
        let (f, counters) = fanout(&children, FanOutOptions::default());
        let start = Instant::now();
        let r = f.search(&params(3), start + ms(100)).await.unwrap();
        assert_eq!(start.elapsed(), ms(80));
        assert!(!r.partial);
        assert_eq!(counters.get(InnerCounter::EarlyAnswers), 0);

        // A straggler inside the bounded wait is still waited for.
        let children = make();
        children[3].set_delay(ms(12));
        let (f, counters) = fanout(&children, early);
        let r = f
            .search(&params(3), Instant::now() + ms(100))
            .await
            .unwrap();
        assert!(!r.partial);
        assert_eq!(counters.get(InnerCounter::EarlyAnswers), 0);
    }

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
