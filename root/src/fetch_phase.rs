//! Two-phase search at the root: the query phase fans out with `ids_only`
//! (leaves return doc id, score and shard), and the fetch phase asks for
//! titles and snippets of the global top-k only — k documents loaded in the
//! whole tree instead of k per leaf. Both phases share the request's budget:
//! the query phase must answer early enough to leave the fetch its reserve,
//! estimated from the fetches measured so far.
//!
//! If the fetch cannot finish in time, the answer goes out anyway with the
//! hits it has: those still without title and snippet are counted in
//! `hits_unfetched`. Coverage is not touched — the hits themselves are
//! exact.

use std::collections::HashMap;
use std::time::Duration;

use searchtree_parent::round_trip::RoundTrip;
use searchtree_parent::{InnerCounter, InnerNode};
use searchtree_proto::pb::{DocRef, SearchResponse};
use searchtree_proto::{FetchParams, SearchParams};
use tokio::time::Instant;

/// The fetch reserve before any fetch has been measured.
pub const INITIAL_RESERVE: Duration = Duration::from_millis(5);
/// The least time kept back for the fetch phase: a round trip to a leaf and
/// back, with timers that may fire up to 1 ms late at each end.
pub const RESERVE_FLOOR: Duration = Duration::from_millis(2);
/// The most kept back for the fetch phase.
pub const RESERVE_CEILING: Duration = Duration::from_millis(50);
/// The largest share of a request's budget the fetch phase may keep back:
/// the query phase, whose answer the fetch depends on, gets the rest.
pub const MAX_RESERVE_SHARE: f64 = 0.25;

/// The root's fetch phase and what it has learned of fetch times.
#[derive(Debug, Default)]
pub struct FetchPhase {
    /// Measured fetch phases, from sending to answer.
    took: RoundTrip,
}

impl FetchPhase {
    /// A fetch phase with nothing measured yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The time to keep back from a request with `budget` left for its
    /// fetch phase: `mean + 4 × deviation` of recent fetches, within
    /// [`RESERVE_FLOOR`]..[`RESERVE_CEILING`], and at most
    /// [`MAX_RESERVE_SHARE`] of the budget.
    pub fn reserve(&self, budget: Duration) -> Duration {
        self.took
            .reserve(INITIAL_RESERVE, RESERVE_FLOOR, RESERVE_CEILING)
            .min(budget.mul_f64(MAX_RESERVE_SHARE))
    }

    /// When the query phase must answer for a request due at `deadline`.
    pub fn query_deadline(&self, deadline: Instant) -> Instant {
        let now = Instant::now();
        let reserve = self.reserve(deadline.saturating_duration_since(now));
        deadline.checked_sub(reserve).unwrap_or(now).max(now)
    }

