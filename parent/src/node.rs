//! An inner node of the tree (a parent, or the root): the request handling
//! both share, independent of gRPC so it can be tested in-process under a
//! paused clock.
//!
//! On each request: validate it, work out its deadline (the smaller of
//! `budget_ms` and the gRPC deadline, or the default, capped), keep back a
//! reserve for the merge and the hop back to the caller, and fan out with
//! what remains. Whatever has arrived by then is the answer. A node with a
//! result cache ([`crate::cache`]) answers a query asked again from it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use searchtree_proto::pb::{FetchRequest, FetchResponse, SearchRequest, SearchResponse};
use searchtree_proto::{BudgetPolicy, FetchParams, QueryLimits, SearchParams};
use tokio::time::Instant;

use crate::cache::{CacheConfig, ResultCache};
use crate::child::{Child, ChildError};
use crate::counters::{InnerCounter, InnerCounters, count_queue_wait};
use crate::error::NodeError;
use crate::fanout::{FanOut, FanOutOptions};
use crate::fetch::Fetcher;
use searchtree_node::ops::metrics::metrics;
use searchtree_node::ops::status;

/// How an inner node treats time.
#[derive(Debug, Clone, Copy)]
pub struct InnerTiming {
    /// Budget limits.
    pub policy: BudgetPolicy,
    /// Time kept back from the deadline for this node's merge and the hop
    /// back to its caller: children's answers are awaited until
    /// `deadline - reserve`.
    pub reserve: Duration,
}

/// The default reserve per level.
pub const DEFAULT_RESERVE: Duration = Duration::from_millis(3);

impl Default for InnerTiming {
    fn default() -> Self {
        InnerTiming {
            policy: BudgetPolicy::default(),
            reserve: DEFAULT_RESERVE,
        }
    }
}

/// A parent or root: children, timing and counters.
pub struct InnerNode {
    name: String,
    shards: Vec<u32>,
    fanout: FanOut,
    /// Routes fetches (two-phase search) to the children holding the shards.
    fetcher: Fetcher,
    timing: InnerTiming,
    limits: QueryLimits,
    in_flight: InFlight,
    /// Complete answers kept for queries asked again (none: no cache).
    cache: Option<ResultCache>,
    counters: Arc<InnerCounters>,
    /// The newest snapshot version its answers came from (0: none yet),
    /// which its status reports when nothing pins one.
    answered_version: Arc<AtomicU64>,
}

/// The requests a node is working on, under a node-wide bound: past it a
/// request is refused at once rather than fanned out to children that are
/// already behind (every queue bounded, at every level).
#[derive(Debug)]
struct InFlight {
    now: AtomicUsize,
    max: usize,
}

/// Default bound on an inner node's requests in flight: far above what the
/// root's admission lets through, a backstop for trees called directly.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;

/// Takes one of the node's in-flight slots until dropped.
struct InFlightGuard<'a>(&'a AtomicUsize);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl InFlight {
    fn enter(&self) -> Option<InFlightGuard<'_>> {
        let before = self.now.fetch_add(1, Ordering::Relaxed);
        let guard = InFlightGuard(&self.now);
        (before < self.max).then_some(guard)
    }
}

