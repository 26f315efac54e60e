//! The result cache of an inner node (a parent, or the root): complete
//! answers kept for a while, so that a query asked again is answered
//! without asking the leaves, and identical queries asked at once are
//! searched once.
//!
//! **What is cached.** Only complete answers: every shard below the node
//! answered (not partial, nothing timed out or failed), every hit is
//! complete (`hits_unfetched` is 0), and one snapshot answered (not empty,
//! not several joined by ','). Canary requests are neither looked up nor
//! stored. A complete answer satisfies any `min_coverage`, budget or
//! priority, so those are not part of the key.
//!
//! **The key.** The query with leading and trailing ASCII whitespace trimmed
//! when that cannot change its meaning ([`normalize`]), `top_k`,
//! `exact_total_hits`, `ids_only`, and the snapshot this node last saw in a
//! complete answer.
//!
//! **The snapshot rule.** Each search the node makes takes a sequence
//! number when it starts. When a complete answer reports a snapshot other
//! than the one the node knows, and its search started after the search
//! that last confirmed the known one, the tree below has moved on: the node
//! takes the new snapshot, clears the cache, and keys what follows by it. A
//! different snapshot from a search that started earlier is a straggler
//! from before the change: it is returned to its requester but neither
//! stored nor believed. So an entry is never served once the node has seen
//! a newer snapshot. The limit: a node learns of a new snapshot only from a
//! search, and a query answered from the cache searches nothing; until some
//! miss reaches the leaves, entries of the old snapshot are served, for at
//! most the TTL. (Replicas of a shard on different snapshots make the known
//! snapshot flap and the cache clear often: it stays correct but hits
//! rarely until the rollout finishes.)
//!
//! **Coalescing.** Concurrent misses for one key search once (moka's
//! `try_get_with`): the first request (the leader) searches under its own
//! deadline, the others wait for it. A waiter never waits past its own
//! deadline: it joins a search in flight only if that search will answer by
//! the waiter's deadline, and otherwise searches on its own; should the
//! shared search still be running at the waiter's deadline (a narrow race),
//! the waiter answers then with every shard timed out. When the shared
//! search did not produce a cacheable answer, its requester gets it all the
//! same, and each waiter decides: an error (a bad query) is the waiter's
//! too, and a partial answer is the waiter's unless the waiter has at least
//! as much time left as the shared search had, in which case it searches on
//! its own (a batch query behind an interactive one may do better).
//!
//! **Time.** Entries live `ttl`, measured on tokio's clock (which tests can
//! pause) when read; moka's own `time_to_live`, on the standard clock, frees
//! their memory (moka's clock cannot be injected from outside the crate).
//! Bounded in bytes: an entry weighs its encoded response plus its key.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::future::Cache;
use moka::notification::RemovalCause;
use prost::Message;
use searchtree_proto::SearchParams;
use searchtree_proto::pb::{Coverage, FailureReason, SearchResponse, ShardFailure};
use tokio::time::Instant;

use crate::counters::{InnerCounter, InnerCounters};
use crate::error::NodeError;

/// Default cache size per inner node, in MiB. An answer of ten hits with
/// titles and snippets encodes to a few KB, so 64 MiB keeps well over ten
/// thousand answers — the head of a query log — at a small share of a
/// node's memory, most of which the leaves' page cache needs more.
pub const DEFAULT_CACHE_MB: u64 = 64;

/// Default time an answer is kept. It bounds how long a node that sees only
/// cache hits keeps serving a snapshot the tree has left behind.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// The longest time-to-live a node accepts: a day. Answers are keyed by the
/// snapshot below, so a longer one would only keep a node that sees nothing
/// but hits on a snapshot the tree left long ago.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// How big the cache is and how long answers stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// The most bytes the entries may weigh together.
    pub max_bytes: u64,
    /// How long an answer is served after it was stored.
    pub ttl: Duration,
}

/// The query as the cache keys it: leading and trailing ASCII whitespace
/// trimmed only when the query holds no backslash and no double quote.
/// Outside a phrase and unescaped, whitespace only separates terms in
/// tantivy's grammar; inside an unterminated phrase or after an escaping
/// backslash it may be part of a term, so such a query is kept as sent.
pub fn normalize(query: &str) -> &str {
    if query.contains(['\\', '"']) {
        query
    } else {
        query.trim_ascii()
    }
}

