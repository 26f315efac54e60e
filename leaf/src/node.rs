//! A leaf's request path, free of gRPC so it can be tested in-process under
//! a paused clock: validate, inject faults if configured, wait for a search
//! slot until the deadline, search on the blocking pool, and count it all.
//!
//! Work nobody will read is not done: a request whose deadline passes while
//! it waits for a search slot is refused, and when the caller goes away (the
//! future is dropped, e.g. a parent past its deadline cancelled its RPC) a
//! running search stops at its next check.
//!
//! Overload is refused at once, not discovered at the deadline: the queue of
//! requests waiting for a slot is bounded, and a request that the queue ahead
//! of it would keep from starting before its collection deadline (judged from
//! an estimate of the recent service time) is refused on arrival with
//! [`LeafError::Overloaded`], so a parent can try another replica while there
//! is still time.

use searchtree_node::ops::metrics::metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use searchtree_node::counter_set;
use searchtree_node::counters::Counters;
use searchtree_proto::pb::{FetchRequest, FetchResponse, SearchRequest, SearchResponse};
use searchtree_proto::query::Quoted;
use searchtree_proto::{BudgetPolicy, FetchParams, QueryLimits, SearchParams};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::collector::Stop;
use crate::cost::Plan;
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
        /// Requests refused: no search slot before the deadline (or the slot
        /// came too late to search).
        QueueDeadlineExceeded = "queue_deadline_exceeded",
        /// Requests refused at once on arrival: the queue for a search slot
        /// was full, or the queue ahead would keep them from starting before
        /// their deadline.
        RefusedOverloaded = "refused_overloaded",
        /// Requests that waited for a search slot (none was free on arrival).
        QueueWaits = "queue_waits",
        /// Total time requests waited for a search slot, in microseconds
        /// (divided by `queue_waits`, the mean wait).
        QueueWaitUsTotal = "queue_wait_us_total",
        /// Requests that waited more than 10 ms for a search slot (the same
        /// mark as the inner nodes' `queue_waits_over_10ms`).
        QueueWaitsOver10Ms = "queue_waits_over_10ms",
        /// Requests delayed on purpose (fault injection).
        InjectedDelays = "injected_delays",
        /// Requests failed on purpose (fault injection).
        InjectedErrors = "injected_errors",
        /// Searches or fetches that panicked (and failed only their request).
        SearchPanics = "search_panics",
        /// Searches short enough by their estimate to run on the thread that
        /// received them, rather than on the blocking pool ([`crate::cost`]).
        SearchesInline = "searches_inline",
        /// Fetch requests received (the second phase of a two-phase search).
        Fetches = "fetches",
        /// Fetches short enough by their estimate to run on the thread that
        /// received them ([`crate::cost::fetch_cost`]).
        FetchesInline = "fetches_inline",
        /// Documents fetched: titles and snippets built.
        FetchedDocs = "fetched_docs",
        /// Documents asked for that this shard does not hold.
        FetchNotFound = "fetch_not_found",
        /// Documents left unfetched: the fetch reached its deadline (or
        /// waited for a fetch slot until then) before loading them.
        FetchUnfetched = "fetch_unfetched",
        /// Fetches whose caller went away before the answer (counted apart
        /// from `requests_cancelled`, which is about searches).
        FetchesCancelled = "fetches_cancelled",
        /// Document operations loaded into the staging area.
        LoadedOps = "loaded_ops",
        /// Batches of document operations committed.
        LoadBatches = "load_batches",
        /// Document operations refused (bad id, another shard's document).
        LoadRefusedOps = "load_refused_ops",
        /// Candidate versions prepared.
        Prepares = "prepares",
        /// Versions installed (searchable by number).
        Installs = "installs",
        /// Versions made current.
        Activations = "activations",
        /// Versions copied from a sibling replica.
        CatchUps = "catch_ups",
        /// Writing steps (load batches, prepares, installs, copies) refused
        /// because they would leave less free disk than `--min-free-disk`.
        DiskRefusals = "disk_refusals",
        /// Versions held open now (a gauge).
        VersionsHeld = "versions_held",
        /// The version the leaf answers at by default, its current one (a
        /// gauge): equal at every leaf of a tree but for the moments of a
        /// publish's switch, so a leaf left behind shows.
        CurrentVersion = "current_version",
        /// Bytes an unprivileged writer may still use on the file system of
        /// the leaf's data directory (of its index when it has none), read
        /// every few seconds (a gauge).
        DiskFreeBytes = "disk_free_bytes",
        /// The size of that file system in bytes (a gauge).
        DiskTotalBytes = "disk_total_bytes",
        /// The bytes `--min-free-disk` keeps free there: writing steps that
        /// would bring `disk_free_bytes` below it are refused (a gauge; 0
        /// for a leaf without a data directory, which never writes).
        DiskFloorBytes = "disk_floor_bytes",
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