    /// Fills in titles and snippets of `response`'s hits (the answer to
    /// `search`) by `deadline`, in place; hits that stay bare are counted in
    /// `hits_unfetched`.
    pub async fn fill(
        &self,
        node: &InnerNode,
        search: &SearchParams,
        response: &mut SearchResponse,
        deadline: Instant,
    ) {
        if response.hits.is_empty() {
            return;
        }
        let params = FetchParams {
            query: search.query.clone(),
            docs: response
                .hits
                .iter()
                .map(|h| DocRef {
                    doc_id: h.doc_id.clone(),
                    shard: h.shard,
                })
                .collect(),
            budget: None,
            // The version the query phase answered at (else the one it was
            // pinned to), so a document deleted in a later version is
            // still found.
            version: match response.version {
                0 => search.version,
                v => v,
            },
            hops: search.hops,
        };
        let started = Instant::now();
        let fetched = match node.fetch(&params, deadline).await {
            Ok(answer) => answer.hits,
            Err(err) => {
                tracing::debug!(%err, "fetch refused");
                Vec::new()
            }
        };
        self.took
            .observe(searchtree_proto::deadline::micros(started.elapsed()));
        let mut by_doc: HashMap<(String, u32), (String, String)> = fetched
            .into_iter()
            .map(|h| ((h.doc_id, h.shard), (h.title, h.snippet)))
            .collect();
        let mut unfetched = 0;
        for hit in &mut response.hits {
            match by_doc.remove(&(hit.doc_id.clone(), hit.shard)) {
                Some((title, snippet)) => {
                    hit.title = title;
                    hit.snippet = snippet;
                }
                None => unfetched += 1,
            }
        }
        response.hits_unfetched = unfetched;
        let fetch_us = searchtree_proto::deadline::micros(started.elapsed());
        response.took_us += fetch_us;
        if let Some(profile) = response.profile.as_mut() {
            profile.fetch_us = fetch_us;
            profile.total_us = response.took_us;
        }
        if unfetched > 0 {
            node.counters().inc(InnerCounter::AnswersUnfetched);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use searchtree_parent::counters::inner_counters;
    use searchtree_parent::fake::FakeChild;
    use searchtree_parent::node::InnerTiming;
    use searchtree_parent::{Child, NodeError};
    use searchtree_proto::pb::SearchRequest;

    use super::*;
    use crate::RootNode;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A root over two one-shard children answering after `delay`.
    fn root(delay: Duration) -> (RootNode, Vec<Arc<FakeChild>>) {
        let fakes = vec![
            Arc::new(FakeChild::answering(0, delay, &[("a", 2.0), ("b", 0.5)])),
            Arc::new(FakeChild::answering(1, delay, &[("c", 1.0)])),
        ];
        let children = fakes
            .iter()
            .map(|c| Arc::clone(c) as Arc<dyn Child>)
            .collect();
        let node = InnerNode::new(
            "root",
            children,
            InnerTiming::default(),
            inner_counters("root"),
        );
        (RootNode::new(node), fakes)
    }

    async fn ask(root: &RootNode, request: SearchRequest) -> Result<SearchResponse, NodeError> {
        let arrived = Instant::now();
        let params = root.validate(&request)?;
        root.search(&params, arrived + root.budget(&params, None))
            .await
    }

    fn request(top_k: u32, ids_only: bool) -> SearchRequest {
        SearchRequest {
            query: "q".into(),
            top_k,
            budget_ms: 50,
            ids_only,
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_global_top_k_is_fetched_once_and_filled_in() {
        let (r, fakes) = root(ms(2));
        let answer = ask(&r, request(2, false)).await.unwrap();
        let hits: Vec<(&str, &str)> = answer
            .hits
            .iter()
            .map(|h| (h.doc_id.as_str(), h.title.as_str()))
            .collect();
        assert_eq!(hits, [("a", "title of a"), ("c", "title of c")]);
        assert_eq!(answer.hits[0].score, 2.0, "scores from the query phase");
        assert_eq!(answer.hits[1].snippet, FakeChild::snippet_of("c", "q"));
        assert_eq!(answer.hits_unfetched, 0);
        let fetches: Vec<usize> = fakes.iter().map(|f| f.fetch_calls()).collect();
        assert_eq!(fetches, [1, 1]);
        assert_eq!(r.inner().counters().get(InnerCounter::Fetches), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_query_phase_leaves_the_fetch_its_reserve() {
        let (r, fakes) = root(ms(2));
        ask(&r, request(2, false)).await.unwrap();
        // 50 ms less the fetch reserve (5 ms, nothing measured yet), less the
        // inner node's reserve (3 ms) and the hop's (3 ms).
        assert_eq!(*fakes[0].budgets.lock().unwrap(), [ms(39)]);
        // The fetch took 2 ms (the children's delay): the reserve follows.
        assert_eq!(r_fetch_reserve(&r), RESERVE_FLOOR.max(ms(2) + ms(4)));
        let (one, fakes) = root(ms(2));
        let one = one.with_one_phase(true);
        ask(&one, request(2, false)).await.unwrap();
        assert_eq!(*fakes[0].budgets.lock().unwrap(), [ms(44)]);
        assert_eq!(fakes[0].fetch_calls(), 0);
    }

    /// The root's fetch reserve for a long budget.
    fn r_fetch_reserve(r: &RootNode) -> Duration {
        r.fetch_phase().expect("two phases").reserve(ms(1000))
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_that_cannot_finish_leaves_hits_unfetched_but_exact() {
        // 30 ms per call: the query phase answers at 30 ms, and the fetch
        // has 47 - 30 - 3 = 14 ms, too little.
        let (r, _) = root(ms(30));
        let start = Instant::now();
        let answer = ask(&r, request(3, false)).await.unwrap();
        assert!(start.elapsed() <= ms(50), "{:?}", start.elapsed());
        let ids: Vec<&str> = answer.hits.iter().map(|h| h.doc_id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "b"]);
        assert!(answer.hits.iter().all(|h| h.title.is_empty()));
        assert_eq!(answer.hits_unfetched, 3);
        let c = answer.coverage.unwrap();
        assert_eq!((c.shards_ok, c.shards_total), (2, 2), "coverage intact");
        assert!(!answer.partial);
        assert_eq!(r.inner().counters().get(InnerCounter::AnswersUnfetched), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_asking_for_ids_only_gets_no_fetch() {
        let (r, fakes) = root(ms(2));
        let answer = ask(&r, request(3, true)).await.unwrap();
        assert_eq!(answer.hits.len(), 3);
        assert_eq!(answer.hits_unfetched, 0);
        assert_eq!(fakes[0].fetch_calls() + fakes[1].fetch_calls(), 0);
        // The whole budget went to the query phase.
        assert_eq!(*fakes[0].budgets.lock().unwrap(), [ms(44)]);
    }

    #[test]
    fn the_reserve_has_a_floor_and_a_share_of_the_budget() {
        let phase = FetchPhase::new();
        assert_eq!(phase.reserve(ms(1000)), INITIAL_RESERVE);
        assert_eq!(phase.reserve(ms(8)), ms(2), "a quarter of a short budget");
        for _ in 0..100 {
            phase.took.observe(100);
        }
        assert_eq!(phase.reserve(ms(1000)), RESERVE_FLOOR);
    }
}
