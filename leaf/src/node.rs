//! A leaf's request path, free of gRPC so it can be tested in-process under
//! a paused clock: validate, inject faults if configured, wait for a search
//! slot until the deadline, search on the blocking pool, and count it all.
//!
//! Work nobody will read is not done: a request whose deadline passes while
//! it waits for a search slot is refused, and when the caller goes away (the
//! future is dropped, e.g. a parent past its deadline cancelled its RPC) a
//! running search stops at its next check.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use searchtree_node::counter_set;
use searchtree_node::counters::Counters;
use searchtree_proto::pb::{SearchRequest, SearchResponse};
use searchtree_proto::query::Quoted;
use searchtree_proto::{BudgetPolicy, QueryLimits, SearchParams};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::collector::Stop;
use crate::error::LeafError;
use crate::fault::{Fault, Faults};
use crate::searcher::{SearchError, ShardSearcher};

counter_set! {
    /// The counters a leaf keeps (served over `NodeStats`; the names are
    /// documented in the README).
    pub enum LeafCounter {
        /// Requests received.
        Requests = "requests",
        /// Requests refused as invalid.
        InvalidRequests = "invalid_requests",
        /// Searches that ran to the end.
        SearchesCompleted = "searches_completed",
        /// Searches answered partially at the deadline.
        SearchesSoftTimeout = "searches_soft_timeout",
        /// Searches stopped because the caller went away.
        SearchesCancelled = "searches_cancelled",
        /// Requests whose caller went away before the answer.
        RequestsCancelled = "requests_cancelled",
        /// Requests refused: no search slot before the deadline.
        QueueDeadlineExceeded = "queue_deadline_exceeded",
        /// Requests delayed on purpose (fault injection).
        InjectedDelays = "injected_delays",
        /// Requests failed on purpose (fault injection).
        InjectedErrors = "injected_errors",
        /// Searches that panicked (and failed only their request).
        SearchPanics = "search_panics",
    }
}

/// A leaf's counters.
pub type LeafCounters = Counters<LeafCounter>;

/// How a leaf treats time.
#[derive(Debug, Clone, Copy)]
pub struct LeafTiming {
    /// Budget limits.
    pub policy: BudgetPolicy,
    /// Time kept back from the deadline to fetch titles and snippets and send
    /// the answer: collection stops this long before the deadline.
    pub reserve: Duration,
}

/// What the request path needs of a shard: its number, and a search that
/// blocks (it runs on the blocking pool) and gives up when `stop` says so.
/// [`ShardSearcher`] is the real one; tests use scripted ones.
pub trait ShardSearch: Send + Sync + 'static {
    /// The shard searched, for messages.
    fn shard_id(&self) -> u32;
    /// Searches the shard. Blocking.
    fn search(&self, params: &SearchParams, stop: Stop) -> Result<SearchResponse, SearchError>;
}

impl ShardSearch for ShardSearcher {
    fn shard_id(&self) -> u32 {
        self.shard().meta.shard
    }

    fn search(&self, params: &SearchParams, stop: Stop) -> Result<SearchResponse, SearchError> {
        ShardSearcher::search(self, params, stop)
    }
}

/// One shard's request handling: search slots, timing, faults, counters.
pub struct LeafNode<S = ShardSearcher> {
    searcher: Arc<S>,
    permits: Arc<Semaphore>,
    timing: LeafTiming,
    faults: Faults,
    limits: QueryLimits,
    crash_on: Option<String>,
    counters: Arc<LeafCounters>,
}

impl<S: ShardSearch> LeafNode<S> {
    /// A leaf running at most `max_concurrent` searches at once; more wait
    /// their turn (until their deadline) rather than oversubscribing the CPU.
    pub fn new(searcher: S, max_concurrent: usize, timing: LeafTiming, faults: Faults) -> Self {
        LeafNode {
            searcher: Arc::new(searcher),
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            timing,
            faults,
            limits: QueryLimits::default(),
            crash_on: None,
            counters: Counters::new("leaf"),
        }
    }

    /// Testing: abort the process on a query containing `term`, as a query
    /// of death would.
    pub fn with_crash_on(mut self, term: Option<String>) -> Self {
        self.crash_on = term.filter(|t| !t.is_empty());
        self
    }

