//! What inner nodes count: one typed set for parents and the root (the root
//! reports a few more), served over `NodeStats` and exported as metrics.

use std::sync::Arc;
use std::time::Duration;

use searchtree_node::counter_set;
use searchtree_node::counters::{CounterSet, Counters};

counter_set! {
    /// The counters of an inner node. The names are documented in the README.
    pub enum InnerCounter {
        /// Requests received.
        Requests = "requests",
        /// Requests refused as invalid.
        InvalidRequests = "invalid_requests",
        /// Answers missing a shard or cut short.
        PartialAnswers = "partial_answers",
        /// Children that had not answered by the deadline.
        ChildrenTimedOut = "children_timed_out",
        /// Children that failed.
        ChildrenFailed = "children_failed",
        /// Calls to one replica of a replica group.
        ReplicaCalls = "replica_calls",
        /// Retries to another replica after a retryable error.
        Retries = "retries",
        /// Retries not sent: the group had used its retry budget (a fifth
        /// of its requests and one a second, beyond a burst of ten; a
        /// replica lacking the version asked for is retried regardless).
        RetriesThrottled = "retries_throttled",
        /// Hedged (second) requests sent.
        HedgesSent = "hedges_sent",
        /// Hedged requests that answered first.
        HedgesWon = "hedges_won",
        /// Replicas taken out of rotation.
        Ejections = "ejections",
        /// Replicas back in rotation.
        Returns = "returns",
        /// Health checks that timed out while this node's own timer ran
        /// late (the node, not the replica, was slow): counted neither way.
        HealthChecksInconclusive = "health_checks_inconclusive",
        /// Replicas put on probation for being slow.
        Probations = "probations",
        /// Probes sent to replicas on probation.
        ShadowRequests = "shadow_requests",
        /// Replicas taken out of rotation for lacking the snapshot version
        /// a request was pinned to (they catch up from a sibling).
        ReplicasBehind = "replicas_behind",
        /// Catch-ups asked of behind replicas (`Corpus.CatchUp` calls).
        CatchUpsStarted = "catch_ups_started",
        /// Catch-ups that copied the version (the replica then returns
        /// through probation).
        CatchUpsSucceeded = "catch_ups_succeeded",
        /// Catch-ups that failed (tried again with backoff).
        CatchUpsFailed = "catch_ups_failed",
        /// Root: answers refused because no shard answered.
        NothingAnswered = "nothing_answered",
        /// Root: answers refused below the client's min_coverage.
        StrictRefusals = "strict_refusals",
        /// Root: canary requests sent.
        Canaries = "canaries",
        /// Root: canaries under which a node died.
        CanaryCrashes = "canary_crashes",
        /// Requests refused at once: the node was at its bound of requests
        /// in flight (RESOURCE_EXHAUSTED).
        RefusedOverloaded = "refused_overloaded",
        /// Root: queries refused as remembered crashers.
        CanaryRefusals = "canary_refusals",
        /// Root: queries admitted past admission control.
        Admitted = "admitted",
        /// Root: queries shed by admission control (RESOURCE_EXHAUSTED).
        Shed = "shed",
        /// Root: of which batch queries.
        ShedBatch = "shed_batch",
        /// Root: of which interactive queries.
        ShedInteractive = "shed_interactive",
        /// Root: of which shed because the whole limit was in flight.
        ShedAtLimit = "shed_at_limit",
        /// Root: of which shed because their class had used its share
        /// (batch past its maximum, interactive up against batch's
        /// guaranteed share).
        ShedOverShare = "shed_over_share",
        /// Root: the current admission limit (a gauge, not a count).
        AdmissionLimit = "admission_limit",
        /// Queries answered from the result cache.
        CacheHits = "cache_hits",
        /// Cacheable queries that searched the children themselves.
        CacheMisses = "cache_misses",
        /// Queries that waited for an identical search in flight instead
        /// of searching.
        CacheCoalesced = "cache_coalesced",
        /// Answers evicted from the result cache to stay within its size.
        CacheEvictions = "cache_evictions",
        /// The result cache's size in bytes (a gauge, not a count).
        CacheBytes = "cache_bytes",
        /// Root: the admission limit's current floor, from the tree's
        /// measured rate (a gauge, not a count).
        AdmissionFloor = "admission_floor",
        /// Requests whose wait from arrival to their handler was measured:
        /// all of them (the leaf's `queue_waits` counts only requests that
        /// waited for a search slot).
        QueueWaits = "queue_waits",
        /// Total wait from arrival to handler, in microseconds (divided by
        /// `queue_waits`, the mean).
        QueueWaitUsTotal = "queue_wait_us_total",
        /// Requests that waited more than 10 ms from arrival to handler: a
        /// runtime too busy to take up its requests.
        QueueWaitsOver10Ms = "queue_waits_over_10ms",
        /// Queries for which some child was asked again for more hits (its
        /// first, smaller answer might have hidden some of the top-k).
        QueriesAskedAgain = "queries_asked_again",
        /// Children asked again for more hits.
        ChildrenAskedAgain = "children_asked_again",
        /// Answers sent before the deadline because enough shards had
        /// answered (early answer), leaving stragglers out.
        EarlyAnswers = "early_answers",
        /// Fetch requests (the second phase of a two-phase search) routed
        /// to children.
        Fetches = "fetches",
        /// Calls to children for a fetch that failed or had not answered by
        /// the deadline.
        FetchFailures = "fetch_failures",
        /// Documents a fetch left without title and snippet (their child
        /// failed, was late, or ran out of time itself).
        FetchUnfetched = "fetch_unfetched",
        /// Root: answers sent with `hits_unfetched > 0` (the fetch phase did
        /// not finish within the budget).
        AnswersUnfetched = "answers_unfetched",
        /// Root: the rate a load may go at now, operations a second, set by
        /// the queries answered meanwhile (a gauge; 0: loads go unpaced).
        LoadPaceRate = "load_pace_rate",
        /// Root: queries answered during a load or publish slower than the
        /// pace's threshold (a multiple of the idle p99).
        LoadQueriesSlowed = "load_queries_slowed",
    }
}

