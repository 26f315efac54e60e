//! The leaf's gRPC adapter: validate, work out the deadline, inject faults if
//! configured, search on the blocking pool under a concurrency limit, and map
//! errors to gRPC codes.
//!
//! Work nobody will read is not done: a request whose deadline passes while
//! it waits for a search slot is refused, and when the caller goes away (its
//! RPC is dropped, e.g. a parent past its deadline) a running search stops at
//! its next check.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use searchtree_proto::pb::search_server::Search;
use searchtree_proto::pb::{SearchRequest, SearchResponse};
use searchtree_proto::query::Quoted;
use searchtree_proto::{BudgetPolicy, Counters, QueryLimits, SearchParams};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::collector::Stop;
use crate::fault::{Fault, Faults};
use crate::searcher::{SearchError, ShardSearcher};

/// The counters a leaf keeps (served over `NodeStats`).
pub const COUNTERS: &[&str] = &[
    "requests",
    "invalid_requests",
    "searches_completed",
    "searches_soft_timeout",
    "searches_cancelled",
    "requests_cancelled",
    "queue_deadline_exceeded",
    "injected_delays",
    "injected_errors",
    "search_panics",
];

/// How a leaf treats time.
#[derive(Debug, Clone, Copy)]
pub struct LeafTiming {
    /// Budget limits.
    pub policy: BudgetPolicy,
    /// Time kept back from the deadline to fetch titles and snippets and send
    /// the answer: collection stops this long before the deadline.
    pub reserve: Duration,
}

/// Serves `searchtree.v1.Search` for one shard.
pub struct LeafService {
    searcher: Arc<ShardSearcher>,
    permits: Arc<Semaphore>,
    timing: LeafTiming,
    faults: Faults,
    limits: QueryLimits,
    crash_on: Option<String>,
    counters: Arc<Counters>,
}

impl LeafService {
    /// A service running at most `max_concurrent` searches at once; more wait
    /// their turn (until their deadline) rather than oversubscribing the CPU.
    pub fn new(
        searcher: ShardSearcher,
        max_concurrent: usize,
        timing: LeafTiming,
        faults: Faults,
    ) -> Self {
        LeafService {
            searcher: Arc::new(searcher),
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            timing,
            faults,
            limits: QueryLimits::default(),
            crash_on: None,
            counters: Counters::new("leaf", COUNTERS),
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
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }
}

impl From<SearchError> for Status {
    fn from(err: SearchError) -> Self {
        match err {
            SearchError::InvalidQuery { .. } => Status::invalid_argument(err.to_string()),
            SearchError::Index(_) => Status::internal(err.to_string()),
        }
    }
}

/// Raises the cancellation flag if the request's future is dropped before it
/// finished — that is, when the caller went away.
struct CancelOnDrop {
    flag: Arc<AtomicBool>,
    counters: Arc<Counters>,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.flag.store(true, Ordering::Relaxed);
            self.counters.inc("requests_cancelled");
        }
    }
}

#[tonic::async_trait]
impl Search for LeafService {
    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        let arrived = Instant::now();
        self.counters.inc("requests");
        let params = SearchParams::validate(request.get_ref(), &self.limits).inspect_err(|_| {
            self.counters.inc("invalid_requests");
        })?;
        if let Some(term) = &self.crash_on
            && params.query.contains(term.as_str())
        {
            tracing::error!(%term, "fault injection: aborting on a query of death");
            std::process::abort();
        }
        let deadline = arrived + self.timing.policy.budget_of(&request, params.budget);
        let mut guard = CancelOnDrop {
            flag: Arc::default(),
            counters: Arc::clone(&self.counters),
            armed: true,
        };

        match self.faults.draw() {
            Fault::None => {}
            Fault::Error => {
                self.counters.inc("injected_errors");
                guard.armed = false;
                return Err(Status::unavailable(
                    "injected fault: this leaf fails on purpose",
                ));
            }
            Fault::Delay(delay) => {
                self.counters.inc("injected_delays");
                tokio::time::sleep(delay).await;
            }
        }

        let permit = tokio::time::timeout_at(
            tokio::time::Instant::from_std(deadline),
            self.permits.clone().acquire_owned(),
        )
        .await;
        let Ok(Ok(permit)) = permit else {
            self.counters.inc("queue_deadline_exceeded");
            guard.armed = false;
            return Err(Status::deadline_exceeded(format!(
                "shard {} was busy until the deadline ({:?} after arrival)",
                self.searcher.shard().meta.shard,
                deadline - arrived
            )));
        };

        let stop = Stop {
            deadline: Some(
                deadline
                    .checked_sub(self.timing.reserve)
                    .unwrap_or(deadline),
            ),
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
                counters.inc("searches_cancelled");
            } else if result.as_ref().is_ok_and(|r| r.partial) {
                counters.inc("searches_soft_timeout");
            } else {
                counters.inc("searches_completed");
            }
            result
        })
        .await;
        guard.armed = false;
        let response = result.map_err(|e| {
            // A panic in one search fails that request, not the process:
            // the blocking task caught it.
            self.counters.inc("search_panics");
            tracing::error!(query = %Quoted::new(&query), error = %e, "search panicked");
            Status::internal("the search failed unexpectedly on this shard (the error is logged)")
        })??;
        Ok(Response::new(response))
    }
}