impl InnerNode {
    /// A node named `name` over `children`, counting into `counters` (made
    /// with [`crate::counters::inner_counters`]).
    pub fn new(
        name: impl Into<String>,
        children: Vec<Arc<dyn Child>>,
        timing: InnerTiming,
        counters: Arc<InnerCounters>,
    ) -> Self {
        let mut shards: Vec<u32> = children.iter().flat_map(|c| c.shards().to_vec()).collect();
        shards.sort_unstable();
        InnerNode {
            name: name.into(),
            shards,
            fetcher: Fetcher::new(&children, Arc::clone(&counters)),
            fanout: FanOut::new(children, Arc::clone(&counters)),
            timing,
            limits: QueryLimits::default(),
            in_flight: InFlight {
                now: AtomicUsize::new(0),
                max: DEFAULT_MAX_IN_FLIGHT,
            },
            cache: None,
            counters,
            answered_version: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Refuses requests past `max` in flight at once (at least 1).
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.in_flight.max = max.max(1);
        self
    }

    /// Asks children for fewer hits, and waits for them, as `options` say.
    pub fn with_fanout_options(mut self, options: FanOutOptions) -> Self {
        self.fanout = self.fanout.with_options(options);
        self
    }

    /// Keeps complete answers in a result cache (see [`crate::cache`]), if
    /// `config` is given.
    pub fn with_cache(mut self, config: Option<CacheConfig>) -> Self {
        self.cache =
            config.map(|c| ResultCache::new(c, self.shards.clone(), Arc::clone(&self.counters)));
        self
    }

    /// The cached answer to `params`, if the node has a fresh one: lets the
    /// root answer a hit before admission, which a hit does not need. A
    /// profiled search is timed as a real one: never answered from here.
    pub async fn cached(&self, params: &SearchParams) -> Option<SearchResponse> {
        if params.profile {
            return None;
        }
        let started = Instant::now();
        let mut hit = self.cache.as_ref()?.lookup(params).await?;
        hit.took_us = started.elapsed().as_micros() as u64;
        // An answer all the same, complete: the status's coverage counts it.
        status::record_answer(&hit);
        Some(hit)
    }

    /// Keeps `response`, a complete answer to `params` assembled by the
    /// caller (the root's fetched answer), in the result cache, if any. A
    /// profiled answer is not kept: its timings belong to one request.
    pub async fn remember(&self, params: &SearchParams, response: &SearchResponse) {
        if params.profile {
            return;
        }
        if let Some(cache) = &self.cache {
            cache.remember(params, response).await;
        }
    }

    /// Checks queries against `limits` instead of the defaults.
    pub fn with_query_limits(mut self, limits: QueryLimits) -> Self {
        self.limits = limits;
        self
    }

    /// What the node reports in `NodeStats.GetStatus`: each child's shards
    /// and its replicas' states, and the version it answers at — the one
    /// `pinned` says (the root's pin; a parent's last Activate below),
    /// else, when that is 0 (a root with no pin, a parent with no publish
    /// since it started), the newest its answers came from (0 until it has
    /// answered).
    pub fn status_fn(
        &self,
        pinned: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> status::RoleStatusFn {
        let children: Vec<Arc<dyn Child>> = self.fanout.children().cloned().collect();
        let answered = Arc::clone(&self.answered_version);
        Arc::new(move || status::RoleStatus {
            version: match pinned() {
                0 => answered.load(Ordering::Relaxed),
                pin => pin,
            },
            children: child_statuses(&children),
            disk: status::DiskStatus::default(),
        })
    }
}

/// Each child's shards and its replicas' states.
fn child_statuses(children: &[Arc<dyn Child>]) -> Vec<searchtree_proto::pb::ChildStatus> {
    children
        .iter()
        .map(|child| searchtree_proto::pb::ChildStatus {
            shards: child.shards().to_vec(),
            replicas: child
                .replica_states()
                .into_iter()
                .map(|(address, state)| searchtree_proto::pb::ReplicaStatus {
                    address,
                    state: state.to_string(),
                })
                .collect(),
        })
        .collect()
}

impl InnerNode {
    /// The node's counters.
    pub fn counters(&self) -> Arc<InnerCounters> {
        Arc::clone(&self.counters)
    }

    /// Counts how long a request that reached the node at `arrived` waited
    /// for its handler to start ([`count_queue_wait`]); the gRPC adapters
    /// call it first thing.
    pub fn count_queue_wait(&self, arrived: Instant) {
        count_queue_wait(
            &self.counters,
            Instant::now().saturating_duration_since(arrived),
        );
    }

    /// Counts a request and validates it on receipt.
    pub fn validate(&self, request: &SearchRequest) -> Result<SearchParams, NodeError> {
        self.counters.inc(InnerCounter::Requests);
        SearchParams::validate(request, &self.limits).map_err(|e| {
            self.counters.inc(InnerCounter::InvalidRequests);
            e.into()
        })
    }

    /// The time a request has from arrival to answer: the smaller of its
    /// `budget_ms` and its gRPC deadline (`grpc_timeout`), or the default,
    /// capped.
    pub fn budget(&self, params: &SearchParams, grpc_timeout: Option<Duration>) -> Duration {
        self.timing.policy.budget(params.budget, grpc_timeout)
    }

    /// The number of shards below this node.
    pub fn shards_total(&self) -> usize {
        self.shards.len()
    }

    /// The shards below this node, ascending (what it registers in etcd).
    pub fn shards(&self) -> Vec<u32> {
        self.shards.clone()
    }

    /// Searches every child (one, for a canary) and answers by `deadline`,
    /// keeping back the reserve for this node's merge and the hop back.
    pub async fn search(
        &self,
        params: &SearchParams,
        deadline: Instant,
    ) -> Result<SearchResponse, NodeError> {
        let arrived = Instant::now();
        let (_slot, answer_at) = self.start(arrived, deadline)?;
        // A profiled search is a real one: never answered from the cache.
        let answer = if params.canary {
            self.fanout.search_one(params, answer_at).await
        } else if let Some(cache) = self.cache.as_ref().filter(|_| !params.profile) {
            cache
                .search(params, answer_at, |at| self.fanout.search(params, at))
                .await
        } else {
            self.fanout.search(params, answer_at).await
        };
        let mut response =
            answer.inspect_err(|_| self.counters.inc(InnerCounter::InvalidRequests))?;
        if response.partial {
            self.counters.inc(InnerCounter::PartialAnswers);
        }
        metrics().observe_answer(response.partial, status::coverage_of(&response));
        status::record_answer(&response);
        self.answered_version
            .fetch_max(response.version, Ordering::Relaxed);
        response.took_us = arrived.elapsed().as_micros() as u64;
        if params.profile {
            let profile = response.profile.get_or_insert_with(Default::default);
            profile.role = searchtree_node::counters::CounterSnapshot::role(self.counters.as_ref())
                .to_string();
            profile.shards = self.shards.clone();
            profile.total_us = response.took_us;
        }
        tracing::debug!(
            query = %params.query,
            took = ?arrived.elapsed(),
            late = ?Instant::now().saturating_duration_since(answer_at),
            shards_ok = response.coverage.as_ref().map_or(0, |c| c.shards_ok),
            "answered"
        );
        Ok(response)
    }
}

impl InnerNode {
    /// Takes one of the node's in-flight slots for a request that arrived
    /// at `arrived` and is due at `deadline`, or refuses it at once past the
    /// bound; and says when its children's answers must be in: the deadline
    /// less the reserve for this node's merge and the hop back.
    fn start(
        &self,
        arrived: Instant,
        deadline: Instant,
    ) -> Result<(InFlightGuard<'_>, Instant), NodeError> {
        let Some(slot) = self.in_flight.enter() else {
            self.counters.inc(InnerCounter::RefusedOverloaded);
            return Err(NodeError::Overloaded(format!(
                "{} is at its limit of {} requests in flight",
                self.name, self.in_flight.max
            )));
        };
        let answer_at = deadline
            .checked_sub(self.timing.reserve)
            .unwrap_or(arrived)
            .max(arrived);
        Ok((slot, answer_at))
    }

    /// Counts a fetch and validates it on receipt.
    pub fn validate_fetch(&self, request: &FetchRequest) -> Result<FetchParams, NodeError> {
        FetchParams::validate(request, &self.limits).map_err(|e| {
            self.counters.inc(InnerCounter::InvalidRequests);
            NodeError::Invalid(e.to_string())
        })
    }

    /// The time a fetch has from arrival to answer, worked out as a
    /// search's is.
    pub fn fetch_budget(&self, params: &FetchParams, grpc_timeout: Option<Duration>) -> Duration {
        self.timing.policy.budget(params.budget, grpc_timeout)
    }

    /// Fetches titles and snippets from the children holding the documents'
    /// shards, answering by `deadline` less the reserve for the hop back;
    /// what has not come back by then is `unfetched`.
    pub async fn fetch(
        &self,
        params: &FetchParams,
        deadline: Instant,
    ) -> Result<FetchResponse, NodeError> {
        let arrived = Instant::now();
        let (_slot, answer_at) = self.start(arrived, deadline)?;
        let mut answer = self.fetcher.fetch(params, answer_at).await?;
        answer.took_us = arrived.elapsed().as_micros() as u64;
        Ok(answer)
    }
}

/// An inner node is itself a child: used to test trees of several levels
/// in-process.
impl Child for InnerNode {
    fn name(&self) -> &str {
        &self.name
    }

    fn shards(&self) -> &[u32] {
        &self.shards
    }

    fn search(
        &self,
        request: SearchRequest,
        budget: Duration,
    ) -> BoxFuture<'_, Result<SearchResponse, ChildError>> {
        Box::pin(async move {
            let arrived = Instant::now();
            let params = self.validate(&request)?;
            let deadline = arrived + self.budget(&params, Some(budget));
            Ok(InnerNode::search(self, &params, deadline).await?)
        })
    }

    fn fetch(
        &self,
        request: FetchRequest,
        budget: Duration,
    ) -> BoxFuture<'_, Result<FetchResponse, ChildError>> {
        Box::pin(async move {
            let arrived = Instant::now();
            let params = self.validate_fetch(&request)?;
            let deadline = arrived + self.timing.policy.budget(params.budget, Some(budget));
            Ok(InnerNode::fetch(self, &params, deadline).await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use searchtree_proto::pb::FailureReason;

    use super::*;
    use crate::counters::inner_counters;
    use crate::fake::{FAKE_SHARD_DOCS, FakeChild};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn request(query: &str, top_k: u32, budget_ms: u32) -> SearchRequest {
        SearchRequest {
            query: query.into(),
            top_k,
            budget_ms,
            ..Default::default()
        }
    }

    /// What the gRPC adapter does: validate, work out the deadline, search.
    async fn ask(
        n: &InnerNode,
        request: SearchRequest,
        grpc_timeout: Option<Duration>,
    ) -> Result<SearchResponse, NodeError> {
        let arrived = Instant::now();
        let params = n.validate(&request)?;
        n.search(&params, arrived + n.budget(&params, grpc_timeout))
            .await
    }

    fn node(name: &str, children: Vec<Arc<dyn Child>>) -> InnerNode {
        InnerNode::new(
            name,
            children,
            InnerTiming::default(),
            inner_counters("parent"),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn merges_all_children_that_answer_in_time() {
        let n = node(
            "p",
            vec![
                Arc::new(FakeChild::answering(0, ms(5), &[("a", 1.0), ("b", 3.0)])),
                Arc::new(FakeChild::answering(1, ms(40), &[("c", 2.0)])),
            ],
        );
        let start = Instant::now();
        let r = ask(&n, request("q", 2, 100), None).await.unwrap();
        assert_eq!(start.elapsed(), ms(40), "returns as soon as all answered");
        let ids: Vec<_> = r.hits.iter().map(|h| h.doc_id.as_str()).collect();
        assert_eq!(ids, ["b", "c"]);
        assert_eq!(r.total_hits, 3);
        assert!(!r.partial);
        let c = r.coverage.unwrap();
        assert_eq!(
            (c.docs_total, c.docs_searched),
            (2 * FAKE_SHARD_DOCS, 2 * FAKE_SHARD_DOCS)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn answers_at_the_deadline_with_what_arrived_and_cancels_the_rest() {
        let slow = Arc::new(FakeChild::answering(2, ms(2000), &[("z", 9.0)]));
        let n = node(
            "p",
            vec![
                Arc::new(FakeChild::answering(0, ms(10), &[("a", 1.0)])),
                Arc::new(FakeChild::answering(1, ms(30), &[("b", 2.0)])),
                slow.clone(),
            ],
        );
        let start = Instant::now();
        let r = ask(&n, request("q", 10, 50), None).await.unwrap();
        // Budget 50 ms, reserve 3 ms: the answer leaves at 47 ms exactly.
        assert_eq!(start.elapsed(), ms(47));
        let ids: Vec<_> = r.hits.iter().map(|h| h.doc_id.as_str()).collect();
        assert_eq!(ids, ["b", "a"]);
        assert!(r.partial);
        let c = r.coverage.unwrap();
        assert_eq!(
            (
                c.shards_total,
                c.shards_ok,
                c.shards_timed_out,
                c.shards_failed
            ),
            (3, 2, 1, 0)
        );
        assert_eq!(c.failures[0].shard, 2);
        assert_eq!(c.failures[0].reason, FailureReason::Timeout as i32);
        assert_eq!(
            slow.cancelled.load(Ordering::SeqCst),
            1,
            "straggler cancelled"
        );
        assert_eq!(slow.completed.load(Ordering::SeqCst), 0);
        assert_eq!(n.counters().get(InnerCounter::ChildrenTimedOut), 1);
        assert_eq!(n.counters().get(InnerCounter::PartialAnswers), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn children_get_what_remains_minus_the_reserve_and_the_hop() {
        let child = Arc::new(FakeChild::answering(0, ms(1), &[("a", 1.0)]));
        let n = node("p", vec![child.clone()]);
        ask(&n, request("q", 10, 50), None).await.unwrap();
        // 50 ms - 3 ms reserve - 3 ms initial hop reserve (nothing measured yet).
        assert_eq!(child.budgets.lock().unwrap()[0], ms(44));
    }

    #[tokio::test(start_paused = true)]
    async fn the_grpc_deadline_wins_when_it_is_shorter() {
        let child = Arc::new(FakeChild::answering(0, ms(1), &[("a", 1.0)]));
        let n = node("p", vec![child.clone()]);
        ask(&n, request("q", 10, 500), Some(ms(20))).await.unwrap();
        assert_eq!(child.budgets.lock().unwrap()[0], ms(14));
        // Neither given: the 100 ms default. The hop is measured by now: the
        // fake answered in exactly the time it says it took, so the hop costs
        // nothing and the 1 ms floor is kept back.
        ask(&n, request("q", 10, 0), None).await.unwrap();
        assert_eq!(child.budgets.lock().unwrap()[1], ms(96));
    }

    #[tokio::test(start_paused = true)]
    async fn every_level_answers_before_its_callers_deadline() {
        // root -> mid -> (fast leaf, straggler); root -> fast leaf.
        let straggler = Arc::new(FakeChild::answering(1, ms(5000), &[("s", 9.0)]));
        let mid = Arc::new(node(
            "mid",
            vec![
                Arc::new(FakeChild::answering(0, ms(3), &[("m", 2.0)])),
                straggler.clone(),
            ],
        ));
        let root = node(
            "root",
            vec![mid, Arc::new(FakeChild::answering(2, ms(3), &[("r", 1.0)]))],
        );
        let start = Instant::now();
        let r = ask(&root, request("q", 10, 50), None).await.unwrap();
        assert!(start.elapsed() <= ms(47), "took {:?}", start.elapsed());
        // The mid-level parent's partial answer made it up in time.
        let ids: Vec<_> = r.hits.iter().map(|h| h.doc_id.as_str()).collect();
        assert_eq!(ids, ["m", "r"]);
        let c = r.coverage.unwrap();
        assert_eq!((c.shards_ok, c.shards_timed_out), (2, 1));
        assert_eq!(c.failures[0].shard, 1);
        assert_eq!(straggler.cancelled.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_child_is_coverage_not_an_error() {
        let n = node(
            "p",
            vec![
                Arc::new(FakeChild::answering(0, ms(5), &[("a", 1.0)])),
                Arc::new(FakeChild::failing(
                    1,
                    ms(1),
                    ChildError::Unavailable("connection refused".into()),
                )),
            ],
        );
        let r = ask(&n, request("q", 10, 100), None).await.unwrap();
        let c = r.coverage.unwrap();
        assert_eq!((c.shards_total, c.shards_ok, c.shards_failed), (2, 1, 1));
        assert_eq!(c.failures[0].reason, FailureReason::Unavailable as i32);
        assert!(c.failures[0].message.contains("connection refused"));
        assert!(r.partial);
        assert_eq!(n.counters().get(InnerCounter::ChildrenFailed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_invalid_query_fails_fast_and_cancels_the_rest() {
        let slow = Arc::new(FakeChild::answering(0, ms(1000), &[("a", 1.0)]));
        let n = node(
            "p",
            vec![
                slow.clone(),
                Arc::new(FakeChild::failing(
                    1,
                    ms(2),
                    ChildError::InvalidArgument("cannot parse query".into()),
                )),
            ],
        );
        let start = Instant::now();
        let err = ask(&n, request("q", 10, 5000), None).await.unwrap_err();
        assert_eq!(err, NodeError::Invalid("cannot parse query".into()));
        assert_eq!(start.elapsed(), ms(2));
        assert_eq!(slow.cancelled.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn past_its_bound_a_node_refuses_at_once_and_recovers() {
        let child = Arc::new(FakeChild::answering(0, ms(50), &[("a", 1.0)]));
        let n = Arc::new(node("p", vec![child.clone()]).with_max_in_flight(2));
        let busy: Vec<_> = (0..2)
            .map(|_| {
                let n = Arc::clone(&n);
                tokio::spawn(async move { ask(&n, request("q", 10, 1000), None).await })
            })
            .collect();
        tokio::task::yield_now().await;
        let start = Instant::now();
        let err = ask(&n, request("q", 10, 1000), None).await.unwrap_err();
        assert!(matches!(err, NodeError::Overloaded(_)), "{err:?}");
        assert_eq!(start.elapsed(), Duration::ZERO, "refused at once");
        assert_eq!(n.counters().get(InnerCounter::RefusedOverloaded), 1);
        for b in busy {
            b.await.unwrap().unwrap();
        }
        ask(&n, request("q", 10, 1000), None).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_times_everything_out_at_once() {
        let child = Arc::new(FakeChild::answering(0, ms(1), &[("a", 1.0)]));
        let n = node("p", vec![child.clone()]);
        let start = Instant::now();
        // 1 ms budget, 3 ms reserve: nothing can be asked.
        let r = ask(&n, request("q", 10, 1), None).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(child.budgets.lock().unwrap().is_empty());
        assert_eq!(r.coverage.unwrap().shards_timed_out, 1);
    }
}
