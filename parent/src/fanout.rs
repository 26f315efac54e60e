//! Scatter/gather under a deadline: send a search to every child at once,
//! gather what comes back until the deadline, and merge it into one answer.
//!
//! A child that fails does not fail the search: its shards are counted as
//! failed in the coverage and the others still answer. A child that has not
//! answered by the deadline is counted as timed out and its call is dropped,
//! which cancels it (the leaf then stops searching). Only a bad request (every
//! child would refuse it) is an error here; even an answer with no shard at
//! all travels up as coverage, so the root can say precisely what is missing.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use searchtree_proto::SearchParams;
use searchtree_proto::deadline::micros;
use searchtree_proto::hit_order;
use searchtree_proto::pb::{
    ChildProfile, Coverage, FailureReason, Hit, NodeProfile, SearchResponse, ShardFailure,
};
use searchtree_proto::query::truncate_bytes;
use tokio::time::Instant;

use crate::child::{Child, ChildError};
use crate::child_k::{DEFAULT_CHILD_K_PROBABILITY, child_k, needs_more};
use crate::counters::{InnerCounter, InnerCounters};
use crate::error::NodeError;
use crate::merge::{merge, rank_best};
use crate::round_trip::RoundTrip;
use crate::spec::format_shards;
use searchtree_node::ops::metrics::{ChildMetrics, metrics};

/// A child plus what the parent has learned about it.
struct Slot {
    child: Arc<dyn Child>,
    /// Documents below the child, as it last reported.
    docs_total: AtomicU64,
    /// The hop's cost: round trip minus the time the child says it spent,
    /// i.e. network, queueing and serialisation, both ways.
    hop: RoundTrip,
    /// The child's series in the metrics (labelled with its shards, `0-1`).
    metrics: ChildMetrics,
}

impl Slot {
    fn observe(&self, round_trip: Duration, response: &SearchResponse) {
        self.metrics.answered(round_trip);
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
    /// The hits to ask each child for at the last k searched: the same k
    /// comes again and again, and working the binomial bound out per child
    /// per search cost as much as a simulated leaf's answer.
    quotas: Arc<Mutex<Option<Quotas>>>,
}

/// The hits to ask each child for (in the children's order) at one k.
type Quotas = (usize, Arc<[usize]>);

impl FanOut {
    /// A fan-out over `children`, counting into `counters` .
    pub fn new(children: Vec<Arc<dyn Child>>, counters: Arc<InnerCounters>) -> Self {
        let slots = children
            .into_iter()
            .map(|child| Slot {
                metrics: metrics().child(&format_shards(child.shards())),
                child,
                docs_total: AtomicU64::new(0),
                hop: RoundTrip::default(),
            })
            .collect();
        FanOut {
            slots: Arc::new(slots),
            counters,
            options: FanOutOptions::default(),
            next_canary: Arc::default(),
            quotas: Arc::default(),
        }
    }

    /// The children, in order.
    pub fn children(&self) -> impl Iterator<Item = &Arc<dyn Child>> {
        self.slots.iter().map(|s| &s.child)
    }

    /// The same fan-out, asking and waiting as `options` say.
    pub fn with_options(mut self, options: FanOutOptions) -> Self {
        self.options = options;
        self.quotas = Arc::default();
        self
    }