/// What the request path needs of a shard: its number, and a search and a
/// fetch that block (they run on the blocking pool) and give up when `stop`
/// says so.
/// [`ShardSearcher`] is the real one; tests use scripted ones.
pub trait ShardSearch: Send + Sync + 'static {
    /// The shard searched, for messages.
    fn shard_id(&self) -> u32;
    /// Searches the shard. Blocking.
    fn search(&self, params: &SearchParams, stop: Stop) -> Result<SearchResponse, SearchError>;
    /// Fetches titles and snippets of documents (see [`crate::fetch`]).
    /// Blocking.
    fn fetch(&self, params: &FetchParams, stop: &Stop) -> Result<FetchResponse, SearchError>;
    /// Parses a search on receipt and estimates its work ([`crate::cost`]),
    /// or `None` if the work cannot be told cheaply (the search then parses
    /// its query itself): a search estimated short runs on the thread that
    /// received it. By default none can be told.
    fn plan(&self, _params: &SearchParams) -> Option<Plan> {
        None
    }
    /// Estimates a fetch's work on receipt ([`crate::cost::fetch_cost`]),
    /// or `None` if it cannot be told: a fetch estimated short runs on the
    /// thread that received it. By default none can be told.
    fn fetch_cost(&self, _params: &FetchParams) -> Option<u64> {
        None
    }
    /// Searches with the query `plan` parsed. Blocking. By default parses
    /// it again.
    fn search_planned(
        &self,
        params: &SearchParams,
        _plan: Plan,
        stop: Stop,
    ) -> Result<SearchResponse, SearchError> {
        self.search(params, stop)
    }
}

impl ShardSearch for ShardSearcher {
    fn shard_id(&self) -> u32 {
        self.shard().meta.shard
    }

    fn search(&self, params: &SearchParams, stop: Stop) -> Result<SearchResponse, SearchError> {
        ShardSearcher::search(self, params, stop)
    }

    fn fetch(&self, params: &FetchParams, stop: &Stop) -> Result<FetchResponse, SearchError> {
        ShardSearcher::fetch(self, params, stop)
    }

    fn plan(&self, params: &SearchParams) -> Option<Plan> {
        crate::cost::plan(self, params)
    }

    fn fetch_cost(&self, params: &FetchParams) -> Option<u64> {
        crate::cost::fetch_cost(self, params)
    }

    fn search_planned(
        &self,
        params: &SearchParams,
        plan: Plan,
        stop: Stop,
    ) -> Result<SearchResponse, SearchError> {
        self.search_query(params, plan.query, stop)
    }
}

/// The leaf's estimate of how long a search holds its slot: an exponentially
/// weighted moving average of recent searches, so admission can tell at once
/// whether a queued request could start in time. Lock-free, as it is updated
/// from the blocking pool.
#[derive(Debug)]
pub struct ServiceEstimate {
    /// The estimate in nanoseconds; `u64::MAX` until a search has finished.
    nanos: AtomicU64,
}

impl ServiceEstimate {
    /// Weight of the newest sample: recent enough to follow a change of load
    /// within a few dozen searches, smooth enough to ignore one odd query.
    pub const WEIGHT: f64 = 0.2;
    const UNKNOWN: u64 = u64::MAX;

    /// No estimate yet: until a search finishes, every request is admitted.
    pub fn new() -> Self {
        ServiceEstimate {
            nanos: AtomicU64::new(Self::UNKNOWN),
        }
    }

    /// The current estimate, if any search has finished.
    pub fn get(&self) -> Option<Duration> {
        match self.nanos.load(Ordering::Relaxed) {
            Self::UNKNOWN => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    /// Folds in one search's time holding its slot (the first sample is
    /// taken as is).
    pub fn record(&self, held: Duration) {
        let sample = u64::try_from(held.as_nanos()).unwrap_or(Self::UNKNOWN - 1);
        let _ = self
            .nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == Self::UNKNOWN {
                    sample.min(Self::UNKNOWN - 1)
                } else {
                    let next = old as f64 + Self::WEIGHT * (sample as f64 - old as f64);
                    (next.max(0.0) as u64).min(Self::UNKNOWN - 1)
                })
            });
    }
}

impl Default for ServiceEstimate {
    fn default() -> Self {
        Self::new()
    }
}

/// The default bound on requests waiting for a search slot: this many per
/// slot. It is the backstop that keeps memory bounded (with no estimate yet,
/// or with long budgets); ordinary overload is refused earlier, by the
/// deadline check. Generous, because a parent fans each admitted query out to
/// every leaf at once: at the root's initial admission limit (64 queries) a
/// leaf with two slots sees 62 waiting, which must not be refused.
pub const DEFAULT_QUEUED_PER_SLOT: usize = 64;

