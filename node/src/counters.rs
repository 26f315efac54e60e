//! Typed counters a node keeps and serves over `searchtree.v1.NodeStats`.
//!
//! Each role names its counters with an enum ([`counter_set!`]), so a typo
//! is a compile error rather than a panic at the first increment, and the
//! metrics exporter can list every counter of a role without running it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use searchtree_proto::pb::node_stats_server::NodeStats;
use searchtree_proto::pb::{
    GetStatsRequest, GetStatsResponse, GetStatusRequest, GetStatusResponse,
};
use tonic::{Request, Response, Status};

/// A closed set of counter names: an enum made with [`counter_set!`].
pub trait CounterSet: Copy + Send + Sync + 'static {
    /// Every counter of the set, in the order they are reported.
    const ALL: &'static [Self];
    /// The counter's position in [`CounterSet::ALL`].
    fn index(self) -> usize;
    /// The counter's name as reported (snake_case).
    fn name(self) -> &'static str;
    /// What the counter counts: its doc comment, for the metrics page.
    fn help(self) -> &'static str;
}

/// Declares an enum of counters with their reported names, implementing
/// [`CounterSet`]:
///
/// ```
/// searchtree_node::counter_set! {
///     /// What a cache counts.
///     pub enum CacheCounter {
///         /// Lookups that found an entry.
///         Hits = "hits",
///         /// Lookups that did not.
///         Misses = "misses",
///     }
/// }
/// let c = searchtree_node::Counters::<CacheCounter>::new("cache");
/// c.inc(CacheCounter::Hits);
/// assert_eq!(c.get(CacheCounter::Hits), 1);
/// ```
#[macro_export]
macro_rules! counter_set {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[doc = $vdoc:literal])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[doc = $vdoc])* $variant ),+
        }

        impl $crate::counters::CounterSet for $name {
            const ALL: &'static [Self] = &[ $( $name::$variant ),+ ];

            fn index(self) -> usize {
                self as usize
            }

            fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text ),+
                }
            }

            fn help(self) -> &'static str {
                match self {
                    $( $name::$variant => concat!($($vdoc, " ",)* "") ),+
                }
            }
        }
    };
}

/// One value per counter of `C`, cheap to bump from any thread. A node may
/// report only a subset (a parent does not report the root's counters).
#[derive(Debug)]
pub struct Counters<C: CounterSet> {
    role: &'static str,
    values: Box<[AtomicU64]>,
    reported: Vec<C>,
}

impl<C: CounterSet> Counters<C> {
    /// All counters of `C` at zero, for a node of `role`.
    pub fn new(role: &'static str) -> Arc<Self> {
        Self::reporting(role, C::ALL)
    }

    /// All counters of `C` at zero, of which only `reported` are served.
    pub fn reporting(role: &'static str, reported: &[C]) -> Arc<Self> {
        Arc::new(Counters {
            role,
            values: C::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            reported: reported.to_vec(),
        })
    }

    /// Adds `n` to `counter`.
    pub fn add(&self, counter: C, n: u64) {
        self.values[counter.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// Sets `counter` to `value`: for the few that are gauges (a current
    /// limit), not counts.
    pub fn set(&self, counter: C, value: u64) {
        self.values[counter.index()].store(value, Ordering::Relaxed);
    }

    /// Adds one to `counter`.
    pub fn inc(&self, counter: C) {
        self.add(counter, 1);
    }

    /// The current value of `counter`.
    pub fn get(&self, counter: C) -> u64 {
        self.values[counter.index()].load(Ordering::Relaxed)
    }
}

/// What the stats service needs of any role's counters.
pub trait CounterSnapshot: Send + Sync {
    /// The node's role: "leaf", "parent" or "root".
    fn role(&self) -> &'static str;
    /// The reported counters' names and values.
    fn snapshot(&self) -> Vec<(&'static str, u64)>;
    /// The reported counters' names, what they count, and values.
    fn described(&self) -> Vec<(&'static str, &'static str, u64)>;
}

impl<C: CounterSet> CounterSnapshot for Counters<C> {
    fn role(&self) -> &'static str {
        self.role
    }

    fn snapshot(&self) -> Vec<(&'static str, u64)> {
        self.reported
            .iter()
            .map(|&c| (c.name(), self.get(c)))
            .collect()
    }

    fn described(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.reported
            .iter()
            .map(|&c| (c.name(), c.help(), self.get(c)))
            .collect()
    }
}

/// Serves a node's counters and status.
#[derive(Clone)]
pub struct StatsService {
    /// The node's counters.
    pub counters: Arc<dyn CounterSnapshot>,
    /// The node's name (its address).
    pub node: String,
    /// What its role adds to its status.
    pub status: Option<crate::ops::status::RoleStatusFn>,
}

impl StatsService {
    /// A service for `counters` alone (a node with no name or role status,
    /// as in tests).
    pub fn new(counters: Arc<dyn CounterSnapshot>) -> Self {
        StatsService {
            counters,
            node: String::new(),
            status: None,
        }
    }
}

#[tonic::async_trait]
impl NodeStats for StatsService {
    async fn get_stats(
        &self,
        _request: Request<GetStatsRequest>,
    ) -> Result<Response<GetStatsResponse>, Status> {
        Ok(Response::new(GetStatsResponse {
            role: self.counters.role().to_string(),
            counters: self
                .counters
                .snapshot()
                .into_iter()
                .chain([("panics", crate::panics::caught())])
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }))
    }

    async fn get_status(
        &self,
        _request: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        Ok(Response::new(crate::ops::status::status(
            &self.node,
            self.counters.role(),
            self.status.as_ref(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    counter_set! {
        /// Test counters.
        enum Test {
            A = "a",
            B = "b",
            Hidden = "hidden",
        }
    }

    #[tokio::test]
    async fn counts_and_serves_what_is_reported() {
        let c = Counters::reporting("leaf", &[Test::A, Test::B]);
        c.inc(Test::A);
        c.add(Test::B, 5);
        c.inc(Test::Hidden);
        let r = StatsService::new(c.clone())
            .get_stats(Request::new(GetStatsRequest {}))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.role, "leaf");
        assert_eq!(r.counters["a"], 1);
        assert_eq!(r.counters["b"], 5);
        assert!(!r.counters.contains_key("hidden"));
        assert_eq!(c.get(Test::Hidden), 1);
    }
}
