//! Canary requests ("The Tail at Scale"): a query the root has not seen
//! recently is first sent to one leaf only, and fanned out to every shard
//! only once that leaf has answered. A query that kills the node it runs on
//! then kills one node, not one replica of every shard; the root remembers
//! it and refuses it for a while, so retrying clients cannot finish the job.
//!
//! The price is latency on unseen queries: one extra round trip to one leaf
//! before the fan-out, within the same budget. Queries seen recently (the
//! common case under a real query mix, which repeats) go straight out.
//! Off by default; see BENCHMARKS.md for the measured cost.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use searchtree_parent::{InnerCounter, InnerNode, NodeError};
use searchtree_proto::SearchParams;
use searchtree_proto::pb::{FailureReason, SearchResponse};
use searchtree_proto::query::Quoted;
use tokio::time::Instant;

/// How canaries behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanaryConfig {
    /// How long a query that passed its canary goes without one.
    pub remember: Duration,
    /// How long a query whose canary crashed a node is refused.
    pub refuse_for: Duration,
    /// How many queries are remembered as seen (memory stays bounded; past
    /// this, the oldest are forgotten and get a canary again).
    pub capacity: usize,
}

/// Default [`CanaryConfig::remember`].
pub const DEFAULT_REMEMBER: Duration = Duration::from_secs(600);
/// Default [`CanaryConfig::refuse_for`].
pub const DEFAULT_REFUSE_FOR: Duration = Duration::from_secs(600);
/// Default [`CanaryConfig::capacity`].
pub const DEFAULT_CAPACITY: usize = 100_000;
/// The most queries remembered as crashing: a client cycling through
/// crashing queries cannot make the root's memory grow without bound.
const MAX_REFUSED: usize = 10_000;

impl Default for CanaryConfig {
    fn default() -> Self {
        CanaryConfig {
            remember: DEFAULT_REMEMBER,
            refuse_for: DEFAULT_REFUSE_FOR,
            capacity: DEFAULT_CAPACITY,
        }
    }
}

/// What the root knows of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It passed a canary recently: fan it out.
    Seen,
    /// Not seen recently: send a canary first.
    Unseen,
    /// Its canary crashed a node this long ago: refuse it.
    Refused(Duration),
}

/// The root's memory of queries: seen recently, or refused.
pub struct Canary {
    config: CanaryConfig,
    memory: Mutex<Memory>,
}

/// Two generations of seen queries: a query is seen if it is in either; the
/// current generation becomes the previous one when it is full or old, so
/// forgetting costs nothing per query and memory stays bounded.
struct Memory {
    current: HashSet<String>,
    previous: HashSet<String>,
    generation_started: Instant,
    refused: HashMap<String, Instant>,
}

impl Canary {
    /// An empty memory.
    pub fn new(config: CanaryConfig) -> Self {
        Canary {
            config,
            memory: Mutex::new(Memory {
                current: HashSet::new(),
                previous: HashSet::new(),
                generation_started: Instant::now(),
                refused: HashMap::new(),
            }),
        }
    }

    /// What to do with `query`.
    pub fn verdict(&self, query: &str) -> Verdict {
        let now = Instant::now();
        let mut m = self.memory.lock().expect("canary memory");
        if let Some(&at) = m.refused.get(query) {
            let ago = now.saturating_duration_since(at);
            if ago < self.config.refuse_for {
                return Verdict::Refused(ago);
            }
            m.refused.remove(query);
        }
        self.rotate(&mut m, now);
        if m.current.contains(query) || m.previous.contains(query) {
            Verdict::Seen
        } else {
            Verdict::Unseen
        }
    }

    /// `query` passed its canary.
    pub fn passed(&self, query: &str) {
        let mut m = self.memory.lock().expect("canary memory");
        self.rotate(&mut m, Instant::now());
        m.current.insert(query.to_string());
    }

    /// `query`'s canary crashed a node.
    pub fn crashed(&self, query: &str) {
        let now = Instant::now();
        let mut m = self.memory.lock().expect("canary memory");
        if m.refused.len() >= MAX_REFUSED {
            let refuse_for = self.config.refuse_for;
            m.refused
                .retain(|_, at| now.saturating_duration_since(*at) < refuse_for);
        }
        if m.refused.len() < MAX_REFUSED {
            m.refused.insert(query.to_string(), now);
        }
        m.current.remove(query);
        m.previous.remove(query);
    }