    /// How many hits to ask each child for when `k` are wanted.
    fn quotas(&self, k: usize, node_shards: usize) -> Arc<[usize]> {
        let mut kept = self.quotas.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, quotas)) = kept.as_ref()
            && *at == k
        {
            return Arc::clone(quotas);
        }
        let quotas: Arc<[usize]> = self
            .slots
            .iter()
            .map(|slot| {
                let shards = slot.child.shards().len();
                child_k(k, shards, node_shards, self.options.child_k_probability)
            })
            .collect();
        *kept = Some((k, Arc::clone(&quotas)));
        quotas
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
            .saturating_sub(slot.hop.hop_reserve());
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
    /// the top-k ([`crate::child_k`]). A child that filled that quota might
    /// hold more. Whether it does is decided once every child has answered,
    /// or one more of its round trips after its answer (later ones are
    /// stragglers), or while there is still time to ask it again (the hop's
    /// reserve and two round trips), whichever comes first: waiting helps,
    /// because the merged k-th hit only gets better as answers arrive, and
    /// with it fewer children need asking. One that needs it is asked again
    /// for all k and its second answer replaces its first. If the second
    /// answer does not come in time, the child's first hits stay in the
    /// answer and its shards count as timed out.
    pub async fn search(
        &self,
        params: &SearchParams,
        answer_at: Instant,
    ) -> Result<SearchResponse, NodeError> {
        let k = params.top_k;
        let node_shards: usize = self.slots.iter().map(|s| s.child.shards().len()).sum();
        let quota = self.quotas(k, node_shards);
        let early = self.options.early_answer.map(|e| e.threshold(node_shards));
        let sent = Instant::now();

        let mut pending = FuturesUnordered::new();
        let mut states: Vec<ChildState> = Vec::with_capacity(self.slots.len());
        for (i, &top_k) in quota.iter().enumerate() {
            match self.ask(i, params, top_k, Round::First, answer_at, sent) {
                Some(call) => {
                    pending.push(call);
                    states.push(ChildState::Waiting);
                }
                None => states.push(ChildState::NotAsked),
            }
        }
        let mut firsts_pending = pending.len();
        let mut seconds_pending = 0usize;
        let mut shards_ok = 0usize;
        let mut asked_again = 0u64;
        // With `params.profile`: each child call's timings, as it ended.
        let mut profiles: Vec<ChildProfile> = Vec::new();
        // Set once the early answer's wait is over: first answers still to
        // come are stragglers left out; second asks are still awaited.
        let mut stragglers_cut = false;
        let deadline = tokio::time::sleep_until(answer_at);
        tokio::pin!(deadline);
        // One timer for the next decision, moved as that time moves (a
        // timer made and dropped per answer cost more than the merge).
        let decide_timer = tokio::time::sleep_until(answer_at);
        tokio::pin!(decide_timer);
        let mut decide_armed: Option<Instant> = None;
        // The k-th hit of everything gathered so far, kept until an answer
        // changes what was gathered.
        let mut top = TopK::new(k);
        // The earliest decision due (the least `decide_by` of the children
        // undecided), kept as answers and decisions change it.
        let mut decide_at: Option<Instant> = None;
        loop {
            if let Some(at) = decide_at
                && decide_armed != Some(at)
            {
                decide_timer.as_mut().reset(at);
                decide_armed = Some(at);
            }
            tokio::select! {
                // An answer that is ready at the deadline still counts.
                biased;
                next = pending.next(), if !pending.is_empty() => {
                    let Some((i, round, asked_at, mut result)) = next else { continue };
                    if params.profile {
                        profiles.push(child_profile(&self.slots[i], sent, asked_at, &mut result));
                    }
                    match round {
                        Round::First => firsts_pending -= 1,
                        Round::Second => seconds_pending -= 1,
                    }
                    if round == Round::First && stragglers_cut {
                        continue; // left out by the early answer
                    }
                    let slot = &self.slots[i];
                    // One clock read per answer, for its round trip and its
                    // decision.
                    let now = Instant::now();
                    let response = match result {
                        Ok(response) => {
                            // A second answer's round trip includes the wait
                            // before it was sent: not a sample of the hop.
                            if round == Round::First {
                                slot.observe(now - sent, &response);
                            }
                            Ok(response)
                        }
                        // Returning drops `pending`, cancelling the calls in flight.
                        Err(ChildError::InvalidArgument(msg)) => return Err(NodeError::Invalid(msg)),
                        Err(err) => {
                            tracing::debug!(child = slot.child.name(), %err, "child failed");
                            self.count_failure(&err);
                            Err(Box::new(failure(slot, &err)))
                        }
                    };
                    let state = std::mem::replace(&mut states[i], ChildState::NotAsked);
                    states[i] = match (round, state, response) {
                        (Round::First, _, Ok(first)) => {
                            shards_ok += first.coverage.as_ref().map_or(0, |c| c.shards_ok as usize);
                            if quota[i] < k && needs_more(quota[i], &first, None) {
                                // Wait for the others at most one more round trip
                                // of this child's (those later are stragglers), and
                                // never past the point where asking again would not
                                // fit: the hop's reserve and two round trips.
                                let round_trip = now - sent;
                                let decide_by = answer_at
                                    .checked_sub(slot.hop.hop_reserve() + 2 * round_trip)
                                    .unwrap_or(now)
                                    .min(now + round_trip);
                                decide_at = Some(decide_at.map_or(decide_by, |at| at.min(decide_by)));
                                ChildState::Undecided { first, decide_by }
                            } else {
                                ChildState::Done(first)
                            }
                        }
                        (Round::First, _, Err(stand_in)) => ChildState::Done(stand_in),
                        (Round::Second, _, Ok(full)) => ChildState::Done(full),
                        (Round::Second, ChildState::AskedAgain(first), Err(stand_in)) => {
                            ChildState::Done(Box::new(keep_first_hits(*first, *stand_in)))
                        }
                        (Round::Second, _, Err(stand_in)) => ChildState::Done(stand_in),
                    };
                    match round {
                        Round::First => top.add(&states, i),
                        Round::Second => top.replaced(),
                    }
                    if let Some(early) = early
                        && early.reached(shards_ok)
                        && firsts_pending > 0
                    {
                        let at = (Instant::now() + early.wait).min(answer_at);
                        if at < deadline.deadline() {
                            deadline.as_mut().reset(at);
                        }
                    }
                }
                _ = &mut decide_timer, if decide_at.is_some() => {
                    decide_armed = None;
                    let asked;
                    (asked, decide_at) = self.decide(&mut states, &mut pending, params, answer_at, Instant::now(), &mut top);
                    seconds_pending += asked as usize;
                    asked_again += asked;
                }
                _ = &mut deadline => {
                    if deadline.deadline() >= answer_at {
                        break;
                    }
                    // The early answer's wait is over: leave the stragglers
                    // out, but give the children that did answer their
                    // second asks, until the real deadline.
                    self.counters.inc(InnerCounter::EarlyAnswers);
                    stragglers_cut = true;
                    deadline.as_mut().reset(answer_at);
                }
            }
            if (firsts_pending == 0 || stragglers_cut) && decide_at.is_some() {
                // Every child has answered (or the rest are left out): no
                // better k-th is coming.
                let asked;
                (asked, decide_at) = self.decide(
                    &mut states,
                    &mut pending,
                    params,
                    answer_at,
                    answer_at,
                    &mut top,
                );
                seconds_pending += asked as usize;
                asked_again += asked;
            }
            if firsts_pending == 0 && deadline.deadline() < answer_at {
                // Nobody left to cut off early: second asks get the full time.
                deadline.as_mut().reset(answer_at);
            }
            let waiting_for = if stragglers_cut {
                seconds_pending
            } else {
                pending.len()
            };
            if waiting_for == 0 && decide_at.is_none() {
                break;
            }
        }
        drop(pending); // cancels every call still outstanding
        if asked_again > 0 {
            self.counters.inc(InnerCounter::QueriesAskedAgain);
            self.counters
                .add(InnerCounter::ChildrenAskedAgain, asked_again);
        }

        let kth = top.kth(&states).cloned();
        let waited = sent.elapsed();
        if params.profile {
            for (i, state) in states.iter().enumerate() {
                if matches!(state, ChildState::Waiting | ChildState::AskedAgain(_)) {
                    let slot = &self.slots[i];
                    profiles.push(ChildProfile {
                        shards: slot.child.shards().to_vec(),
                        replica: slot.child.name().to_string(),
                        start_us: 0,
                        round_trip_us: micros(waited),
                        outcome: "timed_out".into(),
                        ..Default::default()
                    });
                }
            }
        }
        let parts = states.into_iter().enumerate().map(|(i, state)| {
            let late = |what: &str| {
                self.counters.inc(InnerCounter::ChildrenTimedOut);
                failure(
                    &self.slots[i],
                    &ChildError::Timeout(format!("{what} within {waited:.1?}")),
                )
            };
            match state {
                ChildState::Done(response) => *response,
                ChildState::Undecided { first, .. }
                    if !needs_more(quota[i], &first, kth.as_ref()) =>
                {
                    *first
                }
                ChildState::Undecided { first, .. } => {
                    keep_first_hits(*first, late("no time to ask for the rest of its hits"))
                }
                ChildState::AskedAgain(first) => {
                    keep_first_hits(*first, late("asked again for more hits, no answer"))
                }
                ChildState::Waiting | ChildState::NotAsked => late("no answer"),
            }
        });
        let merging = Instant::now();
        let mut merged = merge(k, parts);
        if params.profile {
            merged.profile = Some(Box::new(NodeProfile {
                merge_us: micros(merging.elapsed()),
                children: profiles,
                ..Default::default()
            }));
        }
        Ok(merged)
    }