/// What an answer is stored under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    query: Box<str>,
    top_k: usize,
    exact_total_hits: bool,
    ids_only: bool,
    /// The snapshot version the query is pinned to (0: each node's
    /// current): answers at different versions are different answers.
    version: u64,
    snapshot: Arc<str>,
}

impl CacheKey {
    fn new(params: &SearchParams, snapshot: Arc<str>) -> Self {
        CacheKey {
            query: normalize(&params.query).into(),
            top_k: params.top_k,
            exact_total_hits: params.exact_total_hits,
            ids_only: params.ids_only,
            version: params.version,
            snapshot,
        }
    }

    fn with_snapshot(&self, snapshot: Arc<str>) -> Self {
        CacheKey {
            snapshot,
            ..self.clone()
        }
    }

    fn weight(&self) -> usize {
        std::mem::size_of::<Self>() + self.query.len() + self.snapshot.len()
    }
}

/// A stored answer and when it was stored (tokio's clock).
#[derive(Debug)]
struct Cached {
    response: SearchResponse,
    stored_at: Instant,
}

/// What a search that stored nothing under its key hands its waiters.
#[derive(Debug)]
enum Shared {
    /// An answer: `complete` if it was cacheable but belongs under another
    /// snapshot's key (or to a straggler); else partial, cut short by a
    /// deadline `budget` after the search started.
    Answer {
        response: Box<SearchResponse>,
        complete: bool,
        budget: Duration,
    },
    /// The search failed (a bad query, for a fan-out).
    Failed(NodeError),
}

/// The snapshot the node believes the tree below serves, and the sequence
/// number of the latest search that said so.
#[derive(Debug)]
struct Seen {
    snapshot: Arc<str>,
    seq: u64,
}

/// What a complete answer's snapshot says about the node's belief.
enum Observed {
    /// The known snapshot (perhaps one learnt meanwhile by another search).
    Current(Arc<str>),
    /// A newer snapshot: the cache was just cleared.
    Changed(Arc<str>),
    /// Another snapshot, from a search older than the belief: a straggler.
    Stale,
}

/// The searches in flight that lead a key, and when each will answer:
/// a request joins one only if it answers by the request's own deadline.
type Flights = Mutex<HashMap<CacheKey, Instant>>;

/// Marks a key's search as in flight until dropped.
struct Flight<'a> {
    flights: &'a Flights,
    key: &'a CacheKey,
}

impl<'a> Flight<'a> {
    fn enter(flights: &'a Flights, key: &'a CacheKey, answer_at: Instant) -> Self {
        flights
            .lock()
            .expect("flights lock")
            .insert(key.clone(), answer_at);
        Flight { flights, key }
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.flights.lock().expect("flights lock").remove(self.key);
    }
}

/// An inner node's result cache: see the module documentation.
pub struct ResultCache {
    store: Cache<CacheKey, Arc<Cached>>,
    ttl: Duration,
    seen: Mutex<Seen>,
    /// Searches started, for their sequence numbers.
    searches: AtomicU64,
    flights: Flights,
    /// The shards below the node, for the answer of a waiter whose deadline
    /// came first.
    shards: Vec<u32>,
    /// Documents below the node, as the last complete answer counted them.
    docs_total: AtomicU64,
    counters: Arc<InnerCounters>,
}

