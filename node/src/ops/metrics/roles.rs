//! Which of the process's histograms and labelled counters a node's page
//! shows, by its role, with HELP text that says what each means for that
//! role — and which of their series are there at zero from the start.
//!
//! Every process holds the same [`Metrics`], but a leaf never fans out and
//! an inner node never searches a shard: a family a role never records
//! would sit on its page with no samples (or empty buckets), telling an
//! operator about something the node does not do. So each role's page
//! registers only its own.
//!
//! Series that start at zero: a labelled family has no series until its
//! first sample, and a dashboard or alert reading an absent series sees
//! nothing at all rather than 0 (a rate of partial answers that is "no
//! data" until the first one). So the series every node of a role will
//! record are created with the page:
//!
//! - every role: `request_duration_seconds` for `Search` and `Fetch` with
//!   code `OK` — every node serves both (the fetch phase reaches every
//!   level). Other methods and codes appear when they first happen: a
//!   series per method and code would be some 250 series, nearly all zero
//!   for good;
//! - inner nodes: `answers_total` for `complete` and `partial`, and at the
//!   root also `failed` and `refused`; `child_round_trip_seconds` and
//!   `child_calls_total` come with their children, whose series are made
//!   when the fan-out is built at start-up;
//! - histograms without labels (`answer_coverage_ratio` on inner nodes, a
//!   leaf's `leaf_search_duration_seconds` and `leaf_queue_wait_seconds`)
//!   are always there, at zero until the first sample.

use prometheus_client::registry::Registry;

use super::{CompletenessLabels, MethodLabels, Metrics};

/// A node's role, as far as its metrics page is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Serves one shard: searches and fetches it.
    Leaf,
    /// An inner node below the root: fans out to its children and merges.
    Parent,
    /// The inner node clients call: fans out, and admits, judges and
    /// refuses whole searches.
    Root,
}

/// The methods every node serves, whose `OK` series start at zero.
const SERVED_BY_EVERY_NODE: [&str; 2] = ["Search", "Fetch"];

impl Role {
    /// The role named `name` as the node's counters give it (`leaf`,
    /// `parent`, `root`); `None` for any other.
    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "leaf" => Some(Role::Leaf),
            "parent" => Some(Role::Parent),
            "root" => Some(Role::Root),
            _ => None,
        }
    }

    /// What an inner node's answers are counted by: the root also counts
    /// the searches it refused.
    fn completeness(self) -> &'static [&'static str] {
        match self {
            Role::Leaf => &[],
            Role::Parent => &["complete", "partial"],
            Role::Root => &["complete", "partial", "failed", "refused"],
        }
    }

    fn answers_help(self) -> &'static str {
        match self {
            Role::Root => {
                "Searches the root answered or refused, by completeness: complete (every \
                 shard answered in full), partial (a shard missing, late or cut short), \
                 failed (refused after the fan-out: no shard answered, or fewer than the \
                 client's min_coverage) or refused (shed by admission control before any work)"
            }
            _ => {
                "Answers this node sent up, by completeness: complete (every shard below \
                 answered in full) or partial (a shard missing, late or cut short)"
            }
        }
    }
}

/// The families a node of `role` shows (only those every node has when its
/// role is not known), under the `searchtree_` prefix, with the series it
/// shows from the start created at zero.
pub(super) fn registry(role: Option<Role>, metrics: &Metrics) -> Registry {
    let mut registry = Registry::with_prefix("searchtree");
    for method in SERVED_BY_EVERY_NODE {
        drop(
            metrics
                .requests
                .get_or_create(&MethodLabels { method, code: "OK" }),
        );
    }
    registry.register(
        "request_duration_seconds",
        "gRPC calls this node served, by method and status code: time from the arrival \
         of the request's headers to the end of its response",
        metrics.requests.clone(),
    );
    match role {
        None => {}
        Some(Role::Leaf) => {
            registry.register(
                "leaf_search_duration_seconds",
                "Time a search took on this leaf once it had a search slot: parsing, \
                 collecting and scoring, titles and snippets (searches cut short because \
                 their caller went away are not counted)",
                metrics.leaf_search.clone(),
            );
            registry.register(
                "leaf_queue_wait_seconds",
                "Time a search waited for a search slot, for searches that found none free \
                 on arrival (those that found one at once are not counted here)",
                metrics.leaf_queue_wait.clone(),
            );
        }
        Some(role @ (Role::Parent | Role::Root)) => {
            for &completeness in role.completeness() {
                drop(
                    metrics
                        .answers
                        .get_or_create(&CompletenessLabels { completeness }),
                );
            }
            registry.register(
                "child_round_trip_seconds",
                "Round trip of each call this node made to a child that answered, by child \
                 (the shard range below it): the child's time and the network's; calls \
                 that timed out or failed are counted in searchtree_child_calls_total",
                metrics.child_round_trip.clone(),
            );
            registry.register(
                "child_calls",
                "Calls this node made to each child (by the shard range below it), by \
                 outcome: ok (answered), timed_out (no answer by the deadline) or failed \
                 (an error, or unreachable)",
                metrics.child_calls.clone(),
            );
            registry.register("answers", role.answers_help(), metrics.answers.clone());
            registry.register(
                "answer_coverage_ratio",
                "Per answer, the share of the shards below this node that answered \
                 (1 when all did)",
                metrics.coverage.clone(),
            );
        }
    }
    registry
}