    /// Sends child `i` a search for `top_k` hits with the time left from
    /// `now` until `answer_at` (less the hop), or `None` if no time is left.
    fn ask<'a>(
        &'a self,
        i: usize,
        params: &SearchParams,
        top_k: usize,
        round: Round,
        answer_at: Instant,
        now: Instant,
    ) -> Option<Call<'a>> {
        let slot = &self.slots[i];
        let budget = answer_at
            .saturating_duration_since(now)
            .saturating_sub(slot.hop.hop_reserve());
        if budget.is_zero() {
            return None;
        }
        let mut request = params.to_child_request(budget);
        request.top_k = top_k as u32;
        Some(Call {
            child: i,
            round,
            // Read again only for a profile, whose waterfall shows when
            // each call went out (one clock read per fan-out otherwise).
            asked_at: if params.profile { Instant::now() } else { now },
            answer: slot.child.search(request, budget),
        })
    }

    /// Decides, for every child whose decision is due by `now`, whether it
    /// must be asked again (and asks it, for all k), against the k-th hit of
    /// everything gathered so far. Returns how many were asked again, and
    /// when the next decision (of those not due yet) is due.
    fn decide<'a>(
        &'a self,
        states: &mut [ChildState],
        pending: &mut FuturesUnordered<Call<'a>>,
        params: &SearchParams,
        answer_at: Instant,
        now: Instant,
        top: &mut TopK,
    ) -> (u64, Option<Instant>) {
        // A decision moves a child's hits, never changes them: the k-th
        // stays what it was before the first one.
        let kth = top.kth(states);
        let mut asked = 0;
        let mut next: Option<Instant> = None;
        for (i, state) in states.iter_mut().enumerate() {
            match state.decide_by() {
                None => continue,
                Some(by) if by > now => {
                    next = Some(next.map_or(by, |at| at.min(by)));
                    continue;
                }
                Some(_) => {}
            }
            let ChildState::Undecided { first, .. } =
                std::mem::replace(state, ChildState::NotAsked)
            else {
                unreachable!("only undecided children are due")
            };
            *state = if !needs_more(first.hits.len(), &first, kth) {
                ChildState::Done(first)
            } else if let Some(call) = self.ask(
                i,
                params,
                params.top_k,
                Round::Second,
                answer_at,
                Instant::now(),
            ) {
                pending.push(call);
                asked += 1;
                ChildState::AskedAgain(first)
            } else {
                // No time left to ask: its first hits stand, its shards late.
                self.counters.inc(InnerCounter::ChildrenTimedOut);
                let late = ChildError::Timeout("no time to ask for the rest of its hits".into());
                ChildState::Done(Box::new(keep_first_hits(
                    *first,
                    failure(&self.slots[i], &late),
                )))
            };
        }
        (asked, next)
    }

    fn count_failure(&self, err: &ChildError) {
        self.counters.inc(if matches!(err, ChildError::Timeout(_)) {
            InnerCounter::ChildrenTimedOut
        } else {
            InnerCounter::ChildrenFailed
        });
    }
}