    /// Checks queries against `limits` instead of the defaults.
    pub fn with_query_limits(mut self, limits: QueryLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The leaf's counters.
    pub fn counters(&self) -> Arc<LeafCounters> {
        Arc::clone(&self.counters)
    }

    /// How the leaf treats time.
    pub fn timing(&self) -> &LeafTiming {
        &self.timing
    }

    /// Counts a request and validates it on receipt.
    pub fn validate(&self, request: &SearchRequest) -> Result<SearchParams, LeafError> {
        self.counters.inc(LeafCounter::Requests);
        SearchParams::validate(request, &self.limits).map_err(|e| {
            self.counters.inc(LeafCounter::InvalidRequests);
            e.into()
        })
    }

    /// Searches for `params`, answering by `deadline`: collection stops
    /// `reserve` before it, with what was found (a soft timeout). Dropping
    /// the future cancels the search at its next check.
    pub async fn search(
        &self,
        params: SearchParams,
        deadline: Instant,
    ) -> Result<SearchResponse, LeafError> {
        let arrived = Instant::now();
        if let Some(term) = &self.crash_on
            && params.query.contains(term.as_str())
        {
            tracing::error!(%term, "fault injection: aborting on a query of death");
            std::process::abort();
        }
        let mut guard = CancelOnDrop {
            flag: Arc::default(),
            counters: Arc::clone(&self.counters),
            armed: true,
        };
        match self.faults.draw() {
            Fault::None => {}
            Fault::Error => {
                self.counters.inc(LeafCounter::InjectedErrors);
                guard.armed = false;
                return Err(LeafError::Unavailable(
                    "injected fault: this leaf fails on purpose".into(),
                ));
            }
            Fault::Delay(delay) => {
                self.counters.inc(LeafCounter::InjectedDelays);
                tokio::time::sleep(delay).await;
            }
        }

        let permit =
            tokio::time::timeout_at(deadline, Arc::clone(&self.permits).acquire_owned()).await;
        let Ok(Ok(permit)) = permit else {
            self.counters.inc(LeafCounter::QueueDeadlineExceeded);
            guard.armed = false;
            return Err(LeafError::Timeout(format!(
                "shard {} was busy until the deadline ({:?} after arrival)",
                self.searcher.shard_id(),
                deadline.saturating_duration_since(arrived)
            )));
        };

        let collect_until = deadline
            .checked_sub(self.timing.reserve)
            .unwrap_or(deadline);
        let stop = Stop {
            deadline: Some(collect_until.into_std()),
            cancelled: Arc::clone(&guard.flag),
        };
        let searcher = Arc::clone(&self.searcher);
        let counters = Arc::clone(&self.counters);
        let query = params.query.clone();
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let cancelled = Arc::clone(&stop.cancelled);
            let result = searcher.search(&params, stop);
            if cancelled.load(Ordering::Relaxed) {
                counters.inc(LeafCounter::SearchesCancelled);
            } else if result.as_ref().is_ok_and(|r| r.partial) {
                counters.inc(LeafCounter::SearchesSoftTimeout);
            } else {
                counters.inc(LeafCounter::SearchesCompleted);
            }
            result
        })
        .await;
        guard.armed = false;
        match result {
            Ok(answer) => Ok(answer?),
            // A panic in one search fails that request, not the process: the
            // blocking task caught it.
            Err(e) => {
                self.counters.inc(LeafCounter::SearchPanics);
                tracing::error!(query = %Quoted::new(&query), error = %e, "search panicked");
                Err(LeafError::Internal(
                    "the search failed unexpectedly on this shard (the error is logged)".into(),
                ))
            }
        }
    }
}

/// Raises the cancellation flag if the request's future is dropped before it
/// finished — that is, when the caller went away.
struct CancelOnDrop {
    flag: Arc<AtomicBool>,
    counters: Arc<LeafCounters>,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.flag.store(true, Ordering::Relaxed);
            self.counters.inc(LeafCounter::RequestsCancelled);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::mpsc;

    use super::*;
    use crate::fault::FaultConfig;

    /// A shard whose search blocks until told to finish (or until its stop
    /// fires, when `honours_stop`), recording the stop it was given.
    struct ScriptedShard {
        release: Mutex<mpsc::Receiver<()>>,
        stops: Mutex<Vec<Stop>>,
        panics: bool,
    }

    fn scripted() -> (ScriptedShard, mpsc::Sender<()>) {
        let (tx, rx) = mpsc::channel();
        let shard = ScriptedShard {
            release: Mutex::new(rx),
            stops: Mutex::default(),
            panics: false,
        };
        (shard, tx)
    }

    impl ShardSearch for ScriptedShard {
        fn shard_id(&self) -> u32 {
            7
        }