    fn rotate(&self, m: &mut Memory, now: Instant) {
        let half = self.config.remember / 2;
        let full = m.current.len() >= self.config.capacity.div_ceil(2).max(1);
        if full || now.saturating_duration_since(m.generation_started) >= half {
            m.previous = std::mem::take(&mut m.current);
            m.generation_started = now;
        }
    }

    /// Searches for `params` by `deadline` with canaries: refuses a query
    /// remembered as crashing, sends an unseen one to one leaf first, and
    /// fans out by the same deadline once it came back.
    pub async fn search(
        &self,
        node: &InnerNode,
        params: &SearchParams,
        deadline: Instant,
    ) -> Result<SearchResponse, NodeError> {
        if params.canary {
            return node.search(params, deadline).await; // a client's own canary
        }
        let query = params.query.trim();
        let key = &canary_key(params);
        match self.verdict(key) {
            Verdict::Seen => return node.search(params, deadline).await,
            Verdict::Refused(ago) => {
                node.counters().inc(InnerCounter::CanaryRefusals);
                return Err(refusal(query, ago, self.config.refuse_for));
            }
            Verdict::Unseen => {}
        }
        node.counters().inc(InnerCounter::Canaries);
        let probe = SearchParams {
            canary: true,
            ..params.clone()
        };
        let answer = node.search(&probe, deadline).await?;
        if lost(&answer) {
            node.counters().inc(InnerCounter::CanaryCrashes);
            tracing::error!(query = %Quoted::new(query), "canary: the query crashed a node; refusing it");
            self.crashed(key);
            return Err(refusal(query, Duration::ZERO, self.config.refuse_for));
        }
        if answer.coverage.as_ref().is_some_and(|c| c.shards_ok > 0) {
            self.passed(key);
        }
        node.search(params, deadline).await
    }
}

/// What a query's verdict is remembered by: its text and what else
/// changes the work a leaf does for it (how many hits, whether it counts
/// every match, whether it builds snippets) — the same text searched
/// another way can take another path, and must be tried on its own.
fn canary_key(params: &SearchParams) -> String {
    format!(
        "{}\u{0}{}\u{0}{}\u{0}{}",
        params.query.trim(),
        params.top_k,
        params.exact_total_hits,
        params.ids_only
    )
}

/// Whether a node died under the request (rather than refusing it, or
/// being slow).
fn lost(answer: &SearchResponse) -> bool {
    answer.coverage.as_ref().is_some_and(|c| {
        c.failures
            .iter()
            .any(|f| f.reason == FailureReason::Lost as i32)
    })
}