/// The timings of one child call that ended with `result` (its own profile
/// moved out of it), asked at `asked_at`, in a fan-out that began at `sent`.
fn child_profile(
    slot: &Slot,
    sent: Instant,
    asked_at: Instant,
    result: &mut Result<Answer, ChildError>,
) -> ChildProfile {
    let round_trip = micros(asked_at.elapsed());
    let (replica, hedged, retried) = result
        .as_ref()
        .ok()
        .and_then(|r| answered_by(r))
        .unwrap_or_else(|| (slot.child.name().to_string(), false, false));
    let (outcome, hop_us, profile) = match result {
        Ok(response) => (
            "ok",
            round_trip.saturating_sub(response.took_us),
            response.profile.take(),
        ),
        Err(ChildError::Timeout(_)) => ("timed_out", 0, None),
        Err(_) => ("failed", 0, None),
    };
    ChildProfile {
        shards: slot.child.shards().to_vec(),
        replica,
        start_us: micros(asked_at.saturating_duration_since(sent)),
        round_trip_us: round_trip,
        hop_us,
        outcome: outcome.into(),
        hedged,
        retried,
        profile: profile.map(|p| *p),
    }
}

/// The one replica that answered for every shard of `response` (a leaf,
/// or a replica group over one shard's leaves), and whether that answer
/// came from a hedge or a retry; `None` when several did (an inner node
/// below) or none is named, and when the answer's profile says an inner
/// node gave it (a partial answer of a parent may name one leaf alone).
fn answered_by(response: &SearchResponse) -> Option<(String, bool, bool)> {
    if response
        .profile
        .as_ref()
        .is_some_and(|p| !p.role.is_empty() && p.role != "leaf")
    {
        return None;
    }
    let sources = &response.coverage.as_ref()?.sources;
    let first = sources.first()?;
    sources
        .iter()
        .all(|s| s.replica == first.replica)
        .then(|| (first.replica.clone(), first.hedged, first.retried))
}