impl ResultCache {
    /// A cache for a node over `shards`, counting into `counters`.
    pub fn new(config: CacheConfig, shards: Vec<u32>, counters: Arc<InnerCounters>) -> Self {
        let evictions = Arc::clone(&counters);
        let store = Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|key: &CacheKey, value: &Arc<Cached>| {
                let bytes = key.weight() + value.response.encoded_len();
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .time_to_live(config.ttl)
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    evictions.inc(InnerCounter::CacheEvictions);
                }
            })
            .build();
        ResultCache {
            store,
            ttl: config.ttl,
            seen: Mutex::new(Seen {
                snapshot: Arc::from(""),
                seq: 0,
            }),
            searches: AtomicU64::new(0),
            flights: Mutex::default(),
            shards,
            docs_total: AtomicU64::new(0),
            counters,
        }
    }

    /// The stored answer to `params`, if there is a fresh one (counted as a
    /// hit); nothing for a canary.
    pub async fn lookup(&self, params: &SearchParams) -> Option<SearchResponse> {
        if params.canary {
            return None;
        }
        let hit = self.fresh(&self.key(params)).await;
        if hit.is_some() {
            self.counters.inc(InnerCounter::CacheHits);
        }
        hit
    }

    /// Stores `response`, a complete answer to `params` built outside
    /// [`ResultCache::search`] — the root's answer once its fetch phase has
    /// filled in titles and snippets — if it is of the snapshot the node
    /// knows. A hit then costs the tree no fetch either.
    pub async fn remember(&self, params: &SearchParams, response: &SearchResponse) {
        if params.canary || !self.is_complete(response) {
            return;
        }
        let key = self.key(params);
        if *key.snapshot != *response.snapshot {
            return;
        }
        let cached = Arc::new(Cached {
            response: response.clone(),
            stored_at: Instant::now(),
        });
        self.store.insert(key, cached).await;
    }

    /// Answers `params` by `answer_at`: from the cache, by waiting for an
    /// identical search in flight, or with `search` (called with the time
    /// by which it must answer), whose complete answer is then stored.
    pub async fn search<F, Fut>(
        &self,
        params: &SearchParams,
        answer_at: Instant,
        search: F,
    ) -> Result<SearchResponse, NodeError>
    where
        F: Fn(Instant) -> Fut,
        Fut: Future<Output = Result<SearchResponse, NodeError>>,
    {
        self.answer(params, answer_at, &search).await
    }

    async fn answer<F, Fut>(
        &self,
        params: &SearchParams,
        answer_at: Instant,
        search: &F,
    ) -> Result<SearchResponse, NodeError>
    where
        F: Fn(Instant) -> Fut,
        Fut: Future<Output = Result<SearchResponse, NodeError>>,
    {
        let key = self.key(params);
        if let Some(hit) = self.fresh(&key).await {
            self.counters.inc(InnerCounter::CacheHits);
            return Ok(hit);
        }
        let joinable = self
            .flights
            .lock()
            .expect("flights lock")
            .get(&key)
            .is_none_or(|&at| at <= answer_at);
        if !joinable {
            self.counters.inc(InnerCounter::CacheMisses);
            return self.search_alone(key, answer_at, search).await;
        }

        let led = AtomicBool::new(false);
        let lead = async {
            led.store(true, Ordering::Relaxed);
            self.lead(&key, answer_at, search).await
        };
        let joined = Instant::now();
        // A waiter gives up at its own deadline; the leader never does (its
        // search answers by the same deadline on its own).
        let give_up = async {
            tokio::time::sleep_until(answer_at).await;
            if led.load(Ordering::Relaxed) {
                std::future::pending::<()>().await;
            }
        };
        let shared = tokio::select! {
            biased;
            shared = self.store.try_get_with(key.clone(), lead) => Some(shared),
            () = give_up => None,
        };
        let led = led.load(Ordering::Relaxed);
        if led {
            self.housekeep().await;
        }
        let counter = if led {
            InnerCounter::CacheMisses
        } else {
            InnerCounter::CacheCoalesced
        };
        let outcome = match shared {
            None => {
                self.counters.inc(counter);
                return Ok(self.timed_out(joined.elapsed()));
            }
            Some(Ok(cached)) if led || self.is_fresh(&cached) => Ok(cached.response.clone()),
            // Stored by another search and already past its TTL: a race
            // with the TTL, rare enough to search again.
            Some(Ok(_)) => {
                self.counters.inc(InnerCounter::CacheMisses);
                return self.search_alone(key, answer_at, search).await;
            }
            Some(Err(shared)) => match &*shared {
                Shared::Failed(err) => Err(err.clone()),
                Shared::Answer {
                    response, complete, ..
                } if led || *complete => Ok(SearchResponse::clone(response)),
                Shared::Answer {
                    response, budget, ..
                } => {
                    if answer_at.saturating_duration_since(Instant::now()) >= *budget {
                        self.counters.inc(InnerCounter::CacheMisses);
                        return self.search_alone(key, answer_at, search).await;
                    }
                    Ok(SearchResponse::clone(response))
                }
            },
        };
        self.counters.inc(counter);
        outcome
    }

    /// The leader's search: stored under `key` by moka if cacheable there.
    async fn lead<F, Fut>(
        &self,
        key: &CacheKey,
        answer_at: Instant,
        search: &F,
    ) -> Result<Arc<Cached>, Shared>
    where
        F: Fn(Instant) -> Fut,
        Fut: Future<Output = Result<SearchResponse, NodeError>>,
    {
        let _flight = Flight::enter(&self.flights, key, answer_at);
        let seq = self.searches.fetch_add(1, Ordering::Relaxed) + 1;
        let started = Instant::now();
        let result = search(answer_at).await;
        self.settle(
            key,
            seq,
            result,
            answer_at.saturating_duration_since(started),
        )
        .await
    }

    /// A search of this request's own, uncoalesced; stored if cacheable.
    async fn search_alone<F, Fut>(
        &self,
        key: CacheKey,
        answer_at: Instant,
        search: &F,
    ) -> Result<SearchResponse, NodeError>
    where
        F: Fn(Instant) -> Fut,
        Fut: Future<Output = Result<SearchResponse, NodeError>>,
    {
        let seq = self.searches.fetch_add(1, Ordering::Relaxed) + 1;
        let started = Instant::now();
        let result = search(answer_at).await;
        let budget = answer_at.saturating_duration_since(started);
        match self.settle(&key, seq, result, budget).await {
            Ok(cached) => {
                let response = cached.response.clone();
                self.store.insert(key, cached).await;
                self.housekeep().await;
                Ok(response)
            }
            Err(Shared::Answer { response, .. }) => Ok(*response),
            Err(Shared::Failed(err)) => Err(err),
        }
    }

    /// Judges a search's outcome: `Ok` to store under `key`; else what its
    /// waiters get. A complete answer of a newer snapshot than `key`'s is
    /// stored under that snapshot's key here.
    async fn settle(
        &self,
        key: &CacheKey,
        seq: u64,
        result: Result<SearchResponse, NodeError>,
        budget: Duration,
    ) -> Result<Arc<Cached>, Shared> {
        let response = result.map_err(Shared::Failed)?;
        if !self.is_complete(&response) {
            return Err(Shared::Answer {
                response: Box::new(response),
                complete: false,
                budget,
            });
        }
        if let Some(c) = &response.coverage {
            self.docs_total.store(c.docs_total, Ordering::Relaxed);
        }
        let snapshot = match self.observe(seq, &response.snapshot) {
            Observed::Current(snapshot) if snapshot == key.snapshot => {
                return Ok(Arc::new(Cached {
                    response,
                    stored_at: Instant::now(),
                }));
            }
            Observed::Current(snapshot) | Observed::Changed(snapshot) => Some(snapshot),
            Observed::Stale => None,
        };
        if let Some(snapshot) = snapshot {
            let cached = Arc::new(Cached {
                response: response.clone(),
                stored_at: Instant::now(),
            });
            self.store.insert(key.with_snapshot(snapshot), cached).await;
        }
        Err(Shared::Answer {
            response: Box::new(response),
            complete: true,
            budget,
        })
    }

    /// Updates the node's belief with a complete answer's `snapshot` from
    /// search number `seq` (see the snapshot rule).
    fn observe(&self, seq: u64, snapshot: &str) -> Observed {
        let mut seen = self.seen.lock().expect("snapshot lock");
        if *seen.snapshot == *snapshot {
            seen.seq = seen.seq.max(seq);
            Observed::Current(Arc::clone(&seen.snapshot))
        } else if seq > seen.seq {
            tracing::info!(
                from = %seen.snapshot,
                to = %snapshot,
                "a new snapshot below: result cache cleared"
            );
            *seen = Seen {
                snapshot: Arc::from(snapshot),
                seq,
            };
            self.store.invalidate_all();
            Observed::Changed(Arc::clone(&seen.snapshot))
        } else {
            Observed::Stale
        }
    }

    fn key(&self, params: &SearchParams) -> CacheKey {
        let snapshot = Arc::clone(&self.seen.lock().expect("snapshot lock").snapshot);
        CacheKey::new(params, snapshot)
    }

    /// The stored answer under `key` if it is younger than the TTL; an
    /// older one is dropped.
    async fn fresh(&self, key: &CacheKey) -> Option<SearchResponse> {
        let cached = self.store.get(key).await?;
        if self.is_fresh(&cached) {
            return Some(cached.response.clone());
        }
        self.store.invalidate(key).await;
        None
    }

    fn is_fresh(&self, cached: &Cached) -> bool {
        cached.stored_at.elapsed() < self.ttl
    }

    fn is_complete(&self, r: &SearchResponse) -> bool {
        let all_shards = r.coverage.as_ref().is_some_and(|c| {
            c.shards_ok == c.shards_total
                && c.shards_total as usize == self.shards.len()
                && c.shards_timed_out == 0
                && c.shards_failed == 0
        });
        all_shards
            && !r.partial
            && r.hits_unfetched == 0
            && !r.snapshot.is_empty()
            && !r.snapshot.contains(',')
    }

    /// The answer of a waiter whose deadline came before the search it
    /// waited for: every shard timed out, as a fan-out would say.
    fn timed_out(&self, waited: Duration) -> SearchResponse {
        let n = self.shards.len() as u32;
        SearchResponse {
            coverage: Some(Coverage {
                shards_total: n,
                shards_timed_out: n,
                failures: self
                    .shards
                    .iter()
                    .map(|&shard| ShardFailure {
                        shard,
                        reason: FailureReason::Timeout as i32,
                        message: format!(
                            "waited {waited:.1?} for an identical search in flight, which had not answered"
                        ),
                    })
                    .collect(),
                docs_total: self.docs_total.load(Ordering::Relaxed),
                ..Default::default()
            }),
            partial: true,
            ..Default::default()
        }
    }

    /// Applies moka's pending work (weights, evictions) now rather than
    /// when its batch fills, after a search stored something: the size
    /// bound then holds at once and `cache_bytes` is current. A search
    /// costs far more than this.
    async fn housekeep(&self) {
        self.store.run_pending_tasks().await;
        self.counters
            .set(InnerCounter::CacheBytes, self.store.weighted_size());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures::future::join_all;
    use searchtree_proto::pb::{Hit, Priority, SearchRequest};

    use super::*;
    use crate::child::{Child, ChildError};
    use crate::counters::inner_counters;
    use crate::fake::FakeChild;
    use crate::node::{InnerNode, InnerTiming};

    const CONFIG: CacheConfig = CacheConfig {
        max_bytes: 1 << 20,
        ttl: Duration::from_secs(60),
    };

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

    /// A one-shard child answering two hits after `delay` from `snapshot`.
    fn child(shard: u32, delay: Duration, snapshot: &str) -> Arc<FakeChild> {
        let c = FakeChild::answering(shard, delay, &[("a", 1.0), ("b", 2.0)]);
        c.set_snapshot(snapshot);
        Arc::new(c)
    }

    fn node(children: &[Arc<FakeChild>]) -> InnerNode {
        let children = children
            .iter()
            .map(|c| Arc::clone(c) as Arc<dyn Child>)
            .collect();
        InnerNode::new(
            "p",
            children,
            InnerTiming::default(),
            inner_counters("parent"),
        )
        .with_cache(Some(CONFIG))
    }

    /// What the gRPC adapter does: validate, work out the deadline, search.
    async fn ask(n: &InnerNode, request: SearchRequest) -> Result<SearchResponse, NodeError> {
        let arrived = Instant::now();
        let params = n.validate(&request)?;
        n.search(&params, arrived + n.budget(&params, None)).await
    }

    fn count(n: &InnerNode, counter: InnerCounter) -> u64 {
        n.counters().get(counter)
    }

    #[test]
    fn normalize_trims_only_where_whitespace_means_nothing() {
        assert_eq!(normalize("  paris france \t\n"), "paris france");
        assert_eq!(normalize("paris  france"), "paris  france");
        // Inside a phrase, or escaped, whitespace may belong to a term.
        assert_eq!(normalize("\"paris "), "\"paris ");
        assert_eq!(normalize(" paris\\ "), " paris\\ ");
        // Not ASCII whitespace: kept.
        assert_eq!(normalize("paris\u{a0}"), "paris\u{a0}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_answer_is_served_again_without_asking_the_children() {
        let children = [child(0, ms(5), "v1"), child(1, ms(10), "v1")];
        let n = node(&children);
        let first = ask(&n, request("q", 10, 100)).await.unwrap();
        assert_eq!(first.took_us, 10_000);

        let start = Instant::now();
        let again = ask(&n, request("  q ", 10, 100)).await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO, "no child was waited for");
        assert_eq!(again.took_us, 0, "took_us is the hit's own time");
        assert_eq!(
            SearchResponse {
                took_us: first.took_us,
                ..again.clone()
            },
            first,
            "the same answer, coverage included"
        );
        assert_eq!(again.snapshot, "v1");
        assert!(children.iter().all(|c| c.calls() == 1));
        assert_eq!(count(&n, InnerCounter::CacheHits), 1);
        assert_eq!(count(&n, InnerCounter::CacheMisses), 1);
        assert_eq!(count(&n, InnerCounter::Requests), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn partial_and_mixed_answers_are_returned_but_not_cached() {
        let up = child(0, ms(5), "v1");
        let down = FakeChild::failing(1, ms(1), ChildError::Unavailable("down".into()));
        let n = InnerNode::new(
            "p",
            vec![up.clone(), Arc::new(down)],
            InnerTiming::default(),
            inner_counters("parent"),
        )
        .with_cache(Some(CONFIG));
        for _ in 0..2 {
            let r = ask(&n, request("q", 10, 100)).await.unwrap();
            assert!(r.partial);
        }
        assert_eq!(up.calls(), 2);

        // Two snapshots answered (a rollout under way), or none was named.
        for snapshots in [["v1", "v2"], ["", ""]] {
            let children = [child(0, ms(5), snapshots[0]), child(1, ms(5), snapshots[1])];
            let n = node(&children);
            for _ in 0..2 {
                let r = ask(&n, request("q", 10, 100)).await.unwrap();
                assert!(!r.partial);
                assert_eq!(r.snapshot, snapshots.join(",").trim_matches(','));
            }
            assert_eq!(children[0].calls(), 2, "{snapshots:?}");
            assert_eq!(count(&n, InnerCounter::CacheHits), 0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_key_is_the_query_top_k_kind_of_answer_and_version_not_the_budget() {
        let c = child(0, ms(5), "v1");
        let n = node(std::slice::from_ref(&c));
        ask(&n, request("q", 10, 100)).await.unwrap();
        let misses = [
            request("q", 5, 100),
            request("r", 10, 100),
            request("q  r", 10, 100),
            SearchRequest {
                exact_total_hits: true,
                ..request("q", 10, 100)
            },
            SearchRequest {
                ids_only: true,
                ..request("q", 10, 100)
            },
            // Pinned to another version of the corpus.
            SearchRequest {
                version: 2,
                ..request("q", 10, 100)
            },
        ];
        for r in misses {
            ask(&n, r).await.unwrap();
        }
        assert_eq!(c.calls(), 7, "each a miss");
        // Budget, strictness and priority do not change a complete answer.
        ask(
            &n,
            SearchRequest {
                min_coverage: 1.0,
                priority: Priority::Batch as i32,
                ..request("q", 10, 5000)
            },
        )
        .await
        .unwrap();
        assert_eq!(c.calls(), 7);
        assert_eq!(count(&n, InnerCounter::CacheHits), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn canaries_are_neither_served_nor_stored() {
        let c = child(0, ms(5), "v1");
        let n = node(std::slice::from_ref(&c));
        let canary = SearchRequest {
            canary: true,
            ..request("q", 10, 100)
        };
        ask(&n, canary.clone()).await.unwrap();
        ask(&n, request("q", 10, 100)).await.unwrap();
        assert_eq!(c.calls(), 2, "the canary stored nothing");
        ask(&n, canary).await.unwrap();
        assert_eq!(c.calls(), 3, "nor was it served");
        assert_eq!(count(&n, InnerCounter::CacheHits), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_snapshot_below_clears_the_cache() {
        let c = child(0, ms(5), "v1");
        let n = node(std::slice::from_ref(&c));
        ask(&n, request("q", 10, 100)).await.unwrap();
        ask(&n, request("r", 10, 100)).await.unwrap();
        c.set_snapshot("v2");
        // The node has not searched since: it cannot know (the TTL bounds this).
        let known = ask(&n, request("q", 10, 100)).await.unwrap();
        assert_eq!((known.snapshot.as_str(), c.calls()), ("v1", 2));
        // A miss meets the new snapshot: every answer of the old one goes.
        let new = ask(&n, request("new", 10, 100)).await.unwrap();
        assert_eq!(new.snapshot, "v2");
        for query in ["r", "q"] {
            let r = ask(&n, request(query, 10, 100)).await.unwrap();
            assert_eq!(r.snapshot, "v2", "{query}");
        }
        assert_eq!(c.calls(), 5, "q and r were searched again");
        ask(&n, request("q", 10, 100)).await.unwrap();
        assert_eq!(c.calls(), 5, "and cached again, under v2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_straggler_from_the_old_snapshot_is_returned_but_not_believed() {
        let c = child(0, ms(50), "v1");
        let n = node(std::slice::from_ref(&c));
        let slow = ask(&n, request("slow", 10, 1000));
        let meanwhile = async {
            tokio::time::sleep(ms(1)).await;
            c.set_snapshot("v2");
            c.set_delay(ms(1));
            ask(&n, request("q", 10, 1000)).await.unwrap()
        };
        let (slow, fast) = tokio::join!(slow, meanwhile);
        assert_eq!(
            (slow.unwrap().snapshot.as_str(), fast.snapshot.as_str()),
            ("v1", "v2")
        );
        // The straggler neither cleared v2's answers nor was stored.
        let q = ask(&n, request("q", 10, 1000)).await.unwrap();
        assert_eq!((q.snapshot.as_str(), c.calls()), ("v2", 2));
        let again = ask(&n, request("slow", 10, 1000)).await.unwrap();
        assert_eq!((again.snapshot.as_str(), c.calls()), ("v2", 3));
    }

    #[tokio::test(start_paused = true)]
    async fn answers_expire_after_the_ttl_on_tokios_clock() {
        let c = child(0, ms(5), "v1");
        let n = node(std::slice::from_ref(&c));
        ask(&n, request("q", 10, 100)).await.unwrap();
        tokio::time::advance(CONFIG.ttl - ms(10)).await;
        ask(&n, request("q", 10, 100)).await.unwrap();
        assert_eq!(c.calls(), 1, "still fresh");
        tokio::time::advance(ms(10)).await;
        ask(&n, request("q", 10, 100)).await.unwrap();
        assert_eq!(c.calls(), 2, "expired, searched again");
        ask(&n, request("q", 10, 100)).await.unwrap();
        assert_eq!(c.calls(), 2, "and stored afresh");
    }

    #[tokio::test(start_paused = true)]
    async fn identical_concurrent_misses_search_once() {
        let children = [child(0, ms(5), "v1"), child(1, ms(10), "v1")];
        let n = node(&children);
        let start = Instant::now();
        let answers = join_all((0..8).map(|_| ask(&n, request("q", 10, 100)))).await;
        assert_eq!(start.elapsed(), ms(10), "all answered with the one search");
        assert!(children.iter().all(|c| c.calls() == 1));
        let first = answers[0].as_ref().unwrap();
        assert!(!first.partial);
        for a in &answers {
            assert_eq!(a.as_ref().unwrap().hits, first.hits);
        }
        assert_eq!(count(&n, InnerCounter::CacheMisses), 1);
        assert_eq!(count(&n, InnerCounter::CacheCoalesced), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_does_not_join_a_search_that_answers_after_its_deadline() {
        let c = child(0, ms(200), "v1");
        let n = node(std::slice::from_ref(&c));
        let patient = ask(&n, request("q", 10, 1000));
        let hurried = async {
            tokio::time::sleep(ms(1)).await;
            let start = Instant::now();
            let r = ask(&n, request("q", 10, 50)).await.unwrap();
            (start.elapsed(), r)
        };
        let (patient, (waited, hurried)) = tokio::join!(patient, hurried);
        // 50 ms budget, 3 ms reserve: its own search, cut short at 47 ms.
        assert_eq!(waited, ms(47));
        assert!(hurried.partial);
        assert!(!patient.unwrap().partial);
        assert_eq!(c.calls(), 2);
        assert_eq!(count(&n, InnerCounter::CacheMisses), 2);
    }

    fn complete(snapshot: &str) -> SearchResponse {
        SearchResponse {
            hits: vec![Hit {
                doc_id: "a".into(),
                score: 1.0,
                ..Default::default()
            }],
            total_hits: 1,
            coverage: Some(Coverage {
                shards_total: 2,
                shards_ok: 2,
                docs_total: 200,
                docs_searched: 200,
                ..Default::default()
            }),
            snapshot: snapshot.into(),
            ..Default::default()
        }
    }

    fn params(query: &str) -> SearchParams {
        SearchParams::try_from(&request(query, 10, 0)).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_stops_waiting_at_its_own_deadline() {
        let counters = inner_counters("parent");
        let cache = ResultCache::new(CONFIG, vec![0, 1], Arc::clone(&counters));
        let calls = AtomicUsize::new(0);
        // A search that overruns its deadline (as a stalled runtime might).
        let overrunning = |_at: Instant| async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(ms(300)).await;
            Ok(complete("v1"))
        };
        let start = Instant::now();
        let q = params("q");
        let leader = cache.search(&q, start + ms(100), overrunning);
        let waiter = async {
            tokio::time::sleep(ms(1)).await;
            let r = cache.search(&q, start + ms(200), overrunning).await;
            (start.elapsed(), r.unwrap())
        };
        let (leader, (at, waited)) = tokio::join!(leader, waiter);
        assert_eq!(at, ms(200), "gave up at its own deadline");
        let c = waited.coverage.unwrap();
        assert!(waited.partial);
        assert_eq!((c.shards_total, c.shards_timed_out), (2, 2));
        assert!(c.failures[0].message.contains("identical search"));
        assert!(!leader.unwrap().partial, "the leader had its answer");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(counters.get(InnerCounter::CacheCoalesced), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_with_more_time_searches_again_after_a_shared_partial_answer() {
        let c = child(0, ms(100), "v1");
        let n = node(std::slice::from_ref(&c));
        let hurried = ask(&n, request("q", 10, 50));
        let patient = async {
            tokio::time::sleep(ms(1)).await;
            let r = ask(&n, request("q", 10, 1000)).await.unwrap();
            (Instant::now(), r)
        };
        let start = Instant::now();
        let (hurried, (done, patient)) = tokio::join!(hurried, patient);
        assert!(
            hurried.unwrap().partial,
            "its requester gets the partial answer"
        );
        // It waited for the shared search (47 ms), then searched (100 ms).
        assert_eq!(done - start, ms(147));
        assert!(!patient.partial);
        assert_eq!(c.calls(), 2);
        ask(&n, request("q", 10, 50)).await.unwrap();
        assert_eq!(c.calls(), 2, "its complete answer was stored");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_with_no_more_time_takes_the_shared_partial_answer() {
        let c = child(0, ms(100), "v1");
        let n = node(std::slice::from_ref(&c));
        let first = ask(&n, request("q", 10, 50));
        let second = async {
            tokio::time::sleep(ms(1)).await;
            let r = ask(&n, request("q", 10, 50)).await.unwrap();
            (Instant::now(), r)
        };
        let start = Instant::now();
        let (first, (done, second)) = tokio::join!(first, second);
        assert_eq!(done - start, ms(47), "answered with the shared search");
        let first = first.unwrap();
        assert_eq!(second.took_us, 46_000, "its own time: it came 1 ms later");
        assert_eq!(second.coverage, first.coverage);
        assert!(second.partial);
        assert_eq!(c.calls(), 1);
        assert_eq!(count(&n, InnerCounter::CacheCoalesced), 1);
        assert_eq!(count(&n, InnerCounter::CacheHits), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bad_query_is_every_waiters_error_and_is_not_cached() {
        let bad = Arc::new(FakeChild::failing(
            0,
            ms(5),
            ChildError::InvalidArgument("cannot parse".into()),
        ));
        let n = InnerNode::new(
            "p",
            vec![bad.clone()],
            InnerTiming::default(),
            inner_counters("parent"),
        )
        .with_cache(Some(CONFIG));
        let answers = join_all((0..3).map(|_| ask(&n, request("q", 10, 100)))).await;
        for a in answers {
            assert_eq!(a.unwrap_err(), NodeError::Invalid("cannot parse".into()));
        }
        assert_eq!(bad.calls(), 1);
        ask(&n, request("q", 10, 100)).await.unwrap_err();
        assert_eq!(bad.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn it_evicts_to_stay_within_its_size() {
        let counters = inner_counters("parent");
        let max_bytes = 4096;
        let config = CacheConfig {
            max_bytes,
            ..CONFIG
        };
        let cache = ResultCache::new(config, vec![0, 1], Arc::clone(&counters));
        let one = CacheKey::new(&params("query-00"), Arc::from("v1")).weight()
            + complete("v1").encoded_len();
        for i in 0..100 {
            let query = format!("query-{i:02}");
            let r = cache
                .search(&params(&query), Instant::now() + ms(100), |_| async {
                    Ok(complete("v1"))
                })
                .await;
            assert!(!r.unwrap().partial);
        }
        let bytes = counters.get(InnerCounter::CacheBytes);
        assert!(bytes <= max_bytes && bytes > 0, "{bytes} bytes");
        let kept = bytes / one as u64;
        assert!(kept > 10, "{kept} entries of {one} bytes");
        // Every answer not kept was either evicted or refused for room.
        assert_eq!(counters.get(InnerCounter::CacheEvictions), 100 - kept);
    }
}