/// An inner node's counters.
pub type InnerCounters = Counters<InnerCounter>;

/// The counters a parent reports: all but the root's own.
pub const PARENT_COUNTERS: &[InnerCounter] = &[
    InnerCounter::Requests,
    InnerCounter::InvalidRequests,
    InnerCounter::PartialAnswers,
    InnerCounter::ChildrenTimedOut,
    InnerCounter::ChildrenFailed,
    InnerCounter::ReplicaCalls,
    InnerCounter::Retries,
    InnerCounter::RetriesThrottled,
    InnerCounter::HedgesSent,
    InnerCounter::HedgesWon,
    InnerCounter::Ejections,
    InnerCounter::Returns,
    InnerCounter::HealthChecksInconclusive,
    InnerCounter::Probations,
    InnerCounter::ShadowRequests,
    InnerCounter::ReplicasBehind,
    InnerCounter::CatchUpsStarted,
    InnerCounter::CatchUpsSucceeded,
    InnerCounter::CatchUpsFailed,
    InnerCounter::RefusedOverloaded,
    InnerCounter::CacheHits,
    InnerCounter::CacheMisses,
    InnerCounter::CacheCoalesced,
    InnerCounter::CacheEvictions,
    InnerCounter::CacheBytes,
    InnerCounter::QueueWaits,
    InnerCounter::QueueWaitUsTotal,
    InnerCounter::QueueWaitsOver10Ms,
    InnerCounter::QueriesAskedAgain,
    InnerCounter::ChildrenAskedAgain,
    InnerCounter::EarlyAnswers,
    InnerCounter::Fetches,
    InnerCounter::FetchFailures,
    InnerCounter::FetchUnfetched,
];

/// A wait from arrival to handler past which it counts in
/// [`InnerCounter::QueueWaitsOver10Ms`]: a tenth of the default budget, far
/// above the microseconds an idle node takes.
pub const SLOW_QUEUE_WAIT: Duration = Duration::from_millis(10);

/// Counts one request's wait from its arrival at the node (stamped before
/// any handler runs, see `searchtree_node::serving::arrival`) to its handler
/// starting work.
pub fn count_queue_wait(counters: &InnerCounters, wait: Duration) {
    counters.inc(InnerCounter::QueueWaits);
    counters.add(
        InnerCounter::QueueWaitUsTotal,
        searchtree_proto::deadline::micros(wait),
    );
    if wait > SLOW_QUEUE_WAIT {
        counters.inc(InnerCounter::QueueWaitsOver10Ms);
    }
}

/// Counters for an inner node of `role`: the root reports every counter, a
/// parent [`PARENT_COUNTERS`].
pub fn inner_counters(role: &'static str) -> Arc<InnerCounters> {
    if role == "root" {
        Counters::reporting(role, InnerCounter::ALL)
    } else {
        Counters::reporting(role, PARENT_COUNTERS)
    }
}