/// A call to a child in flight: which child, which ask, when it was made,
/// and (when it ends) its outcome. A plain struct rather than an `async`
/// block around the child's future: one allocation per call fewer, which
/// shows at thousands of children.
struct Call<'a> {
    child: usize,
    round: Round,
    asked_at: Instant,
    answer: BoxFuture<'a, Result<SearchResponse, ChildError>>,
}

impl Future for Call<'_> {
    type Output = (usize, Round, Instant, Result<Answer, ChildError>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = std::task::ready!(self.answer.as_mut().poll(cx));
        Poll::Ready((self.child, self.round, self.asked_at, result.map(Box::new)))
    }
}

/// A child's answer as a fan-out holds it: boxed, so that handing it from
/// the call to the select, the match and the child's state moves a pointer
/// rather than the response (a response copied that way, several times per
/// answer, was a tenth of a large fan-out's time).
type Answer = Box<SearchResponse>;

/// Which ask of a child an answer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// The first ask, for the child's likely share of the top-k.
    First,
    /// The second, for all k, because the first might have hidden some.
    Second,
}

/// Where one child stands during a search.
enum ChildState {
    /// Not asked: no time was left.
    NotAsked,
    /// Asked; no answer yet.
    Waiting,
    /// Its first answer filled its quota, so it might hold more of the
    /// top-k: to be decided by `decide_by` at the latest.
    Undecided { first: Answer, decide_by: Instant },
    /// Asked again for all k; its first answer is kept in case the second
    /// does not come.
    AskedAgain(Answer),
    /// Its final part of the answer: an answer, or a failure's stand-in.
    Done(Answer),
}