/// A wait for a search slot past which it counts in
/// `queue_waits_over_10ms`: a tenth of the default budget.
const SLOW_QUEUE_WAIT: Duration = Duration::from_millis(10);

/// One shard's request handling: search slots, timing, faults, counters.
pub struct LeafNode<S = ShardSearcher> {
    searcher: Arc<S>,
    permits: Arc<Semaphore>,
    /// Slots for fetches, apart from the search slots: a fetch is small and
    /// comes late in its query's budget, so it does not queue behind
    /// searches; bounded all the same (as many as search slots).
    fetch_permits: Arc<Semaphore>,
    slots: usize,
    max_queued: usize,
    waiting: Arc<AtomicUsize>,
    service: Arc<ServiceEstimate>,
    timing: LeafTiming,
    faults: Faults,
    limits: QueryLimits,
    crash_on: Option<String>,
    /// Searches estimated at most this run on the receiving thread (0: none).
    inline_cost: u64,
    counters: Arc<LeafCounters>,
}

impl<S: ShardSearch> LeafNode<S> {
    /// A leaf running at most `max_concurrent` searches at once; more wait
    /// their turn (until their deadline) rather than oversubscribing the CPU,
    /// at most [`DEFAULT_QUEUED_PER_SLOT`] per slot unless
    /// [`with_max_queued`](Self::with_max_queued) says otherwise.
    pub fn new(searcher: S, max_concurrent: usize, timing: LeafTiming, faults: Faults) -> Self {
        Self::shared(Arc::new(searcher), max_concurrent, timing, faults)
    }