fn refusal(query: &str, ago: Duration, refuse_for: Duration) -> NodeError {
    NodeError::Invalid(format!(
        "query {} refused: tried on one shard first, it crashed the node serving it {}s ago; \
         it stays refused for {}s",
        Quoted::new(query),
        ago.as_secs(),
        refuse_for.as_secs()
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use searchtree_parent::counters::inner_counters;
    use searchtree_parent::fake::FakeChild;
    use searchtree_parent::node::InnerTiming;
    use searchtree_parent::{Child, ChildError};
    use searchtree_proto::pb::SearchRequest;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn root(children: &[Arc<FakeChild>]) -> InnerNode {
        let children = children
            .iter()
            .map(|c| Arc::clone(c) as Arc<dyn Child>)
            .collect();
        InnerNode::new(
            "root",
            children,
            InnerTiming::default(),
            inner_counters("root"),
        )
    }

    fn params(query: &str) -> SearchParams {
        SearchParams::try_from(&SearchRequest {
            query: query.into(),
            top_k: 10,
            ..Default::default()
        })
        .unwrap()
    }

    /// Searches with a 100 ms budget.
    async fn ask(
        canary: &Canary,
        node: &InnerNode,
        query: &str,
    ) -> Result<SearchResponse, NodeError> {
        canary
            .search(node, &params(query), Instant::now() + ms(100))
            .await
    }

    fn started(c: &FakeChild) -> usize {
        c.started.load(Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn an_unseen_query_tries_one_child_first_then_all() {
        let kids: Vec<_> = (0..3)
            .map(|s| Arc::new(FakeChild::answering(s, ms(10), &[("d", 1.0)])))
            .collect();
        let node = root(&kids);
        let canary = canary();
        let start = Instant::now();
        let r = ask(&canary, &node, "q").await.unwrap();
        assert_eq!(r.coverage.unwrap().shards_ok, 3);
        // Two round trips: the canary, then the fan-out.
        assert_eq!(start.elapsed(), ms(20));
        assert_eq!(kids.iter().map(|k| started(k)).sum::<usize>(), 4);
        // The fan-out got what the canary left of the 100 ms budget.
        let budgets = kids[0].budgets.lock().unwrap().clone();
        assert!(
            budgets[1] < budgets[0] && budgets[1] > ms(70),
            "{budgets:?}"
        );
        // Seen now: straight to the fan-out.
        ask(&canary, &node, "q").await.unwrap();
        assert_eq!(kids.iter().map(|k| started(k)).sum::<usize>(), 7);
        assert_eq!(node.counters().get(InnerCounter::Canaries), 1);
        // The same text counting every match takes another path at the
        // leaves: it is tried on one first, on its own.
        let exact = SearchParams {
            exact_total_hits: true,
            ..params("q")
        };
        canary
            .search(&node, &exact, Instant::now() + ms(100))
            .await
            .unwrap();
        assert_eq!(kids.iter().map(|k| started(k)).sum::<usize>(), 11);
        assert_eq!(node.counters().get(InnerCounter::Canaries), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_query_that_kills_its_canary_is_refused_and_never_fans_out() {
        let deadly = Arc::new(FakeChild::failing(
            0,
            ms(2),
            ChildError::Lost("transport error".into()),
        ));
        let others: Vec<_> = (1..4)
            .map(|s| Arc::new(FakeChild::answering(s, ms(1), &[("d", 1.0)])))
            .collect();
        let mut kids = vec![Arc::clone(&deadly)];
        kids.extend(others.iter().cloned());
        let node = root(&kids);
        let canary = canary();
        for _ in 0..3 {
            let err = ask(&canary, &node, "boom").await.unwrap_err();
            assert!(
                matches!(err, NodeError::Invalid(ref m) if m.contains("crashed")),
                "{err}"
            );
        }
        assert_eq!(started(&deadly), 1, "one node was risked, once");
        assert!(others.iter().all(|k| started(k) == 0));
        assert_eq!(node.counters().get(InnerCounter::CanaryCrashes), 1);
        assert_eq!(node.counters().get(InnerCounter::CanaryRefusals), 2);
    }

    fn canary() -> Canary {
        Canary::new(CanaryConfig {
            remember: Duration::from_secs(60),
            refuse_for: Duration::from_secs(30),
            capacity: 4,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn unseen_then_seen_then_forgotten() {
        let c = canary();
        assert_eq!(c.verdict("a"), Verdict::Unseen);
        c.passed("a");
        assert_eq!(c.verdict("a"), Verdict::Seen);
        tokio::time::advance(Duration::from_secs(35)).await;
        assert_eq!(c.verdict("a"), Verdict::Seen, "in the previous generation");
        tokio::time::advance(Duration::from_secs(35)).await;
        assert_eq!(c.verdict("a"), Verdict::Unseen, "forgotten after ~remember");
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_by_capacity() {
        let c = canary();
        for q in ["a", "b", "c", "d", "e", "f"] {
            c.passed(q);
        }
        // Capacity 4: two generations of two; the oldest were forgotten.
        assert_eq!(c.verdict("a"), Verdict::Unseen);
        assert_eq!(c.verdict("f"), Verdict::Seen);
        let m = c.memory.lock().unwrap();
        assert!(m.current.len() + m.previous.len() <= 4);
    }

    #[tokio::test(start_paused = true)]
    async fn crashing_queries_are_refused_for_a_while() {
        let c = canary();
        c.passed("q");
        c.crashed("q");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(c.verdict("q"), Verdict::Refused(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(25)).await;
        assert_eq!(
            c.verdict("q"),
            Verdict::Unseen,
            "refusal expired: canary again"
        );
        let msg = refusal(&"x".repeat(5000), Duration::ZERO, Duration::from_secs(30)).to_string();
        assert!(msg.len() < 300, "{msg}");
    }
}