impl ChildState {
    fn decide_by(&self) -> Option<Instant> {
        match self {
            ChildState::Undecided { decide_by, .. } => Some(*decide_by),
            _ => None,
        }
    }

    fn hits(&self) -> &[Hit] {
        match self {
            ChildState::Undecided { first: r, .. }
            | ChildState::AskedAgain(r)
            | ChildState::Done(r) => &r.hits,
            ChildState::NotAsked | ChildState::Waiting => &[],
        }
    }
}

/// The best k hits gathered so far, kept up to date as first answers come
/// in, so that deciding whether to ask a child again costs a comparison
/// rather than a pass over every hit gathered (a node decides after most of
/// its children's answers). A second answer replaces a first one's hits, so
/// after one the list is worked out again from every answer.
struct TopK {
    k: usize,
    /// Where the best hits are, best first, at most `k`: (child, position
    /// in its answer). A child's hits move with its state but never change
    /// until a second answer replaces them.
    best: Vec<(u32, u32)>,
    /// A second answer replaced a first: `best` must be worked out again.
    stale: bool,
    /// The k-th hit's score and id (all the order reads), kept apart from
    /// the answers so that they can move while it is compared against.
    kth: Hit,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK {
            k,
            best: Vec::with_capacity(k + 1),
            stale: false,
            kth: Hit::default(),
        }
    }

    /// Child `c`'s first answer, now in `states[c]`, joins the gathered hits.
    fn add(&mut self, states: &[ChildState], c: usize) {
        if self.stale || self.k == 0 {
            return;
        }
        let hit = |&(c, i): &(u32, u32)| &states[c as usize].hits()[i as usize];
        // An answer's hits come best first: once one cannot enter, neither
        // can those after it.
        for (i, new) in states[c].hits().iter().enumerate() {
            let full = self.best.len() == self.k;
            if full && hit_order(new, hit(&self.best[self.k - 1])).is_ge() {
                break;
            }
            let at = self
                .best
                .partition_point(|p| hit_order(hit(p), new).is_lt());
            self.best.insert(at, (c as u32, i as u32));
            self.best.truncate(self.k);
        }
    }

    /// A second answer replaced child hits: work the list out again.
    fn replaced(&mut self) {
        self.stale = true;
    }

    /// The k-th best hit gathered, if k were gathered.
    fn kth(&mut self, states: &[ChildState]) -> Option<&Hit> {
        if self.stale {
            self.stale = false;
            rank_best(self.k, states.len(), |c| states[c].hits(), &mut self.best);
        }
        if self.k == 0 || self.best.len() < self.k {
            return None;
        }
        let (c, i) = self.best[self.k - 1];
        let from = &states[c as usize].hits()[i as usize];
        self.kth.score = from.score;
        self.kth.doc_id.clone_from(&from.doc_id);
        Some(&self.kth)
    }
}

/// A child's first answer, kept where its second did not come: its hits are
/// real but maybe not all of its share, so its shards count as `stand_in`
/// says (timed out or failed).
fn keep_first_hits(first: SearchResponse, stand_in: SearchResponse) -> SearchResponse {
    SearchResponse {
        hits: first.hits,
        total_hits: first.total_hits,
        total_hits_is_lower_bound: first.total_hits_is_lower_bound,
        snapshot: first.snapshot,
        ..stand_in
    }
}

/// The longest message kept per failed shard, in bytes.
const MAX_FAILURE_MESSAGE_BYTES: usize = 256;