    /// As [`new`](Self::new), over a searcher shared with others (the
    /// corpus service, which changes the versions it holds).
    pub fn shared(
        searcher: Arc<S>,
        max_concurrent: usize,
        timing: LeafTiming,
        faults: Faults,
    ) -> Self {
        let slots = max_concurrent.max(1);
        LeafNode {
            searcher,
            permits: Arc::new(Semaphore::new(slots)),
            fetch_permits: Arc::new(Semaphore::new(slots)),
            slots,
            max_queued: slots * DEFAULT_QUEUED_PER_SLOT,
            waiting: Arc::default(),
            service: Arc::default(),
            timing,
            faults,
            limits: QueryLimits::default(),
            crash_on: None,
            inline_cost: crate::cost::DEFAULT_INLINE_SEARCH_COST,
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

    /// Lets at most `max_queued` requests wait for a search slot; more are
    /// refused at once, so the queue (and the memory and the wait it costs)
    /// stays bounded whatever the offered load. 0: never wait.
    pub fn with_max_queued(mut self, max_queued: usize) -> Self {
        self.max_queued = max_queued;
        self
    }

    /// Runs searches whose estimated cost ([`crate::cost`]) is at most
    /// `cost` on the thread that received them instead of the blocking
    /// pool; 0 sends every search to the pool.
    pub fn with_inline_cost(mut self, cost: u64) -> Self {
        self.inline_cost = cost;
        self
    }

    /// The estimate of recent service time that admission judges by.
    pub fn service_estimate(&self) -> Option<Duration> {
        self.service.get()
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

    /// Counts a fetch and validates it on receipt.
    pub fn validate_fetch(&self, request: &FetchRequest) -> Result<FetchParams, LeafError> {
        self.counters.inc(LeafCounter::Fetches);
        FetchParams::validate(request, &self.limits).map_err(|e| {
            self.counters.inc(LeafCounter::InvalidRequests);
            LeafError::Invalid(e.to_string())
        })
    }

    /// Fetches titles and snippets for `params` by `deadline`: waits for a
    /// fetch slot until then, and loads documents on the blocking pool until
    /// `reserve` before it; those not reached come back unfetched. Dropping
    /// the future stops the fetch at its next document.
    pub async fn fetch(
        &self,
        params: FetchParams,
        deadline: Instant,
    ) -> Result<FetchResponse, LeafError> {
        let shard = self.searcher.shard_id();
        // Injected faults hit fetches as they hit searches: a slow or broken
        // leaf is slow or broken for both phases.
        match self.faults.draw() {
            Fault::None => {}
            Fault::Error => {
                self.counters.inc(LeafCounter::InjectedErrors);
                return Err(LeafError::Unavailable(
                    "injected fault: this leaf fails on purpose".into(),
                ));
            }
            Fault::Delay(delay) => {
                self.counters.inc(LeafCounter::InjectedDelays);
                tokio::time::sleep(delay).await;
            }
        }
        let until = deadline
            .checked_sub(self.timing.reserve)
            .unwrap_or(deadline);
        let slot = Arc::clone(&self.fetch_permits).acquire_owned();
        let permit = if Instant::now() < until {
            tokio::time::timeout_at(until, slot)
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None // too late already: no slot is taken
        };
        let Some(permit) = permit else {
            self.counters
                .add(LeafCounter::FetchUnfetched, params.docs.len() as u64);
            return Err(LeafError::Timeout(format!(
                "shard {shard} had no fetch slot free before the deadline"
            )));
        };
        let mut guard = CancelOnDrop {
            flag: Arc::default(),
            counters: Arc::clone(&self.counters),
            counter: LeafCounter::FetchesCancelled,
            armed: true,
        };
        let stop = Stop {
            deadline: Some(until.into_std()),
            cancelled: Arc::clone(&guard.flag),
        };
        // A short fetch (a few bodies of ordinary length) runs here, as a
        // short search does: the pool's two context switches cost about as
        // much as its snippets.
        let inline = self.inline_cost > 0
            && self
                .searcher
                .fetch_cost(&params)
                .is_some_and(|cost| cost <= self.inline_cost);
        let searcher = Arc::clone(&self.searcher);
        let work = move || {
            let result = searcher.fetch(&params, &stop);
            drop(permit);
            result
        };
        if inline {
            self.counters.inc(LeafCounter::FetchesInline);
        }
        let result = run_here_or_on_pool(inline, work).await;
        guard.armed = false;
        match result {
            Ok(answer) => {
                let answer = answer?;
                let count = |c, n: usize| self.counters.add(c, n as u64);
                count(LeafCounter::FetchedDocs, answer.hits.len());
                count(LeafCounter::FetchNotFound, answer.not_found.len());
                count(LeafCounter::FetchUnfetched, answer.unfetched.len());
                Ok(answer)
            }
            Err(e) => {
                self.counters.inc(LeafCounter::SearchPanics);
                tracing::error!(shard, error = %e, "fetch panicked");
                Err(LeafError::Internal(
                    "the fetch failed unexpectedly on this shard (the error is logged)".into(),
                ))
            }
        }
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
            counter: LeafCounter::RequestsCancelled,
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

        let collect_until = deadline
            .checked_sub(self.timing.reserve)
            .unwrap_or(deadline);
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let queued = self.admit_to_queue(collect_until).inspect_err(|_| {
                    self.counters.inc(LeafCounter::RefusedOverloaded);
                    guard.armed = false;
                })?;
                self.counters.inc(LeafCounter::QueueWaits);
                let waited_from = Instant::now();
                let permit =
                    tokio::time::timeout_at(deadline, Arc::clone(&self.permits).acquire_owned())
                        .await;
                drop(queued);
                let waited = waited_from.elapsed();
                self.counters.add(
                    LeafCounter::QueueWaitUsTotal,
                    searchtree_proto::deadline::micros(waited),
                );
                if waited > SLOW_QUEUE_WAIT {
                    self.counters.inc(LeafCounter::QueueWaitsOver10Ms);
                }
                metrics().leaf_queue_wait.observe(waited.as_secs_f64());
                let Ok(Ok(permit)) = permit else {
                    self.counters.inc(LeafCounter::QueueDeadlineExceeded);
                    guard.armed = false;
                    return Err(LeafError::Timeout(format!(
                        "shard {} was busy until the deadline ({:?} after arrival)",
                        self.searcher.shard_id(),
                        deadline.saturating_duration_since(arrived)
                    )));
                };
                permit
            }
        };
        // A slot that came too late to search in is given back unused.
        if Instant::now() >= collect_until {
            self.counters.inc(LeafCounter::QueueDeadlineExceeded);
            guard.armed = false;
            return Err(LeafError::Timeout(format!(
                "shard {} got a search slot too late to search ({:?} after arrival)",
                self.searcher.shard_id(),
                arrived.elapsed()
            )));
        }
        let started = Instant::now();
        let profile = params.profile;
        let service = Arc::clone(&self.service);
        let stop = Stop {
            deadline: Some(collect_until.into_std()),
            cancelled: Arc::clone(&guard.flag),
        };
        let searcher = Arc::clone(&self.searcher);
        let counters = Arc::clone(&self.counters);
        let query = params.query.clone();
        // Parsed once here, wherever it runs; with in-place searches off,
        // it is not planned at all.
        let plan = if self.inline_cost > 0 {
            self.searcher.plan(&params)
        } else {
            None
        };
        let inline = plan.as_ref().is_some_and(|p| p.cost <= self.inline_cost);
        let work = move || {
            let cancelled = Arc::clone(&stop.cancelled);
            let result = match plan {
                Some(plan) => searcher.search_planned(&params, plan, stop),
                None => searcher.search(&params, stop),
            };
            if cancelled.load(Ordering::Relaxed) {
                // Cut short: its time says nothing of the service time.
                counters.inc(LeafCounter::SearchesCancelled);
            } else {
                service.record(started.elapsed());
                metrics()
                    .leaf_search
                    .observe(started.elapsed().as_secs_f64());
                if result.as_ref().is_ok_and(|r| r.partial) {
                    counters.inc(LeafCounter::SearchesSoftTimeout);
                } else {
                    counters.inc(LeafCounter::SearchesCompleted);
                }
            }
            // The estimate is updated before the next waiter gets the slot.
            drop(permit);
            result
        };
        // A short search runs here: handing it to the pool would cost two
        // context switches, about as much as the search (crate::cost).
        if inline {
            self.counters.inc(LeafCounter::SearchesInline);
        }
        let result = run_here_or_on_pool(inline, work).await;
        guard.armed = false;
        match result {
            Ok(answer) => {
                use searchtree_proto::deadline::micros;
                let mut answer = answer?;
                // The leaf's whole time, its queue wait (and any injected
                // delay) included: callers take the round trip less this as
                // the hop (their hop estimate, the profile's `hop_us`).
                answer.took_us = micros(arrived.elapsed());
                searchtree_node::ops::status::record_answer(&answer);
                if profile {
                    answer.profile = Some(Box::new(searchtree_proto::pb::NodeProfile {
                        role: "leaf".into(),
                        shards: vec![self.searcher.shard_id()],
                        queue_us: micros(started.saturating_duration_since(arrived)),
                        search_us: micros(started.elapsed()),
                        total_us: answer.took_us,
                        ..Default::default()
                    }));
                }
                Ok(answer)
            }
            // A panic in one search fails that request, not the process: it
            // was caught where the search ran.
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

impl<S: ShardSearch> LeafNode<S> {
    /// Takes a place in the queue for a search slot, or refuses at once: when
    /// the queue is full, or when the requests already waiting would keep
    /// this one from starting before `collect_until` — even if the running
    /// searches ended now, it starts no sooner than
    /// `ceil(waiting ahead / slots) × service estimate` from now. With no
    /// estimate yet, it admits.
    fn admit_to_queue(&self, collect_until: Instant) -> Result<Queued, LeafError> {
        let ahead = self.waiting.fetch_add(1, Ordering::AcqRel);
        let queued = Queued(Arc::clone(&self.waiting));
        let shard = self.searcher.shard_id();
        if ahead >= self.max_queued {
            return Err(LeafError::Overloaded(format!(
                "shard {shard} is overloaded: {ahead} requests already wait for a search slot"
            )));
        }
        if let Some(service) = self.service.get() {
            let rounds = ahead.div_ceil(self.slots);
            let wait = service.saturating_mul(u32::try_from(rounds).unwrap_or(u32::MAX));
            let now = Instant::now();
            if now
                .checked_add(wait)
                .is_none_or(|start| start > collect_until)
            {
                return Err(LeafError::Overloaded(format!(
                    "shard {shard} is overloaded: {ahead} requests ahead at ~{service:?} each \
                     would not let this one start within its {:?}",
                    collect_until.saturating_duration_since(now)
                )));
            }
        }
        Ok(queued)
    }
}

/// A place in the queue for a search slot, given up when dropped (the slot
/// came, the deadline passed, or the caller went away).
struct Queued(Arc<AtomicUsize>);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Raises the cancellation flag if the request's future is dropped before it
/// finished — that is, when the caller went away.
struct CancelOnDrop {
    flag: Arc<AtomicBool>,
    counters: Arc<LeafCounters>,
    /// What a cancellation counts as: a search's or a fetch's.
    counter: LeafCounter,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.flag.store(true, Ordering::Relaxed);
            self.counters.inc(self.counter);
        }
    }
}

/// What a panic said, for the log: its message if it carried one.
/// Runs blocking `work` on this thread (`here`: it is short) or on the
/// blocking pool; a panic in it becomes its message, failing only its
/// request.
async fn run_here_or_on_pool<T, W>(here: bool, work: W) -> Result<T, String>
where
    T: Send + 'static,
    W: FnOnce() -> T + Send + 'static,
{
    if here {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
            .map_err(|panic| panic_message(&*panic))
    } else {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| match e.try_into_panic() {
                Ok(panic) => panic_message(&*panic),
                Err(e) => e.to_string(),
            })
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    crate::error::panic_text(panic).map_or_else(
        || "panicked".into(),
        |message| format!("panicked: {message}"),
    )
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
        /// What [`ShardSearch::cost`] says of every search.
        cost: Option<u64>,
        /// The threads its searches ran on.
        threads: Mutex<Vec<std::thread::ThreadId>>,
    }

    fn scripted() -> (ScriptedShard, mpsc::Sender<()>) {
        let (tx, rx) = mpsc::channel();
        let shard = ScriptedShard {
            release: Mutex::new(rx),
            stops: Mutex::default(),
            panics: false,
            cost: None,
            threads: Mutex::default(),
        };
        (shard, tx)
    }

    impl ShardSearch for ScriptedShard {
        fn shard_id(&self) -> u32 {
            7
        }

        /// Every document is found, titled by its id; none once stopped.
        fn fetch(&self, params: &FetchParams, stop: &Stop) -> Result<FetchResponse, SearchError> {
            assert!(!self.panics, "scripted panic");
            let mut answer = FetchResponse::default();
            for doc in &params.docs {
                if stop.now() {
                    answer.unfetched.push(doc.clone());
                } else {
                    answer.hits.push(searchtree_proto::pb::Hit {
                        doc_id: doc.doc_id.clone(),
                        title: doc.doc_id.clone(),
                        ..Default::default()
                    });
                }
            }
            Ok(answer)
        }

        fn plan(&self, _: &SearchParams) -> Option<Plan> {
            self.cost.map(|cost| Plan {
                query: Box::new(tantivy::query::AllQuery),
                cost,
            })
        }

        fn search(&self, _: &SearchParams, stop: Stop) -> Result<SearchResponse, SearchError> {
            self.stops.lock().unwrap().push(stop.clone());
            self.threads
                .lock()
                .unwrap()
                .push(std::thread::current().id());
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
    async fn took_us_is_the_leafs_whole_time_as_its_profile_says() {
        let (shard, release) = scripted();
        let delayed = FaultConfig {
            delay: ms(30),
            delay_prob: 1.0,
            error_prob: 0.0,
        };
        let node = leaf(shard, 1, delayed);
        release.send(()).unwrap();
        let mut p = params();
        p.profile = true;
        let answer = node.search(p, Instant::now() + ms(1_000)).await.unwrap();
        // The injected delay is the leaf's time, not the hop's.
        assert!(answer.took_us >= 30_000, "{}", answer.took_us);
        let profile = answer.profile.expect("profiled");
        assert_eq!(profile.total_us, answer.took_us);
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

    #[tokio::test(start_paused = true)]
    async fn a_short_search_runs_on_the_receiving_thread_and_others_on_the_pool() {
        let here = std::thread::current().id();
        // (cost the shard estimates, the leaf's limit, runs here)
        for (cost, limit, inline) in [
            (Some(10), crate::cost::DEFAULT_INLINE_SEARCH_COST, true),
            (
                Some(crate::cost::DEFAULT_INLINE_SEARCH_COST),
                crate::cost::DEFAULT_INLINE_SEARCH_COST,
                true,
            ),
            (
                Some(crate::cost::DEFAULT_INLINE_SEARCH_COST + 1),
                crate::cost::DEFAULT_INLINE_SEARCH_COST,
                false,
            ),
            (None, crate::cost::DEFAULT_INLINE_SEARCH_COST, false),
            (Some(1), 0, false),
        ] {
            let (mut shard, release) = scripted();
            shard.cost = cost;
            release.send(()).unwrap(); // the search ends as soon as it starts
            let timing = LeafTiming {
                policy: BudgetPolicy::default(),
                reserve: ms(1),
            };
            let node = LeafNode::new(shard, 2, timing, Faults::new(FaultConfig::default(), 1))
                .with_inline_cost(limit);
            node.search(params(), Instant::now() + ms(100))
                .await
                .unwrap();
            let ran_on = node.searcher.threads.lock().unwrap()[0];
            assert_eq!(ran_on == here, inline, "cost {cost:?}, limit {limit}");
            assert_eq!(
                node.counters().get(LeafCounter::SearchesInline),
                u64::from(inline)
            );
            assert_eq!(node.counters().get(LeafCounter::SearchesCompleted), 1);
            assert!(node.service_estimate().is_some(), "its time is counted");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_short_search_fails_its_request_only() {
        let (mut shard, _) = scripted();
        shard.panics = true;
        shard.cost = Some(1);
        let node = leaf(shard, 1, FaultConfig::default());
        for _ in 0..2 {
            // The second search gets the slot the first gave back.
            let err = node.search(params(), Instant::now() + ms(100)).await;
            assert!(matches!(err, Err(LeafError::Internal(_))), "{err:?}");
        }
        assert_eq!(node.counters().get(LeafCounter::SearchPanics), 2);
        assert_eq!(node.counters().get(LeafCounter::SearchesInline), 2);
    }

    /// Waits (really, briefly) until `n` requests wait for a slot.
    async fn until_waiting<S: ShardSearch>(node: &LeafNode<S>, n: usize) {
        while node.waiting.load(Ordering::Acquire) < n {
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Starts a search with `deadline`, in the background.
    fn spawn_search(
        node: &Arc<LeafNode<ScriptedShard>>,
        deadline: Instant,
    ) -> tokio::task::JoinHandle<Result<SearchResponse, LeafError>> {
        let node = Arc::clone(node);
        tokio::spawn(async move { node.search(params(), deadline).await })
    }

    /// A leaf with one slot whose service estimate is 100 ms (one search held
    /// its slot that long), now running a second search (the slot is busy)
    /// with one request waiting behind it.
    async fn busy_leaf_with_one_waiting() -> (
        Arc<LeafNode<ScriptedShard>>,
        mpsc::Sender<()>,
        Vec<tokio::task::JoinHandle<Result<SearchResponse, LeafError>>>,
    ) {
        let (shard, release) = scripted();
        let node = leaf(shard, 1, FaultConfig::default());
        let first = spawn_search(&node, Instant::now() + ms(10_000));
        until_searching(&node, 1).await;
        tokio::time::advance(ms(100)).await;
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        assert_eq!(node.service_estimate(), Some(ms(100)));
        let busy = spawn_search(&node, Instant::now() + ms(10_000));
        until_searching(&node, 2).await;
        let ahead = spawn_search(&node, Instant::now() + ms(10_000));
        until_waiting(&node, 1).await;
        (node, release, vec![busy, ahead])
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_cannot_start_before_its_deadline_is_refused_at_once() {
        let (node, release, others) = busy_leaf_with_one_waiting().await;
        // One request ahead at ~100 ms: this one could not start within 50 ms.
        let start = Instant::now();
        let err = node
            .search(params(), start + ms(50))
            .await
            .expect_err("refused on arrival");
        assert_eq!(start.elapsed(), Duration::ZERO, "refused at once");
        assert!(matches!(err, LeafError::Overloaded(ref m) if m.contains("shard 7 is overloaded")));
        assert_eq!(node.counters().get(LeafCounter::RefusedOverloaded), 1);
        assert_eq!(node.counters().get(LeafCounter::QueueDeadlineExceeded), 0);
        assert_eq!(node.waiting.load(Ordering::Acquire), 1, "left the queue");
        for _ in &others {
            release.send(()).unwrap();
        }
        for call in others {
            call.await.unwrap().unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_can_start_before_its_deadline_is_admitted() {
        let (node, release, others) = busy_leaf_with_one_waiting().await;
        // One request ahead at ~100 ms: this one can start within 150 ms.
        let admitted = spawn_search(&node, Instant::now() + ms(150));
        until_waiting(&node, 2).await;
        assert!(!admitted.is_finished());
        for _ in 0..=others.len() {
            release.send(()).unwrap();
        }
        for call in others {
            call.await.unwrap().unwrap();
        }
        admitted.await.unwrap().expect("admitted and answered");
        assert_eq!(node.counters().get(LeafCounter::RefusedOverloaded), 0);
        assert_eq!(node.counters().get(LeafCounter::SearchesCompleted), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_estimate_yet_a_request_is_admitted() {
        let (shard, release) = scripted();
        let node = leaf(shard, 1, FaultConfig::default());
        let busy = spawn_search(&node, Instant::now() + ms(10_000));
        until_searching(&node, 1).await;
        let ahead = spawn_search(&node, Instant::now() + ms(10_000));
        until_waiting(&node, 1).await;
        let admitted = spawn_search(&node, Instant::now() + ms(5));
        until_waiting(&node, 2).await;
        assert_eq!(node.counters().get(LeafCounter::RefusedOverloaded), 0);
        tokio::time::advance(ms(5)).await;
        let err = admitted.await.unwrap().unwrap_err();
        assert!(matches!(err, LeafError::Timeout(_)), "{err:?}");
        for _ in 0..2 {
            release.send(()).unwrap();
        }
        busy.await.unwrap().unwrap();
        ahead.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_bound_refuses_the_next_waiter_at_once() {
        let (shard, release) = scripted();
        let timing = LeafTiming {
            policy: BudgetPolicy::default(),
            reserve: ms(1),
        };
        let node = Arc::new(
            LeafNode::new(shard, 1, timing, Faults::new(FaultConfig::default(), 1))
                .with_max_queued(2),
        );
        let mut calls = vec![spawn_search(&node, Instant::now() + ms(10_000))];
        until_searching(&node, 1).await;
        for n in 1..=2 {
            calls.push(spawn_search(&node, Instant::now() + ms(10_000)));
            until_waiting(&node, n).await;
        }
        let start = Instant::now();
        let err = node
            .search(params(), start + ms(10_000))
            .await
            .expect_err("the queue is full");
        assert_eq!(start.elapsed(), Duration::ZERO, "refused at once");
        assert!(
            matches!(err, LeafError::Overloaded(ref m) if m.contains("2 requests already wait"))
        );
        assert_eq!(node.counters().get(LeafCounter::RefusedOverloaded), 1);
        assert_eq!(node.waiting.load(Ordering::Acquire), 2);
        for _ in &calls {
            release.send(()).unwrap();
        }
        for call in calls {
            call.await.unwrap().unwrap();
        }
        assert_eq!(node.waiting.load(Ordering::Acquire), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_deadline_passed_while_it_waited_is_not_started() {
        let (shard, release) = scripted();
        let node = leaf(shard, 1, FaultConfig::default());
        let busy = spawn_search(&node, Instant::now() + ms(10_000));
        until_searching(&node, 1).await;
        let start = Instant::now();
        let waiting = spawn_search(&node, start + ms(50));
        until_waiting(&node, 1).await;
        // The slot comes free at 49 ms: the collection deadline (50 ms less
        // the 1 ms reserve) has come, so there is no time left to search.
        tokio::time::advance(ms(49)).await;
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
        let err = waiting.await.unwrap().expect_err("not started");
        assert!(
            matches!(err, LeafError::Timeout(ref m) if m.contains("too late")),
            "{err:?}"
        );
        assert_eq!(
            node.searcher.stops.lock().unwrap().len(),
            1,
            "never searched"
        );
        assert_eq!(node.counters().get(LeafCounter::QueueDeadlineExceeded), 1);
        assert_eq!(node.counters().get(LeafCounter::QueueWaits), 1);
        assert_eq!(node.counters().get(LeafCounter::QueueWaitUsTotal), 49_000);
        assert_eq!(node.counters().get(LeafCounter::QueueWaitsOver10Ms), 1);
        assert_eq!(node.permits.available_permits(), 1);
    }

    fn fetch_params(ids: &[&str]) -> FetchParams {
        let docs = ids
            .iter()
            .map(|id| searchtree_proto::pb::DocRef {
                doc_id: id.to_string(),
                shard: 7,
            })
            .collect();
        let req = FetchRequest {
            hops: 0,
            query: "q".into(),
            docs,
            budget_ms: 0,
            version: 0,
        };
        FetchParams::validate(&req, &QueryLimits::default()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_does_not_queue_behind_searches_and_is_counted() {
        let (shard, release) = scripted();
        let node = leaf(shard, 1, FaultConfig::default());
        let busy = spawn_search(&node, Instant::now() + ms(10_000));
        until_searching(&node, 1).await;
        let answer = node
            .fetch(fetch_params(&["a", "b"]), Instant::now() + ms(50))
            .await
            .expect("the search slot is busy, the fetch slot is not");
        assert_eq!(answer.hits.len(), 2);
        assert_eq!(node.counters().get(LeafCounter::FetchedDocs), 2);
        release.send(()).unwrap();
        busy.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_with_no_slot_before_its_deadline_times_out_there() {
        let (shard, _) = scripted();
        let node = leaf(shard, 1, FaultConfig::default());
        let held = Arc::clone(&node.fetch_permits).acquire_owned().await;
        let start = Instant::now();
        let err = node
            .fetch(fetch_params(&["a"]), start + ms(50))
            .await
            .unwrap_err();
        // It gave up when its documents could no longer be loaded in time.
        assert_eq!(start.elapsed(), ms(49));
        assert!(matches!(err, LeafError::Timeout(ref m) if m.contains("no fetch slot")));
        assert_eq!(node.counters().get(LeafCounter::FetchUnfetched), 1);
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn injected_faults_fail_or_delay_fetches_too() {
        let (shard, _) = scripted();
        let errors = FaultConfig {
            error_prob: 1.0,
            ..FaultConfig::default()
        };
        let failing = leaf(shard, 1, errors);
        let err = failing
            .fetch(fetch_params(&["a"]), Instant::now() + ms(100))
            .await
            .unwrap_err();
        assert!(matches!(err, LeafError::Unavailable(_)));
        assert_eq!(failing.counters().get(LeafCounter::InjectedErrors), 1);

        let (shard, _) = scripted();
        let delays = FaultConfig {
            delay: ms(80),
            delay_prob: 1.0,
            ..FaultConfig::default()
        };
        let slow = leaf(shard, 1, delays);
        let start = Instant::now();
        let err = slow
            .fetch(fetch_params(&["a"]), start + ms(50))
            .await
            .unwrap_err();
        // Delayed past its deadline: no slot is taken, nothing is read.
        assert!(matches!(err, LeafError::Timeout(_)), "{err:?}");
        assert_eq!(start.elapsed(), ms(80));
        assert_eq!(slow.counters().get(LeafCounter::FetchUnfetched), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_fetch_fails_its_request_only() {
        let (mut shard, _) = scripted();
        shard.panics = true;
        let node = leaf(shard, 1, FaultConfig::default());
        let err = node
            .fetch(fetch_params(&["a"]), Instant::now() + ms(100))
            .await
            .unwrap_err();
        assert!(matches!(err, LeafError::Internal(_)));
        assert_eq!(node.counters().get(LeafCounter::SearchPanics), 1);
        assert_eq!(node.fetch_permits.available_permits(), 1);
    }

    #[test]
    fn the_service_estimate_is_a_moving_average() {
        let estimate = ServiceEstimate::new();
        assert_eq!(estimate.get(), None);
        estimate.record(ms(100));
        assert_eq!(estimate.get(), Some(ms(100)));
        estimate.record(ms(200));
        assert_eq!(estimate.get(), Some(ms(120)));
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
