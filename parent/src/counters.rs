//! What inner nodes count: one typed set for parents and the root (the root
//! reports a few more), served over `NodeStats` and exported as metrics.

use std::sync::Arc;

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
        /// Hedged (second) requests sent.
        HedgesSent = "hedges_sent",
        /// Hedged requests that answered first.
        HedgesWon = "hedges_won",
        /// Replicas taken out of rotation.
        Ejections = "ejections",
        /// Replicas back in rotation.
        Returns = "returns",
        /// Replicas put on probation for being slow.
        Probations = "probations",
        /// Probes sent to replicas on probation.
        ShadowRequests = "shadow_requests",
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
        /// Root: the current admission limit (a gauge, not a count).
        AdmissionLimit = "admission_limit",
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
    InnerCounter::HedgesSent,
    InnerCounter::HedgesWon,
    InnerCounter::Ejections,
    InnerCounter::Returns,
    InnerCounter::Probations,
    InnerCounter::ShadowRequests,
    InnerCounter::RefusedOverloaded,
];

/// Counters for an inner node of `role`: the root reports every counter, a
/// parent [`PARENT_COUNTERS`].
pub fn inner_counters(role: &'static str) -> Arc<InnerCounters> {
    if role == "root" {
        Counters::reporting(role, InnerCounter::ALL)
    } else {
        Counters::reporting(role, PARENT_COUNTERS)
    }
}