/// The answer that stands in for a child that failed: no hits, and each of
/// its shards counted as failed (or timed out) with the reason.
fn failure(slot: &Slot, err: &ChildError) -> SearchResponse {
    slot.metrics.missed(matches!(err, ChildError::Timeout(_)));
    let child = &slot.child;
    let reason = match err {
        ChildError::Timeout(_) => FailureReason::Timeout,
        ChildError::Unavailable(_) => FailureReason::Unavailable,
        ChildError::Overloaded(_) => FailureReason::Overloaded,
        ChildError::Lost(_) => FailureReason::Lost,
        _ if err.version_missing().is_some() => FailureReason::VersionMissing,
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
    use searchtree_proto::pb::ShardSource;

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

    #[test]
    fn the_kept_top_k_follows_every_answer_as_a_full_pass_would() {
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..200 {
            let k = rng.usize(1..12);
            let children = rng.usize(1..9);
            let mut states: Vec<ChildState> = (0..children).map(|_| ChildState::Waiting).collect();
            let mut top = TopK::new(k);
            for c in 0..children {
                // Scores from a few values, so that ties (broken by id) are common.
                let mut answer: Vec<Hit> = (0..rng.usize(0..6))
                    .map(|i| Hit {
                        doc_id: format!("d{c}-{i}"),
                        score: rng.u8(0..4) as f32,
                        ..Default::default()
                    })
                    .collect();
                answer.sort_by(hit_order);
                states[c] = ChildState::Done(Box::new(SearchResponse {
                    hits: answer,
                    ..Default::default()
                }));
                if round % 7 == 0 && c == children / 2 {
                    top.replaced(); // as after a second answer
                } else {
                    top.add(&states, c);
                }
                let mut all: Vec<&Hit> = states.iter().flat_map(ChildState::hits).collect();
                all.sort_by(|a, b| hit_order(a, b));
                let expected = all.get(k - 1).map(|h| (h.score, h.doc_id.clone()));
                let kept = top.kth(&states).map(|h| (h.score, h.doc_id.clone()));
                assert_eq!(kept, expected, "round {round}, k {k}, after child {c}");
            }
        }
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
        // Child 1 was asked again too: one round trip after its answer (at
        // 10 ms) its five hits were all there were, fewer than k. Deciding
        // before every answer is in may ask more than needed, never less.
        assert_eq!(children[1].calls(), 2);
        assert_eq!(counters.get(InnerCounter::ChildrenAskedAgain), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_profile_names_the_replica_that_answered_and_how() {
        let children = vec![
            child(0, ms(2), &hits("a", 3, 9.0)),
            child(1, ms(60), &hits("b", 3, 8.0)),
        ];
        let (f, _) = fanout(&children, FanOutOptions::default());
        let mut p = params(10);
        p.profile = true;
        let r = f.search(&p, Instant::now() + ms(50)).await.unwrap();
        let mut calls = r.profile.unwrap().children;
        calls.sort_by_key(|c| c.shards.clone());
        assert_eq!(calls[0].replica, "fake-0");
        assert_eq!(calls[0].outcome, "ok");
        assert_eq!(calls[1].outcome, "timed_out");
        assert_eq!(
            calls[1].replica, "fake-1",
            "no answer: the child's own name"
        );

        // A replica group's answer names its replica and says it was a hedge.
        let source = |shard, replica: &str, hedged| ShardSource {
            shard,
            replica: replica.into(),
            hedged,
            ..Default::default()
        };
        let answer = |sources| SearchResponse {
            coverage: Some(Coverage {
                sources,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            answered_by(&answer(vec![source(3, "10.0.0.7:50051", true)])),
            Some(("10.0.0.7:50051".into(), true, false))
        );
        // Several replicas below (an inner node): none is named.
        let two = answer(vec![source(0, "a", false), source(1, "b", false)]);
        assert_eq!(answered_by(&two), None);
        assert_eq!(answered_by(&answer(vec![])), None);
        // A parent's partial answer names one leaf: still the parent's call.
        let profiled = |role: &str| SearchResponse {
            profile: Some(Box::new(NodeProfile {
                role: role.into(),
                ..Default::default()
            })),
            ..answer(vec![source(1, "leaf-1", false)])
        };
        assert_eq!(answered_by(&profiled("parent")), None);
        assert_eq!(
            answered_by(&profiled("leaf")),
            Some(("leaf-1".into(), false, false))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_straggler_does_not_hold_up_the_second_ask_of_its_siblings() {
        let strong = hits("a", 12, 100.0);
        // Child 0 answers in 5 ms with a full quota; child 1 never in time.
        let children = vec![
            child(0, ms(5), &strong),
            child(1, ms(5_000), &hits("w", 12, 10.0)),
        ];
        // Two children of one shard each: at 0.9 each is asked for 8 of 10.
        let options = FanOutOptions {
            child_k_probability: 0.9,
            ..FanOutOptions::default()
        };
        let (f, counters) = fanout(&children, options);
        let start = Instant::now();
        let r = f.search(&params(10), start + ms(100)).await.unwrap();
        assert_eq!(start.elapsed(), ms(100), "the straggler is waited for");
        // Asked again after one more of its round trips (10 ms), answered
        // by 15 ms: its shard is complete, only the straggler's is missing.
        assert_eq!(children[0].calls(), 2);
        assert_eq!(ids(&r), exact(&[&strong], 10));
        let c = r.coverage.as_ref().unwrap();
        assert_eq!((c.shards_ok, c.shards_timed_out), (1, 1));
        assert_eq!(c.failures[0].shard, 1);
        assert_eq!(counters.get(InnerCounter::ChildrenAskedAgain), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shard_lacking_the_version_is_told_from_other_errors() {
        let refused = |shard: u32, msg: &str| {
            let err = ChildError::from(tonic::Status::failed_precondition(msg));
            Arc::new(FakeChild::failing(shard, ms(1), err))
        };
        let children = vec![
            refused(0, "version-missing: shard 0 holds versions [1], not 9"),
            refused(1, "the data directory is gone"),
        ];
        let (f, _) = fanout(&children, FanOutOptions::default());
        let r = f
            .search(&params(10), Instant::now() + ms(50))
            .await
            .unwrap();
        let c = r.coverage.unwrap();
        let reasons: Vec<_> = c.failures.iter().map(|f| f.reason()).collect();
        assert_eq!(
            reasons,
            [FailureReason::VersionMissing, FailureReason::Error]
        );
        assert!(c.failures[0].message.contains("holds versions [1], not 9"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_early_answer_leaves_out_stragglers_but_not_second_asks() {
        let strong = hits("a", 12, 100.0);
        // Child 0 holds the best ten; 1 and 2 weak hits; 3 is a straggler.
        let children = vec![
            child(0, ms(8), &strong),
            child(1, ms(8), &hits("w", 12, 10.0)),
            child(2, ms(8), &hits("v", 12, 9.0)),
            child(3, ms(80), &hits("s", 12, 50.0)),
        ];
        let options = FanOutOptions {
            early_answer: Some(EarlyAnswer {
                coverage: 0.75,
                wait: ms(10),
            }),
            ..Default::default()
        };
        let (f, counters) = fanout(&children, options);
        let start = Instant::now();
        let r = f.search(&params(10), start + ms(100)).await.unwrap();
        // Three answered at 8 ms, so the straggler is left out at 18 ms; child
        // 0 was asked again at 16 ms and its second answer, at 24 ms, counts.
        assert_eq!(start.elapsed(), ms(24));
        assert_eq!(children[0].calls(), 2);
        assert_eq!(ids(&r), exact(&[&strong], 10));
        let c = r.coverage.as_ref().unwrap();
        assert_eq!((c.shards_ok, c.shards_timed_out), (3, 1));
        assert_eq!(c.failures[0].shard, 3);
        assert_eq!(counters.get(InnerCounter::EarlyAnswers), 1);
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
}