        fn search(&self, _: &SearchParams, stop: Stop) -> Result<SearchResponse, SearchError> {
            self.stops.lock().unwrap().push(stop.clone());
            assert!(!self.panics, "scripted panic");
            // Wait until released, or cancelled (polling, as a real search
            // checks its stop every 256 documents).
            loop {
                let released = self.release.lock().unwrap().try_recv().is_ok();
                if released || stop.cancelled.load(Ordering::Relaxed) {
                    return Ok(SearchResponse::default());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn leaf<S: ShardSearch>(shard: S, slots: usize, faults: FaultConfig) -> Arc<LeafNode<S>> {
        let timing = LeafTiming {
            policy: BudgetPolicy::default(),
            reserve: ms(1),
        };
        Arc::new(LeafNode::new(shard, slots, timing, Faults::new(faults, 1)))
    }

    fn params() -> SearchParams {
        SearchParams::try_from(&SearchRequest {
            query: "q".into(),
            ..Default::default()
        })
        .unwrap()
    }

    /// Waits (really, briefly) until the blocking search has started: time
    /// does not auto-advance while a blocking task runs, so the tests below
    /// move the clock by hand.
    async fn until_searching(node: &LeafNode<ScriptedShard>, n: usize) {
        while node.searcher.stops.lock().unwrap().len() < n {
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waiting_for_a_slot_is_refused_at_its_deadline() {
        let (shard, release) = scripted();
        let node = leaf(shard, 1, FaultConfig::default());
        let busy = tokio::spawn({
            let node = Arc::clone(&node);
            async move { node.search(params(), Instant::now() + ms(10_000)).await }
        });
        until_searching(&node, 1).await;
        let start = Instant::now();
        let waiting = tokio::spawn({
            let node = Arc::clone(&node);
            async move { node.search(params(), start + ms(50)).await }
        });
        tokio::time::advance(ms(49)).await;
        assert!(
            !waiting.is_finished(),
            "still waiting for the slot at 49 ms"
        );
        tokio::time::advance(ms(1)).await;
        let err = waiting
            .await
            .unwrap()
            .expect_err("no slot before the deadline");
        assert!(matches!(err, LeafError::Timeout(ref m) if m.contains("shard 7 was busy")));
        assert_eq!(node.counters().get(LeafCounter::QueueDeadlineExceeded), 1);
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        assert_eq!(node.counters().get(LeafCounter::SearchesCompleted), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn collection_stops_the_reserve_before_the_deadline() {
        let (shard, release) = scripted();
        let node = leaf(shard, 1, FaultConfig::default());
        release.send(()).unwrap();
        let deadline = Instant::now() + ms(40);
        node.search(params(), deadline).await.unwrap();
        let stops = node.searcher.stops.lock().unwrap();
        assert_eq!(stops[0].deadline, Some((deadline - ms(1)).into_std()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_goes_away_cancels_the_running_search() {
        let (shard, _release) = scripted();
        let node = leaf(shard, 1, FaultConfig::default());
        let call = tokio::spawn({
            let node = Arc::clone(&node);
            async move { node.search(params(), Instant::now() + ms(10_000)).await }
        });
        until_searching(&node, 1).await;
        // The caller gives up, as a parent past its deadline does.
        call.abort();
        assert!(call.await.unwrap_err().is_cancelled());
        assert_eq!(node.counters().get(LeafCounter::RequestsCancelled), 1);
        // The blocking search saw the flag and stopped; the slot is free.
        let stops = node.searcher.stops.lock().unwrap().clone();
        assert!(stops[0].cancelled.load(Ordering::Relaxed));
        while node.counters().get(LeafCounter::SearchesCancelled) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(node.permits.available_permits(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn injected_faults_fail_or_delay_before_any_search() {
        let (shard, _) = scripted();
        let failing = leaf(
            shard,
            1,
            FaultConfig {
                error_prob: 1.0,
                ..FaultConfig::default()
            },
        );
        let err = failing
            .search(params(), Instant::now() + ms(100))
            .await
            .unwrap_err();
        assert!(matches!(err, LeafError::Unavailable(_)));
        assert!(failing.searcher.stops.lock().unwrap().is_empty());
        assert_eq!(failing.counters().get(LeafCounter::RequestsCancelled), 0);

        let (shard, release) = scripted();
        let slow = leaf(
            shard,
            1,
            FaultConfig {
                delay: ms(30),
                delay_prob: 1.0,
                ..FaultConfig::default()
            },
        );
        release.send(()).unwrap();
        let start = Instant::now();
        slow.search(params(), start + ms(100)).await.unwrap();
        assert!(start.elapsed() >= ms(30));
        assert_eq!(slow.counters().get(LeafCounter::InjectedDelays), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_search_fails_its_request_only() {
        let (mut shard, _) = scripted();
        shard.panics = true;
        let node = leaf(shard, 1, FaultConfig::default());
        let err = node
            .search(params(), Instant::now() + ms(100))
            .await
            .unwrap_err();
        assert!(matches!(err, LeafError::Internal(_)));
        assert_eq!(node.counters().get(LeafCounter::SearchPanics), 1);
        // The slot was given back: the next search gets it.
        let err = node.search(params(), Instant::now() + ms(100)).await;
        assert!(matches!(err, Err(LeafError::Internal(_))));
    }

    #[test]
    fn invalid_requests_are_counted_and_refused() {
        let (shard, _) = scripted();
        let node = leaf(shard, 1, FaultConfig::default());
        let err = node
            .validate(&SearchRequest {
                query: "(".repeat(500),
                ..Default::default()
            })
            .unwrap_err();
        assert!(matches!(err, LeafError::Invalid(ref m) if m.contains("nests too deeply")));
        assert_eq!(
            (
                node.counters().get(LeafCounter::Requests),
                node.counters().get(LeafCounter::InvalidRequests)
            ),
            (1, 1)
        );
    }
}
